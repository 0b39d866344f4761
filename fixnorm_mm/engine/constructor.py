"""Builds a FixNorm optim wrapper: no weight decay on fixed weights, and the
wrapper gets the model it must watch."""
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

from ..norm_fixing import check_no_weight_decay, select_fixed_params
from .optim_wrapper import _FixNormWrapperMixin


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FixNormOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` (``paramwise_cfg`` works as usual)
    with ``weight_decay=0`` unless the config says otherwise.

    What it can check before training, it checks now: ``fixnorm.include`` /
    ``exclude`` patterns that match nothing, and weight decay requested on a
    FixNorm/WN weight. Weight decay on a conv that the first forward shows to
    be followed by a norm is caught at the first step, before it updates.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg=None) -> None:
        optim_wrapper_cfg = optim_wrapper_cfg.copy()
        optimizer = dict(optim_wrapper_cfg.get('optimizer', {}))
        optimizer.setdefault('weight_decay', 0)
        optim_wrapper_cfg['optimizer'] = optimizer
        optim_wrapper_cfg.setdefault('type', 'FixNormOptimWrapper')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def __call__(self, model: nn.Module):
        optim_wrapper = super().__call__(model)
        if not isinstance(optim_wrapper, _FixNormWrapperMixin):
            raise TypeError(
                'FixNormOptimWrapperConstructor builds FixNorm optim wrappers: set '
                "optim_wrapper.type to 'FixNormOptimWrapper' or "
                f"'FixNormAmpOptimWrapper', got {type(optim_wrapper).__name__}")
        inner = model.module if hasattr(model, 'module') else model
        known_now = select_fixed_params(inner, {}, **optim_wrapper.fixnorm.selection_cfg)
        check_no_weight_decay(known_now, optim_wrapper.optimizer)
        optim_wrapper.attach_model(model)
        return optim_wrapper
