# Table 4, row 3, "FixNorm-tune" (36.9 AP): row 1 trained with FixNorm
# (Algo 1, no weight decay) at the lr and alpha FixNorm-tune found:
# lr 0.0145, alpha 0.5, the same step schedule.
_base_ = './retinanet_r50_fpn_wn_90k_coco.py'

# App. D.3: the classification subnet's last conv becomes FixNorm-Conv (Eq. 29),
# capped at alpha * sqrt(9 anchors * 80 classes); the regression conv stays WN.
model = dict(bbox_head=dict(type='FixNormRetinaHead', alpha=0.5))

# Fixed set: the WN directions (FPN, subnets) and the FixNorm-Conv weight. The
# backbone's convs feed eval-mode BN (norm_eval=True) and are not scale-invariant:
# the startup table lists them as left out (docs/coco.md).
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='NormControlOptimWrapperConstructor',
    optimizer=dict(lr=0.0145, weight_decay=0),
    norm_control=dict(type='FixNorm', include=[], exclude=[], groups=[], per_layer=False))
