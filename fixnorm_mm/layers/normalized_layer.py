"""What FixNorm-FC/Conv and weight-normalised layers share: the gain g, when it
follows the weight, and the plain twin.

A normalised layer computes ``op(x, W) / ||W|| * min(g, cap)`` (Eq. 6, 10, 29;
per output unit for WN). With ``g = ||W||`` (below the cap) it computes what
the plain ``nn.Linear`` / ``nn.Conv2d`` holding the same W computes: its
*plain twin*. So g is set from W whenever W is initialised or loaded, and
never in ``forward`` (which does no bookkeeping at all):

* ``reset_parameters`` (torch's initialisation, run at construction);
* ``init_weights()``, which mmengine's ``BaseModule.init_weights`` calls on
  its children *after* the parent's ``init_cfg`` initialisers ran (mmdet's
  ``Normal(std=0.01)`` on ``retina_cls``, mmpretrain's on ``head.fc``);
* ``apply(fn)``, right after ``fn`` ran on the layer: mmengine's initialisers
  (and the ``model.apply(init_fn)`` idiom) reach every layer through
  ``Module.apply``, also a layer that ``init_weights`` never reaches (an mmcv
  ``ConvModule`` in a ``ModuleList``, as in FPN);
* loading a state dict: without ``g`` (a plain checkpoint) g = ||W|| of the
  loaded W, and ``g`` is still reported missing; with ``g`` the loaded g is
  kept.

``init_weights()`` and ``apply()`` re-synchronise g only while g still holds
the value the layer itself last gave it: a g set by hand, by an ``init_cfg``
(e.g. a zero gain), by training or by a checkpoint is never overwritten. That
value is one copy of g taken when the layer sets it, compared only at those
moments. ``sync_gain()`` sets g = ||W|| unconditionally; ``sync_gains(module)`` runs
the conditional re-synchronisation on every such layer of a module, for
hosts that re-initialise weights with direct calls (``normal_init(conv)``)
after their children's ``init_weights``. ``settle_gains(module, before)``
does that and more after a whole model's ``init_weights`` (``FixNormModel``
runs it): it also repairs a g that a host initialised as if it were a
weight, and gives a zero-initialised weight a direction.

mmcv's ``ConvModule`` leaves a conv that has an ``init_weights`` method to
it: inside a ``ConvModule`` these layers keep torch's initialisation until
their host's ``init_cfg`` (FPN: Xavier, RetinaHead: Normal, ResNet /
MobileNetV2 / EfficientNet: Kaiming) initialises them.

``from_plain`` / ``to_plain`` convert between a layer and its plain twin,
like ``nn.SyncBatchNorm.convert_sync_batchnorm``: shape (stride, padding,
dilation, groups, padding mode), bias, device, dtype, ``requires_grad`` and
train/eval mode are kept.
"""
import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .normalize import normalized_weight, tensor_norm


def _layer_args(layer: nn.Module) -> dict:
    """Constructor arguments of ``layer``'s shape, for a conv or an FC layer."""
    if isinstance(layer, nn.Conv2d):
        return dict(in_channels=layer.in_channels, out_channels=layer.out_channels,
                    kernel_size=layer.kernel_size, stride=layer.stride,
                    padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                    padding_mode=layer.padding_mode)
    return dict(in_features=layer.in_features, out_features=layer.out_features)


@torch.no_grad()
def _copy_parameters(src: nn.Module, dst: nn.Module, weight: Tensor) -> None:
    dst.weight.copy_(weight)
    dst.weight.requires_grad_(src.weight.requires_grad)
    if src.bias is not None:
        dst.bias.copy_(src.bias)
        dst.bias.requires_grad_(src.bias.requires_grad)
    dst.train(src.training)


