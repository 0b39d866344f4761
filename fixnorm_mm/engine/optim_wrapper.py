"""Norm fixing after every real optimizer step, as mmengine optim wrappers.

The algorithm is :class:`~fixnorm_mm.norm_fixing.NormFixer`; these wrappers
only decide *when* it runs: after ``step()``, which mmengine calls only on
real steps (not on the accumulation iterations of ``accumulative_counts``),
and never after an AMP step that the loss scaler skipped. The reference norms
travel in the wrapper's ``state_dict`` (key ``'fixnorm'``), so they come back
with ``resume=True``.
"""
from typing import Optional

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

from ..norm_fixing import FixNormController


class _FixNormWrapperMixin:

    def _init_fixnorm(self, model: Optional[nn.Module], fixnorm: Optional[dict]) -> None:
        self.fixnorm = FixNormController(**(fixnorm or {}))
        self.model: Optional[nn.Module] = None
        if model is not None:
            self.attach_model(model)

    def attach_model(self, model: nn.Module) -> None:
        """Give the wrapper the model whose weights it fixes (the constructor does)."""
        self.model = model
        self.fixnorm.watch(model)

    def _start_fixnorm(self) -> None:
        if self.fixnorm.started:
            return
        if self.model is None:
            raise RuntimeError(
                f'{type(self).__name__} has no model to fix: build it with '
                "optim_wrapper.constructor='FixNormOptimWrapperConstructor' "
                '(or call attach_model(model) before training).')
        self.fixnorm.start(self.model, self.optimizer)

    def state_dict(self) -> dict:
        state = super().state_dict()
        fixnorm = self.fixnorm.state_dict()
        if fixnorm is not None:
            state['fixnorm'] = fixnorm
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)  # do not mutate the caller's checkpoint
        fixnorm = state_dict.pop('fixnorm', None)
        super().load_state_dict(state_dict)
        self.fixnorm.load_state_dict(fixnorm)


@OPTIM_WRAPPERS.register_module()
class FixNormOptimWrapper(_FixNormWrapperMixin, OptimWrapper):
    """``OptimWrapper`` + Algo 1: ``fixnorm=dict(include=..., exclude=...,
    groups=..., per_layer=False)`` configures the fixed set."""

    def __init__(self, optimizer, model: Optional[nn.Module] = None,
                 fixnorm: Optional[dict] = None, **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        self._init_fixnorm(model, fixnorm)

    def step(self, **kwargs) -> None:
        self._start_fixnorm()
        super().step(**kwargs)
        self.fixnorm.after_step()


@OPTIM_WRAPPERS.register_module()
class FixNormAmpOptimWrapper(_FixNormWrapperMixin, AmpOptimWrapper):
    """``AmpOptimWrapper`` (fp16 or bf16) + Algo 1. A step the loss scaler
    skips (inf/NaN gradients) leaves the weights exactly as they were: the
    rescale factor is 1 there, decided on the device without a host sync."""

    def __init__(self, optimizer, model: Optional[nn.Module] = None,
                 fixnorm: Optional[dict] = None, **kwargs) -> None:
        super().__init__(optimizer=optimizer, **kwargs)
        self._init_fixnorm(model, fixnorm)

    def step(self, **kwargs) -> None:
        self._start_fixnorm()
        if self.clip_grad_kwargs:
            self.loss_scaler.unscale_(self.optimizer)
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        skipped = self._step_skipped()
        self.loss_scaler.update(self._scale_update_param)
        self.fixnorm.after_step(skipped)

    def _step_skipped(self) -> Optional[torch.Tensor]:
        """True (a device tensor) when the scaler found inf/NaN and skipped."""
        if not self.loss_scaler.is_enabled():
            return None
        found = self.loss_scaler._per_optimizer_states[id(self.optimizer)]['found_inf_per_device']
        if not found:
            return None
        device = next(iter(found.values())).device
        return torch.stack([v.to(device) for v in found.values()]).sum() > 0
