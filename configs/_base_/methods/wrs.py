# Method switch: weight rescaling, WRS (Liu et al., Sec. 5-6). Every tau
# optimizer steps each BN-followed conv kernel (one per output channel) is
# rescaled to unit norm; those kernels get no weight decay, everything else
# (BN gamma, ...) keeps it. tau in {10, 20, 40} (Supp. Table S1: mostly 40).
# lambda = 1e-4 as for the other methods here (the paper used 5e-4 on CIFAR).
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='NormControlOptimWrapperConstructor',
    optimizer=dict(weight_decay=1e-4),
    norm_control=dict(type='WRS', interval=40, rescale_at_start=True, include=[], exclude=[]))
