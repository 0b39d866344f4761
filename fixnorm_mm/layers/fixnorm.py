"""FixNorm-FC (Eq. 10) and FixNorm-Conv (Eq. 29) of the FixNorm paper.

    FixNorm-FC(x; W, g, alpha)   = x^T W / ||W||_2 * min(g, alpha * sqrt(#class))   (10)
    FixNorm-Conv(x; W, g, alpha) = Conv(x, W) / ||W||_2 * min(g, alpha * sqrt(c_out)) (29)

||W||_2 is the norm of the whole weight tensor and g one learnable scalar; the
cap ``alpha * sqrt(C_out)`` bounds g and with it the cross-boundary risk
(Sec. 2.3). The weight direction is scale-invariant, so W belongs to the set
whose global norm Algo 1 keeps fixed. A bias, if any, is added after scaling
(RetinaNet's prior-probability bias keeps its meaning).

g starts at ||W||: the layer then computes what the plain layer computes (as
long as ||W|| is below the cap). Initialisers such as mmcv's ``normal_init``
overwrite ``weight`` after construction, so g is re-synchronised with the
weight at the first forward, unless it came from a ``state_dict``.
"""
import math

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn

from .normalize import gain_over_norm, normalized_weight, weight_norm


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
            or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(
            f'FixNorm: alpha must be a positive finite number (the cap on g is '
            f'alpha * sqrt(C_out)), got alpha={alpha!r}')
    return float(alpha)


class _GainSync:
    """g = ||W|| at the first forward, unless g was loaded or set by hand.

    A plain Python flag, so the hot path does no host-device synchronisation.
    """
    per_output = False

    def _init_gain(self) -> None:
        self.g = nn.Parameter(weight_norm(self.weight.detach(),
                                          self.per_output).to(self.weight.dtype))
        self._gain_synced = False

    @torch.no_grad()
    def sync_gain(self) -> None:
        """Set g to the current ||W|| (the layer then equals its plain twin)."""
        self.g.copy_(weight_norm(self.weight, self.per_output))
        self._gain_synced = True

    def _maybe_sync_gain(self) -> None:
        if not self._gain_synced:
            self.sync_gain()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + 'g' in state_dict:
            self._gain_synced = True
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class _FixNormMixin(_GainSync):
    """Shared part of FixNorm-FC and FixNorm-Conv: the cap and g."""

    def _init_fixnorm(self, alpha: float) -> None:
        self.alpha = _check_alpha(alpha)
        self.cap = self.alpha * math.sqrt(self.weight.shape[0])
        self._init_gain()

    @property
    def effective_scale(self) -> Tensor:
        """min(g, alpha * sqrt(C_out)): the norm the normalised weight gets."""
        return torch.clamp(self.g.detach(), max=self.cap)

    def fixnorm_weight(self) -> Tensor:
        """W / ||W|| * min(g, cap): the weight of the equivalent plain layer."""
        self._maybe_sync_gain()
        return normalized_weight(self.weight, self.g, per_output=False, cap=self.cap)

    def extra_repr(self) -> str:
        return super().extra_repr() + f', alpha={self.alpha}, cap={self.cap:.4g}'


@MODELS.register_module()
class FixNormLinear(_FixNormMixin, nn.Linear):
    """FixNorm-FC, Eq. 10: ``x^T W / ||W|| * min(g, alpha * sqrt(out_features)) + b``."""

    def __init__(self, in_features: int, out_features: int, alpha: float,
                 bias: bool = True, **kwargs) -> None:
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self._init_fixnorm(alpha)

    def forward(self, x: Tensor) -> Tensor:
        self._maybe_sync_gain()
        scale = gain_over_norm(self.weight, self.g, per_output=False, cap=self.cap)
        # Eq. 10 as written: scale the output, which is smaller than the weight
        # for a classifier (batch x classes vs. features x classes)
        y = F.linear(x, self.weight)
        y = y * scale.to(y.dtype)
        return y if self.bias is None else y + self.bias.to(y.dtype)


@MODELS.register_module('FixNormConv')
@MODELS.register_module()
class FixNormConv2d(_FixNormMixin, nn.Conv2d):
    """FixNorm-Conv, Eq. 29: ``Conv(x, W) / ||W|| * min(g, alpha * sqrt(c_out)) + b``.

    Usable as an mmcv conv type: ``conv_cfg=dict(type='FixNormConv', alpha=1.0)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size,
                 alpha: float, stride=1, padding=0, dilation=1, groups: int = 1,
                 bias: bool = True, **kwargs) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=padding, dilation=dilation, groups=groups,
                         bias=bias, **kwargs)
        self._init_fixnorm(alpha)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.fixnorm_weight(), self.bias)
