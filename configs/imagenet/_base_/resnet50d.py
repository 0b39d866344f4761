# ResNet50-D (He et al. 2019; mmpretrain's ResNetV1d-50, 25.6M parameters, 4.3G
# FLOPs) with label smoothing 0.1 (Sec. 3), mmpretrain's standard ImageNet
# augmentation, 64 images per GPU.
_base_ = [
    'mmpretrain::_base_/models/resnetv1d50.py',
    'mmpretrain::_base_/datasets/imagenet_bs64.py',
    'mmpretrain::_base_/default_runtime.py',
]
model = dict(
    head=dict(loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0)))
