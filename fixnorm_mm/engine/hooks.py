"""Hooks: a norm-control method for any optim wrapper (``NormControlHook``,
``FixNormHook``), and where the runner's method is (``find_controller``).
The curves (MCBR, g, norms) are :mod:`.mcbr_hook`."""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS

from ..norm_control.controller import NormController, build_controller


@HOOKS.register_module()
class NormControlHook(Hook):
    """A norm-control method for a runner whose optim wrapper was built
    without it (any mmengine optim wrapper; with a norm-control one, do not
    add this hook).

    The method attaches to the optimizer before the checkpoint is loaded
    (``before_run``), so it behaves exactly as through the constructor: the
    same first step, the same AMP handling, its state in the optimizer's
    state_dict, the same resume checks.

    Args:
        norm_control: ``dict(type='FixNorm', ...)`` (any registered method).
    """
    priority = 'ABOVE_NORMAL'
    #: how errors name the options
    cfg_key = 'custom_hooks.NormControlHook.norm_control'

    def __init__(self, norm_control: Optional[dict] = None) -> None:
        cfg = dict(type='FixNorm') if norm_control is None else norm_control
        self.controller = build_controller(cfg, self.cfg_key)

    def before_run(self, runner) -> None:
        wrapper = runner.optim_wrapper
        if not isinstance(wrapper, OptimWrapper):
            return  # a test or validation run: nothing to control
        if getattr(wrapper, 'norm_control', None) is not None:
            raise ValueError(
                f'{type(self).__name__}: the optim wrapper already runs '
                f'{wrapper.norm_control.type_name}; remove {type(self).__name__} from '
                'custom_hooks (it would act twice)')
        counts = (runner.cfg.get('optim_wrapper') or {}).get('accumulative_counts', 1)
        self.controller.attach(runner.model, wrapper.optimizer, counts)
        wrapper.norm_control = self.controller  # where MCBRHook and others look

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # checkpoints of earlier FixNormHooks kept the state at the top level
        key = self.controller.state_key
        legacy = checkpoint.get(key) if key else None
        if legacy is not None and runner.cfg.get('resume', False):
            self.controller.load_resumed(self.controller.type_name, legacy)


@HOOKS.register_module()
class FixNormHook(NormControlHook):
    """FixNorm (Algo 1) through a hook: ``dict(type='FixNormHook', **fixnorm
    options)``, the same as ``NormControlHook(norm_control=dict(type='FixNorm', ...))``."""
    cfg_key = 'custom_hooks.FixNormHook'

    def __init__(self, **fixnorm) -> None:
        super().__init__(dict(type='FixNorm', **fixnorm))

    @property
    def fixnorm(self):
        return self.controller


def find_controller(runner) -> Optional[NormController]:
    """The norm-control method of a runner (its optim wrapper's or a hook's)."""
    ctrl = getattr(getattr(runner, 'optim_wrapper', None), 'norm_control', None)
    if isinstance(ctrl, NormController):
        return ctrl
    for hook in runner.hooks:
        if isinstance(hook, NormControlHook):
            return hook.controller
    return None


def __getattr__(name: str):
    # MCBRHook and batch_labels live in mcbr_hook.py (imported lazily: it
    # imports find_controller from here)
    if name in ('MCBRHook', 'batch_labels'):
        from . import mcbr_hook
        return getattr(mcbr_hook, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
