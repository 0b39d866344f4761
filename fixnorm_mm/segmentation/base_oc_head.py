"""Base-OC head of OCNet (Yuan & Wang, 2018, "OCNet: Object Context Network
for Scene Parsing"), the segmentation baseline of the FixNorm paper (App. D.2,
Table 3: ResNet-101 + Base-OC on Cityscapes).

    F   = ReLU(BN(Conv3x3(X)))                 in_channels -> channels (2048 -> 512)
    C   = OC(F)                                object context, see object_context.py
    Y   = ReLU(BN(Conv1x1([C, F])))            fusion of context and features, 2 x 512 -> 512
    out = conv_seg(Dropout(Y))                 pixel classifier, 512 -> #classes

FixNorm (App. D.1): the pixel classifier is a convolution that does the job
of the final FC layer, so FixNorm configs make it a FixNorm-Conv (Eq. 29),
``classifier_cfg=dict(type='FixNormConv2d', alpha=...)``; its weight then
joins the fixed set and g is capped at alpha * sqrt(#classes).
"""
from typing import Optional

import torch
from mmcv.cnn import ConvModule, build_conv_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import Tensor, nn

from ..config_keys import accepted_keys, check_keys
from ..layers import FixNormConv2d
from ..layers.fixnorm import check_alpha
from .object_context import ObjectContextBlock

#: where mmseg's segmentors take their decode head: errors name ``model.decode_head.<key>``
HEAD_KEY = 'model.decode_head'


def build_pixel_classifier(cfg: Optional[dict], in_channels: int, num_classes: int,
                           cfg_key: str = 'classifier_cfg') -> nn.Module:
    """The 1x1 conv that maps features to per-pixel class logits.

    Args:
        cfg: an mmcv conv config, e.g. ``dict(type='FixNormConv2d', alpha=1.0)``
            (Eq. 29, C_out = ``num_classes``); ``None`` gives ``nn.Conv2d``.
        cfg_key: the config key of ``cfg``, for error messages.
    """
    if cfg is not None and not isinstance(cfg, dict):
        raise TypeError(f'{cfg_key} must be a conv config dict or None, got {cfg!r}')
    if cfg is not None and cfg.get('type') in ('FixNormConv2d', 'FixNormConv', FixNormConv2d):
        if 'alpha' not in cfg:
            raise TypeError(f'{cfg_key}.alpha is required by {cfg["type"]} (the cap on g is '
                            'alpha * sqrt(num_classes)), e.g. alpha=1.0')
        check_alpha(cfg['alpha'], f'{cfg_key}.alpha')
    return build_conv_layer(cfg, in_channels, num_classes, kernel_size=1)


@MODELS.register_module()
class BaseOCHead(BaseDecodeHead):
    """Base-OC head of OCNet.

    Errors name the config key ``model.decode_head.<key>`` (mmseg's place of
    the head); a misspelt option gets the nearest valid one.

    Args:
        key_channels: channels of the object context block's query/key/value
            transforms (OCNet: 256 for ``channels=512``).
        projection_conv_cfg: conv config of the value/output projections of
            the object context block, which no norm follows; ``None`` keeps
            OCNet's plain convs (FixNorm then leaves them out of the fixed
            set), ``dict(type='WNConv2d')`` weight-normalises them.
        classifier_cfg: conv config of the pixel classifier ``conv_seg``;
            ``None`` keeps mmseg's ``nn.Conv2d``.
        **kwargs: of mmseg's ``BaseDecodeHead`` (``in_channels``, ``channels``,
            ``num_classes``, ``dropout_ratio``, ``norm_cfg``, ...); ``conv_cfg``,
            ``norm_cfg`` and ``act_cfg`` apply to the convs that a norm follows.
    """

    def __init__(self, key_channels: int = 256,
                 projection_conv_cfg: Optional[dict] = None,
                 classifier_cfg: Optional[dict] = None, **kwargs) -> None:
        check_keys(HEAD_KEY, kwargs, accepted_keys(type(self)), type(self).__name__)
        super().__init__(**kwargs)
        if self.input_transform == 'multiple_select':
            raise ValueError("BaseOCHead takes one feature map: input_transform="
                             "'multiple_select' is not supported")
        self.key_channels = key_channels
        norm_act = dict(conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.context_conv = ConvModule(self.in_channels, self.channels, 3, padding=1,
                                       **norm_act)
        self.object_context = ObjectContextBlock(self.channels, key_channels,
                                                 projection_conv_cfg=projection_conv_cfg,
                                                 **norm_act)
        self.fusion = ConvModule(2 * self.channels, self.channels, 1, **norm_act)
        if classifier_cfg is not None:
            # BaseDecodeHead hard-codes nn.Conv2d; its init_cfg (Normal, std
            # 0.01, override conv_seg) still initialises the replacement, and a
            # FixNorm/WN layer sets g = ||W|| right after (layers/normalized_layer.py).
            self.conv_seg = build_pixel_classifier(classifier_cfg, self.channels,
                                                   self.out_channels,
                                                   f'{HEAD_KEY}.classifier_cfg')

    def forward(self, inputs) -> Tensor:
        x = self._transform_inputs(inputs)
        feats = self.context_conv(x)
        context = self.object_context(feats)
        fused = self.fusion(torch.cat([context, feats], dim=1))  # OCNet's order
        return self.cls_seg(fused)
