"""ResNet-D with EfficientNet's tricks: "ResNet50-D*" of the FixNorm paper's
Table 2 (28.1M parameters) and, with GroupNorm, Table 5.

Sec. 3.2 applies to ResNet50-D "SE-layer, swish activation, stochastic depth
training and AutoAugment". The network is mmpretrain's ``ResNetV1d`` (deep
stem, average-pool downsampling) whose bottlenecks get an SE layer on the
residual branch, as in SE-ResNet (Hu et al. 2018; squeeze ratio 16, which
gives the 28.1M of Table 2), whose every activation is swish (stem, blocks,
the SE layer's squeeze), and whose residual branches are dropped by
stochastic depth. With ``se_conv_cfg=dict(type='WNConv2d', per_output=False)``
the SE FC layers are WN-FC layers (Eq. 6: the whole weight's norm, one scalar
g), so that they join FixNorm's fixed set (paper App. C);
``dict(type='WNConv2d')`` normalises each output channel instead.
"""
from typing import Optional

import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer
from mmpretrain.models.backbones import ResNetV1d
from mmpretrain.models.backbones.resnet import Bottleneck, ResLayer
from mmpretrain.models.utils import SELayer
from mmpretrain.registry import MODELS
from torch import Tensor


class SEDropPathBottleneck(Bottleneck):
    """Bottleneck + SE on the residual branch + stochastic depth.

    mmpretrain's ``SEBottleneck`` builds a ReLU SE layer of plain convs and
    its forward skips ``drop_path``; this one takes the SE layer's conv type
    and activation and drops the (SE-scaled) residual branch.
    """

    def __init__(self, in_channels: int, out_channels: int, se_ratio: int = 16,
                 se_conv_cfg: Optional[dict] = None,
                 act_cfg: dict = dict(type='ReLU', inplace=True), **kwargs) -> None:
        super().__init__(in_channels, out_channels, act_cfg=act_cfg, **kwargs)
        self.se_layer = SELayer(out_channels, ratio=se_ratio, conv_cfg=se_conv_cfg,
                                act_cfg=(act_cfg, dict(type='Sigmoid')))

    def forward(self, x: Tensor) -> Tensor:

        def _inner_forward(x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.norm1(self.conv1(x)))
            out = self.relu(self.norm2(self.conv2(out)))
            out = self.se_layer(self.norm3(self.conv3(out)))
            return self.drop_path(out) + identity

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x)
        else:
            out = _inner_forward(x)
        return self.relu(out)


@MODELS.register_module()
class ResNetV1dSE(ResNetV1d):
    """ResNet-D + SE + swish + stochastic depth ("ResNet50-D*").

    Args:
        depth: 50, 101 or 152.
        se_ratio: squeeze ratio of the SE layers (channels // se_ratio).
        se_conv_cfg: conv type of the SE layers' two 1x1 convs (their FC
            layers); ``dict(type='WNConv2d', per_output=False)`` (WN-FC,
            Eq. 6) for FixNorm; ``None``: plain convs.
        act_cfg: activation of the stem, the blocks and the SE squeeze.
        drop_path_rate: stochastic depth rate of the last block, rising
            linearly from 0 (mmpretrain's ResNet rule).
        Other arguments are those of mmpretrain's ``ResNetV1d``, e.g.
        ``norm_cfg=dict(type='GN', num_groups=32)`` for Table 5.
    """

    arch_settings = {
        50: (SEDropPathBottleneck, (3, 4, 6, 3)),
        101: (SEDropPathBottleneck, (3, 4, 23, 3)),
        152: (SEDropPathBottleneck, (3, 8, 36, 3)),
    }

    def __init__(self, depth: int, se_ratio: int = 16,
                 se_conv_cfg: Optional[dict] = None,
                 act_cfg: dict = dict(type='Swish'), **kwargs) -> None:
        if depth not in self.arch_settings:
            raise KeyError(f'ResNetV1dSE: depth must be one of '
                           f'{sorted(self.arch_settings)}, got {depth!r}')
        # read by make_res_layer() and _make_stem_layer(), which ResNet.__init__ calls
        self.se_ratio = se_ratio
        self.se_conv_cfg = se_conv_cfg
        self.act_cfg = act_cfg
        super().__init__(depth=depth, **kwargs)

    def make_res_layer(self, **kwargs) -> ResLayer:
        return ResLayer(se_ratio=self.se_ratio, se_conv_cfg=self.se_conv_cfg,
                        act_cfg=self.act_cfg, **kwargs)

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        super()._make_stem_layer(in_channels, stem_channels)
        # ResNet's deep stem builds its three ConvModules with the default ReLU
        for conv_module in self.stem:
            conv_module.act_cfg = self.act_cfg
            conv_module.activate = build_activation_layer(self.act_cfg)
