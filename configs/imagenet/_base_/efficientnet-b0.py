# EfficientNet-B0 (Tan & Le 2019; 5.3M parameters, 384M FLOPs at 224) with the
# settings of its reference implementation (Sec. 3: "other settings follow
# reference implementations"): BN momentum 0.01 and eps 1e-3, stochastic depth
# 0.2, dropout 0.2 before the FC layer, Inception-style crops and AutoAugment;
# label smoothing 0.1. 64 images per GPU.
_base_ = [
    'mmpretrain::_base_/models/efficientnet_b0.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_autoaug.py',
    'mmpretrain::_base_/default_runtime.py',
]
model = dict(
    backbone=dict(drop_path_rate=0.2, norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01)),
    head=dict(type='DropoutLinearClsHead', dropout_rate=0.2,
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='EfficientNetRandomCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='AutoAugment', policies='imagenet',
         hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='EfficientNetCenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
