"""The method-specific optim wrappers of earlier versions, as thin aliases.

The norm-control methods run on mmengine's own wrappers
(:class:`~.constructor.NormControlOptimWrapperConstructor`); these classes
only keep older configs and checkpoints working: each is mmengine's
``OptimWrapper`` / ``AmpOptimWrapper`` that builds its method from its old key
(``fixnorm=dict(...)``, ``eps_shifted_l2=dict(...)``, ``wrs=dict(...)``) and
exposes it as ``norm_control`` (and under its old attribute names). None
overrides ``step``.
"""
from typing import Optional

from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

from ..norm_control.controller import build_controller

class _LegacyWrapperMixin:
    method = ''
    legacy_key = ''

    def _init_control(self, model: Optional[nn.Module], options: Optional[dict],
                      norm_control: Optional[dict], accumulative_counts: int) -> None:
        if norm_control is None:
            if options is not None and not isinstance(options, dict):
                raise TypeError(f'optim_wrapper.{self.legacy_key} must be a dict, '
                                f'got {options!r}')
            cfg, key = dict(type=self.method, **(options or {})), f'optim_wrapper.{self.legacy_key}'
        else:
            cfg, key = norm_control, 'optim_wrapper.norm_control'
        self.norm_control = build_controller(cfg, key)
        self.norm_control.attach(model, self.optimizer, accumulative_counts)

    def attach_model(self, model: nn.Module) -> None:
        """Give the method the model it acts on (the constructor does)."""
        self.norm_control.attach_model(model)

    @property
    def model(self) -> Optional[nn.Module]:
        return self.norm_control.model


@OPTIM_WRAPPERS.register_module()
class FixNormOptimWrapper(_LegacyWrapperMixin, OptimWrapper):
    """``OptimWrapper`` + FixNorm: ``fixnorm=dict(include=..., exclude=...,
    groups=..., per_layer=False)``. Same as ``type='OptimWrapper',
    norm_control=dict(type='FixNorm', ...)``."""
    method, legacy_key = 'FixNorm', 'fixnorm'

    def __init__(self, optimizer, model: Optional[nn.Module] = None,
                 fixnorm: Optional[dict] = None, norm_control: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        self._init_control(model, fixnorm, norm_control, kwargs.get('accumulative_counts', 1))

    @property
    def fixnorm(self):
        """The FixNorm controller (its old name)."""
        return self.norm_control


@OPTIM_WRAPPERS.register_module()
class FixNormAmpOptimWrapper(_LegacyWrapperMixin, AmpOptimWrapper):
    """``AmpOptimWrapper`` + FixNorm. Same as ``type='AmpOptimWrapper',
    norm_control=dict(type='FixNorm', ...)``: a step the loss scaler skips is
    no optimizer step, so nothing is rescaled."""
    method, legacy_key = 'FixNorm', 'fixnorm'

    def __init__(self, optimizer, model: Optional[nn.Module] = None,
                 fixnorm: Optional[dict] = None, norm_control: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(optimizer=optimizer, **kwargs)
        self._init_control(model, fixnorm, norm_control, kwargs.get('accumulative_counts', 1))

    @property
    def fixnorm(self):
        return self.norm_control


@OPTIM_WRAPPERS.register_module()
class EpsShiftedL2OptimWrapper(_LegacyWrapperMixin, OptimWrapper):
    """``OptimWrapper`` + epsilon-shifted L2: ``eps_shifted_l2=dict(...)``."""
    method, legacy_key = 'EpsShiftedL2', 'eps_shifted_l2'

    def __init__(self, optimizer, model: Optional[nn.Module] = None,
                 eps_shifted_l2: Optional[dict] = None, norm_control: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        self._init_control(model, eps_shifted_l2, norm_control,
                           kwargs.get('accumulative_counts', 1))

    @property
    def regularizer(self):
        return self.norm_control.regularizer


@OPTIM_WRAPPERS.register_module()
class WRSOptimWrapper(_LegacyWrapperMixin, OptimWrapper):
    """``OptimWrapper`` + WRS: ``wrs=dict(interval=40, ...)``."""
    method, legacy_key = 'WRS', 'wrs'

    def __init__(self, optimizer, model: Optional[nn.Module] = None,
                 wrs: Optional[dict] = None, norm_control: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        self._init_control(model, wrs, norm_control, kwargs.get('accumulative_counts', 1))

    @property
    def rescaler(self):
        return self.norm_control.rescaler

    @property
    def steps(self) -> int:
        return self.norm_control.steps


#: legacy wrapper type -> its class (``method``: the method it runs,
#: ``legacy_key``: the config key of its options)
LEGACY_WRAPPERS = {cls.__name__: cls for cls in (FixNormOptimWrapper, FixNormAmpOptimWrapper,
                                                 EpsShiftedL2OptimWrapper, WRSOptimWrapper)}
#: legacy option key (``fixnorm=dict(...)``, ...) -> its method
LEGACY_KEYS = {cls.legacy_key: cls.method for cls in LEGACY_WRAPPERS.values()}
