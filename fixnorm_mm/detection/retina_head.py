"""RetinaNet heads of the FixNorm paper's COCO experiments (App. D.3, Table 4).

"we add Weight Normalization layers to all the convolution layers that are
not followed by normalizations (include layers in FPN and classification
subnet and bounding-box prediction subnet), for all the models. We also
replace the last convolution layer of the classification subnet with
FixNorm-Conv when trained with our FixNorm method. The last convolution layer
of the bounding-box prediction subnet [...] does not suffer from the problem
identified in section 2.3, so we do not replace it with FixNorm-Conv."

Hence two heads, both mmdet ``RetinaHead`` with its anchors, losses and
initialisation untouched:

* :class:`WNRetinaHead` (the baselines): every conv is built from
  ``conv_cfg`` (default ``WNConv2d``): the stacked subnet convs, ``retina_cls``
  and ``retina_reg``.
* :class:`FixNormRetinaHead` (FixNorm-tune rows): the same, but ``retina_cls``
  is FixNorm-Conv (Eq. 29) with the cap ``alpha * sqrt(c_out)``, where
  ``c_out = num_anchors * num_classes``: the classifier scores every anchor
  of every position for every class, so all of its output channels are
  classes in the sense of Sec. 2.3.

The focal-loss prior-probability bias ``-log((1 - pi) / pi)`` (mmdet's
``init_cfg`` override on ``retina_cls``) is kept: FixNorm-Conv adds its bias
after scaling. The convs are rebuilt from mmdet's with ``from_plain`` /
``rebuild_conv`` (same stride, padding, dilation, groups), and every layer's
g is set to ||W|| right after mmdet's ``init_cfg`` initialised W (see
``fixnorm_mm/layers/normalized_layer.py``), so after ``init_weights()`` both
heads compute exactly what the plain ``RetinaHead`` with the same weights
computes.
"""
from typing import Optional

from mmdet.models.dense_heads import RetinaHead
from mmdet.registry import MODELS
from torch import nn

from ..config_keys import accepted_keys, check_keys
from ..layers import FixNormConv2d, rebuild_conv
from ..layers.fixnorm import check_alpha

#: where mmdet's detectors take their dense head: errors name ``model.bbox_head.<key>``
HEAD_KEY = 'model.bbox_head'


@MODELS.register_module()
class WNRetinaHead(RetinaHead):
    """``RetinaHead`` whose convs are all weight-normalised (App. D.3).

    Args:
        conv_cfg: type of every conv of the head, the final ``retina_cls`` and
            ``retina_reg`` included. Default ``dict(type='WNConv2d')``.
        Other arguments are those of mmdet's ``RetinaHead``.
    """

    def __init__(self, num_classes: int, in_channels: int,
                 conv_cfg: Optional[dict] = dict(type='WNConv2d'), **kwargs) -> None:
        check_keys(HEAD_KEY, kwargs, accepted_keys(type(self)), type(self).__name__)
        super().__init__(num_classes, in_channels, conv_cfg=conv_cfg, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        self.retina_cls = self._classifier(self.retina_cls)
        # regression is not classification: no cross-boundary risk, no FixNorm
        self.retina_reg = rebuild_conv(self.retina_reg, self.conv_cfg)

    def _classifier(self, plain: nn.Conv2d) -> nn.Module:
        """``retina_cls`` rebuilt: the same shape (dilation and groups too)."""
        return rebuild_conv(plain, self.conv_cfg)


@MODELS.register_module()
class FixNormRetinaHead(WNRetinaHead):
    """:class:`WNRetinaHead` whose classifier ``retina_cls`` is FixNorm-Conv:

        retina_cls(x) = Conv(x, W) / ||W||_2 * min(g, alpha * sqrt(A * K)) + b   (29)

    with A anchors per position and K classes (``c_out = A * K``).

    Errors name the config key ``model.bbox_head.<key>`` (mmdet's place of
    the head); a misspelt option gets the nearest valid one.

    Args:
        alpha: FixNorm's alpha (Table 4: 0.5); not the focal loss's alpha,
            which stays in ``loss_cls``.
        Other arguments are those of :class:`WNRetinaHead`.
    """

    def __init__(self, num_classes: int, in_channels: int, alpha: float = 1.0,
                 **kwargs) -> None:
        # read by _init_layers, which RetinaHead.__init__ calls
        self.alpha = check_alpha(alpha, f'{HEAD_KEY}.alpha')
        super().__init__(num_classes, in_channels, **kwargs)

    def _classifier(self, plain: nn.Conv2d) -> nn.Module:
        return FixNormConv2d.from_plain(plain, alpha=self.alpha)
