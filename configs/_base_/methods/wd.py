# Method switch: weight decay, the baseline FixNorm replaces. Plain L2 on
# every parameter through the optimizer; no norm control. lambda = 1e-4, the
# ImageNet/SGD value of the FixNorm and epsilon-shifted L2 papers' baselines.
# Apply over a model config with fixnorm_mm.methods.apply_method(cfg, 'wd')
# or `python tools/compare_methods.py --config CFG --methods wd` (docs/methods.md).
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='DefaultOptimWrapperConstructor',
    optimizer=dict(weight_decay=1e-4))