class NormalizedLayer:
    """Mixin of the normalised layers, before ``nn.Linear`` / ``nn.Conv2d`` in
    the bases (mmengine's ``init_cfg`` matches ``layer='Conv2d'`` / ``'Linear'``
    against the direct bases). Subclasses set ``per_output`` and ``cap`` (None:
    no cap) and call ``_init_gain()`` at the end of ``__init__``."""

    per_output: bool = False
    cap: Optional[float] = None

    # ------------------------------------------------------------------ g
    def _init_gain(self) -> None:
        norm = tensor_norm(self.weight.detach(), self.per_output)
        self.g = nn.Parameter(norm.to(self.weight.dtype))
        self.sync_gain()

    @torch.no_grad()
    def sync_gain(self) -> None:
        """g = ||W||: the layer then computes what its plain twin computes
        (FixNorm: as long as ||W|| is below the cap)."""
        self.g.copy_(tensor_norm(self.weight, self.per_output))
        self._gain_set: Optional[Tensor] = self.g.detach().clone()

    def gain_is_own(self) -> bool:
        """Whether g still holds the value the layer itself last gave it."""
        own = self._gain_set
        return own is not None and own.shape == self.g.shape \
            and torch.equal(self.g.detach(), own.to(self.g))

    @torch.no_grad()
    def init_weights(self) -> None:
        """Re-synchronise g with the (re-initialised) W, unless g was set from
        outside; mmengine calls this after the parent's ``init_cfg``."""
        if self.gain_is_own():
            self.sync_gain()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if 'g' in self._parameters:  # not yet during nn.Linear/Conv2d.__init__
            self.sync_gain()

    def apply(self, fn):
        super().apply(fn)
        self.init_weights()  # fn may have re-initialised W (an init_cfg, model.apply)
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        has_gain, has_weight = prefix + 'g' in state_dict, prefix + 'weight' in state_dict
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
        if has_gain:
            self._gain_set = None  # a loaded g is never re-synchronised
        elif has_weight:
            self.sync_gain()  # a plain checkpoint: g = ||W|| of the loaded W

    # ------------------------------------------------------------------ plain twin
    def folded_weight(self) -> Tensor:
        """W / ||W|| * min(g, cap) (per output unit for WN): the weight of the
        plain twin."""
        return normalized_weight(self.weight, self.g, self.per_output, self.cap)

    @classmethod
    def _from_plain(cls, layer: nn.Module, **kwargs):
        plain = nn.Conv2d if issubclass(cls, nn.Conv2d) else nn.Linear
        if isinstance(layer, NormalizedLayer) or not isinstance(layer, plain):
            hint = ' (call .to_plain() first)' if isinstance(layer, NormalizedLayer) else ''
            raise TypeError(f'{cls.__name__}.from_plain takes an nn.{plain.__name__}, got '
                            f'{type(layer).__name__}{hint}')
        weight = layer.weight
        new = cls(**_layer_args(layer), bias=layer.bias is not None, device=weight.device,
                  dtype=weight.dtype, **kwargs)
        _copy_parameters(layer, new, weight.detach())
        new.g.requires_grad_(weight.requires_grad)
        new.sync_gain()
        return new

    @torch.no_grad()
    def to_plain(self) -> nn.Module:
        """The plain ``nn.Linear`` / ``nn.Conv2d`` computing what this layer
        computes: weight W / ||W|| * min(g, cap) (g * v / ||v|| for WN), the
        same bias."""
        plain = nn.Conv2d if isinstance(self, nn.Conv2d) else nn.Linear
        weight = self.folded_weight()
        new = plain(**_layer_args(self), bias=self.bias is not None, device=weight.device,
                    dtype=weight.dtype)
        _copy_parameters(self, new, weight)
        return new


def sync_gains(module: nn.Module) -> int:
    """``init_weights()`` of every normalised layer in ``module``: g = ||W||
    where g is still the value the layer gave it. Returns how many layers
    were re-synchronised."""
    synced = 0
    for m in module.modules():
        if isinstance(m, NormalizedLayer) and m.gain_is_own():
            m.sync_gain()
            synced += 1
    return synced


def gain_snapshot(module: nn.Module) -> Dict[nn.Module, Tuple[Tensor, Tensor]]:
    """g and ||W|| of every normalised layer of ``module``, copied, for
    :func:`settle_gains`."""
    return {m: (m.g.detach().clone(), tensor_norm(m.weight.detach(), m.per_output))
            for m in module.modules() if isinstance(m, NormalizedLayer)}


@torch.no_grad()
def settle_gains(module: nn.Module, before: Dict[nn.Module, Tuple[Tensor, Tensor]]
                 ) -> Dict[str, List[str]]:
    """Put g where its rules say after the hosts of ``module`` ran their
    ``init_weights`` (``before``: :func:`gain_snapshot` just before), which a
    layer's own ``init_weights`` runs too early to see. By case:

    * ``'resynced'``: g = ||W|| where g is still the layer's own and W changed
      after it: a host that re-initialises its layers after
      ``super().init_weights()`` (mmdet's DIIHead: ``xavier_uniform_`` on
      every weight) or instead of it (YOLOv3's head: ``normal_init``);
    * ``'gain_as_weight'``: g = ||W|| where the hosts' init changed both W
      and g, g to anything but zero: it initialised g as if it were a weight
      (``xavier_uniform_`` on every parameter with ``dim() > 1``, as DETR's
      transformers and DIIHead do, reaches WN's g of shape ``(C_out, 1)``);
    * ``'zero_weight'``: a weight (for WN an output unit) left at zero
      (mmcv's deformable attention zeroes ``sampling_offsets`` and
      ``attention_weights``, Deformable DETR its last regression layers) has
      no direction, and ``W / ||W||`` no gradient there: it gets a random
      direction (torch's default init) and g = 0 (the layer's other units
      g = ||W_j||), so that the output starts at the bias, as the plain
      layer's does, and g learns first.

    A g set from outside is kept: before the init (by hand), or by an init
    that left W alone or zeroed g (``ObjectContextBlock``'s zero gain).
    Returns the names of the layers of each case."""
    done: Dict[str, List[str]] = {'resynced': [], 'gain_as_weight': [], 'zero_weight': []}
    for name, layer in module.named_modules():
        if not isinstance(layer, NormalizedLayer) or layer not in before:
            continue
        g, (g_before, norm_before) = layer.g, before[layer]
        norm = tensor_norm(layer.weight, layer.per_output)
        zero = norm == 0
        if bool(zero.any()):
            fresh = torch.empty_like(layer.weight)
            nn.init.kaiming_uniform_(fresh, a=math.sqrt(5))
            layer.weight.copy_(torch.where(zero, fresh, layer.weight))
            g.copy_(torch.where(zero, torch.zeros_like(g),
                                tensor_norm(layer.weight, layer.per_output).to(g)))
            layer._gain_set = None  # a gain from outside: never re-synchronised
            done['zero_weight'].append(name)
        elif layer.gain_is_own():
            if not torch.equal(g.detach(), norm.to(g)):
                layer.sync_gain()
                done['resynced'].append(name)
        elif not torch.equal(g.detach(), g_before) and not torch.equal(norm, norm_before) \
                and bool(g.detach().ne(0).any()):
            layer.sync_gain()
            done['gain_as_weight'].append(name)
    return done
