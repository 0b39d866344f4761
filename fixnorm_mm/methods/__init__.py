"""Old import path of the baselines; they live in :mod:`fixnorm_mm.norm_control`
(configs that still list ``fixnorm_mm.methods`` in ``custom_imports`` keep working)."""
from ..engine.optim_wrapper import EpsShiftedL2OptimWrapper, WRSOptimWrapper
from ..norm_control import (EpsShiftedL2, OutputUnits, PAPER_TAUS, WeightRescaler,
                            apply_method, available_methods, method_fragment,
                            select_unit_invariant, ws_layer_types)

__all__ = ['EpsShiftedL2', 'EpsShiftedL2OptimWrapper', 'WeightRescaler', 'WRSOptimWrapper',
           'select_unit_invariant', 'OutputUnits', 'ws_layer_types', 'PAPER_TAUS',
           'apply_method', 'available_methods', 'method_fragment']
