"""MobileNetV2 with EfficientNet's tricks: "MobileNetV2x1.12*" and
"MobileNetV2x1.54*" of the FixNorm paper's Table 2.

Sec. 3.2: "We also apply advanced tricks to basic models like MobileNetV2 [...]
These tricks are used by EfficientNet, including SE-layer, swish activation,
stochastic depth training and AutoAugment", and MobileNetV2 is scaled by its
width multiplier "to the same FLOPS" as EfficientNet-B0 (x1.12) and -B1 (x1.54).

The blocks are EfficientNet's (mmpretrain's ``InvertedResidual`` with an SE
layer after the depthwise conv and stochastic depth on the residual branch)
laid out as MobileNetV2's stages; the SE layer squeezes to a quarter of the
block's *input* channels and uses swish then sigmoid, as EfficientNet does.
With ``se_conv_cfg=dict(type='WNConv2d', per_output=False)`` the SE FC layers
are WN-FC layers (Eq. 6: the whole weight's norm, one scalar g), so that they
join FixNorm's fixed set (paper App. C); ``dict(type='WNConv2d')`` normalises
each output channel instead.

Channel widths are ``int(c * widen_factor)``, not rounded to multiples of 8:
with the usual rounding, x1.12 turns the 16- and 24-channel early stages into
24 and 32 channels and costs 446M FLOPs instead of Table 2's 386M, while
truncation gives 4.66M parameters and 380M FLOPs (x1.54: 8.02M, 698M), the
table's 4.7M / 386M and 8.0M / 682M. ``channel_divisor=8`` restores the
rounding of mmpretrain's ``MobileNetV2``.
"""
from typing import Optional

import torch
from mmcv.cnn import ConvModule
from mmpretrain.models.backbones import MobileNetV2
from mmpretrain.models.utils import InvertedResidual, make_divisible
from mmpretrain.registry import MODELS
from torch import nn


@MODELS.register_module()
class MobileNetV2SE(MobileNetV2):
    """MobileNetV2 + SE + swish + stochastic depth, at any width.

    Args:
        widen_factor: MobileNetV2's width multiplier (1.12 and 1.54 in Table 2);
            the last conv has ``int(1280 * widen_factor)`` channels when > 1.
        se_ratio: squeeze channels = ``int(block input channels * se_ratio)``.
        se_conv_cfg: conv type of the SE layer's two 1x1 convs (its FC
            layers); ``dict(type='WNConv2d', per_output=False)`` (WN-FC,
            Eq. 6) for FixNorm; ``None``: plain convs.
        drop_path_rate: stochastic depth rate of the last block, rising
            linearly from 0 over the 17 blocks (EfficientNet's rule).
        channel_divisor: None for ``int(c * widen_factor)`` channels, or round
            them to multiples of this (8 is mmpretrain's MobileNetV2).
        act_cfg: activation everywhere, swish by default.
        Other arguments are those of mmpretrain's ``MobileNetV2``.
    """

    def __init__(self, widen_factor: float = 1., se_ratio: float = 0.25,
                 se_conv_cfg: Optional[dict] = None, drop_path_rate: float = 0.,
                 channel_divisor: Optional[int] = None,
                 act_cfg: dict = dict(type='Swish'), **kwargs) -> None:
        if not 0 < se_ratio <= 1:
            raise ValueError(f'MobileNetV2SE: se_ratio must be in (0, 1], got {se_ratio!r}')
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'MobileNetV2SE: drop_path_rate must be in [0, 1), '
                             f'got {drop_path_rate!r}')
        # read by make_layer(), which MobileNetV2.__init__ calls once per stage
        self.se_ratio = se_ratio
        self.se_conv_cfg = se_conv_cfg
        self.channel_divisor = channel_divisor
        num_blocks = sum(setting[2] for setting in self.arch_settings)
        self.drop_path_rates = torch.linspace(0, drop_path_rate, num_blocks).tolist()
        self._blocks_built = 0
        self._stages_built = 0
        super().__init__(widen_factor=widen_factor, act_cfg=act_cfg, **kwargs)

    def width(self, channels: int) -> int:
        """Channels of a layer that has ``channels`` at width 1."""
        if self.channel_divisor is None:
            return max(1, int(channels * self.widen_factor))
        return make_divisible(channels * self.widen_factor, self.channel_divisor)

    def make_layer(self, out_channels: int, num_blocks: int, stride: int,
                   expand_ratio: int) -> nn.Sequential:
        # MobileNetV2.__init__ passes widths rounded to multiples of 8 and has
        # built the stem that way: redo both with our rounding.
        if self._stages_built == 0 and self.width(32) != self.in_channels:
            self.in_channels = self.width(32)
            self.conv1 = ConvModule(3, self.in_channels, 3, stride=2, padding=1,
                                    conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
                                    act_cfg=self.act_cfg)
        out_channels = self.width(self.arch_settings[self._stages_built][1])
        self._stages_built += 1

        layers = []
        for i in range(num_blocks):
            mid_channels = int(round(self.in_channels * expand_ratio))
            se_cfg = dict(
                channels=mid_channels,
                squeeze_channels=max(1, int(self.in_channels * self.se_ratio)),
                conv_cfg=self.se_conv_cfg,
                act_cfg=(self.act_cfg, dict(type='Sigmoid')))
            layers.append(InvertedResidual(
                self.in_channels, out_channels, mid_channels, kernel_size=3,
                stride=stride if i == 0 else 1, se_cfg=se_cfg,
                conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg,
                drop_path_rate=self.drop_path_rates[self._blocks_built],
                with_cp=self.with_cp))
            self.in_channels = out_channels
            self._blocks_built += 1
        return nn.Sequential(*layers)
