"""What the per-unit norm-control methods share: which weights they act on,
how they take weight decay over from the optimizer, and their optim-wrapper
life cycle (the same one as FixNorm's: watch the first forward, start at the
first real step, act around every step).

Per unit, not per tensor: epsilon-shifted L2 and WRS act on the weight
vector W_j of each output unit. That is only harmless when the network is
invariant to scaling one unit at a time, which holds for

* conv / linear weights followed by a normalisation *per channel* with batch
  statistics (BatchNorm, SyncBN, InstanceNorm): BN(W_j x) ignores ||W_j||;
* the directions of weight-normalised layers (``WNConv2d``, ``WNLinear``).

A GroupNorm / LayerNorm after a conv makes only the whole group scale-free,
and FixNorm-FC / FixNorm-Conv divide by the norm of the whole tensor: those
are left out, with the reason in the startup table.
"""
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from ..norm_fixing import NormFollowTracer, Selection, select_fixed_params
from ..norm_fixing.selection import unwrap

#: per-parameter reason -> it is scale-invariant unit by unit
_PER_UNIT_REASONS = ('weight-normalized', 'include pattern')


def select_unit_invariant(model: nn.Module,
                          followed: Dict[str, Tuple[str, str, bool]],
                          include: Sequence[str] = (),
                          exclude: Sequence[str] = ()) -> Selection:
    """The weights whose output units are each scale-invariant (module doc).

    Built on :func:`~fixnorm_mm.norm_fixing.select_fixed_params` (same
    ``include`` / ``exclude`` fnmatch patterns, same tracer output), then
    narrowed to per-unit invariance. Returns one group, ``'default'``.
    """
    sel = select_fixed_params(model, followed, include=include, exclude=exclude)
    modules = dict(model.named_modules())
    chosen: Dict[str, nn.Parameter] = {}
    reasons: Dict[str, str] = {}
    excluded = list(sel.excluded)
    for named in sel.groups.values():
        for name, param in named.items():
            why = sel.reasons[name]
            layer = name.rpartition('.')[0]
            if why == 'FixNorm layer':
                excluded.append((name, param.numel(), 'FixNorm layer: scale-invariant as '
                                 'a whole tensor, not per output unit'))
                continue
            if why.startswith('followed by'):
                norm = modules.get(followed[layer][0])
                if not isinstance(norm, _NormBase):
                    excluded.append((name, param.numel(), f'{why}: normalises groups of '
                                     'channels, not each unit'))
                    continue
            elif why not in _PER_UNIT_REASONS:
                excluded.append((name, param.numel(), why))
                continue
            if param.dim() < 2:
                raise ValueError(f'{name} has shape {tuple(param.shape)}: per-unit methods '
                                 'act on weight vectors (2-D or more); fix the `include` pattern')
            chosen[name] = param
            reasons[name] = why
    return Selection(groups={'default': chosen} if chosen else {}, reasons=reasons,
                     excluded=excluded)


