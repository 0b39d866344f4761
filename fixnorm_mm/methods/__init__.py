"""The norm-control methods FixNorm is compared with, as optim wrappers.

* :mod:`.eps_shifted_l2`: epsilon-shifted L2 on WN / WS weights (Li et al., Eq. 25-28).
* :mod:`.weight_rescaling`: WRS, unit-norm kernels every tau steps (Liu et al., Sec. 5).
* per-layer fixed norm (Hoffer et al. 2018) is an option of the core:
  ``FixNormOptimWrapper(fixnorm=dict(per_layer=True))``.
* :mod:`.switch`: apply one method's config fragment over any model config.

Import from configs with ``custom_imports=dict(imports=['fixnorm_mm.methods'])``
(the fragments under ``configs/_base_/methods/`` do).
"""
from .base import (NormControlOptimWrapperConstructor, NormControlWrapperMixin,
                   select_unit_invariant)
from .eps_shifted_l2 import EpsShiftedL2, EpsShiftedL2OptimWrapper, ws_layer_types
from .switch import METHODS, apply_method, method_fragment
from .units import OutputUnits
from .weight_rescaling import PAPER_TAUS, WeightRescaler, WRSOptimWrapper

__all__ = ['EpsShiftedL2', 'EpsShiftedL2OptimWrapper', 'WeightRescaler', 'WRSOptimWrapper',
           'NormControlOptimWrapperConstructor', 'NormControlWrapperMixin',
           'select_unit_invariant', 'OutputUnits', 'ws_layer_types', 'PAPER_TAUS',
           'METHODS', 'apply_method', 'method_fragment']
