# ResNet50-D*(G=32) of Table 5: ResNet50-D* with every BN replaced by GroupNorm
# with 32 groups (App. D.4).
_base_ = './resnet50d-tricks.py'
model = dict(backbone=dict(norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)))
