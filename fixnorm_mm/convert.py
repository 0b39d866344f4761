"""FixNorm for any existing config: convert a built model in place.

The FixNorm recipe (paper Sec. 2.3 and App. C, D.2, D.3) changes a network in
two ways, whatever it is:

* the final classification layers become FixNorm-FC (Eq. 10) or FixNorm-Conv
  (Eq. 29), which caps the norm that controls the cross-boundary risk;
* every conv and FC that no normalization follows (FPN, RPN, RoI box and
  mask heads, segmentation heads, SE layers) becomes weight-normalized, so
  that its direction is scale-invariant and joins the fixed set of Algo 1
  (App. D.3).

``FixNormModel`` is a builder in mmengine's ``MODELS``: it builds the user's
model from the same config keys, converts it and returns it. The returned
model is an instance of the user's class with the same module names (so the
same state_dict keys, plus one ``g`` per converted layer), and the conversion
happens when the model is built: before DDP wrapping and before the
optimizer, in the Runner and in every tool that builds models from configs
(``init_detector``, ``tools/test.py``, ...). Three lines turn a config into a
FixNorm config::

    _base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
    model = dict(type='FixNormModel', model_type=_base_.model.type, final_layer='auto')
    optim_wrapper = dict(type='FixNormOptimWrapper', optimizer=dict(weight_decay=0),
                         constructor='FixNormOptimWrapperConstructor')

Which layers no normalization follows is seen, not guessed: the model runs
the way training runs it, through its own loss path on a synthetic batch of
its task (:mod:`fixnorm_mm.tracing`), under the tracer of the fixed-set
selection. A conv followed by a frozen (eval-mode) BatchNorm is followed by a
normalization and stays plain, as in the paper; the log says so, and
``backbone_norm_eval=False`` lets such a backbone's BN train instead.
"""
import copy
import difflib
import fnmatch
import inspect
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from torch import nn

from .config_keys import accepted_keys, check_keys
from .layers import (NORMALIZED_LAYERS, FixNormConv2d, FixNormLinear, WNConv2d, WNLinear,
                     gain_snapshot, settle_gains)
from .layers.fixnorm import check_alpha
from .tracing import find_task, trace_loss, trace_tensor_forward
from .tracing.base import Trace, known_tasks, weight_layers


def _is_plain(module: nn.Module, kind) -> bool:
    """A conv/linear whose forward is the textbook one: torch's class or
    mmcv's empty-tensor-tolerant wrapper of it. Subclasses with their own
    forward (deformable, adaptive padding, ...) are not converted."""
    cls = type(module)
    if cls is kind:
        return True
    return cls.__name__ == kind.__name__ and cls.__module__ == 'mmcv.cnn.bricks.wrappers'


