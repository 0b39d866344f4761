"""Export: fold FixNorm and weight-normalised layers into plain conv/linear layers.

A FixNorm-FC/Conv layer (Eq. 10, 29) applies the weight

    W' = W / ||W||_2 * min(g, alpha * sqrt(C_out)),

and a weight-normalised layer ``W' = g * v / ||v||`` (per output unit, or of
the whole tensor for WN-FC, Eq. 6). All are linear in the input, so an
``nn.Linear`` / ``nn.Conv2d`` holding W' (and the same bias) computes exactly
the same function. Folding replaces each such layer by that plain twin
(``layer.to_plain()``), under the same name; the model's ``state_dict`` then
has the keys of the upstream model (no ``.g``), so the plain mmpretrain /
mmdet / mmseg config loads it and deployment needs no plugin. A FixNorm-FC
layer without bias (Eq. 10) gets a zero bias where the plain model has one.

:func:`fold_checkpoint` does it for a checkpoint and a config (it is what
``tools/fold_fixnorm.py`` runs) and checks the result against the plain model.
"""
import copy
import inspect
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from .layers import NORMALIZED_LAYERS, NormalizedLayer

FOLDABLE = NORMALIZED_LAYERS


def folded_layer(layer: nn.Module) -> nn.Module:
    """The plain ``nn.Linear`` / ``nn.Conv2d`` equal to ``layer`` (its
    :meth:`~fixnorm_mm.layers.NormalizedLayer.to_plain`)."""
    if not isinstance(layer, NormalizedLayer):
        raise TypeError(f'cannot fold {type(layer).__name__}: not a FixNorm or WN layer')
    return layer.to_plain()


def fold_fixnorm(model: nn.Module) -> Dict[str, str]:
    """Replace, in place, every FixNorm/WN layer of ``model`` by its plain twin.

    Returns:
        name -> type of each folded layer (empty if there was none).
    """
    folded: Dict[str, str] = {}
    memo: Dict[int, nn.Module] = {}  # a layer shared by two parents is folded once
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FOLDABLE):
                if id(child) not in memo:
                    memo[id(child)] = folded_layer(child)
                setattr(parent, name, memo[id(child)])
                folded[f'{parent_name}.{name}' if parent_name else name] = type(child).__name__
    return folded


def folded_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """The ``state_dict`` ``model`` would have after :func:`fold_fixnorm`,
    without modifying ``model``: each folded layer's ``weight`` is W', its
    ``g`` is gone."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, FOLDABLE):
            prefix = f'{name}.' if name else ''
            state[prefix + 'weight'] = module.folded_weight().detach()
            state.pop(prefix + 'g', None)
    return state


def _add_zero_biases(state: Dict[str, Tensor], folded: Dict[str, str],
                     plain_state: Dict[str, Tensor]) -> None:
    """A folded layer without bias (FixNorm-FC as in Eq. 10) where the plain
    model's layer has one: that bias is zero."""
    for name in folded:
        key = f'{name}.bias'
        if key not in state and key in plain_state:
            state[key] = torch.zeros_like(plain_state[key])


def plain_model_cfg(model_cfg: dict) -> Optional[dict]:
    """The upstream model config of a ``FixNormModel`` config (None otherwise):
    ``model_type`` back in ``type``, the conversion keys removed."""
    if model_cfg.get('type') != 'FixNormModel':
        return None
    from .convert import FIXNORM_MODEL_KEYS
    plain = copy.deepcopy(dict(model_cfg))
    plain['type'] = plain.pop('model_type')
    for key in FIXNORM_MODEL_KEYS:
        plain.pop(key, None)
    return plain


