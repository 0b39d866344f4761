"""fixnorm_mm: FixNorm (Zhou, Sun & Zhong, ICLR 2021 submission) for OpenMMLab.

Importing the package registers the task-independent parts in mmengine's root
registries (layers in ``MODELS``, optim wrappers and constructor, hooks), lets
configs say ``_base_ = 'fixnorm_mm::...'``, and allow-lists mmengine's
checkpoint types for safe loading. Task parts register on import of
``fixnorm_mm.classification`` / ``.detection`` / ``.segmentation``.
"""
from mmengine.config import utils as _config_utils

from . import registry  # noqa: F401  (the fixnorm_mm scope)
from .convert import convert_to_fixnorm  # registers the FixNormModel builder
from .fold import fold_fixnorm
from .engine import (FixNormAmpOptimWrapper, FixNormHook, FixNormOptimWrapper,
                     FixNormOptimWrapperConstructor, MCBRHook,
                     allow_mmengine_checkpoints)
from .layers import FixNormConv2d, FixNormLinear, WNConv2d, WNLinear
from .mcbr import mcbr
from .norm_fixing import NormFixer
from .version import __version__

# `_base_ = 'fixnorm_mm::coco/...'`: mmengine resolves `pkg::` through this map
# and the package's `.mim/configs` folder. The value names a module of the package,
# not its distribution: mmengine then finds the folder by import (`find_spec`),
# which is right for every kind of install, where the distribution's location is
# site-packages even for an editable (PEP 660) install.
_config_utils.MODULE2PACKAGE.setdefault('fixnorm_mm', 'fixnorm_mm.version')
allow_mmengine_checkpoints()

__all__ = ['FixNormLinear', 'FixNormConv2d', 'WNConv2d', 'WNLinear', 'NormFixer',
           'FixNormOptimWrapper', 'FixNormAmpOptimWrapper',
           'FixNormOptimWrapperConstructor', 'FixNormHook', 'MCBRHook', 'mcbr',
           'convert_to_fixnorm', 'fold_fixnorm', '__version__']
