# Table 4, row 4, "FixNorm-tune w/ cosine lr" (37.1 AP): row 3 with the cosine
# lr decay of row 2 (lr 0.0145, alpha 0.5).
_base_ = './retinanet_r50_fpn_fixnorm_90k_coco.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', T_max=90000, eta_min=0, by_epoch=False,
         begin=0, end=90000)
]
