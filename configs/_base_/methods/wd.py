# Method switch: weight decay, the baseline FixNorm replaces. Plain L2 on
# every parameter through the optimizer; no norm control (the WeightDecay
# method only reports, in its startup table and logged norms, what is decayed).
# lambda = 1e-4, the ImageNet/SGD value of the FixNorm and epsilon-shifted L2
# papers' baselines. Apply over a model config with
# fixnorm_mm.norm_control.apply_method(cfg, 'wd'), `tools/train.py --method wd`
# or `python tools/compare_methods.py --config CFG --methods wd` (docs/methods.md).
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='NormControlOptimWrapperConstructor',
    optimizer=dict(weight_decay=1e-4),
    norm_control=dict(type='WeightDecay'))
