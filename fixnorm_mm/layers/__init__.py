"""FixNorm-FC/Conv (Eq. 10, 29) and weight-normalised layers (WN-FC, Eq. 6)."""
from .fixnorm import FixNormConv2d, FixNormLinear
from .functional import normalized_conv2d, normalized_linear
from .normalize import gain_over_norm, normalized_weight, tensor_norm
from .normalized_layer import NormalizedLayer, gain_snapshot, settle_gains, sync_gains
from .rebuild import rebuild_conv
from .weight_norm import WNConv2d, WNLinear

NORMALIZED_LAYERS = (FixNormLinear, FixNormConv2d, WNConv2d, WNLinear)

__all__ = ['FixNormLinear', 'FixNormConv2d', 'WNConv2d', 'WNLinear', 'NormalizedLayer',
           'NORMALIZED_LAYERS', 'sync_gains', 'gain_snapshot', 'settle_gains', 'rebuild_conv',
           'normalized_linear', 'normalized_conv2d', 'normalized_weight', 'gain_over_norm',
           'tensor_norm']
