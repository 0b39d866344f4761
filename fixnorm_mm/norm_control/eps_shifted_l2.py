"""epsilon-shifted L2 regularizer (Li, Chen, Xia & Yang, "Understanding the
Disharmony between Weight Normalization Family and Weight Decay:
epsilon-shifted L2 Regularizer", Eq. 25-28), as a baseline to FixNorm.

Weight decay on a normalised weight only sets its effective learning rate and
can drive ||W|| to 0, where the gradient overflows. The regularizer shifts
the L2 objective by eps, so the norm has a minimum at eps instead of 0.

WN (Eq. 25), one output unit W_j with k = ||W_j||:

    (lambda / 2) (k - eps)^2,  gradient  lambda (1 - eps / ||W||) W          (27)

WS (Eq. 26), with the unit's mean m and standard deviation
v = sqrt(||W - m||^2 / n) over its n entries:

    (lambda / 2) n (m^2 + (v - eps)^2),
    gradient  lambda ((1 - eps / v) W_i + eps / v * m)                      (28)

With eps = 0 both are plain L2, lambda/2 ||W||^2. Which weights get which form:

* ``WS``: mmcv's ``ConvWS2d`` / ``ConvAWS2d`` (``conv_cfg=dict(type='ConvWS')``);
* ``WN``: the directions of ``WNConv2d`` / ``WNLinear``, and (``bn_followed``)
  conv/linear weights followed by BatchNorm, which BN makes scale-invariant
  per output unit exactly as WN does (so the regularizer runs on a plain BN
  network, e.g. to compare it with FixNorm on the same model).

Everything else keeps the optimizer's ordinary weight decay (the paper keeps
it on BN and FC weights). lambda defaults to the weight decay the optimizer
was configured with for that tensor; the optimizer's own decay on it is set
to 0. Paper defaults: lambda = 1e-4 (SGD), eps = 1e-3 (Table IV: 1e-3 and
1e-4 are best on ImageNet; 1e-2 on CIFAR-100).

Usable from a bare training loop::

    reg = EpsShiftedL2(wn={'conv.weight': conv.weight}, weight_decay=1e-4, eps=1e-3)
    loss.backward(); reg.add_gradient_(); opt.step()        # or: (loss + reg.penalty()).backward()
"""
import fnmatch
import logging
from typing import Dict, Mapping, Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..registry import NORM_CONTROLLERS
from . import table
from .controller import (NormController, check_bool, check_choice, check_number,
                         check_patterns)
from .selection import select_unit_invariant
from .units import OutputUnits

#: Paper defaults (Sec. 6.1, Tables III-V).
DEFAULT_EPS = 1e-3


def ws_layer_types() -> tuple:
    """mmcv's weight-standardised convs (empty without mmcv)."""
    try:
        from mmcv.cnn.bricks.conv_ws import ConvAWS2d, ConvWS2d
    except ImportError:
        return ()
    return (ConvWS2d, ConvAWS2d)


