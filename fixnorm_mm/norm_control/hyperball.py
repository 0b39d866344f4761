"""Hyperball (Wen, Dang, Lyu, Ma & Liang, "Fantastic Pretraining Optimizers and
Where to Find Them II: Hyperball Optimization", arXiv 2606.16899, 2026) as a
norm-control method around any base optimizer (SGD, AdamW, ...).

Each controlled weight matrix W keeps its initial Frobenius norm R = ||W_0||_F,
and every update has the same length eta_t * R::

    W_{t+1} = R * Normalize(W_t - eta_t * R * Normalize(u_t)),   Normalize(X) = X / ||X||_F

u_t is the base optimizer's update; here it is read off the weights: the step
the optimizer just took, ``u_t = W_t - W_step`` (its lr, momentum, Adam
preconditioning included; its length does not matter, only its direction).
eta_t is an angular (relative) learning rate: the weight turns by about eta_t
radians a step. R, Normalize and the per-matrix scope are the paper's; how
eta_t relates to the optimizer's lr, which tensors are "matrices" in a vision
model, and the tiny-update guard are our choices (docs/paper_departures.md).

The arithmetic is :class:`Hyperball`, plain PyTorch for a bare training loop::

    ball = Hyperball({n: p for n, p in model.named_parameters() if p.dim() >= 2})
    for x, y in loader:
        loss_fn(model(x), y).backward()
        ball.remember()               # W_t
        optimizer.step()              # W_step: the base optimizer's update
        ball.project(lr)              # W_{t+1} on the sphere of radius R
        optimizer.zero_grad()

:class:`HyperballController` decides on what and when (``norm_control=dict(
type='Hyperball')``): the matrices are chosen at the first real step, R is
measured then (after pretrained weights were loaded) and travels in the
optimizer's state_dict under ``'hyperball'``.
"""
import fnmatch
import math
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..registry import NORM_CONTROLLERS
from . import table
from .controller import NormController, check_number, check_patterns
from .selection import WEIGHT_LAYER_TYPES

#: below this update norm the update is taken as none (Normalize(0) is undefined;
#: the authors' code clamps ||u|| the same way)
UPDATE_EPS = 1e-10


