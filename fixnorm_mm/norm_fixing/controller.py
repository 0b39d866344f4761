"""When and on what Algo 1 runs: the shared life cycle of FixNorm's optim
wrapper and hook, kept out of both so that each stays a thin adapter.

1. :meth:`watch` before the first forward: trace which convs feed a norm.
2. :meth:`start` at the first real optimizer step, before it updates the
   weights (the weights are W_0, after pretrained weights were loaded):
   select the fixed set, check it against the optimizer's weight decay, take
   the reference norms (or the resumed ones), print the startup table.
3. :meth:`after_step` after every real step: rescale.
"""
from typing import Dict, Optional, Sequence

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from .fixer import NormFixer
from .selection import (NormFollowTracer, Selection, drop_zero_norm,
                        format_table, select_fixed_params, unwrap)


class FixNormController:
    """Args:
        include, exclude, groups, detect: see :func:`select_fixed_params`.
        per_layer: Hoffer et al.'s per-tensor fixing instead of Algo 1's global one.
        check_finite_interval: every this many steps, check that the fixed
            set's norm is finite (one host sync); 0 disables the check.
    """

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 groups: Optional[Sequence[dict]] = None, detect: bool = True,
                 per_layer: bool = False, check_finite_interval: int = 1) -> None:
        self.selection_cfg = dict(include=list(include), exclude=list(exclude),
                                  groups=list(groups or []), detect=detect)
        for g in self.selection_cfg['groups']:
            if not isinstance(g, dict) or 'name' not in g or 'include' not in g:
                raise ValueError(f'FixNorm: each entry of `groups` must be '
                                 f'dict(name=..., include=[patterns]), got {g!r}')
        if not isinstance(check_finite_interval, int) or check_finite_interval < 0:
            raise ValueError('FixNorm: check_finite_interval must be an int >= 0, '
                             f'got {check_finite_interval!r}')
        self.per_layer = per_layer
        self.check_finite_interval = check_finite_interval
        self.fixer: Optional[NormFixer] = None
        self.selection: Optional[Selection] = None
        self.tracer: Optional[NormFollowTracer] = None
        self._resumed_state: Optional[dict] = None
        self._steps = 0

    @property
    def started(self) -> bool:
        return self.fixer is not None

    def watch(self, model: nn.Module) -> None:
        if self.tracer is None and not self.started:
            self.tracer = NormFollowTracer(unwrap(model)).attach()

    def start(self, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
              initial_norms: Optional[Dict[str, Tensor]] = None) -> NormFixer:
        """Select the fixed set and build the fixer.

        Args:
            initial_norms: norms of the weights at the start of training, by
                parameter name, for a caller (the hook) that can only act after
                the first step; measured now when omitted.
        """
        model = unwrap(model)
        followed = {}
        if self.tracer is not None:
            if not self.tracer.seen_forward and self.selection_cfg['detect']:
                print_log('FixNorm: no forward pass was traced before the first '
                          'step; only FixNorm/WN layers and `include` patterns are '
                          'fixed', logger='current', level=30)
            followed = self.tracer.followed
            self.tracer.detach()
            self.tracer = None
        selection = drop_zero_norm(select_fixed_params(model, followed, **self.selection_cfg))
        if not selection.groups:
            raise ValueError(
                'FixNorm: the fixed set is empty: no conv/linear weight feeds a '
                'normalization that uses batch statistics, and no FixNorm/WN layer '
                'or `include` pattern selects one. Check the model, or set '
                '`fixnorm.include`. Left out: ' +
                '; '.join(f'{n} ({why})' for n, _, why in selection.excluded[:8]))
        if optimizer is not None:
            check_no_weight_decay(selection, optimizer)
        names = {g: list(named) for g, named in selection.groups.items()}
        refs = None
        if self._resumed_state is not None:
            NormFixer.check_compatible(self._resumed_state, names, self.per_layer)
            refs = {g: v['reference_norm'] for g, v in self._resumed_state['groups'].items()}
        elif initial_norms is not None:
            refs = {}
            for g, named in names.items():
                per = torch.stack([torch.as_tensor(initial_norms[n]).float() for n in named])
                refs[g] = per if self.per_layer else torch.linalg.vector_norm(per)
        self.fixer = NormFixer(selection.groups, per_layer=self.per_layer,
                               reference_norms=refs)
        self.selection = selection
        print_log(format_table(selection, self.fixer.reference_norms)
                  + ('\n(reference norms restored from the checkpoint)'
                     if self._resumed_state is not None else ''), logger='current')
        return self.fixer

    def after_step(self, skip: Optional[Tensor] = None) -> Dict[str, Tensor]:
        before = self.fixer.rescale(skip)
        self._steps += 1
        if self.check_finite_interval and self._steps % self.check_finite_interval == 0:
            norms = torch.stack([v.float().sum() for v in before.values()])
            if skip is not None:
                norms = torch.where(skip.bool(), torch.zeros_like(norms), norms)
            if not bool(torch.isfinite(norms).all()):
                raise FloatingPointError(
                    f'FixNorm: the norm of the fixed set is not finite after optimizer '
                    f'step {self._steps} ({ {g: v.tolist() for g, v in before.items()} }): '
                    'the step diverged (learning rate too large, or NaN in the loss). '
                    'The weights are corrupted; stop and lower the lr.')
        return before

    def state_dict(self) -> Optional[dict]:
        if self.fixer is not None:
            return self.fixer.state_dict()
        return self._resumed_state

    def load_state_dict(self, state: Optional[dict]) -> None:
        if state is None:
            return
        if self.fixer is not None:
            NormFixer.check_compatible(state, self.fixer.names, self.per_layer)
            self.fixer.reference_norms = self.fixer._checked_references(
                {g: v['reference_norm'] for g, v in state['groups'].items()})
        else:
            self._resumed_state = state


def check_no_weight_decay(selection: Selection, optimizer: torch.optim.Optimizer) -> None:
    """FixNorm discards weight decay on fixed weights: a request for it is a
    config mistake that would silently fight the rescale."""
    fixed = {id(p): n for named in selection.groups.values() for n, p in named.items()}
    offending = []
    for i, group in enumerate(optimizer.param_groups):
        wd = group.get('weight_decay', 0) or 0
        if wd > 0:
            offending += [(fixed[id(p)], wd, i) for p in group['params'] if id(p) in fixed]
    if offending:
        shown = ', '.join(f'{n} (weight_decay={wd})' for n, wd, _ in offending[:5])
        raise ValueError(
            f'FixNorm: weight decay is requested on {len(offending)} fixed weight(s): '
            f'{shown}{", ..." if len(offending) > 5 else ""}. FixNorm replaces weight '
            'decay on these: set `optim_wrapper.optimizer.weight_decay=0` (or give '
            'them decay_mult=0 in `optim_wrapper.paramwise_cfg`).')
