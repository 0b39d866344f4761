# FixNorm paper, Table 3, "baseline" (App. D.2, after OCNet's training setup):
# ResNet-101 (ImageNet-pretrained, dilated, output stride 8) + Base-OC, 40k
# iterations, batch 8 (4 GPUs x 2), 769x769 crops of the 1024x2048 images,
# 2975 train / 500 val images, SGD lr 0.01, weight decay 5e-4, poly lr.
_base_ = [
    './_base_/baseoc_r50-d8.py',
    'mmseg::_base_/datasets/cityscapes_769x769.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',  # SGD lr 0.01, wd 5e-4, PolyLR(0.9)
]
crop_size = (769, 769)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(depth=101),
    decode_head=dict(align_corners=True),
    auxiliary_head=dict(align_corners=True),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(513, 513)))
# the lr above is for 8 images per step; `--auto-scale-lr` rescales it
auto_scale_lr = dict(enable=False, base_batch_size=8)
# MCBR (Eq. 9) of the pixel classifier, per pixel, 255 left out; plus its norm
custom_hooks = [
    dict(type='MCBRHook', interval=50, layer='decode_head.conv_seg', ignore_index=255)
]
