"""Rebuild an existing conv as another mmcv conv type (``conv_cfg``).

Heads and backbones that build their convs without a conv type (mmdet's
``retina_cls``, mmpretrain's EfficientNet SE layers) are made FixNorm/WN by
rebuilding those convs after construction. A FixNorm/WN type goes through its
``from_plain`` (g = ||W||); any other registered conv type is built with the
same arguments and gets the weights. Either way the new conv keeps the old
one's shape (stride, padding, dilation, groups, padding mode), bias, weights,
device, dtype, ``requires_grad`` and train/eval mode.
"""
import inspect
from typing import Optional

import torch
from mmengine.registry import MODELS
from torch import nn

from .normalized_layer import NormalizedLayer


def rebuild_conv(conv: nn.Conv2d, conv_cfg: Optional[dict]) -> nn.Module:
    """``conv`` as a conv of ``conv_cfg``'s type (``None``: ``conv`` itself)."""
    if conv_cfg is None:
        return conv
    if not isinstance(conv_cfg, dict) or 'type' not in conv_cfg:
        raise TypeError(f'conv_cfg must be a dict with a type, got {conv_cfg!r}')
    cfg = dict(conv_cfg)
    layer_type = cfg.pop('type')
    cls = layer_type if inspect.isclass(layer_type) else MODELS.get(layer_type)
    if cls is None:
        raise KeyError(f'conv_cfg type {layer_type!r} is not a registered conv layer')
    if issubclass(cls, NormalizedLayer):
        return cls.from_plain(conv, **cfg)
    if conv.padding_mode != 'zeros':
        cfg['padding_mode'] = conv.padding_mode
    new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
              padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
              bias=conv.bias is not None, **cfg)
    new.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(conv.weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    new.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        new.bias.requires_grad_(conv.bias.requires_grad)
    new.train(conv.training)
    return new