class Hyperball:
    """Keeps every tensor on the sphere of its initial norm, with updates of
    fixed length.

    Args:
        params: name -> tensor (each one matrix: a conv kernel counts as the
            matrix C_out x (C_in k k), its whole-tensor Frobenius norm).
        radii: R of each tensor (a 1-D tensor in ``params`` order); measured
            from the current weights when omitted.
        eps: the update-norm guard (:data:`UPDATE_EPS`).

    Memory: one weight-size buffer, allocated once and kept (W_t is copied
    into it before each step, and it holds u_t after).
    """

    def __init__(self, params: Mapping[str, Tensor], radii: Optional[Tensor] = None,
                 eps: float = UPDATE_EPS) -> None:
        if not params:
            raise ValueError('Hyperball: no tensor to control')
        self.names: List[str] = list(params)
        self.params: List[Tensor] = list(params.values())
        self.eps = eps
        self.radii = self.norms() if radii is None else self.checked_radii(radii)
        if bool((self.radii == 0).any()):
            zero = [n for n, r in zip(self.names, self.radii.tolist()) if r == 0]
            raise ValueError(f'Hyperball: R = 0 for {zero[:5]} (zero-initialised): a zero '
                             'matrix has no direction to keep on a sphere')
        self._buffer: Optional[List[Tensor]] = None

    @torch.no_grad()
    def norms(self) -> Tensor:
        """||W||_F of every tensor (fp32, on the tensors' device)."""
        return torch.stack(torch._foreach_norm(self.params)).float()

    @torch.no_grad()
    def remember(self) -> None:
        """Keep W_t (call right before the base optimizer's step)."""
        if self._buffer is None:
            self._buffer = [p.detach().clone() for p in self.params]
        else:
            torch._foreach_copy_(self._buffer, self.params)

    @torch.no_grad()
    def project(self, lr: Union[float, Sequence[float], Tensor],
                skip: Optional[Tensor] = None) -> Tensor:
        """W_{t+1} = R Normalize(W_t - lr R Normalize(W_t - W_step)), in place.

        Args:
            lr: eta_t, one for all tensors or one per tensor.
            skip: optional bool tensor; where true (an AMP step the loss scaler
                skipped inside a fused optimizer), the weights stay as they are.

        Returns:
            ||u_t||, the length of the base optimizer's step (device tensor).
        """
        if self._buffer is None:
            raise RuntimeError('Hyperball.project: call remember() before the step')
        u = self._buffer
        torch._foreach_sub_(u, self.params)                       # u_t = W_t - W_step
        u_norm = torch.stack(torch._foreach_norm(u)).float()
        eta = torch.as_tensor(lr, dtype=torch.float32, device=u_norm.device)
        # W_t - eta R u/||u|| = W_step + (1 - eta R / ||u||) u: one buffer suffices
        coef = 1 - eta * self.radii / u_norm.clamp_min(self.eps)
        coef = torch.where(u_norm > self.eps, coef, torch.zeros_like(coef))
        if skip is not None:
            coef = torch.where(skip.bool(), torch.zeros_like(coef), coef)
        dtype = self.params[0].dtype
        torch._foreach_mul_(u, list(coef.to(dtype).unbind()))
        torch._foreach_add_(self.params, u)
        factor = self.radii / self.norms()                         # R Normalize(.)
        if skip is not None:
            factor = torch.where(skip.bool(), torch.ones_like(factor), factor)
        torch._foreach_mul_(self.params, list(factor.to(dtype).unbind()))
        return u_norm

    def state_dict(self) -> dict:
        """Names, shapes, dtypes and R of every tensor."""
        return dict(params=list(self.names),
                    shapes=[list(p.shape) for p in self.params],
                    dtypes=[str(p.dtype).replace('torch.', '') for p in self.params],
                    radii=self.radii.detach().cpu())

    def checked_radii(self, radii) -> Tensor:
        radii = torch.as_tensor(radii, dtype=torch.float32, device=self.params[0].device)
        if tuple(radii.shape) != (len(self.params),):
            raise ValueError(f'Hyperball: {tuple(radii.shape)} radii for '
                             f'{len(self.params)} tensors')
        return radii.clone()

    @staticmethod
    def check_compatible(state: dict, params: Mapping[str, Tensor]) -> None:
        """Raise if ``state`` (a :meth:`state_dict`) controlled other tensors
        (names, shapes, dtypes) than ``params``."""
        saved, names = list(state['params']), list(params)
        if saved != names:
            a, b = set(saved), set(names)
            raise ValueError(
                'Hyperball: the checkpoint being resumed kept other matrices on their '
                f'spheres than this config selects: only in the checkpoint {sorted(a - b)[:5]}, '
                f'only in this model {sorted(b - a)[:5]}'
                + ('' if a != b else ' (same names, other order)'))
        wrong = []
        for i, (name, p) in enumerate(params.items()):
            if list(state['shapes'][i]) != list(p.shape):
                wrong.append(f'{name}: shape {tuple(state["shapes"][i])} in the checkpoint, '
                             f'{tuple(p.shape)} in this model')
            elif state['dtypes'][i] != str(p.dtype).replace('torch.', ''):
                wrong.append(f'{name}: dtype {state["dtypes"][i]} in the checkpoint, '
                             f'{str(p.dtype).replace("torch.", "")} in this model')
        if wrong:
            raise ValueError('Hyperball: the checkpoint being resumed has matrices of other '
                             'shapes or dtypes; its radii do not apply. ' + '; '.join(wrong[:5]))


def _attention_matrices(model: nn.Module) -> Dict[str, str]:
    """Projection matrices that are parameters of torch's MultiheadAttention,
    not of a Linear (``in_proj_weight``, or ``q/k/v_proj_weight``)."""
    out = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            for attr in ('in_proj_weight', 'q_proj_weight', 'k_proj_weight', 'v_proj_weight'):
                if isinstance(getattr(module, attr, None), nn.Parameter):
                    out[f'{mod_name}.{attr}' if mod_name else attr] = \
                        'attention projection matrix'
    return out


