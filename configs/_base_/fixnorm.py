# FixNorm in any mmengine config (paper Algo 1 @ FixNorm-FC): no weight decay,
# and after every real optimizer step the global norm of all scale-invariant
# weights is rescaled to its value at the start of training.
# Keep your optimizer and wrapper type (OptimWrapper, or AmpOptimWrapper with
# --amp); FixNorm only needs weight_decay=0, the constructor and norm_control.
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='NormControlOptimWrapperConstructor',
    optimizer=dict(weight_decay=0),
    # include/exclude: fnmatch patterns of parameter names; groups: parts fixed
    # independently, e.g. [dict(name='head', include=['head.*'])].
    norm_control=dict(type='FixNorm', include=[], exclude=[], groups=[], per_layer=False))
# MCBR (Eq. 9) over every sample of the batch, g and the fixed set's norm, logged
# as fixnorm/* (docs/monitoring.md); segmentation adds ignore_index=255.
custom_hooks = [dict(type='MCBRHook', interval=50, ignore_index=None)]
