# Method switch: FixNorm (Algo 1 of the FixNorm paper): no weight decay; after
# every optimizer step the *global* norm of all scale-invariant weights is
# rescaled to its value at the start of training. The project's FixNorm
# fragment, unchanged.
_base_ = ['../fixnorm.py']
