# FixNorm paper, Table 3, "baseline w/ cosine lr": the baseline (lr 0.01,
# weight decay 5e-4) with cosine instead of poly decay.
_base_ = './baseoc_r101-d8_4xb2-40k_cityscapes-769x769.py'
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=40000, eta_min=1e-4, begin=0, end=40000,
         by_epoch=False)
]
