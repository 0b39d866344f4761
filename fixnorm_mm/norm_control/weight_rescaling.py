"""Weight rescaling, WRS (Liu, Cui, Wan, Mao & Chan, "The Implicit Biases of
SGD on Deep Neural Networks with Batch Normalization", Sec. 5-6), as a
baseline to FixNorm.

Every tau optimizer steps, each weight vector W_{l,j} (one output unit: a
conv filter, a row of a linear layer) that feeds a BatchNorm is rescaled to
unit norm:

    W_{l,j} <- W_{l,j} / ||W_{l,j}||_2

BN makes the network invariant to this, but the optimisation is not: the
paper shows it suppresses the weight noise that SGD leaves outside the input
span, the regularizing effect of weight decay, without weight decay's
interaction with adaptive optimizers. Weight decay stays on everything else
(BN's gamma in the paper, Sec. 6.1; "all other parameters" for YOLOv3) and is
set to 0 on the rescaled kernels. tau in {10, 20, 40}, chosen on validation
(Supp. Table S1: 40 in most settings; 10 for YOLOv3 and DeepLabv3).

Unlike FixNorm (Algo 1), the norm is fixed per unit and to 1, not globally to
its initial value, and only every tau steps: between rescales it drifts.

Usable from a bare training loop::

    wrs = WeightRescaler({n: p for n, p in model.named_parameters() if n in bn_fed})
    for step, (x, y) in enumerate(loader, 1):
        ...; opt.step()
        if step % tau == 0:
            wrs.rescale()
"""
import logging
from typing import Dict, Mapping, Optional, Sequence

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..registry import NORM_CONTROLLERS
from . import table
from .controller import NormController, check_bool, check_int, check_patterns
from .selection import select_unit_invariant
from .units import OutputUnits

#: Supp. Table S1: the step sizes the paper chose from.
PAPER_TAUS = (10, 20, 40)


class WeightRescaler:
    """Rescales every output unit of a set of weights to unit norm, fused over
    all tensors (a constant number of kernels, no host sync).

    Args:
        params: name -> weight (each tensor's first dim indexes units).
    """

    def __init__(self, params: Mapping[str, Tensor]) -> None:
        if not params:
            raise ValueError('WeightRescaler: no weight to rescale')
        self.names = list(params)
        self.units = OutputUnits(list(params.values()))

    @torch.no_grad()
    def unit_norms(self) -> Tensor:
        """||W_{l,j}|| of every unit, shape (units,)."""
        flat = self.units.flatten(self.units.params)
        return self.units.sum(flat * flat).sqrt()

    @torch.no_grad()
    def rescale(self) -> Tensor:
        """W_{l,j} <- W_{l,j} / ||W_{l,j}||, in place. Returns the norms before."""
        flat = self.units.flatten(self.units.params)
        norms = self.units.sum(flat * flat).sqrt()
        # a unit that is exactly 0 stays 0 (0 * 1e12)
        flat.mul_(self.units.expand(1 / norms.clamp_min(1e-12)))
        params = self.units.params
        torch._foreach_copy_(params, [v.to(p.dtype) for v, p in zip(self.units.split(flat), params)])
        return norms

    def per_tensor(self, per_unit: Tensor) -> Dict[str, Tensor]:
        return dict(zip(self.names, self.units.per_tensor(per_unit)))


@NORM_CONTROLLERS.register_module('WRS')
class WRSController(NormController):
    """WRS: every ``interval`` (tau) real optimizer steps, each output unit of
    the BN-fed kernels is rescaled to unit norm; those kernels get no weight
    decay, everything else keeps it.

    Args:
        interval: tau, in real optimizer steps (accumulation iterations of
            ``accumulative_counts`` and AMP-skipped steps do not count).
        rescale_at_start: also rescale before the first step, so that
            training starts from unit-norm kernels (a fresh start, not a resume).
        include, exclude: fnmatch patterns of parameter names (the paper also
            rescales the output layer in its CIFAR runs: ``include=['head.fc.weight']``).
        **kwargs: see :class:`~.controller.NormController`.

    The step count travels in the optimizer's state_dict (key ``'wrs'``), so a
    resumed run rescales at the same steps.
    """
    type_name = 'WRS'
    methods = {'wrs': '_base_/methods/wrs.py'}
    labels = {'wrs': 'WRS'}
    state_key = 'wrs'
    one_group_per_tensor = True
    takes_over_weight_decay = True

    def __init__(self, interval: int = 40, rescale_at_start: bool = True,
                 include: Sequence[str] = (), exclude: Sequence[str] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.interval = check_int(self.key('interval'), interval, 1)
        self.rescale_at_start = check_bool(self.key('rescale_at_start'), rescale_at_start)
        self.include = check_patterns(self.key('include'), include)
        self.exclude = check_patterns(self.key('exclude'), exclude)
        self.rescaler: Optional[WeightRescaler] = None

    def start(self, model: nn.Module, followed: dict, resumed_state) -> None:
        sel = select_unit_invariant(model, followed, include=self.include,
                                    exclude=self.exclude)
        named = sel.groups.get('default', {})
        if not named:
            raise ValueError(
                'WRS: no weight to rescale: no conv/linear feeds a BatchNorm in training '
                f'mode (and no WN layer or `{self.key("include")}` pattern selects one). '
                'Left out: ' + '; '.join(f'{n} ({why})' for n, _, why in sel.excluded[:8]))
        if resumed_state is not None:
            self.steps = check_int('checkpoint wrs.steps', resumed_state.get('steps'))
        decay = self.apply_weight_decay_rule(named)
        self.rescaler = WeightRescaler(named)
        self.log_table(
            table.summary(f'WRS (tau={self.interval}): {self.rescaler.units.num_units} '
                          'output units rescaled to unit norm', sel.groups,
                          {'units': {'default': str(self.rescaler.units.num_units)}},
                          sel.excluded, model, sel.reasons,
                          weight_decay=self.weight_decay_summary(model, named, decay)),
            table.details(sel.groups, sel.reasons, sel.excluded,
                          {'weight_decay': {n: f'{decay[n]:g} -> 0' for n in named}}))
        self.warn_uncontrolled(model, list(named), sel.excluded)
        if self.rescale_at_start and self.steps == 0 and resumed_state is None:
            self.rescaler.rescale()

    def after_step(self, skip: Optional[Tensor] = None) -> None:
        if self.steps % self.interval == 0:
            self.rescaler.rescale()

    def state_dict(self) -> dict:
        return dict(steps=self.steps)

    def log_scalars(self, lr: float) -> Dict[str, Tensor]:
        if self.rescaler is None:
            return {}
        norms = self.rescaler.unit_norms()
        return {'unit_norm_mean': norms.mean(), 'unit_norm_max': norms.max()}