def _conv_args(conv: nn.Conv2d) -> dict:
    return dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` (a layer built by :func:`to_fixnorm_layer` /
    :func:`to_wn_layer`, weights included) in place of the layer at ``name``,
    and wherever else the same layer object sits: a layer shared by several
    parents (Deformable DETR's ``cls_branches`` without box refinement hold
    one Linear six times) is listed once by ``named_modules()`` and stays
    shared, as one converted layer."""
    old = model.get_submodule(name)
    for parent in model.modules():
        for attr, child in list(parent._modules.items()):
            if child is old:
                setattr(parent, attr, new)


def to_fixnorm_layer(layer: nn.Module, alpha: float) -> nn.Module:
    """FixNorm-FC (Eq. 10) for an ``nn.Linear``, FixNorm-Conv (Eq. 29) for an
    ``nn.Conv2d``: the layer's shape, bias, weights (g = ||W||), device, dtype,
    ``requires_grad`` and mode."""
    if _is_plain(layer, nn.Linear):
        return FixNormLinear.from_plain(layer, alpha)
    if _is_plain(layer, nn.Conv2d):
        return FixNormConv2d.from_plain(layer, alpha)
    raise TypeError(f'FixNorm-FC/Conv replaces an nn.Linear or nn.Conv2d, got '
                    f'{type(layer).__name__}')


def to_wn_layer(layer: nn.Module) -> nn.Module:
    """The weight-normalised twin of a plain ``nn.Conv2d`` / ``nn.Linear``
    (one g per output unit), weights included."""
    if _is_plain(layer, nn.Linear):
        return WNLinear.from_plain(layer)
    if _is_plain(layer, nn.Conv2d):
        return WNConv2d.from_plain(layer)
    raise TypeError(f'weight normalisation replaces an nn.Linear or nn.Conv2d, got '
                    f'{type(layer).__name__}')


def _is_convertible(module: nn.Module) -> bool:
    return _is_plain(module, nn.Conv2d) or _is_plain(module, nn.Linear)


@dataclass
class Conversion:
    """What :func:`convert_model` did to a model, and why; ``format()`` is
    the log FixNormModel prints when it builds a model."""
    model: str
    alpha: float
    #: final layer name -> the rule that chose it
    final_rules: Dict[str, str] = field(default_factory=dict)
    #: layer name -> its new class name (finals first, then WN layers)
    converted: Dict[str, str] = field(default_factory=dict)
    trace: Optional[Trace] = None
    #: (layer, norm class): conv/linear layers that feed a norm with frozen statistics
    frozen_statistics: List[Tuple[str, str]] = field(default_factory=list)
    #: conv/linear layers whose weight does not train (requires_grad=False)
    frozen_weights: List[str] = field(default_factory=list)
    #: (layer, class): no norm follows them, but they are not plain Conv2d/Linear
    not_convertible: List[Tuple[str, str]] = field(default_factory=list)
    #: plain conv/linear layers that did not run in the traced step
    unseen: List[str] = field(default_factory=list)
    #: lines added by the builder (backbone_norm_eval, ...)
    notes: List[str] = field(default_factory=list)
    #: the ``weight_norm`` preset used, if any
    preset: Optional[str] = None

    @property
    def final_layers(self) -> List[str]:
        return list(self.final_rules)

    @property
    def weight_normalized(self) -> List[str]:
        return [n for n in self.converted if n not in self.final_rules]

    def format(self, max_names: int = 8) -> str:
        def names(items):
            items = list(items)
            more = f', ... (+{len(items) - max_names})' if len(items) > max_names else ''
            return ', '.join(items[:max_names]) + more

        wn = self.weight_normalized
        lines = [f'FixNormModel: converted {len(self.converted)} layer(s) of {self.model} '
                 f'(alpha={self.alpha}): {len(self.final_rules)} final classification '
                 f'layer(s), {len(wn)} weight-normalized']
        lines.append('final classification layers -> FixNorm-FC/Conv (Eq. 10/29):')
        for n, rule in self.final_rules.items():
            lines.append(f'  {n}: {self.converted.get(n, "?")}  ({rule})')
        if self.trace is not None:
            lines.append(f'weight-normalized (App. D.3): no normalization follows them in '
                         f'{self.trace.how}:')
        elif wn and self.preset:
            lines.append(f"weight-normalized (weight_norm='{self.preset}': the linear layers "
                         'of the attention and MLP blocks):')
        elif wn:
            lines.append('weight-normalized (weight_norm patterns):')
        for n in wn:
            lines.append(f'  {n}: {self.converted[n]}')
        frozen_w = set(self.frozen_weights)
        stats = [(n, c) for n, c in self.frozen_statistics if n not in frozen_w]
        if stats or frozen_w or self.not_convertible or self.unseen:
            lines.append('left plain and out of the fixed set:')
        if stats:
            kinds = sorted({c for _, c in stats})
            lines.append(
                f'  {len(stats)} conv(s) feed {"/".join(kinds)} in eval mode (frozen '
                f'statistics, e.g. norm_eval=True), which does not normalize by the batch, so '
                f'their weights are not scale-invariant: {names(n for n, _ in stats)}')
            if any(n.startswith('backbone.') for n, _ in stats):
                lines.append(
                    '    -> FixNormModel(backbone_norm_eval=False) lets the backbone\'s BN '
                    'train so that these convs join the fixed set; the default '
                    '(backbone_norm_eval=None) keeps the config\'s norm_eval')
        if frozen_w:
            lines.append(f'  {len(frozen_w)} layer(s) do not train (requires_grad=False, e.g. '
                         f'frozen_stages of the backbone: the stem and the first stages): '
                         f'{names(self.frozen_weights)}')
        if self.not_convertible:
            lines.append(f'  {len(self.not_convertible)} layer(s) no normalization follows '
                         'are not plain Conv2d/Linear, which are the only ones weight-'
                         'normalized: ' + names(f'{n} ({c})' for n, c in self.not_convertible))
        if self.unseen:
            lines.append(f'  {len(self.unseen)} conv/linear layer(s) did not run in the traced '
                         f'step: {names(self.unseen)}')
        if self.notes:
            lines.append('backbone_norm_eval:')
            lines += [f'  {n}' for n in self.notes]
        return '\n'.join(lines)


def _trace(model: nn.Module, task, input_shape: Optional[Sequence[int]]) -> Trace:
    """Run ``model`` (a copy) the way training runs it, traced: the task's loss
    on its synthetic batch, or for a model no task knows, ``forward(x)`` on a
    random batch of ``input_shape``."""
    if task is None:
        if input_shape is None and isinstance(model, BaseModel):
            raise ValueError(
                f"FixNormModel: weight_norm='auto' runs the model the way training runs "
                f'it, on a synthetic batch of its task, and no task of TRACING_TASKS '
                f'({known_tasks()}) knows {type(model).__name__}. Set '
                "trace_input_shape=(C, H, W) to trace its forward(x, mode='tensor') on a "
                'random batch of that shape (layers that run only in the loss path then '
                'stay plain), or name the layers to weight-normalize: '
                'weight_norm=[fnmatch patterns]. (A new task registers its batch maker: '
                '@TRACING_TASKS.register_module() on a fixnorm_mm.tracing.TaskTracing.)')
        if input_shape is None:
            first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
            if first is None:
                raise ValueError('FixNormModel: the model has no Conv2d to infer the input '
                                 'from; set trace_input_shape=(C, H, W) or '
                                 'weight_norm=[patterns]')
            input_shape = (first.in_channels, 64, 64)
    what = (f'the {task.task} loss of {type(model).__name__} on a synthetic batch'
            if task is not None else f'a forward of {type(model).__name__} on a random batch '
            f'of shape (2, {", ".join(map(str, input_shape))})')
    try:
        if task is not None:
            return trace_loss(model, task, None if input_shape is None else input_shape[-2:])
        return trace_tensor_forward(model, input_shape)
    except Exception as e:
        raise RuntimeError(
            f"FixNormModel: weight_norm='auto' runs {what} to see "
            f'which layers no normalization follows, and it failed ({type(e).__name__}: {e}). '
            'Set trace_input_shape=(C, H, W) (the size of the traced images), or list the '
            'layers to weight-normalize: weight_norm=[fnmatch patterns]') from e


def _check_patterns(key: str, patterns: Sequence[str], names: Sequence[str]) -> None:
    if isinstance(patterns, str):
        raise TypeError(f'FixNormModel: {key} must be a list of patterns, got the string '
                        f'{patterns!r}')
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n, p) for n in names):
            raise ValueError(f'FixNormModel: {key} pattern {p!r} matches no conv/linear '
                             f'layer of the model (e.g. {", ".join(list(names)[-3:])})')


def _example_patterns(names: Sequence[str], n: int = 3) -> List[str]:
    """A few fnmatch patterns that cover ``names`` (indices become ``*``)."""
    out: List[str] = []
    for name in names:
        p = re.sub(r'\.\d+(?=\.|$)', '.*', name)
        if p not in out:
            out.append(p)
    # 'a.*.fc.*' covers 'a.*.fc.*.*': keep the broader one
    out = [p for p in out if not any(q != p and fnmatch.fnmatchcase(p, q) for q in out)]
    return out[-n:]


def _final_rules(model: nn.Module, final_layer, task, modules: dict,
                 layers: List[str]) -> Dict[str, str]:
    if final_layer == 'auto':
        if task is None:
            raise ValueError(
                f"FixNormModel: final_layer='auto' finds the classification layers in the "
                f'heads of the models of {known_tasks()}; {type(model).__name__} is none of '
                f'them: name them, final_layer=[...] (its last conv/linear layers are '
                f'{layers[-4:]})')
        rules = {n: r for n, r in task.final_layers(model).items()
                 if not isinstance(modules[n], NORMALIZED_LAYERS)}
        if not rules:
            raise ValueError(
                f"FixNormModel: final_layer='auto' found no classification layer in the heads "
                f'of {type(model).__name__} ({type(task).__name__}.final_layers); name them: '
                f'final_layer=[...] (its last conv/linear layers are {layers[-4:]})')
        return rules
    finals = [final_layer] if isinstance(final_layer, str) else list(final_layer or [])
    if not finals:
        raise ValueError('FixNormModel: final_layer is required: the name(s) of the final '
                         "classification layer(s), e.g. 'head.fc' or 'decode_head.conv_seg', "
                         "or 'auto' to take the class-score layers of the model's heads")
    return {n: 'named in final_layer' for n in finals}


def _no_scale_invariant_weight(model: nn.Module, trace: Trace, finals) -> ValueError:
    candidates = [n for n, m in weight_layers(model)
                  if n not in finals and n in trace.ran and _is_convertible(m)]
    examples = _example_patterns([n for n in candidates
                                  if isinstance(model.get_submodule(n), nn.Linear)] or candidates)
    return ValueError(
        f'FixNormModel: no conv/linear layer of {type(model).__name__} feeds a normalization '
        f'in {trace.how}, so no weight of it is scale-invariant (in a pre-norm transformer '
        'such as ViT or DeiT, each LayerNorm comes before its linear layers and is fed by a '
        'residual sum, not by a layer). Algo 1 keeps the norm of the scale-invariant '
        'weights fixed, so FixNorm does not apply to this model as it is. Two routes: '
        "(1) train the stock model with Hyperball, norm_control=dict(type='Hyperball') "
        '(--method hyperball; docs/methods.md), which keeps every weight matrix at its '
        'initial norm and needs no scale-invariant weight; (2) make chosen layers '
        "scale-invariant by weight normalization: weight_norm='attention_mlp' (the linear "
        'layers of every attention and MLP block), or weight_norm=[fnmatch patterns] (e.g. '
        f'weight_norm={examples}), with final_layer as usual.')


#: ``weight_norm='attention_mlp'``: blocks whose plain linear layers it weight-normalizes
#: (by class name: mmpretrain's MultiheadAttention, WindowMSA, mmcv's FFN, Mlp, ...)
ATTENTION_MLP_BLOCKS = re.compile(r'attention|attn|msa|ffn|mlp', re.IGNORECASE)
#: the presets ``weight_norm`` takes besides ``'auto'``
WEIGHT_NORM_PRESETS = ('attention_mlp',)


def _is_projection(layer: nn.Module) -> bool:
    """A plain linear layer, or a plain 1x1 conv (PoolFormer's MLP): a per-token
    projection."""
    return _is_plain(layer, nn.Linear) or (
        _is_plain(layer, nn.Conv2d) and tuple(layer.kernel_size) == (1, 1)
        and layer.groups == 1)


def attention_mlp_layers(model: nn.Module) -> List[str]:
    """The plain linear layers (and 1x1 convs) inside attention and MLP blocks
    (``qkv``, ``proj``, ``fc1``, ``fc2``, ``ffn.layers.*``): the projections of a
    pre-norm transformer, none of which a normalization follows."""
    out: List[str] = []
    for name, module in model.named_modules():
        if not ATTENTION_MLP_BLOCKS.search(type(module).__name__):
            continue
        for sub, layer in module.named_modules():
            full = f'{name}.{sub}' if name else sub
            if sub and _is_projection(layer) and full not in out:
                out.append(full)
    return out


def convert_model(model: nn.Module, final_layer: Union[str, Sequence[str]] = 'auto',
                  alpha: float = 1.0, weight_norm: Union[str, bool, Sequence[str]] = 'auto',
                  weight_norm_exclude: Sequence[str] = (),
                  trace_input_shape: Optional[Sequence[int]] = None) -> Conversion:
    """Convert ``model`` in place (paper Sec. 2.3, App. D.3); see
    :func:`convert_to_fixnorm` for the arguments. Returns a :class:`Conversion`."""
    alpha = check_alpha(alpha)
    task = find_task(model)
    modules = dict(model.named_modules())
    layers = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
    rules = _final_rules(model, final_layer, task, modules, layers)
    for name in rules:
        if name not in modules:
            close = difflib.get_close_matches(name, layers, n=3)
            raise ValueError(
                f'FixNormModel: final_layer={name!r} is not a module of '
                f'{type(model).__name__}. ' + (f'Did you mean {close}? ' if close else '')
                + f'Its last conv/linear layers are {layers[-4:]}')
        if not _is_convertible(modules[name]):
            raise ValueError(f'FixNormModel: final_layer={name!r} is a '
                             f'{type(modules[name]).__name__}; FixNorm-FC/Conv replaces a plain '
                             'nn.Linear or nn.Conv2d')
    _check_patterns('weight_norm_exclude', weight_norm_exclude, layers)
    conv = Conversion(model=type(model).__name__, alpha=alpha, final_rules=rules)
    conv.frozen_weights = [n for n, m in weight_layers(model) if not m.weight.requires_grad
                           and not isinstance(m, NORMALIZED_LAYERS)]

    if weight_norm == 'auto':
        trace = conv.trace = _trace(model, task, trace_input_shape)
        if not trace.followed:
            raise _no_scale_invariant_weight(model, trace, rules)
        free = [n for n, m in weight_layers(model) if n in trace.ran
                and n not in trace.followed and n not in rules
                and not isinstance(m, NORMALIZED_LAYERS)]
        wn = [n for n in free if _is_convertible(modules[n])]
        conv.not_convertible = [(n, type(modules[n]).__name__) for n in free
                                if not _is_convertible(modules[n])]
        conv.frozen_statistics = [(n, cls) for n, (_, cls, stats) in trace.followed.items()
                                  if not stats]
        conv.unseen = [n for n in layers if n not in trace.ran and n not in rules
                       and _is_convertible(modules[n])]
    elif weight_norm in (False, None):
        wn = []
    elif weight_norm == 'attention_mlp':
        wn = [n for n in attention_mlp_layers(model) if n not in rules]
        if not wn:
            raise ValueError(
                f"FixNormModel: weight_norm='attention_mlp' found no plain linear layer (or 1x1 "
                f'conv) in an attention or MLP block of {type(model).__name__} (blocks are found by '
                f'class name, {ATTENTION_MLP_BLOCKS.pattern!r}); list the layers instead: '
                'weight_norm=[fnmatch patterns]')
        conv.preset = weight_norm
    elif isinstance(weight_norm, (list, tuple)):
        _check_patterns('weight_norm', weight_norm, layers)
        wn = [n for n in layers if any(fnmatch.fnmatchcase(n, p) for p in weight_norm)]
        bad = [n for n in wn if not _is_convertible(modules[n])]
        if bad:
            raise ValueError(f'FixNormModel: weight_norm matches layers that are not plain '
                             f'conv/linear layers: {bad[:5]}')
    else:
        raise ValueError(f"FixNormModel: weight_norm must be 'auto', 'attention_mlp', False "
                         f'or a list of fnmatch patterns, got {weight_norm!r}')

    for name in rules:
        _replace(model, name, to_fixnorm_layer(modules[name], alpha))
        conv.converted[name] = type(model.get_submodule(name)).__name__
    for name in wn:
        if name in conv.converted or isinstance(modules[name], NORMALIZED_LAYERS) or \
                any(fnmatch.fnmatchcase(name, p) for p in weight_norm_exclude):
            continue
        _replace(model, name, to_wn_layer(modules[name]))
        conv.converted[name] = type(model.get_submodule(name)).__name__
    return conv


def convert_to_fixnorm(model: nn.Module, final_layer: Union[str, Sequence[str]],
                       alpha: float = 1.0, weight_norm: Union[str, bool, Sequence[str]] = 'auto',
                       weight_norm_exclude: Sequence[str] = (),
                       trace_input_shape: Optional[Sequence[int]] = None) -> Dict[str, str]:
    """Convert ``model`` in place (paper Sec. 2.3, App. D.3).

    Args:
        final_layer: name(s) of the final classification layer(s), as in
            ``model.named_modules()`` (``'head.fc'``, ``'bbox_head.conv_cls'``,
            ``'decode_head.conv_seg'``), or ``'auto'``: the class-score layers
            of the model's heads (:meth:`TaskTracing.final_layers`: mmdet
            dense and RoI box heads, every mmseg decode/auxiliary head's
            ``conv_seg``, the mmpretrain head's output); each becomes
            FixNorm-FC/Conv.
        alpha: FixNorm's alpha; the cap on g is ``alpha * sqrt(C_out)``.
        weight_norm: ``'auto'``: every plain conv/linear that no normalization
            follows when the model runs its training loss on a synthetic batch
            of its task becomes WN (a model with no layer followed by a
            normalization is refused: FixNorm does not apply to it);
            ``'attention_mlp'``: the plain linear layers of every attention and
            MLP block (the projections of a pre-norm transformer such as ViT,
            which 'auto' refuses), and nothing else; a list of fnmatch
            patterns: exactly the plain conv/linear layers they match;
            ``False``: none.
        weight_norm_exclude: patterns of layers never to weight-normalize
            (with ``'auto'``).
        trace_input_shape: ``(C, H, W)``: the size of the traced images (a
            task's synthetic batch uses ``H x W``); for a model no task knows,
            the shape of the random batch of its ``forward(x)``. Default: the
            task's size (128 for detection, 64 otherwise), or ``(C of the
            first conv, 64, 64)`` for a plain ``nn.Module``.

    Returns:
        layer name -> what it became (``'FixNormConv2d'``, ``'WNConv2d'``, ...).
    """
    return convert_model(model, final_layer, alpha=alpha, weight_norm=weight_norm,
                         weight_norm_exclude=weight_norm_exclude,
                         trace_input_shape=trace_input_shape).converted


def _backbone_class(backbone_cfg: dict):
    kind = backbone_cfg.get('type')
    if not isinstance(kind, str):
        return kind
    with MODELS.switch_scope_and_registry(None) as registry:
        return registry.get(kind)


def _set_backbone_norm_eval(model_cfg: dict, value: bool) -> List[str]:
    """Set ``model.backbone.norm_eval`` (a copy of the backbone dict: the
    caller's config is not changed); returns the log lines."""
    if not isinstance(value, bool):
        raise ValueError(f'FixNormModel: backbone_norm_eval must be None (keep the config), '
                         f'True or False, got {value!r}')
    backbone = model_cfg.get('backbone')
    if not isinstance(backbone, dict):
        raise ValueError('FixNormModel: backbone_norm_eval sets model.backbone.norm_eval, '
                         'and this model config has no backbone dict')
    cls = _backbone_class(backbone)
    params = inspect.signature(cls.__init__).parameters if cls is not None else {}
    if 'norm_eval' not in params:
        raise ValueError(
            f'FixNormModel: backbone_norm_eval={value} sets model.backbone.norm_eval, and '
            f'{backbone.get("type")!r} takes no norm_eval argument; leave '
            'backbone_norm_eval=None')
    before = backbone.get('norm_eval', params['norm_eval'].default)
    model_cfg['backbone'] = dict(copy.deepcopy(backbone), norm_eval=value)
    lines = [f'backbone.norm_eval: {before} in the config -> {value} (backbone_norm_eval='
             f'{value}): the backbone\'s BatchNorm layers '
             + ('normalize by the batch in training, so the convs that feed them join the '
                'fixed set' if not value else 'keep frozen statistics, so the convs that feed '
                'them stay out of the fixed set')]
    stages = backbone.get('frozen_stages', params['frozen_stages'].default
                          if 'frozen_stages' in params else None)
    if not value and isinstance(stages, int) and stages >= 0:
        lines.append(f'backbone.frozen_stages={stages} still keeps the stem and the first '
                     f'{stages} stage(s) frozen (requires_grad=False, BN in eval mode): their '
                     'convs stay out; set model.backbone.frozen_stages=-1 to train them too')
    return lines


#: the keys FixNormModel takes besides the model's own
FIXNORM_MODEL_KEYS = ('final_layer', 'alpha', 'weight_norm', 'weight_norm_exclude',
                      'trace_input_shape', 'backbone_norm_eval')


def build_and_convert(model_type: Optional[str] = None,
                      final_layer: Union[str, Sequence[str], None] = None,
                      alpha: float = 1.0,
                      weight_norm: Union[str, bool, Sequence[str]] = 'auto',
                      weight_norm_exclude: Sequence[str] = (),
                      trace_input_shape: Optional[Sequence[int]] = None,
                      backbone_norm_eval: Optional[bool] = None,
                      **model) -> Tuple[nn.Module, Conversion]:
    """What ``FixNormModel`` does, returning the :class:`Conversion` too."""
    if model_type is None:
        raise ValueError("FixNormModel: model_type is required: the type the model had "
                         "before, e.g. model_type=_base_.model.type")
    valid = accepted_keys(_backbone_class(dict(type=model_type)))
    if valid is not None:  # a typo names model.<key> and the nearest key
        check_keys('model', {k: v for k, v in model.items() if k != '_scope_'},
                   valid | set(FIXNORM_MODEL_KEYS), f'FixNormModel or {model_type}')
    alpha = check_alpha(alpha, 'model.alpha')  # fail before building a large model
    if final_layer is None:
        raise ValueError('FixNormModel: final_layer is required: the name(s) of the final '
                         "classification layer(s), e.g. 'head.fc' or 'decode_head.conv_seg', "
                         "or 'auto' to take the class-score layers of the model's heads")
    notes = []
    if backbone_norm_eval is not None:
        notes = _set_backbone_norm_eval(model, backbone_norm_eval)
    net = MODELS.build(dict(type=model_type, **model))
    conversion = convert_model(net, final_layer, alpha=alpha, weight_norm=weight_norm,
                               weight_norm_exclude=weight_norm_exclude,
                               trace_input_shape=trace_input_shape)
    conversion.notes += notes
    if callable(getattr(net, 'init_weights', None)):
        net.init_weights = _InitWeights(net)
    return net, conversion


class _InitWeights:
    """``init_weights`` of a converted model (an instance attribute: the model
    keeps its class): the model's own, then g where the layers' rules put it
    (:func:`~fixnorm_mm.layers.settle_gains`), which hosts that initialise
    their layers after their children (mmdet's DIIHead, DETR's transformers,
    YOLOv3's head, mmcv's deformable attention) would otherwise leave
    elsewhere. A plain object, not a closure, so that ``copy.deepcopy`` and
    pickling follow the model."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self) -> None:
        before = gain_snapshot(self.model)
        type(self.model).init_weights(self.model)
        done = settle_gains(self.model, before)
        why = dict(resynced='their host drew W after (or instead of) their init_weights: '
                            'g = ||W||',
                   gain_as_weight='their host initialised g with W as if it were a weight: '
                                  'g = ||W||',
                   zero_weight='W was initialised to zero: a random direction, g = 0 (the '
                               'output starts at the bias)')
        for case, names in done.items():
            if names:
                more = f', ... (+{len(names) - 4})' if len(names) > 4 else ''
                print_log(f'FixNormModel init_weights: {len(names)} layer(s) {why[case]}: '
                          + ', '.join(names[:4]) + more, logger='current')


@MODELS.register_module('FixNormModel')
def build_fixnorm_model(**cfg) -> nn.Module:
    """``model = dict(type='FixNormModel', model_type=<the model's own type>,
    final_layer='auto' or names, alpha=..., <the model's own keys>)``: build
    the model and convert it with :func:`convert_to_fixnorm`. Returns the
    model itself (its own class), so ``model.backbone...`` overrides keep
    working.

    Keys besides the model's own (:data:`FIXNORM_MODEL_KEYS`):
    ``final_layer``, ``alpha``, ``weight_norm``, ``weight_norm_exclude``,
    ``trace_input_shape`` (see :func:`convert_to_fixnorm`), and
    ``backbone_norm_eval``: ``None`` (default) keeps the config's
    ``backbone.norm_eval``; ``False`` makes a frozen-BN backbone (mmdet's
    ResNet, ``norm_eval=True``) train its BatchNorm layers, so that the convs
    that feed them are scale-invariant and join the fixed set; ``True``
    freezes them. ``frozen_stages`` is not changed: the stages it freezes
    stay out (``requires_grad=False``)."""
    net, conversion = build_and_convert(**cfg)
    print_log(conversion.format(), logger='current')
    return net
