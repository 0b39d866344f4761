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
from typing import Dict, Mapping, Optional

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import Tensor, nn

from .base import (NormControlWrapperMixin, format_selection,
                   select_unit_invariant)
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


@OPTIM_WRAPPERS.register_module()
class WRSOptimWrapper(NormControlWrapperMixin, OptimWrapper):
    """``OptimWrapper`` + WRS: ``wrs=dict(interval=40, rescale_at_start=True,
    include=[], exclude=[])``.

    * ``interval``: tau, in real optimizer steps (accumulation iterations of
      ``accumulative_counts`` do not count).
    * ``rescale_at_start``: also rescale before the first step, so that
      training starts from unit-norm kernels (a fresh start only, not a resume).
    * ``include`` / ``exclude``: fnmatch patterns of parameter names (the paper
      also rescales the output layer in its CIFAR runs: ``include=['head.fc.weight']``).

    The step count travels in the wrapper's ``state_dict`` (key ``'wrs'``), so
    a resumed run rescales at the same steps. Build it with
    ``constructor='NormControlOptimWrapperConstructor'``.
    """
    method_name = 'WRS'

    def __init__(self, optimizer, model: Optional[nn.Module] = None,
                 wrs: Optional[dict] = None, **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        cfg = dict(interval=40, rescale_at_start=True, include=[], exclude=[])
        unknown = set(wrs or {}) - set(cfg)
        if unknown:
            raise ValueError(f'wrs: unknown keys {sorted(unknown)}; allowed: {sorted(cfg)}')
        cfg.update(wrs or {})
        tau = cfg['interval']
        if isinstance(tau, bool) or not isinstance(tau, int) or tau < 1:
            raise ValueError(f'wrs.interval (tau) must be an int >= 1, got {tau!r}')
        self.wrs_cfg = cfg
        self.rescaler: Optional[WeightRescaler] = None
        self.steps = 0
        self._init_control(model)

    def _start_method(self, model: nn.Module, followed: dict) -> None:
        cfg = self.wrs_cfg
        sel = select_unit_invariant(model, followed, include=cfg['include'],
                                    exclude=cfg['exclude'])
        named = sel.groups.get('default', {})
        if not named:
            raise ValueError(
                'WRS: no weight to rescale: no conv/linear feeds a BatchNorm in training '
                'mode (and no WN layer or `wrs.include` pattern selects one). Left out: '
                + '; '.join(f'{n} ({why})' for n, _, why in sel.excluded[:8]))
        decay = self.take_over_weight_decay(named)
        self.rescaler = WeightRescaler(named)
        rows = [(n, f'{decay[n]:g} -> 0', sel.reasons[n]) for n in named]
        print_log(format_selection(
            f"WRS (tau={cfg['interval']}): {len(named)} tensors, "
            f'{self.rescaler.units.num_units} units rescaled to unit norm',
            rows, ('tensor', 'weight decay', 'why'), sel.excluded), logger='current')
        if cfg['rescale_at_start'] and self.steps == 0:
            self.rescaler.rescale()

    def step(self, **kwargs) -> None:
        self._start()
        super().step(**kwargs)
        self.steps += 1
        if self.steps % self.wrs_cfg['interval'] == 0:
            self.rescaler.rescale()

    def state_dict(self) -> dict:
        state = super().state_dict()
        state['wrs'] = dict(steps=self.steps)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)  # do not mutate the caller's checkpoint
        wrs = state_dict.pop('wrs', None)
        super().load_state_dict(state_dict)
        if wrs is not None:
            self.steps = int(wrs['steps'])
