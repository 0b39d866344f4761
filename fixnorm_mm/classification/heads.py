"""FixNorm-FC (Eq. 10) as an mmpretrain classification head.

    FixNorm-FC(x; W, g, alpha) = x^T W / ||W||_2 * min(g, alpha * sqrt(#class))   (10)

(no bias: the logits are bounded by the cap alone; ``bias=True`` is an option).

The final FC layer is the one layer of a classifier that no normalisation
follows; Sec. 2.3 shows that what weight decay does there is to bound the
logit scale and with it the cross-boundary risk (MCBR, Eq. 9). FixNorm-FC
makes that bound explicit (``alpha``), and its weight W, being
scale-invariant, joins the set whose global norm Algo 1 keeps fixed.
"""
import numbers
from typing import Optional, Tuple

from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ..config_keys import accepted_keys, check_keys
from ..layers import FixNormLinear
from ..layers.fixnorm import check_alpha

#: where mmpretrain's classifiers take their head: errors name ``model.head.<key>``
HEAD_KEY = 'model.head'


@MODELS.register_module()
class DropoutLinearClsHead(LinearClsHead):
    """``LinearClsHead`` with dropout on the pooled feature before the FC layer
    (EfficientNet's top dropout, 0.2 for B0 and B1). mmpretrain's own
    ``LinearClsHead`` has none, and the paper trains EfficientNet with its
    reference implementation's settings (Sec. 3).

    Args:
        dropout_rate: probability of zeroing a feature in training; 0 makes
            this head exactly ``LinearClsHead``.
        Other arguments are those of ``LinearClsHead``.
    """

    def __init__(self, num_classes: int, in_channels: int, dropout_rate: float = 0.,
                 **kwargs) -> None:
        check_keys(HEAD_KEY, kwargs, accepted_keys(type(self)), type(self).__name__)
        for key, value in (('num_classes', num_classes), ('in_channels', in_channels)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f'{HEAD_KEY}.{key} must be an integer > 0, got {value!r}')
        if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) \
                or not 0 <= dropout_rate < 1:
            raise ValueError(f'{HEAD_KEY}.dropout_rate must be a number in [0, 1), '
                             f'got {dropout_rate!r}')
        super().__init__(num_classes, in_channels, **kwargs)
        self.dropout_rate = dropout_rate
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()

    def forward(self, feats: Tuple[Tensor]) -> Tensor:
        return self.fc(self.dropout(self.pre_logits(feats)))


@MODELS.register_module()
class FixNormClsHead(DropoutLinearClsHead):
    """A linear classification head whose FC layer is FixNorm-FC (Eq. 10).

    Drop-in for ``LinearClsHead`` in any mmpretrain classifier: only ``type``
    and ``alpha`` change in a config. ``fc.weight`` is initialised like the
    plain head's (mmpretrain's ``Normal(std=0.01)`` matches ``FixNormLinear``
    as an ``nn.Linear``) and g = ||W|| right after, so at initialisation the
    head computes what ``LinearClsHead`` (with a zero bias) computes as long
    as ||W|| is below the cap ``alpha * sqrt(num_classes)``.

    Errors name the config key ``model.head.<key>`` (mmpretrain's place of
    the head): a misspelt option gets the nearest valid one.

    Args:
        alpha: the paper's alpha; the cap on g is ``alpha * sqrt(num_classes)``
            (required).
        bias: Eq. 10 has no bias (default ``False``); ``True`` adds one after
            the capped scaling, which the cap does not bound.
        dropout_rate: see :class:`DropoutLinearClsHead`.
        Other arguments are those of ``LinearClsHead``.
    """

    def __init__(self, num_classes: int, in_channels: int, alpha: Optional[float] = None,
                 bias: bool = False, dropout_rate: float = 0., **kwargs) -> None:
        # unknown keys first: a misspelt alpha is reported as a typo, not as missing
        check_keys(HEAD_KEY, kwargs, accepted_keys(type(self)), type(self).__name__)
        if alpha is None:
            raise TypeError(f"{HEAD_KEY}.alpha is required by FixNormClsHead (the cap on g "
                            "is alpha * sqrt(num_classes)), e.g. alpha=0.5")
        alpha = check_alpha(alpha, f'{HEAD_KEY}.alpha')
        if not isinstance(bias, bool):
            raise TypeError(f'{HEAD_KEY}.bias must be True or False, got {bias!r}')
        super().__init__(num_classes, in_channels, dropout_rate=dropout_rate, **kwargs)
        self.fc = FixNormLinear(self.in_channels, self.num_classes, alpha=alpha, bias=bias)

    @property
    def alpha(self) -> float:
        return self.fc.alpha
