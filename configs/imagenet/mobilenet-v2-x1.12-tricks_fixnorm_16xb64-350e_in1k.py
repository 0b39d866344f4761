# MobileNetV2x1.12* (SE, swish, stochastic depth, AutoAugment), 350 epochs,
# FixNorm-tune (Table 2): top-1 77.40.
_base_ = [
    './_base_/mobilenet-v2-x1.12-tricks.py',
    './_base_/cosine_350e.py',
    './_base_/fixnorm_sgd.py',
]
# App. C: the SE layers' FC layers are WN-FC layers (Eq. 6: the whole weight's
# norm, one scalar g) and join the fixed set; dict(type='WNConv2d') would
# normalise each output channel instead
model = dict(
    backbone=dict(se_conv_cfg=dict(type='WNConv2d', per_output=False)),
    head=dict(type='FixNormClsHead', alpha=8.0))
optim_wrapper = dict(optimizer=dict(lr=0.5))