class EpsShiftedL2:
    """Eq. 25-28 on a set of weights, unit by unit, fused over all tensors.

    Args:
        wn: name -> weight regularized in the WN form (Eq. 25, 27).
        ws: name -> weight regularized in the WS form (Eq. 26, 28).
        weight_decay: lambda, one value, or name -> value.
        eps: the shift eps (> 0).
    """

    def __init__(self, wn: Optional[Mapping[str, Tensor]] = None,
                 ws: Optional[Mapping[str, Tensor]] = None,
                 weight_decay: Union[float, Mapping[str, float]] = 1e-4,
                 eps: float = DEFAULT_EPS) -> None:
        if not isinstance(eps, (int, float)) or eps < 0:
            raise ValueError(f'epsilon-shifted L2: eps must be a number >= 0, got {eps!r}')
        wn, ws = dict(wn or {}), dict(ws or {})
        both = set(wn) & set(ws)
        if both:
            raise ValueError(f'epsilon-shifted L2: {sorted(both)} given both as WN and WS')
        self.forms = {**{n: 'WN' for n in wn}, **{n: 'WS' for n in ws}}
        named = {**wn, **ws}
        if not named:
            raise ValueError('epsilon-shifted L2: no weight to regularize')
        self.names = list(named)
        self.eps = float(eps)
        self.units = OutputUnits(list(named.values()))
        lam = weight_decay if isinstance(weight_decay, Mapping) \
            else {n: weight_decay for n in self.names}
        missing = [n for n in self.names if n not in lam]
        if missing:
            raise KeyError(f'epsilon-shifted L2: no weight_decay for {missing[:5]}')
        self.weight_decay = {n: float(lam[n]) for n in self.names}
        device = self.units.params[0].device
        per_tensor = lambda f: torch.tensor(  # noqa: E731
            [f(n) for n, u in zip(self.names, self.units.units_per_tensor) for _ in range(u)],
            dtype=torch.float32, device=device)
        self._lam = per_tensor(lambda n: self.weight_decay[n])           # (units,)
        self._is_ws = per_tensor(lambda n: float(self.forms[n] == 'WS')).bool()
        n = self.units.lengths.float()
        # n_eff = n for WS (Eq. 26), 1 for WN (Eq. 25); sqrt_n turns ||W - m|| into v
        self._n_eff = torch.where(self._is_ws, n, torch.ones_like(n))
        self._sqrt_n = self._n_eff.sqrt()
        self._any_ws = 'WS' in self.forms.values()

    def _moments(self, flat: Tensor):
        """m (None when every unit is WN, else 0 for WN units) and the
        per-unit scale s: k = ||W|| (WN) or v (WS)."""
        mean, centred = None, flat
        if self._any_ws:  # WN-only sets (BN networks) skip the mean entirely
            mean = torch.where(self._is_ws, self.units.sum(flat) / self._n_eff,
                               torch.zeros_like(self._n_eff))
            centred = flat - self.units.expand(mean)
        scale = self.units.sum(centred * centred).sqrt() / self._sqrt_n
        return mean, scale.clamp_min(1e-12)

    def penalty(self) -> Tensor:
        """The regularizer, differentiable (the loss-term form):
        sum over units of (lambda/2) n_eff (m^2 + (s - eps)^2), with n_eff = 1
        and m = 0 for WN units (Eq. 25), s = k or v."""
        mean, scale = self._moments(self.units.flatten(self.units.params))
        shift = (scale - self.eps) ** 2
        if mean is not None:
            shift = shift + mean ** 2
        return (0.5 * self._lam * self._n_eff * shift).sum()

    @torch.no_grad()
    def gradient(self) -> Tensor:
        """Eq. 27 / 28 for every entry, as one flat fp32 vector:
        lambda (1 - eps/s) W_i + lambda eps/s m   (m = 0 for WN units)."""
        flat = self.units.flatten(self.units.params)
        mean, scale = self._moments(flat)
        term = flat.mul_(self.units.expand(self._lam * (1 - self.eps / scale)))
        if mean is not None:
            term += self.units.expand(self._lam * self.eps * mean / scale)
        return term

    @torch.no_grad()
    def add_gradient_(self, scale: Optional[Tensor] = None) -> None:
        """``W.grad += Eq. 27 / 28`` (times ``scale``, for gradients still
        multiplied by an AMP loss scale): the same update as adding
        :meth:`penalty` to the loss, without a graph. Call after backward,
        before the step."""
        params = self.units.params
        for p in params:
            if p.grad is None:  # unused in this forward: the penalty still pulls it
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        flat = self.gradient()
        if scale is not None:
            flat = flat * scale
        term = self.units.split(flat)
        torch._foreach_add_(grads, [t.to(g.dtype) for t, g in zip(term, grads)])

    @torch.no_grad()
    def scales(self) -> Dict[str, Tensor]:
        """k (WN) or v (WS) of every unit, per tensor: the quantity eps bounds."""
        _, scale = self._moments(self.units.flatten(self.units.params))
        return dict(zip(self.names, self.units.per_tensor(scale)))


