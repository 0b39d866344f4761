"""Which weights are scale-invariant, and so belong to FixNorm's fixed set.

A weight W is scale-invariant when the network's output does not change if W
is multiplied by a positive constant. That holds for (paper Sec. 2.2, App. C):

* conv / linear weights whose output goes only into a normalisation that
  uses the statistics of its input (BatchNorm and SyncBN in training mode,
  GroupNorm, LayerNorm, InstanceNorm), directly or through shape-only ops
  (view, reshape, permute, flatten, transpose, contiguous);
* the direction ``v`` of weight-normalised layers (``WNConv2d``, ``WNLinear``);
* the weight of FixNorm-FC / FixNorm-Conv.

"Only into" is decided by watching one real forward pass
(:class:`NormFollowTracer`): the norm's input must be the very tensor a conv
returned, or a view of it made by shape-only ops, not modified in place since,
and the forward must use that tensor nowhere else (a residual branch beside
the norm carries the weight's scale past it). This works for any
architecture, including detectors, segmenters and transformers whose forward
no static rule could parse.
A BatchNorm in eval mode (mmdet's ``norm_eval=True`` freezes the backbone's
statistics) does not normalise by the batch, so the conv before it is *not*
scale-invariant and is left out, with that reason in the startup table.
"""
import fnmatch
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torch.nn.modules.conv import _ConvNd
from torch.overrides import TorchFunctionMode

from ..layers import FixNormConv2d, FixNormLinear, WNConv2d, WNLinear

NORM_TYPES = (_NormBase, nn.GroupNorm, nn.LayerNorm)
WEIGHT_LAYER_TYPES = (_ConvNd, nn.Linear)


def uses_input_statistics(norm: nn.Module) -> bool:
    """True when ``norm`` normalises by statistics of its current input."""
    if isinstance(norm, _BatchNorm):
        return norm.training or norm.running_mean is None
    if isinstance(norm, _NormBase):  # InstanceNorm
        return norm.training or not norm.track_running_stats
    return True


#: ops that move the elements of a tensor without changing any value: a layer
#: whose output reaches a normalization only through these feeds it directly
SHAPE_ONLY_OPS = frozenset({
    'view', 'view_as', 'reshape', 'reshape_as', 'permute', 'flatten', 'unflatten',
    'transpose', 'swapaxes', 'swapdims', 'movedim', 'moveaxis', 't', 'T', 'mT',
    'contiguous', 'squeeze', 'unsqueeze', 'clone', 'detach', 'data'})
#: ops that read only the shape, dtype or device of a tensor, not its values
METADATA_OPS = frozenset({'new_zeros', 'new_ones', 'new_empty', 'new_full', 'new_tensor'})


def _op_name(func) -> str:
    """``x.permute`` -> 'permute'; a property (``x.mT``) -> its name."""
    name = getattr(func, '__name__', '')
    if name == '__get__':
        name = getattr(getattr(func, '__self__', None), '__name__', name)
    return name


def _tensors(obj):
    """The tensors in an op's arguments (nested lists, as torch.cat takes them)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _returns_tensor(out) -> bool:
    return isinstance(out, Tensor) or (isinstance(out, (list, tuple)) and
                                       any(isinstance(o, Tensor) for o in out))


class _FollowMode(TorchFunctionMode):
    """Watches every torch op of a forward for the tracer: propagates a
    layer's output through shape-only ops, and records any other use of it."""

    def __init__(self, tracer: 'NormFollowTracer') -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tracer = self.tracer
        if tracer._inside_norm or not tracer._outputs:
            return out
        name = _op_name(func)
        if name in SHAPE_ONLY_OPS:
            # only the first argument is data (view_as(y) reads y's shape)
            source = tracer._layer_of(args[0]) if args else None
            if source is not None and isinstance(out, Tensor):
                tracer._track(out, source)
            return out
        if name in METADATA_OPS or not _returns_tensor(out):
            return out  # x.size(), x.dim(), x.new_zeros(...): no value is used
        for t in _tensors((args, kwargs)):
            layer = tracer._layer_of(t, any_version=True)
            if layer is not None:
                tracer._other_uses.setdefault(layer, name)
        return out


