# EfficientNet's own recipe (Tan & Le 2019, the TF reference implementation that
# gave Table 2's Top-1 (ref.) 77.30 / 79.20), at batch 1024: RMSProp (decay 0.9,
# momentum 0.9), lr 0.016 per 256 images, weight decay 1e-5 on all but BN
# parameters, 5 warm-up epochs, lr x0.97 every 2.4 epochs (applied per epoch),
# EMA of the weights with decay 0.9999 per step of batch 4096.
custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.classification'],
                      allow_failed_imports=False)
optim_wrapper = dict(
    # TF adds epsilon=1e-3 under the square root, torch outside it: sqrt(1e-3)
    optimizer=dict(type='RMSprop', lr=0.064, alpha=0.9, momentum=0.9, eps=0.0316,
                   weight_decay=1e-5),
    paramwise_cfg=dict(norm_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    # TF counts the decay from step 0, through the warm-up
    dict(type='ExponentialLR', gamma=0.97**(1 / 2.4), by_epoch=True, begin=0, end=350),
]
train_cfg = dict(by_epoch=True, max_epochs=350, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)
# 1 - 0.9999 ** (1024 / 4096): the same averaging horizon in images
custom_hooks = [dict(type='EMAHook', momentum=2.5e-5, priority='ABOVE_NORMAL')]
