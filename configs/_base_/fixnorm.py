# FixNorm in any mmengine config (paper Algo 1): after every real optimizer step the
# global norm of all scale-invariant weights is rescaled to its value at the start of
# training, and their weight decay is taken over (set to 0). Every other tensor keeps
# the config's weight decay (Algo 1, line 3: the plain FC keeps it);
# uncontrolled_weight_decay='none' gives no weight decay anywhere (Algo 1 @ FixNorm-FC,
# the paper's ImageNet setting, which the provided configs state as weight_decay=0).
# Keep your optimizer and wrapper type (OptimWrapper, or AmpOptimWrapper with
# --amp); FixNorm only needs the constructor and norm_control.
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='NormControlOptimWrapperConstructor',
    # include/exclude: fnmatch patterns of parameter names; groups: parts fixed
    # independently, e.g. [dict(name='head', include=['head.*'])].
    norm_control=dict(type='FixNorm', include=[], exclude=[], groups=[], per_layer=False,
                      uncontrolled_weight_decay='keep'))
# MCBR (Eq. 9) over every sample of the batch, g and the fixed set's norm, logged
# as fixnorm/* (docs/monitoring.md); segmentation adds ignore_index=255.
custom_hooks = [dict(type='MCBRHook', interval=50, ignore_index=None)]
