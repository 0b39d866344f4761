"""FixNorm for mmdet (paper App. D.3): the RetinaNet head with weight-normalised
convs and a FixNorm-Conv classifier. Import from a config::

    custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.detection'])

The FPN needs no code of its own: ``neck=dict(conv_cfg=dict(type='WNConv2d'))``.
"""
from .retina_head import FixNormRetinaHead, WNRetinaHead

__all__ = ['WNRetinaHead', 'FixNormRetinaHead']
