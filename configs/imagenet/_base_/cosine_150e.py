# The schedule of cosine_120e.py over 150 epochs.
_base_ = './cosine_120e.py'
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=4,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=4, end=150,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=150)
