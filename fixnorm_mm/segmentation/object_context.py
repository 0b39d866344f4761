"""The object context (OC) block of OCNet (Yuan & Wang, 2018, "OCNet: Object
Context Network for Scene Parsing", Sec. 3), the self-attention inside Base-OC.

For a feature map X with N = H * W pixels and C channels:

    Q = K = phi(X)                          phi: 1x1 conv (C -> d) + BN + ReLU;
                                            OCNet shares the query and key transform
    V = W_v X                               1x1 conv (C -> d), no norm
    A_ij = softmax_j(Q_i . K_j / sqrt(d))   object context map: how much pixel j
                                            belongs to the object of pixel i
    context_i = W_o sum_j A_ij V_j          1x1 conv (d -> C), no norm, zero-initialised

This is mmseg's ``SelfAttentionBlock`` with ``share_key_query=True``, one
projection conv each and a norm after the key/query transform only; the
class only adds what FixNorm needs.

FixNorm (paper Sec. 2.2, App. C/D.3): W_v and W_o are followed by no
normalisation (A V is linear in V, and the context is concatenated with X
before the fusion conv), so they are not scale-invariant and stay out of the
fixed set as plain convs. ``projection_conv_cfg=dict(type='WNConv2d')``
weight-normalises them instead, which puts their directions into the fixed set.
"""
from typing import Optional

import torch
from mmcv.cnn import build_conv_layer
from mmengine.model.weight_init import constant_init
from mmseg.models.utils import SelfAttentionBlock
from mmseg.registry import MODELS

from ..layers import NORMALIZED_LAYERS


@MODELS.register_module()
class ObjectContextBlock(SelfAttentionBlock):
    """OCNet's object context block: ``forward(x) -> context`` (same shape as x).

    Args:
        in_channels: C, channels of the input and of the returned context.
        key_channels: d, channels of the query/key/value transforms (OCNet's
            Base-OC uses key_channels = value_channels = C / 2 = 256).
        conv_cfg, norm_cfg, act_cfg: of the query/key transform (a ConvModule).
        projection_conv_cfg: conv config of the value and output projections,
            which no norm follows. ``None``: plain ``nn.Conv2d`` (OCNet).
    """

    def __init__(self, in_channels: int, key_channels: int,
                 conv_cfg: Optional[dict] = None, norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 projection_conv_cfg: Optional[dict] = None) -> None:
        super().__init__(
            key_in_channels=in_channels, query_in_channels=in_channels,
            channels=key_channels, out_channels=in_channels,
            share_key_query=True, query_downsample=None, key_downsample=None,
            key_query_num_convs=1, value_out_num_convs=1,
            key_query_norm=True, value_out_norm=False,
            matmul_norm=True,  # the 1 / sqrt(d) of OCNet's attention
            with_out=True, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.projection_conv_cfg = projection_conv_cfg
        if projection_conv_cfg is not None:
            # SelfAttentionBlock builds these two as nn.Conv2d whatever conv_cfg
            # says (conv_cfg is meant for convs followed by a norm)
            self.value_project = build_conv_layer(projection_conv_cfg, in_channels,
                                                  key_channels, 1)
            self.out_project = build_conv_layer(projection_conv_cfg, key_channels,
                                                in_channels, 1)
            self.init_weights()

    def init_weights(self) -> None:
        """Zero-initialise the output projection W_o, as OCNet does: the block
        starts by adding no context."""
        out = self.out_project
        if isinstance(out, NORMALIZED_LAYERS):
            # W = g v / ||v||: with v = 0 both dW/dv (prop. to g / ||v||) and
            # dW/dg (= v / ||v||) vanish and the layer would stay dead. Keep the
            # random direction v and zero the gain: the output is zero all the
            # same and g learns. A g set from outside is never re-synchronised
            # to ||v|| (not by init_weights, an init_cfg or a forward).
            with torch.no_grad():
                out.g.zero_()
                if out.bias is not None:
                    out.bias.zero_()
        else:
            constant_init(out, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, x)
