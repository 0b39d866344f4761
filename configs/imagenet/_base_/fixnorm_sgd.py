# FixNorm on ImageNet (Algo 1 @ FixNorm-FC, Sec. 3): SGD with Nesterov momentum
# and no weight decay; after every step the conv weights, the SE layers' WN
# weights and the FixNorm-FC weight get back their initial global norm.
# A config using this sets the lr and the head: type='FixNormClsHead', alpha.
_base_ = '../../_base_/fixnorm.py'
custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.classification'],
                      allow_failed_imports=False)
optim_wrapper = dict(
    optimizer=dict(type='SGD', momentum=0.9, nesterov=True, weight_decay=0))
