"""FixNorm for any existing config: convert a built model in place.

The FixNorm recipe (paper Sec. 2.3 and App. C, D.2, D.3) changes a network in
two ways, whatever it is:

* the final classification layer becomes FixNorm-FC (Eq. 10) or FixNorm-Conv
  (Eq. 29), which caps the norm that controls the cross-boundary risk;
* every conv that no normalisation follows (FPN, detection and segmentation
  head convs, SE layers) becomes weight-normalised, so that its direction is
  scale-invariant and joins the fixed set of Algo 1 (App. D.3).

``FixNormModel`` is a builder in mmengine's ``MODELS``: it builds the user's
model from the same config keys, converts it and returns it. The returned
model is an instance of the user's class with the same module names (so the
same state_dict keys, plus one ``g`` per converted layer), and the conversion
happens when the model is built: before DDP wrapping and before the
optimizer, in the Runner and in every tool that builds models from configs
(``init_detector``, ``tools/test.py``, ...). Three lines turn a config into a
FixNorm config::

    _base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
    model = dict(type='FixNormModel', model_type=_base_.model.type,
                 final_layer='bbox_head.conv_cls', alpha=0.5)
    optim_wrapper = dict(type='FixNormOptimWrapper', optimizer=dict(weight_decay=0),
                         constructor='FixNormOptimWrapperConstructor')

Which convs no normalisation follows is seen, not guessed: one forward pass of
a copy of the model on a small random batch (``trace_input_shape``), with the
tracer of the fixed-set selection. A conv followed by a frozen (eval-mode)
BatchNorm is followed by a normalisation and stays plain, as in the paper.
"""
import copy
import difflib
import fnmatch
import inspect
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.registry import MODELS
from torch import nn