class NormFollowTracer:
    """Records, during forward passes, which weight layers feed a norm directly.

    A layer *feeds a norm directly* when every use of its output in the
    forward is the input of a normalization, possibly through shape-only ops
    (:data:`SHAPE_ONLY_OPS`: view, reshape, permute, flatten, transpose,
    contiguous, ...: they move elements and change no value, as the
    channel-last LayerNorm of ConvNeXt and the flatten-transpose-LayerNorm of
    mmcv's ``PatchEmbed`` need). Then scaling its weight by c scales the
    norm's input by c, which the norm removes. Any other use breaks that: a
    scale, an activation or an add between the layer and the norm, and also
    an add *beside* it (a residual branch that carries the layer's output
    past the norm, as after Swin's patch merging).

    The ops are watched by a ``TorchFunctionMode`` pushed for the duration of
    each forward of the model (a forward pre-hook and an always-called
    forward hook on the model), so the tracer costs nothing once detached.

    Use as a context manager around one forward, or :meth:`attach` / :meth:`detach`.
    ``followed`` maps a layer name to ``(norm name, norm class, uses input
    stats)``; ``also_used`` maps a layer that fed a norm *and* something
    else to the first other op (it is not in ``followed``).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._followed: Dict[str, Tuple[str, str, bool]] = {}
        self._other_uses: Dict[str, str] = {}
        #: weight layers in the order they first ran
        self.order: List[str] = []
        self._ran: set = set()
        self.seen_forward = False
        self._outputs: Dict[int, Tuple[Tensor, int, str]] = {}
        self._handles: list = []
        self._mode: Optional[_FollowMode] = None
        self._inside_norm = 0

    @property
    def followed(self) -> Dict[str, Tuple[str, str, bool]]:
        return {n: v for n, v in self._followed.items() if n not in self._other_uses}

    @property
    def also_used(self) -> Dict[str, str]:
        return {n: self._other_uses[n] for n in self._followed if n in self._other_uses}

    def attach(self) -> 'NormFollowTracer':
        self._handles.append(self.model.register_forward_pre_hook(self._enter))
        self._handles.append(self.model.register_forward_hook(self._exit, always_call=True))
        for name, module in self.model.named_modules():
            if isinstance(module, WEIGHT_LAYER_TYPES):
                self._handles.append(module.register_forward_hook(self._after_layer(name)))
            elif isinstance(module, NORM_TYPES):
                self._handles.append(module.register_forward_pre_hook(self._before_norm(name)))
                self._handles.append(module.register_forward_hook(self._after_norm,
                                                                  always_call=True))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._exit()
        self._outputs.clear()  # the strong references only lived for one forward

    def __enter__(self) -> 'NormFollowTracer':
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # ------------------------------------------------------------- bookkeeping
    def _enter(self, module, args) -> None:
        if self._mode is None:
            self._mode = _FollowMode(self)
            self._mode.__enter__()

    def _exit(self, *args) -> None:
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)
        self._inside_norm = 0
        self._outputs.clear()

    def _track(self, tensor: Tensor, layer: str) -> None:
        # keep the tensor alive so that its id() cannot be reused
        self._outputs[id(tensor)] = (tensor, tensor._version, layer)

    def _layer_of(self, x, any_version: bool = False) -> Optional[str]:
        """The layer whose unmodified output ``x`` is (through shape-only ops)."""
        entry = self._outputs.get(id(x)) if isinstance(x, Tensor) else None
        if entry is None or entry[0] is not x:
            return None
        return entry[2] if any_version or entry[1] == x._version else None

    def _after_layer(self, name: str):
        def hook(module, inputs, output):
            self.seen_forward = True
            if name not in self._ran:
                self._ran.add(name)
                self.order.append(name)
            if isinstance(output, Tensor):
                self._track(output, name)
        return hook

    def _before_norm(self, name: str):
        def hook(module, inputs):
            x = inputs[0] if inputs else None
            layer = None if self._inside_norm else self._layer_of(x)
            if layer is not None:
                self._followed.setdefault(layer, (name, type(module).__name__,
                                                  uses_input_statistics(module)))
            self._inside_norm += 1  # the norm's own ops on its input are no other use
        return hook

    def _after_norm(self, module, inputs, output) -> None:
        self._inside_norm = max(0, self._inside_norm - 1)


@dataclass
class Selection:
    """The fixed set: group -> {parameter name: parameter}, plus what was left out."""
    groups: Dict[str, Dict[str, nn.Parameter]]
    reasons: Dict[str, str]                       # selected name -> why it is fixed
    excluded: List[Tuple[str, int, str]] = field(default_factory=list)  # name, numel, why


def _match(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_fixed_params(model: nn.Module,
                        followed: Dict[str, Tuple[str, str, bool]],
                        include: Sequence[str] = (),
                        exclude: Sequence[str] = (),
                        groups: Optional[Sequence[dict]] = None,
                        detect: bool = True,
                        other_uses: Optional[Dict[str, str]] = None) -> Selection:
    """Build the fixed set of ``model`` (unwrapped, names as in its state_dict).

    Args:
        followed: output of :class:`NormFollowTracer` (may be empty).
        include: fnmatch patterns of parameter names to fix in addition.
        exclude: fnmatch patterns of parameter names never to fix.
        groups: ``[dict(name=..., include=[patterns])]``: fix these parts
            independently; the rest of the fixed set forms group ``'default'``.
        detect: select scale-invariant weights automatically (else only
            ``include``).
        other_uses: :attr:`NormFollowTracer.also_used`: layers that fed a
            normalization and something else (for the reason they are left out).
    """
    other_uses = other_uses or {}
    for key, patterns in (('include', include), ('exclude', exclude)):
        if isinstance(patterns, str):
            raise TypeError(f'FixNorm: `{key}` must be a list of patterns, '
                            f'got the string {patterns!r}')
    names = dict(model.named_parameters())
    for key, patterns in (('include', include), ('exclude', exclude)):
        for p in patterns:
            if not any(fnmatch.fnmatchcase(n, p) for n in names):
                raise ValueError(
                    f'FixNorm: {key} pattern {p!r} matches no parameter of the model '
                    f'(e.g. {", ".join(list(names)[:3])}, ...)')

    candidates: Dict[str, str] = {}
    excluded: List[Tuple[str, int, str]] = []
    for mod_name, module in model.named_modules():
        weight = getattr(module, 'weight', None)
        if not isinstance(weight, nn.Parameter):
            continue
        pname = f'{mod_name}.weight' if mod_name else 'weight'
        if isinstance(module, (FixNormLinear, FixNormConv2d)):
            candidates[pname] = 'FixNorm layer'
        elif isinstance(module, (WNConv2d, WNLinear)):
            candidates[pname] = 'weight-normalized'
        elif isinstance(module, WEIGHT_LAYER_TYPES):
            follow = followed.get(mod_name)
            if not weight.requires_grad:  # the first reason: nothing trains it
                excluded.append((pname, weight.numel(), 'frozen (requires_grad=False)'))
            elif follow is None and mod_name in other_uses:
                excluded.append((pname, weight.numel(),
                                 'feeds a normalization and also another op '
                                 f'({other_uses[mod_name]}): not scale-invariant'))
            elif follow is None:
                excluded.append((pname, weight.numel(), 'not followed by a normalization'))
            elif not follow[2]:
                excluded.append((pname, weight.numel(),
                                 f'followed by {follow[1]} in eval mode (frozen '
                                 f'statistics): not scale-invariant'))
            else:
                candidates[pname] = f'followed by {follow[1]}'
    if not detect:
        candidates = {}
    for n in names:
        if _match(n, include):
            candidates[n] = 'include pattern'

    selected: Dict[str, str] = {}
    for n, why in candidates.items():
        p = names[n]
        if _match(n, exclude):
            excluded.append((n, p.numel(), 'exclude pattern'))
        elif not p.requires_grad:
            excluded.append((n, p.numel(), 'frozen (requires_grad=False)'))
        else:
            selected[n] = why

    group_cfgs = list(groups or [])
    fixed: Dict[str, Dict[str, nn.Parameter]] = {}
    for n in selected:
        group = next((g['name'] for g in group_cfgs if _match(n, g['include'])), 'default')
        fixed.setdefault(group, {})[n] = names[n]
    return Selection(groups=fixed, reasons=selected, excluded=excluded)


@torch.no_grad()
def drop_zero_norm(selection: Selection) -> Selection:
    """Leave out tensors that are exactly zero (zero-initialised layers): they
    carry no direction yet and their scale cannot be fixed."""
    for group in list(selection.groups):
        named = selection.groups[group]
        if not named:
            continue
        norms = torch.stack(torch._foreach_norm(list(named.values()))).tolist()
        for (n, p), v in zip(list(named.items()), norms):
            if v == 0.0:
                del named[n]
                del selection.reasons[n]
                selection.excluded.append((n, p.numel(), 'zero norm at start (zero-initialised)'))
        if not named:
            del selection.groups[group]
    return selection


def unwrap(model: nn.Module) -> nn.Module:
    from mmengine.model import is_model_wrapper
    return model.module if is_model_wrapper(model) else model


#: selection reasons under which a weight is scale-invariant unit by unit
_PER_UNIT_REASONS = ('weight-normalized', 'include pattern')


def select_unit_invariant(model: nn.Module,
                          followed: Dict[str, Tuple[str, str, bool]],
                          include: Sequence[str] = (),
                          exclude: Sequence[str] = ()) -> Selection:
    """The weights whose output units are *each* scale-invariant: what
    epsilon-shifted L2 and WRS act on, unit by unit.

    That holds for conv / linear weights followed by a normalisation per
    channel with batch statistics (BatchNorm, SyncBN, InstanceNorm:
    BN(W_j x) ignores ||W_j||) and for the directions of weight-normalised
    layers. A GroupNorm / LayerNorm after a conv makes only the whole group
    scale-free, and FixNorm-FC / FixNorm-Conv divide by the norm of the whole
    tensor: those are left out, with the reason. Built on
    :func:`select_fixed_params` (same patterns, same tracer output); one
    group, ``'default'``.
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
