# ResNet50-D* (Table 2, 28.1M parameters): ResNet50-D with EfficientNet's tricks
# (Sec. 3.2): SE layers (ratio 16), swish, stochastic depth (0.2, EfficientNet's
# rate) and AutoAugment. Label smoothing 0.1, 64 images per GPU.
_base_ = [
    'mmpretrain::_base_/models/resnetv1d50.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_autoaug.py',
    'mmpretrain::_base_/default_runtime.py',
]
model = dict(
    backbone=dict(type='ResNetV1dSE', se_ratio=16, act_cfg=dict(type='Swish'),
                  drop_path_rate=0.2),
    head=dict(loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0)))
