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
from typing import Dict, Mapping, Optional, Union

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import Tensor, nn

from .base import (NormControlWrapperMixin, format_selection,
                   select_unit_invariant)
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
    def add_gradient_(self) -> None:
        """``W.grad += Eq. 27 / 28``: the same update as adding :meth:`penalty`
        to the loss, without a graph. Call after backward, before the step."""
        params = self.units.params
        for p in params:
            if p.grad is None:  # unused in this forward: the penalty still pulls it
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        term = self.units.split(self.gradient())
        torch._foreach_add_(grads, [t.to(g.dtype) for t, g in zip(term, grads)])

    @torch.no_grad()
    def scales(self) -> Dict[str, Tensor]:
        """k (WN) or v (WS) of every unit, per tensor: the quantity eps bounds."""
        _, scale = self._moments(self.units.flatten(self.units.params))
        return dict(zip(self.names, self.units.per_tensor(scale)))


@OPTIM_WRAPPERS.register_module()
class EpsShiftedL2OptimWrapper(NormControlWrapperMixin, OptimWrapper):
    """``OptimWrapper`` + epsilon-shifted L2 on WN / WS (and BN-followed) weights.

    ``eps_shifted_l2=dict(eps=1e-3, weight_decay=None, mode='gradient',
    bn_followed=True, include=[], exclude=[])``:

    * ``weight_decay``: lambda; ``None`` takes each tensor's configured decay.
    * ``mode='gradient'`` adds Eq. 27 / 28 to the gradients before the step
      (and before gradient clipping, as a loss term would); ``'loss'`` adds
      the penalty to the loss and lets autograd do it (one more graph).
    * ``bn_followed``: also regularize BN-followed conv/linear weights (WN form).
    * ``include`` / ``exclude``: fnmatch patterns of parameter names.

    Build it with ``constructor='NormControlOptimWrapperConstructor'``.
    """
    method_name = 'epsilon-shifted L2'

    def __init__(self, optimizer, model: Optional[nn.Module] = None,
                 eps_shifted_l2: Optional[dict] = None, **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        cfg = dict(eps=DEFAULT_EPS, weight_decay=None, mode='gradient', bn_followed=True,
                   include=[], exclude=[])
        unknown = set(eps_shifted_l2 or {}) - set(cfg)
        if unknown:
            raise ValueError(f'eps_shifted_l2: unknown keys {sorted(unknown)}; '
                             f'allowed: {sorted(cfg)}')
        cfg.update(eps_shifted_l2 or {})
        if cfg['mode'] not in ('gradient', 'loss'):
            raise ValueError(f"eps_shifted_l2.mode must be 'gradient' or 'loss', "
                             f"got {cfg['mode']!r}")
        self.eps_cfg = cfg
        self.regularizer: Optional[EpsShiftedL2] = None
        self._init_control(model)

    def _start_method(self, model: nn.Module, followed: dict) -> None:
        cfg = self.eps_cfg
        ws_types = ws_layer_types()
        sel = select_unit_invariant(model, followed if cfg['bn_followed'] else {},
                                    include=cfg['include'], exclude=cfg['exclude'])
        chosen = sel.groups.get('default', {})
        forms, reasons = {}, dict(sel.reasons)
        excluded = list(sel.excluded)
        params = dict(model.named_parameters())
        for mod_name, module in model.named_modules():
            if ws_types and isinstance(module, ws_types):
                name = f'{mod_name}.weight'
                if any(fnmatch.fnmatchcase(name, p) for p in cfg['exclude']) \
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
                + (' and no conv followed by BatchNorm' if cfg['bn_followed'] else
                   ' (bn_followed=False)') + '; or set eps_shifted_l2.include')
        named = {n: params[n] for n in forms}
        configured = self.take_over_weight_decay(named)
        lam = configured if cfg['weight_decay'] is None \
            else {n: float(cfg['weight_decay']) for n in named}
        self.regularizer = EpsShiftedL2(
            wn={n: p for n, p in named.items() if forms[n] == 'WN'},
            ws={n: p for n, p in named.items() if forms[n] == 'WS'},
            weight_decay=lam, eps=cfg['eps'])
        rows = [(n, forms[n], f'{lam[n]:g}', reasons[n]) for n in named]
        print_log(format_selection(
            f"epsilon-shifted L2 (eps={cfg['eps']:g}, mode={cfg['mode']}): "
            f'{len(named)} tensors, {self.regularizer.units.num_units} units',
            rows, ('tensor', 'form', 'lambda', 'why'), excluded), logger='current')

    def scale_loss(self, loss: Tensor) -> Tensor:
        # update_params: scale_loss -> backward -> step. Adding the penalty
        # here makes gradient accumulation scale it like the loss.
        if self.eps_cfg['mode'] == 'loss':
            self._start()
            loss = loss + self.regularizer.penalty()
        return super().scale_loss(loss)

    def step(self, **kwargs) -> None:
        self._start()
        if self.eps_cfg['mode'] == 'gradient':
            self.regularizer.add_gradient_()
        super().step(**kwargs)

