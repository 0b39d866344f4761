"""Registries of the ``fixnorm_mm`` scope.

Configs that inherit ``fixnorm_mm::...`` get ``_scope_='fixnorm_mm'`` on the
dicts they introduce; mmengine then looks for ``fixnorm_mm.registry``. These
children of mmengine's root registries hold nothing themselves: every lookup
falls through to the root, where the plugin registers its components so that
mmpretrain, mmdet and mmseg configs can all name them.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='fixnorm_mm')
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='fixnorm_mm')
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, scope='fixnorm_mm')
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='fixnorm_mm')
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope='fixnorm_mm')
PARAM_SCHEDULERS = Registry('parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS,
                            scope='fixnorm_mm')
