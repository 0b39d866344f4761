"""FixNorm (Algo 1 of the FixNorm paper) as a norm-control method.

    W_{t+1} <- W_{t+1} * ||W_0|| / ||W_{t+1}||        after every real step

over the *global* norm of the fixed set (every scale-invariant weight), with no
weight decay on it. The arithmetic is :class:`~.fixer.NormFixer`; this class
decides on what and when: the fixed set is selected at the first real step
(the weights are then W_0, after pretrained weights were loaded), from a
traced forward, ``include`` / ``exclude`` patterns and ``groups``; the
reference norms travel in the optimizer's state_dict under ``'fixnorm'``.
``per_layer=True`` gives Hoffer et al. (2018)'s per-tensor variant.
"""
import logging
from typing import Dict, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..registry import NORM_CONTROLLERS
from . import table
from .controller import (NormController, check_bool, check_int, check_patterns)
from .fixer import NormFixer
from .selection import Selection, drop_zero_norm, select_fixed_params

#: on an accelerator the finiteness check is a host sync: do it this often
ACCELERATOR_CHECK_INTERVAL = 100


@NORM_CONTROLLERS.register_module('FixNorm')
class FixNormController(NormController):
    """Algo 1.

    Args:
        include, exclude: fnmatch patterns of parameter names to fix in
            addition / never to fix.
        groups: ``[dict(name=..., include=[patterns])]``: parts fixed
            independently (each keeps its own global norm).
        detect: select scale-invariant weights automatically (else only
            ``include``).
        per_layer: fix each tensor's own norm (Hoffer et al. 2018) instead of
            the group's global one.
        check_finite_interval: check every this many steps that the fixed
            set's norm is finite, and before every checkpoint. ``'auto'``:
            every step when the weights are on the CPU (no pipeline to stall),
            every ``ACCELERATOR_CHECK_INTERVAL`` steps on a GPU, where each
            check is a host synchronisation; a non-finite norm is remembered
            on the device in between, so the error names the first bad step.
            0 disables the check.
        **kwargs: see :class:`~.controller.NormController`.
    """
    type_name = 'FixNorm'
    methods = {'fixnorm': '_base_/methods/fixnorm.py',
               'fixnorm_per_layer': '_base_/methods/fixnorm_per_layer.py'}
    labels = {'fixnorm': 'FixNorm', 'fixnorm_per_layer': 'per-layer FixNorm'}
    state_key = 'fixnorm'
    default_weight_decay = 0.0
    takes_over_weight_decay = True

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 groups: Optional[Sequence[dict]] = None, detect: bool = True,
                 per_layer: bool = False, check_finite_interval='auto', **kwargs) -> None:
        super().__init__(**kwargs)
        groups = [] if groups is None else groups
        if not isinstance(groups, (list, tuple)):
            raise TypeError(f'{self.key("groups")} must be a list of dict(name=..., '
                            f'include=[patterns]), got {groups!r}')
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or set(g) != {'name', 'include'} \
                    or not isinstance(g['name'], str):
                raise ValueError(f'{self.key("groups")}[{i}] must be dict(name=<str>, '
                                 f'include=[patterns]), got {g!r}')
            check_patterns(f'{self.key("groups")}[{i}].include', g['include'])
        self.selection_cfg = dict(
            include=check_patterns(self.key('include'), include),
            exclude=check_patterns(self.key('exclude'), exclude),
            groups=[dict(g) for g in groups], detect=check_bool(self.key('detect'), detect))
        self.per_layer = check_bool(self.key('per_layer'), per_layer)
        if check_finite_interval != 'auto':
            check_int(self.key('check_finite_interval'), check_finite_interval)
        self.check_finite_interval = check_finite_interval
        self.fixer: Optional[NormFixer] = None
        self.selection: Optional[Selection] = None
        self._first_bad: Optional[Tensor] = None  # device: first step with a non-finite norm

    # ------------------------------------------------------------- life cycle
    def check_before_training(self, model: nn.Module) -> None:
        known_now = select_fixed_params(model, {}, **self.selection_cfg)
        self.check_can_take_over({n: p for named in known_now.groups.values()
                                  for n, p in named.items()})

    def start(self, model: nn.Module, followed: Dict[str, Tuple[str, str, bool]],
              resumed_state) -> None:
        selection = drop_zero_norm(select_fixed_params(
            model, followed, other_uses=self.also_used, **self.selection_cfg))
        if not selection.groups:
            raise ValueError(
                'FixNorm: the fixed set is empty: no conv/linear weight feeds a '
                'normalization that uses batch statistics, and no FixNorm/WN layer '
                f'or `include` pattern selects one. Check the model, or set '
                f'`{self.key("include")}` (or convert the model with FixNormModel, which '
                'weight-normalizes the convs no normalization follows; for a pre-norm '
                "transformer, FixNormModel(weight_norm='attention_mlp')), or train it with "
                "norm_control=dict(type='Hyperball') (--method hyperball), which needs no "
                'scale-invariant weight. Left out: ' +
                '; '.join(f'{n} ({why})' for n, _, why in selection.excluded[:8]))
        self.configured_decay = self.apply_weight_decay_rule(
            {n: p for named in selection.groups.values() for n, p in named.items()})
        refs = None
        if resumed_state is not None:
            NormFixer.check_compatible(resumed_state, selection.groups, self.per_layer)
            refs = {g: v['reference_norm'] for g, v in resumed_state['groups'].items()}
        self.fixer = NormFixer(selection.groups, per_layer=self.per_layer,
                               reference_norms=refs)
        if resumed_state is not None:
            self._check_resumed_norms()
        self.selection = selection
        if self.check_finite_interval == 'auto':
            on_cpu = next(iter(self.fixer.params.values()))[0].device.type == 'cpu'
            self.check_finite_interval = 1 if on_cpu else ACCELERATOR_CHECK_INTERVAL
        self._log_table(model, resumed=resumed_state is not None)

    def after_step(self, skip: Optional[Tensor] = None) -> None:
        before = self.fixer.rescale(skip)
        if not self.check_finite_interval:
            return
        # the norms are fp32 (NormFixer.norms); their sum is finite iff all are
        total = torch.stack([v.sum() for v in before.values()]).sum()
        bad = ~torch.isfinite(total)
        if skip is not None:
            bad = bad & ~skip.bool()
        if self._first_bad is None:
            self._first_bad = torch.zeros((), dtype=torch.long, device=bad.device)
        # the first bad step stays recorded, on the device, until the next check
        self._first_bad = torch.where(bad & (self._first_bad == 0), self.steps, self._first_bad)
        if self.steps % self.check_finite_interval == 0:
            self.raise_if_diverged()

    def raise_if_diverged(self) -> None:
        """Raise if the norm was not finite after some step (one host sync)."""
        if self._first_bad is None:
            return
        first = int(self._first_bad)
        if first:
            raise FloatingPointError(
                f'FixNorm: the norm of the fixed set is not finite after optimizer step '
                f'{first} ({ {g: v.tolist() for g, v in self.fixer.norms().items()} }): the '
                'step diverged (learning rate too large, or NaN in the loss). The weights '
                'are corrupted; stop and lower the lr.')

    def check_before_save(self) -> None:
        if self.started and self.check_finite_interval:
            self.raise_if_diverged()  # never write a diverged state to a checkpoint

    def state_dict(self) -> Optional[dict]:
        if self.fixer is not None:
            return self.fixer.state_dict()
        if self._resumed is not None and self._resumed[1] is not None:
            return self._resumed[1]  # saved again before the first step
        return None

    def load_state_dict(self, state: Optional[dict]) -> None:
        """Restore a fixer ``state_dict`` (e.g. a legacy FixNormHook checkpoint)."""
        if state is not None:
            self.load_resumed(self.type_name, state)

    def _apply_late_resume(self) -> None:
        state = self._resumed[1]
        if state is None:
            super()._apply_late_resume()
        NormFixer.check_compatible(state, {g: dict(zip(self.fixer.names[g], ps))
                                           for g, ps in self.fixer.params.items()},
                                   self.per_layer)
        self.fixer.reference_norms = self.fixer.checked_references(
            {g: v['reference_norm'] for g, v in state['groups'].items()})

    def _check_resumed_norms(self, rtol: float = 1e-3) -> None:
        """Algo 1 leaves the fixed set at its reference after every step, so a
        checkpoint's weights have that norm; if not, the weights and the
        optimizer state come from different trainings."""
        now, ref = self.fixer.norms(), self.fixer.reference_norms
        for g in ref:
            diff = ((now[g] - ref[g]).abs() / ref[g].clamp_min(1e-12)).max()
            if float(diff) > rtol:
                raise ValueError(
                    f'FixNorm: the resumed weights of group {g!r} have norm '
                    f'{now[g].tolist()} but the checkpoint fixed it at {ref[g].tolist()}: '
                    'these weights were not trained with this optimizer state (another '
                    'checkpoint, or weights changed after saving). Resume from one '
                    f"checkpoint, or set {self.key('on_method_change')}='restart' with "
                    'a checkpoint of another method.')

    def _log_table(self, model: nn.Module, resumed: bool) -> None:
        sel, refs = self.selection, self.fixer.reference_norms
        ref_text = {g: (f'{r.item():.6g}' if r.numel() == 1 else f'per layer ({r.numel()})')
                    for g, r in refs.items()}
        controlled = {n: p for named in sel.groups.values() for n, p in named.items()}
        title = (f'FixNorm fixed set ({"per layer" if self.per_layer else "global norm"}, '
                 f'Algo 1)' + (': reference norms restored from the checkpoint'
                               if resumed else ''))
        self.log_table(
            table.summary(title, sel.groups, {'reference norm': ref_text}, sel.excluded,
                          model, sel.reasons, weight_decay=self.weight_decay_summary(
                              model, controlled, self.configured_decay)),
            table.details(sel.groups, sel.reasons, sel.excluded))
        self.warn_uncontrolled(
            model, list(controlled), sel.excluded,
            'Or make them scale-invariant so that FixNorm fixes them: norm_eval=False for a '
            'BatchNorm in eval mode (FixNormModel(backbone_norm_eval=False) for a frozen-BN '
            'backbone; stages frozen by frozen_stages stay out), a WN conv '
            "(conv_cfg=dict(type='WNConv2d'), or FixNormModel) where no normalization "
            'follows.')

    def log_scalars(self, lr: float) -> Dict[str, Tensor]:
        if self.fixer is None:
            return {}
        out = {}
        for group, norm in self.fixer.norms().items():
            norm = norm if norm.dim() == 0 else norm.norm()
            out[f'norm_{group}'] = norm
            # ends in 'lr': mmengine prints it as a learning rate (x.xxxxe-yy)
            out[f'{group}_effective_lr'] = lr / norm ** 2
        return out
