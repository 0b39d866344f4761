"""Old import path of the norm-fixing core; it lives in :mod:`fixnorm_mm.norm_control`."""
from ..norm_control import (NormFixer, NormFollowTracer, Selection,
                            drop_zero_norm, select_fixed_params, uses_input_statistics)
from ..norm_control.fixnorm import FixNormController

__all__ = ['NormFixer', 'NormFollowTracer', 'Selection', 'select_fixed_params',
           'drop_zero_norm', 'uses_input_statistics', 'FixNormController']
