# The weight-decay twin of toy_fixnorm.py for BO+WD: a plain FC classifier and
# SGD with weight decay (the value BO+WD tunes), no norm fixing.
_base_ = './toy_fixnorm.py'

model = dict(fc_type='fc')
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.8, momentum=0.9, nesterov=True, weight_decay=1e-4))
