# MobileNetV2x1.12* (Table 2, 4.7M parameters, 386M FLOPs, EfficientNet-B0's
# budget): MobileNetV2 at width 1.12 with EfficientNet's tricks (Sec. 3.2): SE
# layers, swish, stochastic depth (0.2) and AutoAugment. Label smoothing 0.1.
_base_ = [
    'mmpretrain::_base_/models/mobilenet_v2_1x.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_autoaug.py',
    'mmpretrain::_base_/default_runtime.py',
]
model = dict(
    backbone=dict(type='MobileNetV2SE', widen_factor=1.12, drop_path_rate=0.2),
    # the last conv has int(1280 * widen_factor) channels
    head=dict(in_channels=1433,
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0)))
