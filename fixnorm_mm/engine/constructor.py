"""Builds any mmengine optim wrapper with a norm-control method attached::

    optim_wrapper = dict(type='OptimWrapper',          # or 'AmpOptimWrapper', ...
                         constructor='NormControlOptimWrapperConstructor',
                         optimizer=dict(type='SGD', lr=..., momentum=0.9),
                         norm_control=dict(type='FixNorm'))

The wrapper is mmengine's own, so AMP (``--amp`` of any OpenMMLab train
script turns ``OptimWrapper`` into ``AmpOptimWrapper``), gradient accumulation
and clipping behave as upstream; the method acts through the optimizer's hooks
(:mod:`fixnorm_mm.norm_control.controller`). The built wrapper carries the
method as ``optim_wrapper.norm_control``.
"""
import copy
from typing import Optional, Tuple

from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

from ..norm_control.controller import (NormController, build_controller,
                                       check_optimizer_hyperparameters, controller_class)
from .optim_wrapper import LEGACY_KEYS, LEGACY_WRAPPERS


def split_control_cfg(optim_wrapper_cfg: dict,
                      default: Optional[dict] = None) -> Tuple[Optional[dict], str]:
    """Take the method's config out of an ``optim_wrapper`` config (in place):
    ``norm_control=dict(type=...)``, or a legacy key (``fixnorm=dict(...)``)
    when the wrapper type is a plain mmengine one. Returns it and its key."""
    control = optim_wrapper_cfg.pop('norm_control', None)
    key = 'optim_wrapper.norm_control'
    if control is None and optim_wrapper_cfg.get('type', 'OptimWrapper') in (
            'OptimWrapper', 'AmpOptimWrapper'):
        for legacy, type_name in LEGACY_KEYS.items():
            if legacy in optim_wrapper_cfg:
                options = optim_wrapper_cfg.pop(legacy) or {}
                if not isinstance(options, dict):
                    raise TypeError(f'optim_wrapper.{legacy} must be a dict, got {options!r}')
                control, key = dict(type=type_name, **options), f'optim_wrapper.{legacy}'
                break
    if control is None and default is not None:
        control = dict(default)
    return control, key


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class NormControlOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` (``paramwise_cfg`` works as usual)
    plus the norm-control method of ``optim_wrapper.norm_control``.

    What the method needs from the optimizer it gets here: FixNorm's and
    Hyperball's ``weight_decay`` defaults to 0; a method that takes over the
    weight decay of the tensors it controls (all but ``'WeightDecay'``) gets
    one param group per tensor when the config has weight decay, as mmengine
    builds them for any ``paramwise_cfg`` (learning-rate schedulers handle
    them as usual), so that the tensors it does not control keep theirs. Non-finite optimizer
    hyperparameters (a NaN lr) are refused before they touch a weight.
    """
    #: the method when the config names none (the FixNorm alias sets FixNorm)
    default_control: Optional[dict] = None

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        cfg = copy.deepcopy(dict(optim_wrapper_cfg))
        self.control_cfg, self.control_key = split_control_cfg(cfg, self.default_control)
        cls = _controller_class(self.control_cfg, self.control_key, cfg.get('type'))
        if cls is not None:
            optimizer = dict(cfg.get('optimizer', {}))
            if cls.default_weight_decay is not None:
                optimizer.setdefault('weight_decay', cls.default_weight_decay)
                cfg['optimizer'] = optimizer
            decays = _positive(optimizer.get('weight_decay', 0))
            if cls.one_group_per_tensor or (cls.takes_over_weight_decay and decays):
                # a non-empty paramwise_cfg makes mmengine build one group per
                # parameter; bypass_duplicate keeps tied weights in a single group
                paramwise_cfg = dict(paramwise_cfg or {})
                paramwise_cfg.setdefault('bypass_duplicate', True)
        self.accumulative_counts = cfg.get('accumulative_counts', 1)
        super().__init__(cfg, paramwise_cfg)

    def __call__(self, model: nn.Module):
        optim_wrapper = super().__call__(model)
        check_optimizer_hyperparameters(optim_wrapper.optimizer)
        controller = getattr(optim_wrapper, 'norm_control', None)
        if controller is None:  # a plain mmengine wrapper: attach the method
            if self.control_cfg is None:
                raise ValueError(
                    'NormControlOptimWrapperConstructor: no method: set optim_wrapper.'
                    "norm_control=dict(type=...), e.g. dict(type='FixNorm')")
            controller = build_controller(self.control_cfg, self.control_key)
            optim_wrapper.norm_control = controller
            controller.attach(model, optim_wrapper.optimizer, self.accumulative_counts)
        elif isinstance(controller, NormController):  # a legacy wrapper built its own
            controller.attach_model(model)
        return optim_wrapper


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FixNormOptimWrapperConstructor(NormControlOptimWrapperConstructor):
    """The constructor of earlier FixNorm configs: FixNorm unless the config
    names another method."""
    default_control = dict(type='FixNorm')

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        optim_wrapper_cfg = dict(optim_wrapper_cfg)
        optim_wrapper_cfg.setdefault('type', 'FixNormOptimWrapper')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)


def _positive(weight_decay) -> bool:
    try:
        return float(weight_decay or 0) > 0
    except (TypeError, ValueError):
        return True  # not a number: let the optimizer say so


def _controller_class(control_cfg: Optional[dict], key: str, wrapper_type) -> Optional[type]:
    if isinstance(wrapper_type, str) and wrapper_type in LEGACY_WRAPPERS:
        return controller_class(LEGACY_WRAPPERS[wrapper_type].method, key)
    if control_cfg is None:
        return None
    return controller_class(control_cfg.get('type') if isinstance(control_cfg, dict) else None,
                            key)
