"""FixNorm for mmpretrain: the head and the backbones of the paper's ImageNet
experiments (Sec. 3, Tables 1, 2 and 5). Import from a config::

    custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.classification'])

Registered in mmpretrain's ``MODELS``:

* ``FixNormClsHead``: a linear head whose FC layer is FixNorm-FC (Eq. 10, no
  bias unless ``bias=True``);
  ``DropoutLinearClsHead``: the plain one with EfficientNet's top dropout.
* ``MobileNetV2SE``: MobileNetV2 with SE, swish and stochastic depth at any
  width ("MobileNetV2x1.12*", "x1.54*").
* ``ResNetV1dSE``: ResNet-D with SE, swish and stochastic depth ("ResNet50-D*").
* ``EfficientNetWNSE``: EfficientNet whose SE layers are WN-FC (App. C, Eq. 6).

The SE FC layers of the first two become WN-FC layers (App. C, Eq. 6: one
scalar g over the whole weight) with
``se_conv_cfg=dict(type='WNConv2d', per_output=False)``, or per-channel WN
layers with ``se_conv_cfg=dict(type='WNConv2d')``.
"""
from .efficientnet_wn_se import EfficientNetWNSE
from .heads import DropoutLinearClsHead, FixNormClsHead
from .mobilenet_v2_se import MobileNetV2SE
from .resnet_se import ResNetV1dSE, SEDropPathBottleneck

__all__ = ['FixNormClsHead', 'DropoutLinearClsHead', 'MobileNetV2SE', 'ResNetV1dSE',
           'SEDropPathBottleneck', 'EfficientNetWNSE']
