"""One switch between the norm-control methods, on the same model config.

The method fragments (``configs/_base_/methods/{wd,fixnorm,fixnorm_per_layer,
eps_l2,wrs}.py``) say only what a method changes: the optim wrapper's type,
its constructor, the weight decay, the method's own options. mmengine forbids
two ``_base_`` files that define the same key, and every model config defines
``optim_wrapper``, so a fragment cannot sit beside one as a second base; it is
applied *over* a loaded config instead, the way ``--cfg-options`` is::

    cfg = apply_method(Config.fromfile('fixnorm_mm::imagenet/....py'), 'wrs')

What stays: the optimizer (type, lr, momentum, ...), ``paramwise_cfg``,
``clip_grad``, ``accumulative_counts``, AMP, the schedule, the model, the data.
What goes: the previous method's wrapper type, constructor and options
(``fixnorm``, ``eps_shifted_l2``, ``wrs``) and a ``FixNormHook``.
"""
import copy
import os.path as osp
from typing import Union

from mmengine.config import Config

CONFIG_ROOT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '.mim', 'configs')
#: method name -> fragment under configs/_base_/methods/
METHODS = ('wd', 'fixnorm', 'fixnorm_per_layer', 'eps_l2', 'wrs')

#: optim-wrapper options that belong to one method
_METHOD_OPTIONS = ('type', 'constructor', 'fixnorm', 'eps_shifted_l2', 'wrs')
#: hooks that implement a method (dropped when switching away from it)
_METHOD_HOOKS = ('FixNormHook',)
_AMP_TYPES = {'OptimWrapper': 'AmpOptimWrapper',
              'FixNormOptimWrapper': 'FixNormAmpOptimWrapper'}


def method_fragment(method: str) -> Config:
    """The fragment of ``method`` (a name in :data:`METHODS` or a path)."""
    if method in METHODS:
        # the package's configs (fixnorm_mm/.mim/configs, a link to configs/)
        return Config.fromfile(osp.join(CONFIG_ROOT, '_base_', 'methods', f'{method}.py'))
    if osp.isfile(method):
        return Config.fromfile(method)
    raise ValueError(f'unknown method {method!r}: use one of {METHODS} or a fragment path')


def apply_method(cfg: Union[Config, dict], method: str) -> Config:
    """A copy of ``cfg`` trained with ``method`` instead of its own one."""
    frag = method_fragment(method)
    out = copy.deepcopy(cfg) if isinstance(cfg, Config) else Config(copy.deepcopy(dict(cfg)))
    old = dict(out.get('optim_wrapper', {}))
    was_amp = 'Amp' in str(old.get('type', ''))
    for key in _METHOD_OPTIONS:
        old.pop(key, None)
    new = frag.optim_wrapper.to_dict()
    optimizer = dict(old.pop('optimizer', {}))
    optimizer.update(new.pop('optimizer', {}))
    old.update(new)
    old['optimizer'] = optimizer
    if was_amp:
        if old['type'] not in _AMP_TYPES:
            raise ValueError(f'{method}: {old["type"]} has no AMP variant yet; train it '
                             'without AMP (drop --amp / the Amp optim wrapper)')
        old['type'] = _AMP_TYPES[old['type']]
    out.optim_wrapper = old

    hooks = [h for h in out.get('custom_hooks', []) if h.get('type') not in _METHOD_HOOKS]
    present = {h.get('type') for h in hooks}
    hooks += [h for h in frag.get('custom_hooks', []) if h.get('type') not in present]
    out.custom_hooks = hooks

    imports = list(out.get('custom_imports', {}).get('imports', []))
    for name in frag.get('custom_imports', {}).get('imports', []):
        if name not in imports:
            imports.append(name)
    if imports:
        out.custom_imports = dict(imports=imports, allow_failed_imports=False)
    return out
