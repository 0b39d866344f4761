"""Weight normalisation (Salimans & Kingma 2016) as mmcv-compatible layer types.

    W = g * v / ||v||      (one g and one norm per output unit)

The direction ``v`` (stored as ``weight`` so that mmcv/mmengine initialisers
keep working) is scale-invariant, so it joins the FixNorm fixed set: this is
how the FixNorm paper makes convs that no normalisation follows (FPN, RetinaNet
subnets, App. D.3) and SE-block FC layers (App. C) fit Algo 1. ``g`` starts at
||v||, re-synchronised at the first forward like FixNorm's g, so a fresh layer
equals its plain twin whatever initialiser ran.

Registered in mmengine's root ``MODELS``: ``conv_cfg=dict(type='WNConv2d')``
works in any mmcv ``ConvModule``, FPN or head.
"""
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import Tensor, nn

from .fixnorm import _GainSync
from .normalize import normalized_weight


class _WeightNormMixin(_GainSync):
    per_output = True

    @property
    def effective_scale(self) -> Tensor:
        return self.g.detach()

    def wn_weight(self) -> Tensor:
        """g * v / ||v||: the weight of the equivalent plain layer."""
        self._maybe_sync_gain()
        return normalized_weight(self.weight, self.g, per_output=True)


@MODELS.register_module('WNConv')
@MODELS.register_module()
class WNConv2d(_WeightNormMixin, nn.Conv2d):
    """Weight-normalised ``nn.Conv2d`` (same arguments)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_gain()

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.wn_weight(), self.bias)


@MODELS.register_module()
class WNLinear(_WeightNormMixin, nn.Linear):
    """Weight-normalised ``nn.Linear`` (same arguments), e.g. for SE blocks."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_gain()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.wn_weight(), self.bias)
