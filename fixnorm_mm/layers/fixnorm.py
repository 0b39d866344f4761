"""FixNorm-FC (Eq. 10) and FixNorm-Conv (Eq. 29) of the FixNorm paper.

    FixNorm-FC(x; W, g, alpha)   = x^T W / ||W||_2 * min(g, alpha * sqrt(#class))   (10)
    FixNorm-Conv(x; W, g, alpha) = Conv(x, W) / ||W||_2 * min(g, alpha * sqrt(c_out)) (29)

||W||_2 is the norm of the whole weight tensor and g one learnable scalar; the
cap ``alpha * sqrt(C_out)`` bounds g and with it the cross-boundary risk
(Sec. 2.3). The weight direction is scale-invariant, so W belongs to the set
whose global norm Algo 1 keeps fixed. A bias, if any, is added after scaling
(RetinaNet's prior-probability bias keeps its meaning); Eq. 10 itself has none.

g = ||W|| whenever W is initialised or loaded (see ``normalized_layer``), so a
fresh layer computes what its plain twin computes while ||W|| is below the
cap. The backward is analytic (``functional``): dL/dg is zero above the cap.
"""
import math

import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn

from .functional import normalized_conv2d, normalized_linear
from .normalized_layer import NormalizedLayer


def check_alpha(alpha, key: str = 'FixNorm: alpha') -> float:
    """``alpha`` as a float, or an error naming ``key`` (the config key where
    the caller knows it: ``model.head.alpha``)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
            or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f'{key} must be a finite number > 0 (the cap on g is '
                         f'alpha * sqrt(C_out)), got {alpha!r}')
    return float(alpha)


class _FixNormMixin(NormalizedLayer):
    """Shared part of FixNorm-FC and FixNorm-Conv: the cap and the scalar g."""

    per_output = False

    def _init_fixnorm(self, alpha: float) -> None:
        self.alpha = check_alpha(alpha)
        self.cap = self.alpha * math.sqrt(self.weight.shape[0])
        self._init_gain()

    @property
    def effective_scale(self) -> Tensor:
        """min(g, alpha * sqrt(C_out)): the norm the normalised weight gets."""
        return self.g.detach().clamp(max=self.cap)

    def fixnorm_weight(self) -> Tensor:
        """W / ||W|| * min(g, cap): the weight of the equivalent plain layer."""
        return self.folded_weight()

    def extra_repr(self) -> str:
        return super().extra_repr() + f', alpha={self.alpha}, cap={self.cap:.4g}'


@MODELS.register_module()
class FixNormLinear(_FixNormMixin, nn.Linear):
    """FixNorm-FC, Eq. 10: ``x^T W / ||W|| * min(g, alpha * sqrt(out_features)) + b``.

    ``bias=True`` as in ``nn.Linear``; Eq. 10 is ``bias=False``.
    """

    def __init__(self, in_features: int, out_features: int, alpha: float,
                 bias: bool = True, **kwargs) -> None:
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self._init_fixnorm(alpha)

    @classmethod
    def from_plain(cls, linear: nn.Linear, alpha: float) -> 'FixNormLinear':
        """FixNorm-FC with ``linear``'s shape, bias, weights (g = ||W||), device,
        dtype, ``requires_grad`` and mode."""
        return cls._from_plain(linear, alpha=alpha)

    def forward(self, x: Tensor) -> Tensor:
        return normalized_linear(x, self.weight, self.g, self.bias, cap=self.cap)


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

    @classmethod
    def from_plain(cls, conv: nn.Conv2d, alpha: float) -> 'FixNormConv2d':
        """FixNorm-Conv with ``conv``'s shape (stride, padding, dilation, groups,
        padding mode), bias, weights (g = ||W||), device, dtype,
        ``requires_grad`` and mode."""
        return cls._from_plain(conv, alpha=alpha)

    def forward(self, x: Tensor) -> Tensor:
        x, padding = _padded(self, x)
        return normalized_conv2d(x, self.weight, self.g, self.bias, self.stride, padding,
                                 self.dilation, self.groups, cap=self.cap)


def _padded(conv: nn.Conv2d, x: Tensor):
    """``x`` padded as ``conv.padding_mode`` says, and the padding left to the conv."""
    if conv.padding_mode == 'zeros':
        return x, conv.padding
    return F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode), 0
