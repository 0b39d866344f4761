# toy_fixnorm.py with AdamW instead of SGD-Nesterov: FixNorm (Algo 1 + FixNorm-FC) with an
# Adam-family optimizer, for FixNorm-tune's log-scale lr probes (docs/tuning.md, "AdamW").
# No weight decay: FixNorm replaces it (and decay on a fixed weight is an error).
_base_ = './toy_fixnorm.py'

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0))