@NORM_CONTROLLERS.register_module('EpsShiftedL2')
class EpsShiftedL2Controller(NormController):
    """epsilon-shifted L2 on WN / WS (and BN-followed) weights, replacing their
    weight decay; everything else keeps the optimizer's weight decay.

    Args:
        eps: the shift eps (>= 0; 0 is plain L2).
        weight_decay: lambda; ``None`` takes each tensor's configured decay.
        mode: ``'gradient'`` adds Eq. 27 / 28 to the gradients before each
            real step; ``'loss'`` adds the gradient of the penalty as autograd
            computes it (as if the penalty were a loss term; one more graph).
            Either way after gradient clipping, like the optimizer's own weight
            decay, and in the units of the unscaled gradients under AMP.
        bn_followed: also regularize BN-followed conv/linear weights (WN form).
        include, exclude: fnmatch patterns of parameter names.
        **kwargs: see :class:`~.controller.NormController`.
    """
    type_name = 'EpsShiftedL2'
    methods = {'eps_l2': '_base_/methods/eps_l2.py'}
    labels = {'eps_l2': 'eps-shifted L2'}
    one_group_per_tensor = True
    takes_over_weight_decay = True

    def __init__(self, eps: float = DEFAULT_EPS, weight_decay: Optional[float] = None,
                 mode: str = 'gradient', bn_followed: bool = True,
                 include: Sequence[str] = (), exclude: Sequence[str] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.eps = check_number(self.key('eps'), eps)
        self.weight_decay = check_number(self.key('weight_decay'), weight_decay,
                                         allow_none=True)
        self.mode = check_choice(self.key('mode'), mode, ('gradient', 'loss'))
        self.bn_followed = check_bool(self.key('bn_followed'), bn_followed)
        self.include = check_patterns(self.key('include'), include)
        self.exclude = check_patterns(self.key('exclude'), exclude)
        self.regularizer: Optional[EpsShiftedL2] = None

    def start(self, model: nn.Module, followed: dict, resumed_state) -> None:
        ws_types = ws_layer_types()
        sel = select_unit_invariant(model, followed if self.bn_followed else {},
                                    include=self.include, exclude=self.exclude)
        chosen = sel.groups.get('default', {})
        forms, reasons = {}, dict(sel.reasons)
        excluded = list(sel.excluded)
        params = dict(model.named_parameters())
        for mod_name, module in model.named_modules():
            if ws_types and isinstance(module, ws_types):
                name = f'{mod_name}.weight'
                if any(fnmatch.fnmatchcase(name, p) for p in self.exclude) \
                        or not params[name].requires_grad:
                    continue
                forms[name] = 'WS'
                reasons[name] = 'weight-standardized'
                excluded = [e for e in excluded if e[0] != name]
        for name in chosen:
            forms.setdefault(name, 'WN')
        if not forms:
            raise ValueError(
                'epsilon-shifted L2: no weight to regularize: the model has no WN layer '
                "(conv_cfg=dict(type='WNConv2d')), no WS layer (conv_cfg=dict(type='ConvWS'))"
                + (' and no conv followed by BatchNorm' if self.bn_followed else
                   f' ({self.key("bn_followed")}=False)') + f'; or set {self.key("include")}')
        named = {n: params[n] for n in forms}
        configured = self.apply_weight_decay_rule(named)
        lam = configured if self.weight_decay is None \
            else {n: self.weight_decay for n in named}
        self.regularizer = EpsShiftedL2(
            wn={n: p for n, p in named.items() if forms[n] == 'WN'},
            ws={n: p for n, p in named.items() if forms[n] == 'WS'},
            weight_decay=lam, eps=self.eps)
        groups = {'default': named}
        self.log_table(
            table.summary(f'epsilon-shifted L2 (eps={self.eps:g}, mode={self.mode}): '
                          f'{self.regularizer.units.num_units} output units',
                          groups, {'lambda': {'default': ', '.join(
                              f'{v:g}' for v in sorted(set(lam.values())))}},
                          excluded, model, reasons,
                          weight_decay=self.weight_decay_summary(model, named, configured)),
            table.details(groups, reasons, excluded,
                          {'form': forms, 'lambda': {n: f'{v:g}' for n, v in lam.items()}}))
        self.warn_uncontrolled(model, list(named), excluded)

    def before_step(self) -> None:
        # fused optimizers unscale inside their kernel: GradScaler hands them
        # the scale, and our term must be in the same (scaled) units
        scale = getattr(self.optimizer, 'grad_scale', None)
        if self.mode == 'gradient':
            self.regularizer.add_gradient_(scale)
        else:
            params = self.regularizer.units.params
            with torch.enable_grad():
                grads = torch.autograd.grad(self.regularizer.penalty(), params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    g = g if scale is None else g * scale
                    if p.grad is None:
                        p.grad = g.to(p.dtype)
                    else:
                        p.grad.add_(g.to(p.grad.dtype))

    def log_scalars(self, lr: float) -> Dict[str, Tensor]:
        if self.regularizer is None:
            return {}
        scales = torch.cat(list(self.regularizer.scales().values()))
        return {'unit_scale_mean': scales.mean(), 'unit_scale_min': scales.min()}
