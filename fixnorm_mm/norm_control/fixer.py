"""Algo 1, line 6 of the FixNorm paper, in plain PyTorch.

    W_{t+1} <- W_{t+1} * ||W_0|| / ||W_{t+1}||

W is the concatenation of every scale-invariant weight of a group (conv
weights followed by a normalisation, WN directions, the FixNorm classifier),
so one factor rescales the whole group and the *global* effective learning
rate stays fixed. ``per_layer=True`` gives instead Hoffer et al. (2018)'s
variant, in which every tensor keeps its own initial norm.

Usable from a bare training loop::

    fixer = NormFixer({'fixed': {n: p for n, p in model.named_parameters()
                                 if n in scale_invariant}})
    for x, y in loader:
        loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad()
        fixer.rescale()

The rescale does one fused norm over a group (``torch._foreach_norm``) and
one fused in-place multiply, no Python loop per tensor and no host sync: one
read pass and one read-write pass over the fixed weights, about the least an
exact Algo 1 can do once the optimizer has written them (a rescale folded
into the optimizer's own loop measured no faster: docs/results.md, section 5).
"""
from typing import Dict, List, Mapping, Optional

import torch
from torch import Tensor


class NormFixer:
    """Keeps the global L2 norm of each group of weights at its reference.

    Args:
        groups: group name -> {parameter name: parameter}. Names are only
            bookkeeping (they make checkpoints checkable); tensors are scaled
            in place.
        per_layer: fix each tensor's own norm instead of the group's global
            norm (Hoffer et al. 2018).
        reference_norms: group name -> reference norm (a scalar tensor, or one
            value per tensor with ``per_layer``). Measured from the current
            weights when omitted: build the fixer at the start of training.
    """

    def __init__(self, groups: Mapping[str, Mapping[str, Tensor]],
                 per_layer: bool = False,
                 reference_norms: Optional[Mapping[str, Tensor]] = None) -> None:
        self.per_layer = per_layer
        self.names: Dict[str, List[str]] = {}
        self.params: Dict[str, List[Tensor]] = {}
        for group, named in groups.items():
            if not named:
                raise ValueError(f'NormFixer: group {group!r} has no tensors')
            self.names[group] = list(named)
            self.params[group] = list(named.values())
        if not self.params:
            raise ValueError('NormFixer: no group to fix (the fixed set is empty)')
        if reference_norms is None:
            reference_norms = self.norms()
        self.reference_norms = self.checked_references(reference_norms)

    @torch.no_grad()
    def norms(self) -> Dict[str, Tensor]:
        """Current norm of each group (per tensor with ``per_layer``)."""
        out = {}
        for group, params in self.params.items():
            per_tensor = torch.stack(torch._foreach_norm(params)).float()
            out[group] = per_tensor if self.per_layer \
                else torch.linalg.vector_norm(per_tensor)
        return out

    @torch.no_grad()
    def rescale(self, skip: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Scale every group back to its reference norm, in place.

        Args:
            skip: optional bool/0-1 tensor; where true, the factor is exactly 1
                (an AMP step the loss scaler skipped), decided on the device.

        Returns:
            The norms before rescaling, as device tensors (nothing is synced).
        """
        before = self.norms()
        for group, params in self.params.items():
            factor = self.reference_norms[group] / before[group]
            if skip is not None:
                factor = torch.where(skip.bool(), torch.ones_like(factor), factor)
            factor = factor.to(params[0].dtype)
            # one fused multiply either way: a list of per-tensor factors (0-d
            # views of one device tensor, no sync) or the group's one factor
            torch._foreach_mul_(params, list(factor.unbind()) if self.per_layer else factor)
        return before

    def state_dict(self) -> dict:
        """Names, shapes, dtypes and reference norm of every group: enough to
        tell, on resume, whether a model fixes the same tensors."""
        return dict(per_layer=self.per_layer,
                    groups={g: dict(params=list(self.names[g]),
                                    shapes=[list(p.shape) for p in self.params[g]],
                                    dtypes=[str(p.dtype).replace('torch.', '')
                                            for p in self.params[g]],
                                    reference_norm=self.reference_norms[g].detach().cpu())
                            for g in self.names})

    @staticmethod
    def check_compatible(state: dict, params: Mapping[str, Mapping[str, Tensor]],
                         per_layer: bool) -> None:
        """Raise if ``state`` (a fixer ``state_dict``) fixed other tensors than
        ``params`` (group -> {name: tensor}): other names, shapes or dtypes.
        States written before shapes were saved are checked by name only."""
        if bool(state.get('per_layer', False)) != per_layer:
            raise ValueError(
                f'FixNorm: the checkpoint was trained with per_layer='
                f'{state.get("per_layer")} but the config says per_layer={per_layer}')
        saved = {g: list(v['params']) for g, v in state['groups'].items()}
        names = {g: list(named) for g, named in params.items()}
        if saved != names:
            diff = []
            for g in sorted(set(saved) | set(names)):
                a, b = set(saved.get(g, [])), set(names.get(g, []))
                if a != b:
                    diff.append(f'group {g!r}: only in checkpoint {sorted(a - b)[:5]}, '
                                f'only in this model {sorted(b - a)[:5]}')
            raise ValueError(
                'FixNorm: the checkpoint being resumed fixed a different set of '
                'weights than this config selects; resuming would rescale to a '
                'wrong reference norm. ' + '; '.join(diff or ['order differs']))
        wrong = []
        for g, group in state['groups'].items():
            tensors = list(params[g].values())
            for i, name in enumerate(group['params']):
                p = tensors[i]
                if 'shapes' in group and list(group['shapes'][i]) != list(p.shape):
                    wrong.append(f'{name}: shape {tuple(group["shapes"][i])} in the checkpoint, '
                                 f'{tuple(p.shape)} in this model')
                elif 'dtypes' in group and group['dtypes'][i] != str(p.dtype).replace('torch.', ''):
                    wrong.append(f'{name}: dtype {group["dtypes"][i]} in the checkpoint, '
                                 f'{str(p.dtype).replace("torch.", "")} in this model')
        if wrong:
            raise ValueError(
                'FixNorm: the checkpoint being resumed fixed tensors of other shapes or '
                'dtypes than this model has (another model width, number of classes or '
                'precision?); its reference norm does not apply. ' + '; '.join(wrong[:5])
                + (f'; ... (+{len(wrong) - 5})' if len(wrong) > 5 else ''))

    def checked_references(self, refs: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        out = {}
        for group, params in self.params.items():
            if group not in refs:
                raise KeyError(f'NormFixer: no reference norm for group {group!r}')
            ref = torch.as_tensor(refs[group], dtype=torch.float32,
                                  device=params[0].device)
            expected = (len(params),) if self.per_layer else ()
            if tuple(ref.shape) != expected:
                raise ValueError(f'NormFixer: reference norm of group {group!r} has '
                                 f'shape {tuple(ref.shape)}, expected {expected}')
            out[group] = ref
        return out
