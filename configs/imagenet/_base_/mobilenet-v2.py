# MobileNetV2 (Sandler et al. 2018; mmpretrain's, 3.5M parameters, 300M FLOPs)
# with label smoothing 0.1 (Sec. 3), mmpretrain's standard ImageNet
# augmentation, 64 images per GPU.
_base_ = [
    'mmpretrain::_base_/models/mobilenet_v2_1x.py',
    'mmpretrain::_base_/datasets/imagenet_bs64.py',
    'mmpretrain::_base_/default_runtime.py',
]
model = dict(
    head=dict(loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0)))
