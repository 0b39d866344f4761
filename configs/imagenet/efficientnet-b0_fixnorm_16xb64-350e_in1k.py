# EfficientNet-B0, 350 epochs, FixNorm-tune (Table 2): top-1 77.72.
_base_ = ['./_base_/efficientnet-b0.py', './_base_/cosine_350e.py', './_base_/fixnorm_sgd.py']
# App. C: the SE layers' FC layers are WN-FC layers (Eq. 6; EfficientNetWNSE's
# default se_conv_cfg) and join the fixed set
model = dict(
    backbone=dict(type='EfficientNetWNSE'),
    head=dict(type='FixNormClsHead', alpha=4.0))
optim_wrapper = dict(optimizer=dict(lr=0.5))