from .layers import NORMALIZED_LAYERS, FixNormConv2d, FixNormLinear, WNConv2d, WNLinear
from .layers.fixnorm import _check_alpha
from .norm_control.selection import NormFollowTracer


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
    :func:`to_wn_layer`, weights included) in place of the layer at ``name``."""
    parent_name, _, attr = name.rpartition('.')
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


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


def _trace(model: nn.Module, input_shape: Optional[Sequence[int]]) -> Tuple[Dict, set]:
    """Forward a copy of ``model`` in train mode on a random batch of 2; return
    the tracer's ``followed`` map and the names of the conv/linear layers that ran."""
    replica = copy.deepcopy(model).train()
    if input_shape is None:
        first = next((m for m in replica.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise ValueError('FixNormModel: the model has no Conv2d to infer the input from; '
                             'set trace_input_shape=(C, H, W) or weight_norm=[patterns]')
        input_shape = (first.in_channels, 64, 64)
    x = torch.randn(2, *input_shape, device=next(replica.parameters()).device)
    ran = set()
    handles = [m.register_forward_hook(lambda *_, n=n: ran.add(n))
               for n, m in replica.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    takes_mode = 'mode' in inspect.signature(replica.forward).parameters
    try:
        with NormFollowTracer(replica) as tracer, torch.no_grad():
            replica(x, mode='tensor') if takes_mode else replica(x)
    except Exception as e:
        raise RuntimeError(
            f'FixNormModel: weight_norm=\'auto\' runs one forward of the model on a random '
            f'batch of shape {tuple(x.shape)} to see which convs no normalization follows, '
            f'and it failed ({type(e).__name__}: {e}). Set trace_input_shape=(C, H, W), or '
            'list the convs to weight-normalize: weight_norm=[fnmatch patterns]') from e
    finally:
        for h in handles:
            h.remove()
    return tracer.followed, ran


def _check_patterns(key: str, patterns: Sequence[str], names: Sequence[str]) -> None:
    if isinstance(patterns, str):
        raise TypeError(f'FixNormModel: {key} must be a list of patterns, got the string '
                        f'{patterns!r}')
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n, p) for n in names):
            raise ValueError(f'FixNormModel: {key} pattern {p!r} matches no conv/linear '
                             f'layer of the model (e.g. {", ".join(list(names)[-3:])})')


def convert_to_fixnorm(model: nn.Module, final_layer: Union[str, Sequence[str]],
                       alpha: float = 1.0, weight_norm: Union[str, bool, Sequence[str]] = 'auto',
                       weight_norm_exclude: Sequence[str] = (),
                       trace_input_shape: Optional[Sequence[int]] = None) -> Dict[str, str]:
    """Convert ``model`` in place (paper Sec. 2.3, App. D.3).

    Args:
        final_layer: name(s) of the final classification layer(s), as in
            ``model.named_modules()`` (``'head.fc'``, ``'bbox_head.conv_cls'``,
            ``'decode_head.conv_seg'``); each becomes FixNorm-FC/Conv.
        alpha: FixNorm's alpha; the cap on g is ``alpha * sqrt(C_out)``.
        weight_norm: ``'auto'``: every plain conv that no normalization
            follows in a traced forward becomes WN; a list of fnmatch
            patterns: exactly the plain conv/linear layers they match;
            ``False``: none.
        weight_norm_exclude: patterns of layers never to weight-normalize
            (with ``'auto'``).
        trace_input_shape: ``(C, H, W)`` of the traced random batch; default
            ``(in_channels of the first conv, 64, 64)``.

    Returns:
        layer name -> what it became (``'FixNormConv2d'``, ``'WNConv2d'``, ...).
    """
    alpha = _check_alpha(alpha)
    finals = [final_layer] if isinstance(final_layer, str) else list(final_layer or [])
    if not finals:
        raise ValueError('FixNormModel: final_layer is required: the name of the final '
                         "classification layer, e.g. 'head.fc' or 'decode_head.conv_seg'")
    modules = dict(model.named_modules())
    layers = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for name in finals:
        if name not in modules:
            close = difflib.get_close_matches(name, layers, n=3)
            raise ValueError(
                f'FixNormModel: final_layer={name!r} is not a module of '
                f'{type(model).__name__}. ' + (f'Did you mean {close}? ' if close else '')
                + f'Its last conv/linear layers are {layers[-4:]}')
        if not (_is_plain(modules[name], nn.Linear) or _is_plain(modules[name], nn.Conv2d)):
            raise ValueError(f'FixNormModel: final_layer={name!r} is a '
                             f'{type(modules[name]).__name__}; FixNorm-FC/Conv replaces a plain '
                             'nn.Linear or nn.Conv2d')
    _check_patterns('weight_norm_exclude', weight_norm_exclude, layers)

    if weight_norm == 'auto':
        followed, ran = _trace(model, trace_input_shape)
        wn = [n for n in layers if n in ran and n not in followed
              and _is_plain(modules[n], nn.Conv2d)]
        unseen = [n for n in layers if n not in ran and _is_plain(modules[n], nn.Conv2d)
                  and n not in finals]
        if unseen:
            print_log(f'FixNormModel: {len(unseen)} conv(s) did not run in the traced forward '
                      f'and stay plain: {unseen[:8]}{" ..." if len(unseen) > 8 else ""}',
                      logger='current', level=30)
    elif weight_norm in (False, None):
        wn = []
    elif isinstance(weight_norm, (list, tuple)):
        _check_patterns('weight_norm', weight_norm, layers)
        wn = [n for n in layers if any(fnmatch.fnmatchcase(n, p) for p in weight_norm)]
        bad = [n for n in wn if not (_is_plain(modules[n], nn.Conv2d)
                                     or _is_plain(modules[n], nn.Linear))]
        if bad:
            raise ValueError(f'FixNormModel: weight_norm matches layers that are not plain '
                             f'conv/linear layers: {bad[:5]}')
    else:
        raise ValueError(f"FixNormModel: weight_norm must be 'auto', False or a list of "
                         f'patterns, got {weight_norm!r}')

    done: Dict[str, str] = {}
    for name in finals:
        _replace(model, name, to_fixnorm_layer(modules[name], alpha))
        done[name] = type(model.get_submodule(name)).__name__
    for name in wn:
        if name in done or isinstance(modules[name], NORMALIZED_LAYERS) or \
                any(fnmatch.fnmatchcase(name, p) for p in weight_norm_exclude):
            continue
        _replace(model, name, to_wn_layer(modules[name]))
        done[name] = type(model.get_submodule(name)).__name__
    return done


@MODELS.register_module('FixNormModel')
def build_fixnorm_model(model_type: Optional[str] = None,
                        final_layer: Union[str, Sequence[str], None] = None,
                        alpha: float = 1.0,
                        weight_norm: Union[str, bool, Sequence[str]] = 'auto',
                        weight_norm_exclude: Sequence[str] = (),
                        trace_input_shape: Optional[Sequence[int]] = None,
                        **model) -> nn.Module:
    """``model = dict(type='FixNormModel', model_type=<the model's own type>,
    final_layer=..., alpha=..., <the model's own keys>)``: build the model
    and convert it with :func:`convert_to_fixnorm`. Returns the model itself
    (its own class), so ``model.backbone...`` overrides keep working."""
    if model_type is None:
        raise ValueError("FixNormModel: model_type is required: the type the model had "
                         "before, e.g. model_type=_base_.model.type")
    alpha = _check_alpha(alpha)  # fail before building a large model
    if final_layer is None:
        raise ValueError('FixNormModel: final_layer is required: the name of the final '
                         "classification layer, e.g. 'head.fc' or 'decode_head.conv_seg'")
    net = MODELS.build(dict(type=model_type, **model))
    done = convert_to_fixnorm(net, final_layer, alpha=alpha, weight_norm=weight_norm,
                              weight_norm_exclude=weight_norm_exclude,
                              trace_input_shape=trace_input_shape)
    lines: List[str] = [f'  {n}: {t}' for n, t in done.items()]
    print_log(f'FixNormModel: converted {len(done)} layer(s) of {type(net).__name__} '
              f'(alpha={alpha}):\n' + '\n'.join(lines), logger='current')
    return net
