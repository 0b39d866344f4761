"""Weight normalisation as mmcv-compatible layer types: per output unit
(Salimans & Kingma 2016) or of the whole tensor (the paper's WN-FC, Eq. 6).

    W_j = g_j * v_j / ||v_j||     per output unit j (``per_output=True``)
    W   = g * v / ||v||_2         one scalar g, the whole tensor (``per_output=False``)

    WN-FC(x; W, g) = x^T W / ||W||_2 * g                                      (6)

The direction ``v`` (stored as ``weight`` so that mmcv/mmengine initialisers
keep working) is scale-invariant, so it joins the FixNorm fixed set: this is
how the FixNorm paper makes convs that no normalisation follows (FPN, RetinaNet
subnets, App. D.3) and SE-block FC layers (App. C: "we simply replace these
layers with WN-FC layers", i.e. Eq. 6, ``per_output=False``) fit Algo 1.
Eq. 6 is FixNorm-FC (Eq. 10) without the cap. g = ||v|| whenever v is
initialised or loaded (see ``normalized_layer``), so a fresh layer equals its
plain twin whatever initialiser ran. The backward is analytic (``functional``).

Registered in mmengine's root ``MODELS``: ``conv_cfg=dict(type='WNConv2d')``
(or ``dict(type='WNConv2d', per_output=False)``) works in any mmcv
``ConvModule``, FPN or head.
"""
from mmengine.registry import MODELS
from torch import Tensor, nn

from .fixnorm import _padded
from .functional import normalized_conv2d, normalized_linear
from .normalized_layer import NormalizedLayer


class _WeightNormMixin(NormalizedLayer):

    def _init_wn(self, per_output: bool) -> None:
        if not isinstance(per_output, bool):
            raise TypeError(f'{type(self).__name__}: per_output must be True (one g per '
                            f'output unit) or False (one g, WN-FC of Eq. 6), got '
                            f'{per_output!r}')
        self.per_output = per_output
        self._init_gain()

    @property
    def effective_scale(self) -> Tensor:
        return self.g.detach()

    def wn_weight(self) -> Tensor:
        """g * v / ||v||: the weight of the equivalent plain layer."""
        return self.folded_weight()

    def extra_repr(self) -> str:
        return super().extra_repr() + ('' if self.per_output else ', per_output=False')


@MODELS.register_module('WNConv')
@MODELS.register_module()
class WNConv2d(_WeightNormMixin, nn.Conv2d):
    """Weight-normalised ``nn.Conv2d`` (same arguments, plus ``per_output``)."""

    def __init__(self, *args, per_output: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_wn(per_output)

    @classmethod
    def from_plain(cls, conv: nn.Conv2d, per_output: bool = True) -> 'WNConv2d':
        """The WN twin of ``conv``: its shape (stride, padding, dilation,
        groups, padding mode), bias, weights (g = ||v||), device, dtype,
        ``requires_grad`` and mode."""
        return cls._from_plain(conv, per_output=per_output)

    def forward(self, x: Tensor) -> Tensor:
        x, padding = _padded(self, x)
        return normalized_conv2d(x, self.weight, self.g, self.bias, self.stride, padding,
                                 self.dilation, self.groups, per_output=self.per_output)


@MODELS.register_module()
class WNLinear(_WeightNormMixin, nn.Linear):
    """Weight-normalised ``nn.Linear`` (same arguments, plus ``per_output``)."""

    def __init__(self, *args, per_output: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_wn(per_output)

    @classmethod
    def from_plain(cls, linear: nn.Linear, per_output: bool = True) -> 'WNLinear':
        """The WN twin of ``linear``: its shape, bias, weights (g = ||v||),
        device, dtype, ``requires_grad`` and mode."""
        return cls._from_plain(linear, per_output=per_output)

    def forward(self, x: Tensor) -> Tensor:
        return normalized_linear(x, self.weight, self.g, self.bias,
                                 per_output=self.per_output)
