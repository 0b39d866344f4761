"""EfficientNet whose SE layers are WN-FC layers (FixNorm paper App. C, Eq. 6).

"Experiments in Table 2 also include architectures with SE-blocks, which have
FC layers that are not followed by normalizations. [...] we simply replace
these layers with WN-FC layers and add the weights into the norm-fixing
process." WN-FC is Eq. 6: ``x^T W / ||W||_2 * g``, the norm of the whole
weight and one scalar g (no cap). An SE layer's FC layers are its two 1x1
convs; mmpretrain's ``EfficientNet`` builds them inside ``make_layer``
without a conv type, so this subclass rebuilds them, with the same shapes
and weights, as ``se_conv_cfg``. g = ||W|| whenever W is initialised, so the
network computes exactly what the plain EfficientNet with the same weights
computes.
"""
from typing import Optional

from mmpretrain.models.backbones import EfficientNet
from mmpretrain.models.utils import SELayer
from mmpretrain.registry import MODELS

from ..layers import rebuild_conv

#: App. C's WN-FC (Eq. 6) as an SE conv type; ``dict(type='WNConv2d')`` is
#: weight normalisation per output channel instead.
SE_WN_FC = dict(type='WNConv2d', per_output=False)


@MODELS.register_module()
class EfficientNetWNSE(EfficientNet):
    """mmpretrain's ``EfficientNet`` with the SE convs of type ``se_conv_cfg``.

    Args:
        se_conv_cfg: conv type of every SE layer's two 1x1 convs; default
            ``dict(type='WNConv2d', per_output=False)`` (WN-FC, Eq. 6);
            ``dict(type='WNConv2d')`` normalises each output channel.
        Other arguments are those of mmpretrain's ``EfficientNet``.
    """

    def __init__(self, *args, se_conv_cfg: Optional[dict] = SE_WN_FC, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.se_conv_cfg = se_conv_cfg
        for module in self.modules():
            if isinstance(module, SELayer):
                for conv_module in (module.conv1, module.conv2):
                    conv_module.conv = rebuild_conv(conv_module.conv, se_conv_cfg)
