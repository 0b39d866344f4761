# FixNorm paper, Table 3, "FixNorm-tune w/ cosine lr": FixNorm with cosine
# decay and the hyperparameters FixNorm-tune found: lr 0.043, alpha 1.0.
_base_ = './baseoc_r101-d8_fixnorm-tune_4xb2-40k_cityscapes-769x769.py'
optim_wrapper = dict(optimizer=dict(lr=0.043))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=40000, eta_min=1e-4, begin=0, end=40000,
         by_epoch=False)
]
