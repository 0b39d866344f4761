# Method switch: weight decay, the baseline FixNorm replaces. Plain L2 through
# the optimizer on conv and FC weights; no norm control (the WeightDecay method
# only reports, in its startup table and logged norms, what is decayed).
# lambda = 1e-4, the ImageNet/SGD value of the FixNorm and epsilon-shifted L2
# papers' baselines. No decay on biases and on BN's gamma and beta, as in the
# paper's weight-decay reference (App. C: the "no-bias-decay strategy" of He
# et al. 2019). The keys of a config's own paramwise_cfg win over these two,
# key by key (apply_method, or this file as a _base_; docs/paper_departures.md).
# Apply over a model config with fixnorm_mm.norm_control.apply_method(cfg, 'wd'),
# `tools/train.py --method wd` or
# `python tools/compare_methods.py --config CFG --methods wd` (docs/methods.md).
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='NormControlOptimWrapperConstructor',
    optimizer=dict(weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.),
    norm_control=dict(type='WeightDecay'))
