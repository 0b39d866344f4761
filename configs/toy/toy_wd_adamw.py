# The weight-decay twin of toy_fixnorm_adamw.py for BO+WD and ASHA+WD: a plain FC
# classifier and AdamW with decoupled weight decay (the value they tune).
_base_ = './toy_wd.py'

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05))
