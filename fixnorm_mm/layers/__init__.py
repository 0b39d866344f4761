"""FixNorm-FC/Conv (Eq. 10, 29) and weight-normalised layers."""
from .fixnorm import FixNormConv2d, FixNormLinear
from .normalize import normalized_weight, weight_norm
from .weight_norm import WNConv2d, WNLinear

NORMALIZED_LAYERS = (FixNormLinear, FixNormConv2d, WNConv2d, WNLinear)

__all__ = ['FixNormLinear', 'FixNormConv2d', 'WNConv2d', 'WNLinear',
           'NORMALIZED_LAYERS', 'normalized_weight', 'weight_norm']
