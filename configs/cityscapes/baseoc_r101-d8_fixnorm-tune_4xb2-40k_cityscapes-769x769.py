# FixNorm paper, Table 3, "FixNorm-tune": the baseline trained with FixNorm
# (Algo 1 @ FixNorm-FC: no weight decay, the global norm of the fixed set kept
# at its initial value) and the hyperparameters FixNorm-tune found:
# lr 0.0335, alpha 1.0, poly lr. (FixNorm-tune, Algo 2, searched lr in
# [0.005, 0.1] and alpha in {0.5, 1, 2, 4, 8, 16} with N=2, K=5,
# T=[0.2 T_max, T_max]; App. D.2.)
_base_ = './baseoc_r101-d8_4xb2-40k_cityscapes-769x769.py'
custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.segmentation'],
                      allow_failed_imports=False)
# App. D.2: the last conv (pixel classifier) becomes FixNorm-Conv, Eq. 29,
# C_out = 19 classes. The value/output projections of the object context block
# and the auxiliary head's classifier stay plain convs, as in the paper: no norm
# follows them, so they are left out of the fixed set (the startup table lists
# them) and train without weight decay.
model = dict(decode_head=dict(classifier_cfg=dict(type='FixNormConv2d', alpha=1.0)))
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='NormControlOptimWrapperConstructor',
    optimizer=dict(lr=0.0335, weight_decay=0),
    # one group: every conv followed by BN (backbone, both heads) + conv_seg
    norm_control=dict(type='FixNorm', include=[], exclude=[], groups=[], per_layer=False))
