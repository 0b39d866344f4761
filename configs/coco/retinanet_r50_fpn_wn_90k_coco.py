# Table 4, row 1, "baseline" (36.5 AP): RetinaNet R50-FPN on COCO, 90k iterations
# at batch 16 (8 GPUs x 2 images), lr 0.01 divided by 10 at 60k and 80k, weight
# decay 1e-4. mmdet's base already has the rest of App. D.3: ImageNet-pretrained
# ResNet-50, 800-pixel scale, horizontal flip only, focal loss alpha 0.25 gamma 2.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_90k_coco.py'
custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.detection'],
                      allow_failed_imports=False)

# App. D.3: WN on every conv that no normalization follows (FPN, both subnets,
# their last convs), "for all the models", baselines included.
model = dict(
    neck=dict(conv_cfg=dict(type='WNConv2d')),
    bbox_head=dict(
        type='WNRetinaHead',
        conv_cfg=dict(type='WNConv2d'),
        # "the standard smooth L1 loss" (mmdet's base uses L1); beta = 0.11 as
        # in Detectron's RetinaNet, which the paper's setup follows
        loss_bbox=dict(type='SmoothL1Loss', beta=0.11, loss_weight=1.0)))

# The classifier's scale every 50 iterations: ||g|| of the WN retina_cls here,
# g and min(g, cap) of FixNorm-Conv in the FixNorm rows, which also log the
# fixed set's norm and effective lr (MCBR itself is for FC/1x1 classifiers).
custom_hooks = [dict(type='MCBRHook', interval=50, layer='bbox_head.retina_cls')]