def _tensors(out) -> List[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


@torch.no_grad()
def max_output_difference(a: nn.Module, b: nn.Module, input_shape: Sequence[int],
                          seed: int = 0) -> float:
    """Largest |a(x) - b(x)| over every output tensor, relative to max |a(x)|,
    for a random batch ``x`` (eval mode, ``mode='tensor'`` for OpenMMLab models)."""
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    outs = []
    for model in (a, b):
        model.eval()
        takes_mode = 'mode' in inspect.signature(model.forward).parameters
        outs.append(_tensors(model(x, mode='tensor') if takes_mode else model(x)))
    if len(outs[0]) != len(outs[1]) or not outs[0]:
        raise ValueError('the two models return different numbers of tensors')
    scale = max(float(t.abs().max()) for t in outs[0]) or 1.0
    return max(float((p - q).abs().max()) for p, q in zip(*outs)) / scale


def fold_checkpoint(config, checkpoint: str, out: str, plain_config=None,
                    input_shape: Optional[Sequence[int]] = None,
                    tolerance: float = 1e-5) -> dict:
    """Fold a trained FixNorm checkpoint into one of the plain upstream model.

    Args:
        config: the FixNorm config (path or ``Config``) the checkpoint was
            trained with.
        checkpoint: its checkpoint.
        out: where to write ``{'meta': ..., 'state_dict': folded}``.
        plain_config: the plain upstream config (path or ``Config``) the result
            is for. Default: derived from a ``FixNormModel`` config; else the
            result is not checked against a plain model.
        input_shape: ``(N, C, H, W)`` of the random batch that checks the
            folded model against the FixNorm model. Default ``(2, C, 64, 64)``.
        tolerance: largest accepted relative output difference.

    Returns:
        A report: ``folded`` layers, ``difference`` (relative, or None),
        ``plain_checked`` (whether a plain config loaded it strictly).

    Raises:
        ValueError: the plain model misses or does not expect a key of the
            folded checkpoint, or computes something else.
    """
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    # `default_scope = None` (mmengine's root registries) has no scope to enter
    if cfg.get('default_scope', None) is not None:
        init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    ckpt = load_checkpoint(model, checkpoint, map_location='cpu', strict=True,
                           revise_keys=[(r'^module\.', '')])
    model.eval()
    fixnorm_model = copy.deepcopy(model)
    folded = fold_fixnorm(model)
    if not folded:
        raise ValueError(f'{checkpoint}: the model of this config has no FixNorm or WN '
                         'layer; there is nothing to fold')
    state = model.state_dict()

    if plain_config is not None:
        plain_cfg = plain_config if isinstance(plain_config, Config) \
            else Config.fromfile(plain_config)
        if plain_cfg.get('default_scope', None) is not None:
            init_default_scope(plain_cfg.default_scope)
        plain_model = MODELS.build(plain_cfg.model)
    else:
        derived = plain_model_cfg(cfg.model)
        plain_model = MODELS.build(derived) if derived is not None else None
    report = dict(folded=folded, difference=None, plain_checked=plain_model is not None)
    target = model
    if plain_model is not None:
        hint = ('Is the plain config the upstream twin of the FixNorm config (same '
                'model, same sizes)?')
        _add_zero_biases(state, folded, plain_model.state_dict())
        try:
            missing, unexpected = plain_model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shapes differ
            raise ValueError(f'the folded checkpoint does not fit the plain model: {e}\n'
                             + hint) from e
        if missing or unexpected:
            raise ValueError(
                'the folded checkpoint does not fit the plain model: missing keys '
                f'{missing[:8]}, unexpected keys {unexpected[:8]}. ' + hint)
        target = plain_model
    if input_shape is None:
        first = next(m for m in fixnorm_model.modules() if isinstance(m, nn.Conv2d))
        input_shape = (2, first.in_channels, 64, 64)  # batch 2: GroupNorm of 1x1 maps
    diff = max_output_difference(fixnorm_model, target, input_shape)
    report['difference'] = diff
    if diff > tolerance:
        raise ValueError(f'the folded model differs from the FixNorm model by {diff:.3g} '
                         f'(relative, > {tolerance}) on a random batch of shape '
                         f'{tuple(input_shape)}')
    meta = dict(ckpt.get('meta', {}) if isinstance(ckpt, dict) else {})
    meta['fixnorm_folded'] = dict(config=getattr(cfg, 'filename', None), layers=folded)
    torch.save(dict(meta=meta, state_dict={k: v.cpu() for k, v in state.items()}), out)
    return report
