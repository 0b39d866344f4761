"""Registries of the ``fixnorm_mm`` scope.

* :data:`NORM_CONTROLLERS`: the norm-control methods (FixNorm, Hyperball,
  epsilon-shifted L2, WRS, weight decay), built with ``norm_control=dict(type=...)``. Its own
  root: a controller is no model, hook or optimizer.
* :data:`TRACING_TASKS`: what ``FixNormModel`` knows of each task
  (detection, segmentation, classification: :mod:`fixnorm_mm.tracing`).
* Children of mmengine's root registries (MODELS, HOOKS, ...): configs that
  inherit ``fixnorm_mm::...`` get ``_scope_='fixnorm_mm'`` on the dicts they
  introduce, and mmengine then looks in these. They hold nothing themselves:
  every lookup falls through to mmengine's roots, where the plugin registers
  its components so that mmpretrain, mmdet and mmseg configs can all name them.

Every registry names its ``locations``, so a lookup imports what registers
into it instead of guessing (mmengine's fallback to ``fixnorm_mm.utils``
would log a spurious 'not installed' warning).

Importing this module also registers the ``fixnorm_mm`` config scope with
mmengine (``mmengine.config.utils.MODULE2PACKAGE``), so that
``_base_ = 'fixnorm_mm::coco/...'`` resolves in processes that import the
plugin before they load a config (docs/DEVELOPING.md says which tools do).
"""
import os.path as osp

from mmengine.config import utils as _config_utils
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import Registry

_LOCATIONS = ['fixnorm_mm']

#: ``<package>/.mim``: the configs (``configs/``, a link to the repository's
#: ``configs/`` in a source checkout), ``model-index.yml`` and the mim tools
MIM_DIR = osp.join(osp.dirname(osp.abspath(__file__)), '.mim')
#: where ``fixnorm_mm::<path>`` points
CONFIG_ROOT = osp.join(MIM_DIR, 'configs')

NORM_CONTROLLERS = Registry('norm controller', scope='fixnorm_mm',
                            locations=['fixnorm_mm.norm_control'])
#: the tasks FixNormModel knows how to trace (a synthetic batch through the
#: model's own loss path) and whose heads' classifiers it finds
TRACING_TASKS = Registry('tracing task', scope='fixnorm_mm', locations=['fixnorm_mm.tracing'])
MODELS = Registry('model', parent=MMENGINE_MODELS, scope='fixnorm_mm', locations=_LOCATIONS)
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='fixnorm_mm', locations=_LOCATIONS)
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, scope='fixnorm_mm',
                      locations=_LOCATIONS)
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='fixnorm_mm',
                          locations=_LOCATIONS)
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope='fixnorm_mm', locations=_LOCATIONS)
PARAM_SCHEDULERS = Registry('parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS,
                            scope='fixnorm_mm', locations=_LOCATIONS)

# `_base_ = 'fixnorm_mm::...'`: mmengine resolves `pkg::` through this table
# and the package's `.mim/configs` folder. The value names a module of the
# package, not its distribution: mmengine then finds the folder by import
# (`find_spec`), which is right for every kind of install (for an editable,
# PEP 660 install the distribution's location is site-packages).
_config_utils.MODULE2PACKAGE.setdefault('fixnorm_mm', 'fixnorm_mm.version')