def format_selection(title: str, rows: List[Tuple[str, ...]], header: Tuple[str, ...],
                     excluded: List[Tuple[str, int, str]], max_excluded: int = 20) -> str:
    """The startup table of a method: one row per tensor it acts on, then what
    it left out (grouped by reason)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [title, '  '.join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ['  '.join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    by_reason: Dict[str, List[str]] = {}
    for name, _, why in excluded:
        by_reason.setdefault(why, []).append(name)
    if by_reason:
        lines.append('left out (biases and norm parameters keep the optimizer\'s weight decay):')
        for why, names in by_reason.items():
            more = f', ... (+{len(names) - max_excluded})' if len(names) > max_excluded else ''
            lines.append(f'  {why}: {len(names)} tensors: {", ".join(names[:max_excluded])}{more}')
    return '\n'.join(lines)


class NormControlWrapperMixin:
    """Life cycle of a norm-control optim wrapper. A subclass implements
    :meth:`_start_method` (select, build its plain-PyTorch object) and uses
    :meth:`take_over_weight_decay` there."""

    method_name = 'norm control'

    def _init_control(self, model: Optional[nn.Module]) -> None:
        self.model: Optional[nn.Module] = None
        self.tracer: Optional[NormFollowTracer] = None
        self._initial_weight_decay: Dict[int, float] = {}
        self.started = False
        if model is not None:
            self.attach_model(model)

    def attach_model(self, model: nn.Module) -> None:
        """Give the wrapper its model (the constructor does): remember the
        weight decay each parameter was configured with, and watch the first
        forward to see which weights feed a normalisation."""
        self.model = model
        # read now, before a resumed optimizer state overwrites the groups
        self._initial_weight_decay = {
            id(p): float(g.get('weight_decay', 0) or 0)
            for g in self.optimizer.param_groups for p in g['params']}
        if self.tracer is None and not self.started:
            self.tracer = NormFollowTracer(unwrap(model)).attach()

    def _start(self) -> None:
        if self.started:
            return
        if self.model is None:
            raise RuntimeError(
                f'{type(self).__name__} has no model: build it with optim_wrapper.'
                "constructor='NormControlOptimWrapperConstructor' (or call "
                'attach_model(model) before training).')
        followed = {}
        if self.tracer is not None:
            if not self.tracer.seen_forward:
                print_log(f'{self.method_name}: no forward pass was traced before the first '
                          'step; only WN/WS layers and `include` patterns are selected',
                          logger='current', level=30)
            followed = self.tracer.followed
            self.tracer.detach()
            self.tracer = None
        self._start_method(unwrap(self.model), followed)
        self.started = True

    def _start_method(self, model: nn.Module, followed: dict) -> None:
        raise NotImplementedError

    def take_over_weight_decay(self, params: Dict[str, nn.Parameter]) -> Dict[str, float]:
        """Set the optimizer's weight decay of ``params`` to 0 (the method
        replaces it) and return the decay each was configured with.

        Every parameter must have its own param group, or zeroing its decay
        would zero its neighbours' too: ``NormControlOptimWrapperConstructor``
        builds one group per parameter.
        """
        group_of = {id(p): g for g in self.optimizer.param_groups for p in g['params']}
        configured = {}
        for name, p in params.items():
            group = group_of.get(id(p))
            if group is None:
                raise ValueError(f'{self.method_name}: {name} is not optimized by this '
                                 'optimizer (requires_grad=False or left out of its params)')
            wd = float(group.get('weight_decay', 0) or 0)
            if wd > 0 and len(group['params']) > 1:
                raise ValueError(
                    f'{self.method_name}: {name} shares a param group (weight_decay={wd}) '
                    f'with {len(group["params"]) - 1} other tensors, so its weight decay '
                    "cannot be replaced alone. Set optim_wrapper.constructor="
                    "'NormControlOptimWrapperConstructor' (one group per parameter).")
            configured[name] = self._initial_weight_decay.get(id(p), wd)
            if wd > 0:
                group['weight_decay'] = 0.0
        return configured


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class NormControlOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` (``paramwise_cfg`` works as usual)
    that puts every parameter in its own param group and gives the wrapper its
    model.

    One group per parameter lets a method (epsilon-shifted L2, WRS) replace the
    weight decay of exactly the tensors it controls at the first step, once a
    forward has shown which those are, while learning-rate schedulers, which
    remember the groups they were built with, keep working.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        # a non-empty paramwise_cfg makes mmengine build one group per
        # parameter; bypass_duplicate keeps tied weights in a single group
        paramwise_cfg.setdefault('bypass_duplicate', True)
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def __call__(self, model: nn.Module):
        optim_wrapper = super().__call__(model)
        if not isinstance(optim_wrapper, NormControlWrapperMixin):
            raise TypeError(
                'NormControlOptimWrapperConstructor builds the wrappers of fixnorm_mm.methods: '
                "set optim_wrapper.type to 'EpsShiftedL2OptimWrapper' or 'WRSOptimWrapper', "
                f'got {type(optim_wrapper).__name__}')
        optim_wrapper.attach_model(model)
        return optim_wrapper

