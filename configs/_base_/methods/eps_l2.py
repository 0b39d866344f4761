# Method switch: epsilon-shifted L2 (Li et al., Eq. 25-28). On WN directions,
# WS convs (mmcv ConvWS) and BN-followed conv/linear weights, unit by unit,
# (lambda/2)(||W|| - eps)^2 (WS: its mean/std form) replaces weight decay;
# BN and FC layers keep plain weight decay lambda, biases get none (Sec. 6.1).
# Paper defaults: lambda = 1e-4 (SGD, ImageNet), eps = 1e-3 (Table IV).
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='NormControlOptimWrapperConstructor',
    optimizer=dict(weight_decay=1e-4),
    paramwise_cfg=dict(bias_decay_mult=0.),
    # weight_decay=None: lambda of each tensor = the decay configured for it
    norm_control=dict(type='EpsShiftedL2', eps=1e-3, weight_decay=None, mode='gradient',
                      bn_followed=True, include=[], exclude=[]))
