"""EfficientNet whose SE layers are weight-normalised (FixNorm paper App. C).

"Experiments in Table 2 also include architectures with SE-blocks, which have
FC layers that are not followed by normalizations. [...] we simply replace
these layers with WN-FC layers and add the weights into the norm-fixing
process." An SE layer's FC layers are its two 1x1 convs; mmpretrain's
``EfficientNet`` builds them inside ``make_layer`` without a conv type, so
this subclass rebuilds them, with the same shapes, as ``se_conv_cfg``.
At the first forward a WN layer's g equals ||v|| per output unit, so the
network computes exactly what the plain EfficientNet with the same weights
computes.
"""
from typing import Optional

from mmcv.cnn import build_conv_layer
from mmpretrain.models.backbones import EfficientNet
from mmpretrain.models.utils import SELayer
from mmpretrain.registry import MODELS
from torch import nn


def rebuild_conv(conv: nn.Conv2d, conv_cfg: Optional[dict]) -> nn.Module:
    """A conv of ``conv_cfg``'s type with ``conv``'s shape and weights."""
    new = build_conv_layer(conv_cfg, conv.in_channels, conv.out_channels,
                           conv.kernel_size, stride=conv.stride, padding=conv.padding,
                           dilation=conv.dilation, groups=conv.groups,
                           bias=conv.bias is not None)
    new.load_state_dict(conv.state_dict(), strict=False)  # a WN layer adds g
    return new


@MODELS.register_module()
class EfficientNetWNSE(EfficientNet):
    """mmpretrain's ``EfficientNet`` with the SE convs of type ``se_conv_cfg``.

    Args:
        se_conv_cfg: conv type of every SE layer's two 1x1 convs; default
            ``dict(type='WNConv2d')``.
        Other arguments are those of mmpretrain's ``EfficientNet``.
    """

    def __init__(self, *args, se_conv_cfg: Optional[dict] = dict(type='WNConv2d'),
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.se_conv_cfg = se_conv_cfg
        for module in self.modules():
            if isinstance(module, SELayer):
                for conv_module in (module.conv1, module.conv2):
                    conv_module.conv = rebuild_conv(conv_module.conv, se_conv_cfg)