@NORM_CONTROLLERS.register_module('Hyperball')
class HyperballController(NormController):
    """Hyperball around the optimizer the config names.

    What it controls (the *Hyperball set*): every trainable weight of a
    conv / linear layer (FixNorm and WN layers included) and the projection
    matrices of ``nn.MultiheadAttention``, except the *input embedding* (the
    first conv/linear layer the traced forward runs: ViT's patch embedding,
    a CNN's stem, the analogue of a language model's token embedding, which
    the paper leaves to the base optimizer) and zero-initialised matrices
    (R = 0). Embeddings, position tables, tokens, biases, norm gains stay
    with the base optimizer. Their weight decay is the config's, unless
    ``uncontrolled_weight_decay='none'`` (the paper's setting).

    Args:
        lr: the angular learning rate eta. None (default): eta_t is the
            param group's lr at that step. A number: eta_t = ``lr`` x the
            group's lr / the optimizer's base lr, so the config's schedule
            (warm-up, decay, lr_mult) is applied to eta while the base
            optimizer keeps its own lr for the tensors Hyperball leaves to it.
            ``--method hyperball`` / ``apply_method`` set it to
            sqrt(lr x weight_decay) of the config it converts (the authors'
            starting point) when that config has weight decay.
        include, exclude: fnmatch patterns of parameter names to control in
            addition / never to control.
        input_layer: ``'exclude'`` (default) or ``'include'`` the input
            embedding.
        **kwargs: see :class:`~.controller.NormController`.
    """
    type_name = 'Hyperball'
    methods = {'hyperball': '_base_/methods/hyperball.py'}
    labels = {'hyperball': 'Hyperball'}
    state_key = 'hyperball'
    default_weight_decay = 0.0
    takes_over_weight_decay = True

    def __init__(self, lr: Optional[float] = None, include: Sequence[str] = (),
                 exclude: Sequence[str] = (), input_layer: str = 'exclude', **kwargs) -> None:
        super().__init__(**kwargs)
        self.lr = check_number(self.key('lr'), lr, allow_none=True, strict=True)
        self.include = check_patterns(self.key('include'), include)
        self.exclude = check_patterns(self.key('exclude'), exclude)
        if input_layer not in ('exclude', 'include'):
            raise ValueError(f"{self.key('input_layer')} must be 'exclude' or 'include', "
                             f'got {input_layer!r}')
        self.input_layer = input_layer
        self.ball: Optional[Hyperball] = None
        self.base_lr: float = 1.0
        self._group_index: List[int] = []

    @classmethod
    def adapt_to_config(cls, norm_control: dict, optimizer: dict) -> Optional[str]:
        """eta = sqrt(lr x weight_decay) of the converted config when it has
        weight decay (the authors' starting point: decoupled weight decay
        settles at an angular step of that order); else eta is the lr."""
        if norm_control.get('lr') is not None:
            return None
        lr, wd = optimizer.get('lr'), optimizer.get('weight_decay', 0) or 0
        if not isinstance(lr, (int, float)) or not isinstance(wd, (int, float)):
            return None
        if wd > 0 and lr > 0:
            norm_control['lr'] = float(f'{math.sqrt(lr * wd):.4g}')
            return (f"Hyperball: norm_control.lr = sqrt(lr x weight_decay) = sqrt({lr:g} x "
                    f"{wd:g}) = {norm_control['lr']:g}, the angular learning rate (the "
                    'authors\' starting point); the schedule of the config applies to it')
        return (f'Hyperball: the config has no weight decay, so the angular learning rate is '
                f'the optimizer\'s lr ({lr:g}); set optim_wrapper.norm_control.lr to choose it')

    # ------------------------------------------------------------- selection
    def select(self, model: nn.Module) -> tuple:
        """(name -> param, name -> why, excluded) of the Hyperball set."""
        params = dict(model.named_parameters())
        for key, patterns in (('include', self.include), ('exclude', self.exclude)):
            for p in patterns:
                if not any(fnmatch.fnmatchcase(n, p) for n in params):
                    raise ValueError(f'Hyperball: {self.key(key)} pattern {p!r} matches no '
                                     f'parameter of the model (e.g. {", ".join(list(params)[:3])})')
        candidates: Dict[str, str] = {}
        for mod_name, module in model.named_modules():
            w = getattr(module, 'weight', None)
            if isinstance(module, WEIGHT_LAYER_TYPES) and isinstance(w, nn.Parameter):
                candidates[f'{mod_name}.weight' if mod_name else 'weight'] = 'weight matrix'
        candidates.update(_attention_matrices(model))
        first = next(iter(self.layer_order), None)
        excluded = []
        if self.input_layer == 'exclude' and first is not None:
            name = f'{first}.weight' if first else 'weight'
            if candidates.pop(name, None) is not None:
                excluded.append((name, params[name].numel(),
                                 'input embedding (the first layer the forward runs)'))
        for n in params:
            if any(fnmatch.fnmatchcase(n, p) for p in self.include):
                candidates[n] = 'include pattern'
        chosen, reasons = {}, {}
        with torch.no_grad():
            for n, why in candidates.items():
                p = params[n]
                if any(fnmatch.fnmatchcase(n, q) for q in self.exclude):
                    excluded.append((n, p.numel(), 'exclude pattern'))
                elif not p.requires_grad:
                    excluded.append((n, p.numel(), 'frozen (requires_grad=False)'))
                elif p.dim() < 2:
                    excluded.append((n, p.numel(), 'not a matrix (1-D)'))
                elif float(p.norm()) == 0.0:
                    excluded.append((n, p.numel(), 'zero norm at start (R = 0)'))
                else:
                    chosen[n], reasons[n] = p, why
        return chosen, reasons, excluded

    # ------------------------------------------------------------- life cycle
    def start(self, model: nn.Module, followed, resumed_state) -> None:
        chosen, reasons, excluded = self.select(model)
        if not chosen:
            raise ValueError('Hyperball: no weight matrix to control. Left out: '
                             + '; '.join(f'{n} ({why})' for n, _, why in excluded[:8]))
        group_of = {id(p): i for i, g in enumerate(self.optimizer.param_groups)
                    for p in g['params']}
        missing = [n for n, p in chosen.items() if id(p) not in group_of]
        if missing:
            raise ValueError(f'Hyperball: {missing[:5]} are not optimized by this optimizer '
                             '(left out of its params); exclude them with '
                             f"{self.key('exclude')}")
        self._group_index = [group_of[id(p)] for p in chosen.values()]
        self.base_lr = float(self.optimizer.defaults.get('lr', 0.0) or 0.0)
        if self.lr is not None and self.base_lr <= 0:
            raise ValueError(f'Hyperball: {self.key("lr")}={self.lr} scales the schedule of '
                             'the optimizer\'s lr, which is 0: set optim_wrapper.optimizer.lr')
        configured = self.apply_weight_decay_rule(chosen)
        radii = None
        if resumed_state is not None:
            Hyperball.check_compatible(resumed_state, chosen)
            radii = resumed_state['radii']
        self.ball = Hyperball(chosen, radii=radii)
        if resumed_state is not None:
            self._check_resumed_norms()
        self._log_table(model, chosen, reasons, excluded, configured,
                        resumed=resumed_state is not None)

    def etas(self) -> List[float]:
        """eta_t of every controlled tensor, from its param group's lr now."""
        scale = 1.0 if self.lr is None else self.lr / self.base_lr
        lrs = [float(g['lr']) for g in self.optimizer.param_groups]
        return [lrs[i] * scale for i in self._group_index]

    def before_step(self) -> None:
        self.ball.remember()

    def after_step(self, skip: Optional[Tensor] = None) -> None:
        self.ball.project(self.etas(), skip)

    def state_dict(self) -> Optional[dict]:
        if self.ball is not None:
            return self.ball.state_dict()
        if self._resumed is not None and self._resumed[1] is not None:
            return self._resumed[1]  # saved again before the first step
        return None

    def _check_resumed_norms(self, rtol: float = 1e-3) -> None:
        now, radii = self.ball.norms(), self.ball.radii
        dev = ((now - radii).abs() / radii).max()
        if float(dev) > rtol:
            i = int(((now - radii).abs() / radii).argmax())
            raise ValueError(
                f'Hyperball: the resumed weight {self.ball.names[i]} has norm '
                f'{float(now[i]):.6g} but the checkpoint keeps it at R = {float(radii[i]):.6g}: '
                'these weights were not trained with this optimizer state. Resume from one '
                f"checkpoint, or set {self.key('on_method_change')}='restart' with a "
                'checkpoint of another method.')

    def _log_table(self, model, chosen, reasons, excluded, configured, resumed) -> None:
        groups = {'default': chosen}
        radii = self.ball.radii.tolist()
        eta = 'group lr' if self.lr is None else f'{self.lr:g} x lr/{self.base_lr:g}'
        title = (f'Hyperball: {len(chosen)} matrices each kept at its initial norm R, '
                 f'updates of length eta R (eta = {eta})'
                 + (': radii restored from the checkpoint' if resumed else ''))
        self.log_table(
            table.summary(title, groups,
                          {'R min..max': {'default': f'{min(radii):.3g}..{max(radii):.3g}'}},
                          excluded, model, reasons,
                          weight_decay=self.weight_decay_summary(model, chosen, configured)),
            table.details(groups, reasons, excluded,
                          {'R': {n: f'{r:.6g}' for n, r in zip(chosen, radii)}}))
        self.warn_uncontrolled(model, list(chosen), excluded)

    def log_scalars(self, lr: float) -> Dict[str, Tensor]:
        if self.ball is None:
            return {}
        dev = ((self.ball.norms() - self.ball.radii).abs() / self.ball.radii).max()
        # ends in 'lr': mmengine prints it as a learning rate
        return {'sphere_max_rel_dev': dev, 'angular_lr': torch.tensor(self.etas()[0])}
