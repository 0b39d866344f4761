# The weight-decay reference of Sec. 3 (He et al. 2019): SGD with Nesterov
# momentum, weight decay on conv and FC weights only ("no bias decay": biases
# and BN/GN parameters are not decayed, App. C). A config using this sets lr
# and weight_decay.
custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.classification'],
                      allow_failed_imports=False)
optim_wrapper = dict(
    optimizer=dict(type='SGD', momentum=0.9, nesterov=True),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
