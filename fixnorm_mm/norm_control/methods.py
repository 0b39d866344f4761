"""One switch between the norm-control methods, on the same model config.

The methods are the registered controllers (:data:`fixnorm_mm.registry.NORM_CONTROLLERS`):
each names, in its ``methods`` attribute, the config fragment that selects it
(``configs/_base_/methods/{wd,fixnorm,fixnorm_per_layer,eps_l2,wrs}.py`` for
the built-in ones). A fragment says only what a method changes: the optim
wrapper's ``norm_control``, the weight decay, the method's own options.
mmengine forbids two ``_base_`` files that define the same key, and most model
configs define ``optim_wrapper``, so a fragment is applied *over* a loaded
config instead, the way ``--cfg-options`` is::

    cfg = apply_method(Config.fromfile('fixnorm_mm::imagenet/....py'), 'wrs')

What stays: the optimizer (type, lr, momentum, ...), ``paramwise_cfg``,
``clip_grad``, ``accumulative_counts``, AMP, the schedule, the model, the data.
A fragment's own ``paramwise_cfg`` (the ``wd`` fragment's no decay on norm
layers and biases, App. C) fills in the keys the config's ``paramwise_cfg``
does not set: the config's own keys win, key by key (so ``custom_keys`` and an
explicit ``norm_decay_mult=1.`` stay), as when the fragment is a ``_base_``.
What goes: the previous method's wrapper type, constructor and options
(``norm_control`` and the legacy ``fixnorm`` / ``eps_shifted_l2`` / ``wrs``)
and a ``FixNormHook`` / ``NormControlHook``.
"""
import copy
import os.path as osp
from typing import Dict, Union

from mmengine.config import Config

from ..registry import CONFIG_ROOT

#: optim-wrapper options that belong to one method
_METHOD_OPTIONS = ('type', 'constructor', 'norm_control', 'fixnorm', 'eps_shifted_l2', 'wrs')
#: hooks that implement a method (dropped when switching away from it)
_METHOD_HOOKS = ('FixNormHook', 'NormControlHook')
#: optim wrapper types with their AMP twin
_AMP_TYPES = {'OptimWrapper': 'AmpOptimWrapper',
              'FixNormOptimWrapper': 'FixNormAmpOptimWrapper'}


def available_methods() -> Dict[str, str]:
    """Method name -> absolute path of its fragment, from the registry."""
    from .controller import registered_controllers
    out: Dict[str, str] = {}
    for cls in registered_controllers():
        for name, fragment in cls.methods.items():
            out[name] = fragment if osp.isabs(fragment) else osp.join(CONFIG_ROOT, fragment)
    return out


def method_label(method: str) -> str:
    """How tables and plots call ``method`` (its controller's ``labels``)."""
    from .controller import registered_controllers
    for cls in registered_controllers():
        if method in cls.labels:
            return cls.labels[method]
    return method


def method_fragment(method: str) -> Config:
    """The fragment of ``method`` (a registered method name or a path)."""
    methods = available_methods()
    if method in methods:
        return Config.fromfile(methods[method])
    if osp.isfile(method):
        return Config.fromfile(method)
    raise ValueError(f'unknown method {method!r}: use one of {sorted(methods)} (the '
                     'registered norm-control methods) or the path of a fragment')


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
    paramwise = dict(new.pop('paramwise_cfg', None) or {})
    paramwise.update(old.pop('paramwise_cfg', None) or {})
    old.update(new)
    old['optimizer'] = optimizer
    control = old.get('norm_control')
    if isinstance(control, dict) and isinstance(control.get('type'), str):
        from mmengine.logging import print_log

        from .controller import controller_class
        control = dict(control)
        note = controller_class(control['type']).adapt_to_config(control, optimizer)
        old['norm_control'] = control
        if note:
            print_log(note, logger='current')
    if paramwise:
        old['paramwise_cfg'] = paramwise
    if was_amp:
        if old['type'] not in _AMP_TYPES:
            raise ValueError(f'{method}: the optim wrapper type {old["type"]!r} of its '
                             'fragment has no AMP twin; train it without AMP or use '
                             "type='OptimWrapper' with norm_control=dict(...)")
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


def enable_amp(cfg: Config) -> Config:
    """``--amp``: train ``cfg`` with mixed precision (in place).

    ``OptimWrapper`` becomes ``AmpOptimWrapper`` (the norm-control method, if
    any, stays attached), ``FixNormOptimWrapper`` its AMP twin, and the legacy
    wrappers without one are rewritten to ``AmpOptimWrapper`` with
    ``norm_control``. mmengine's AMP wrapper needs an accelerator: on a
    machine without one this is refused here, by name.
    """
    from mmengine.device import get_device

    from ..engine.optim_wrapper import LEGACY_WRAPPERS
    if get_device() == 'cpu':
        raise ValueError('--amp: mixed precision needs a GPU (or NPU/MLU/MUSA): mmengine\'s '
                         'AmpOptimWrapper refuses the CPU. Train without --amp here; the same '
                         'config trains with --amp on a GPU.')
    wrapper = cfg.optim_wrapper
    kind = wrapper.get('type', 'OptimWrapper')
    amp_ready = set(_AMP_TYPES) | set(_AMP_TYPES.values())
    if kind in LEGACY_WRAPPERS and kind not in amp_ready:
        legacy = LEGACY_WRAPPERS[kind]  # no AMP twin: the same method on mmengine's wrapper
        wrapper['norm_control'] = dict(type=legacy.method,
                                       **(wrapper.pop(legacy.legacy_key, None) or {}))
        wrapper['constructor'] = 'NormControlOptimWrapperConstructor'
        kind = 'OptimWrapper'
    wrapper['type'] = _AMP_TYPES.get(kind, kind)
    wrapper.setdefault('loss_scale', 'dynamic')
    return cfg


def check_method_name(method: str) -> str:
    """``method`` if it is a registered method or a fragment file, else a
    clear error listing the registered ones."""
    if method in available_methods() or osp.isfile(method):
        return method
    raise ValueError(f'--method {method!r}: not a registered norm-control method '
                     f'({", ".join(sorted(available_methods()))}) nor a fragment file. A '
                     'method of your own registers in fixnorm_mm.registry.NORM_CONTROLLERS; '
                     'import its module with the config\'s custom_imports.')
