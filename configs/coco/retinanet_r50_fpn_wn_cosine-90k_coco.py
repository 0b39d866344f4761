# Table 4, row 2, "baseline w/ cosine lr" (36.2 AP): row 1 with a cosine decay
# of the lr after mmdet's 500-iteration linear warmup.
_base_ = './retinanet_r50_fpn_wn_90k_coco.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', T_max=90000, eta_min=0, by_epoch=False,
         begin=0, end=90000)
]
