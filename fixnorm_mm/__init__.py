"""fixnorm_mm: FixNorm (Zhou, Sun & Zhong, ICLR 2021 submission) for OpenMMLab.

Importing the package only registers things:

* the task-independent components in mmengine's root registries (layers in
  ``MODELS``, the norm-control constructor and legacy optim wrappers, hooks,
  the ``FixNormModel`` builder) and the norm-control methods in
  ``fixnorm_mm.registry.NORM_CONTROLLERS``;
* the ``fixnorm_mm`` config scope, so that ``_base_ = 'fixnorm_mm::...'``
  resolves (``fixnorm_mm.registry``);
* mmengine's checkpoint types in torch's safe-loading allow-list
  (``fixnorm_mm.engine.checkpoint``), so that ``resume=True`` works with
  ``weights_only=True``.

Task parts register on import of ``fixnorm_mm.classification`` /
``.detection`` / ``.segmentation``; the CPU launcher is the tools' business
(``fixnorm_mm.engine.launch``).
"""
from . import registry  # noqa: F401  (the fixnorm_mm scope and NORM_CONTROLLERS)
from . import norm_control  # noqa: F401  (registers the methods)
from .convert import convert_to_fixnorm  # registers the FixNormModel builder
from .engine import (FixNormAmpOptimWrapper, FixNormHook, FixNormOptimWrapper,
                     FixNormOptimWrapperConstructor, MCBRHook, NormControlHook,
                     NormControlOptimWrapperConstructor, allow_mmengine_checkpoints)
from .fold import fold_fixnorm
from .layers import FixNormConv2d, FixNormLinear, WNConv2d, WNLinear
from .mcbr import mcbr
from .norm_control import NormFixer
from .version import __version__

allow_mmengine_checkpoints()

__all__ = ['FixNormLinear', 'FixNormConv2d', 'WNConv2d', 'WNLinear', 'NormFixer',
           'NormControlOptimWrapperConstructor', 'NormControlHook',
           'FixNormOptimWrapper', 'FixNormAmpOptimWrapper',
           'FixNormOptimWrapperConstructor', 'FixNormHook', 'MCBRHook', 'mcbr',
           'convert_to_fixnorm', 'fold_fixnorm', '__version__']
