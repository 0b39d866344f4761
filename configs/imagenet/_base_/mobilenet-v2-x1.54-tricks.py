# MobileNetV2x1.54* (Table 2, 8.0M parameters, 682M FLOPs, EfficientNet-B1's
# budget): mobilenet-v2-x1.12-tricks.py at width 1.54.
_base_ = './mobilenet-v2-x1.12-tricks.py'
model = dict(backbone=dict(widen_factor=1.54), head=dict(in_channels=1971))
