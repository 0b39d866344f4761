"""mmsegmentation part of fixnorm_mm: the Base-OC head of OCNet (Yuan & Wang,
2018), the baseline of the FixNorm paper's Cityscapes experiments (App. D.2,
Table 3), with a configurable pixel classifier so that FixNorm configs make it
a FixNorm-Conv (Eq. 29), and OCNet's class-weighted cross-entropy.

Import it from a config: ``custom_imports = dict(imports=['fixnorm_mm',
'fixnorm_mm.segmentation'])``. Modules are registered in mmseg's ``MODELS``
so that configs with ``default_scope='mmseg'`` find them.
"""
from .base_oc_head import BaseOCHead, build_pixel_classifier
from .class_weighted_loss import ClassWeightedCrossEntropyLoss
from .object_context import ObjectContextBlock

__all__ = ['BaseOCHead', 'ObjectContextBlock', 'build_pixel_classifier',
           'ClassWeightedCrossEntropyLoss']
