# Sec. 3, general setup: linear warm-up over the first 4 epochs, then one-cycle
# cosine decay to 0, both stepped every iteration. The lr of Tables 1, 2 and 5
# is for a total batch of 1024 (16 GPUs x 64); auto_scale_lr rescales it for
# other GPU counts (tools/train.py --auto-scale-lr).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=4,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=4, end=120,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=1024)
