# Method switch: per-layer fixed norm (Hoffer et al. 2018, "Norm matters",
# discussed in the FixNorm paper): like FixNorm, but every tensor keeps its
# *own* initial norm instead of the fixed set keeping its global one.
_base_ = ['./fixnorm.py']
optim_wrapper = dict(norm_control=dict(per_layer=True))
