# A FixNorm training that takes seconds on one CPU core, for tuning tests and
# the CPU benchmark of docs/tuning.md: a small BN CNN with a FixNorm-FC
# classifier (Eq. 10) on synthetic 8x8 digits with 20% label noise
# (fixnorm_mm/testing/toy.py). T_max = 320 iterations (10 epochs of 1024 images).
# Three splits of the same classes: train (seed 0, noisy labels), val (seed 1: what
# FixNorm-tune selects on) and a held-out test split (seed 2: `fixnorm-test`).
custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.testing.toy'],
                      allow_failed_imports=False)
default_scope = None

# conv-BN-ReLU x 3 (1 -> 16 -> 32 -> 32), global pooling, FixNorm-FC
model = dict(type='ToyNet', in_channels=1, channels=(16, 32, 32), strides=(1, 2, 1),
             plain_conv=False, num_classes=10, fc_type='fixnorm_fc', alpha=1.0)

train_dataloader = dict(
    batch_size=32, num_workers=0,
    dataset=dict(type='ToyDataset', pattern='prototypes', channels=1, num_classes=10,
                 num_samples=1024, seed=0, noise=1.0, label_noise=0.2),
    # an iteration-based loop draws from one endless stream: a DefaultSampler would
    # make mmengine restart the loader every epoch, with a warning and a 2 s pause
    sampler=dict(type='InfiniteSampler', shuffle=True))
val_dataloader = dict(
    batch_size=256, num_workers=0,
    dataset=dict(type='ToyDataset', pattern='prototypes', channels=1, num_classes=10,
                 num_samples=1024, seed=1, noise=1.0),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='ToyAccuracy', key='accuracy/top1')  # as mmpretrain names it
val_cfg = dict()
test_dataloader = dict(
    batch_size=256, num_workers=0,
    dataset=dict(type='ToyDataset', pattern='prototypes', channels=1, num_classes=10,
                 num_samples=1024, seed=2, noise=1.0),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_evaluator = val_evaluator
test_cfg = dict()

train_cfg = dict(by_epoch=False, max_iters=320, val_interval=320)
# the paper's schedule shape (Sec. 3): linear warm-up, then cosine decay to 0
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=32),
    dict(type='CosineAnnealingLR', T_max=288, eta_min=0, by_epoch=False, begin=32, end=320),
]
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='NormControlOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=0.8, momentum=0.9, nesterov=True, weight_decay=0),
    norm_control=dict(type='FixNorm', include=[], exclude=[], groups=[], per_layer=False))

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=80, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=160, max_keep_ckpts=1))
# MCBR (Eq. 9), g and min(g, cap) of the classifier at every logged iteration, beside the
# fixed set's norm and effective lr that FixNorm logs itself (docs/monitoring.md)
custom_hooks = [dict(type='MCBRHook', interval=80, layer='head')]
log_processor = dict(by_epoch=False)
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
# INFO: the startup table (what FixNorm fixes) and the training log lines are shown
log_level = 'INFO'
