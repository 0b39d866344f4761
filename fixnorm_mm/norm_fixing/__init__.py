"""Algo 1 (norm fixing), the selection of the fixed set, and its life cycle."""
from .controller import FixNormController, check_no_weight_decay
from .fixer import NormFixer
from .selection import (NormFollowTracer, Selection, drop_zero_norm, format_table,
                        select_fixed_params, uses_input_statistics)

__all__ = ['NormFixer', 'NormFollowTracer', 'Selection', 'select_fixed_params',
           'drop_zero_norm', 'format_table', 'uses_input_statistics',
           'FixNormController', 'check_no_weight_decay']
