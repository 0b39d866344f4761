"""The startup table every norm-control method prints at its first step.

One screen first (:func:`summary`): what the method acts on, group by group,
and what it left out, counted by reason; a WARNING (:func:`uncontrolled_warning`)
for trainable weights that nothing controls (neither the method nor weight
decay), with the config key that changes it. Then the full list, one line a tensor (:func:`details`),
which goes to DEBUG and to a file beside the log (``NormController.log_table``).
"""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from torch import Tensor, nn

from ..layers import NORMALIZED_LAYERS

#: a tensor left out: (name, number of elements, why)
Excluded = Tuple[str, int, str]


def _count(items: Sequence[Tuple[str, int]]) -> str:
    n = len(items)
    return f'{n} tensor{"s" if n != 1 else ""}, {sum(k for _, k in items):,} params'


def by_reason(excluded: Sequence[Excluded]) -> Dict[str, List[Tuple[str, int]]]:
    out: Dict[str, List[Tuple[str, int]]] = {}
    for name, numel, why in excluded:
        out.setdefault(why, []).append((name, numel))
    return out


def never_controlled(model: nn.Module) -> List[str]:
    """Parameters no method controls: biases and normalization parameters
    (1-D) and the gains g of FixNorm / WN layers (a scale, not a direction)."""
    gains = {f'{n}.g' if n else 'g' for n, m in model.named_modules()
             if isinstance(m, NORMALIZED_LAYERS) and isinstance(getattr(m, 'g', None), nn.Parameter)}
    return [n for n, p in model.named_parameters() if p.dim() < 2 or n in gains]


def uncontrolled(model: nn.Module, controlled: Sequence[str], excluded: Sequence[Excluded],
                 decay: Mapping[int, float]) -> List[Tuple[str, int, str]]:
    """Trainable weights (2-D or more, not gains) outside the controlled set
    whose optimizer weight decay is 0: nothing bounds their norm."""
    why = {n: w for n, _, w in excluded}
    skip = set(controlled) | set(never_controlled(model))
    out = []
    for name, p in model.named_parameters():
        if not p.requires_grad or name in skip:
            continue
        if decay.get(id(p)) == 0.0:  # optimized, with no weight decay
            out.append((name, p.numel(), why.get(name, OTHER_PARAMETER)))
    return out


#: why a 2-D+ parameter that belongs to no conv/linear layer is not controlled
OTHER_PARAMETER = ('not the weight of a conv/linear layer (embeddings, tokens, position tables, '
                   "MultiheadAttention's in_proj_weight)")


def summary(title: str, groups: Mapping[str, Mapping[str, Tensor]],
            group_columns: Mapping[str, Mapping[str, str]],
            excluded: Sequence[Excluded], model: nn.Module,
            reasons: Optional[Mapping[str, str]] = None, max_names: int = 3,
            weight_decay: Optional[str] = None) -> str:
    """One screen: per group tensors / params / method columns; why the
    tensors were chosen (``reasons``), counted; left-out tensors counted by
    reason; parameters never controlled.

    Args:
        group_columns: column title -> (group -> text), e.g. the reference norm.
        reasons: tensor name -> why it is controlled.
        weight_decay: the line that says which weight decay each tensor got.
    """
    lines = [title]
    header = f'  {"group":<16}{"tensors":>9}{"params":>14}'
    header += ''.join(f'{c:>18}' for c in group_columns)
    lines.append(header)
    for g, named in groups.items():
        row = f'  {g:<16}{len(named):>9}{sum(p.numel() for p in named.values()):>14,}'
        row += ''.join(f'{vals[g]:>18}' for vals in (v for _, v in group_columns.items()))
        lines.append(row)
    if reasons:
        params = dict(model.named_parameters())
        why = by_reason([(n, params[n].numel(), reasons[n])
                         for named in groups.values() for n in named if n in reasons])
        lines.append('  because: ' + '; '.join(f'{w}: {_count(items)}'
                                               for w, items in why.items()))
    selected = {n for named in groups.values() for n in named}
    never = set(never_controlled(model)) - selected
    listed = selected | {n for n, _, _ in excluded} | never
    left = by_reason(list(excluded) + [(n, p.numel(), OTHER_PARAMETER)
                                       for n, p in model.named_parameters() if n not in listed])
    never_items = [(n, p.numel()) for n, p in model.named_parameters() if n in never]
    if left or never_items:
        lines.append('  left out:')
        for why, items in left.items():
            names = ', '.join(n for n, _ in items[:max_names])
            more = ', ...' if len(items) > max_names else ''
            lines.append(f'    {why}: {_count(items)} ({names}{more})')
        if never_items:
            lines.append(f'    biases, normalization parameters and gains (never controlled): '
                         f'{_count(never_items)}')
    if weight_decay:
        lines.append(f'  {weight_decay}')
    return '\n'.join(lines)


def details(groups: Mapping[str, Mapping[str, Tensor]], reasons: Mapping[str, str],
            excluded: Sequence[Excluded],
            columns: Optional[Mapping[str, Mapping[str, str]]] = None) -> str:
    """Every tensor: ``[group] name  (why)  column=value ...``, then every
    tensor left out, by reason."""
    columns = dict(columns or {})
    lines = ['controlled tensors:']
    for g, named in groups.items():
        for n in named:
            extra = ''.join(f'  {c}={vals[n]}' for c, vals in columns.items() if n in vals)
            lines.append(f'  [{g}] {n}  ({reasons[n]}){extra}')
    left = by_reason(excluded)
    if left:
        lines.append('left out:')
        for why, items in left.items():
            lines.append(f'  {why}: {_count(items)}')
            lines += [f'    {n}' for n, _ in items]
    return '\n'.join(lines)


def uncontrolled_warning(items: Sequence[Tuple[str, int, str]], method: str,
                         remedy: str, max_names: int = 3) -> List[str]:
    """The WARNING line for :func:`uncontrolled` tensors (empty if none):
    how many, why each was left out (counted, first names), and ``remedy``,
    which names the config keys that change it."""
    if not items:
        return []
    n, params = len(items), sum(k for _, k, _ in items)
    parts = []
    for why, named in by_reason(items).items():
        names = ', '.join(nm for nm, _ in named[:max_names])
        parts.append(f'{why}: {len(named)} ({names}{", ..." if len(named) > max_names else ""})')
    what = 'no weight decay' if method == 'weight decay' else f'neither {method} nor weight decay'
    return [f'{n} trainable weight tensor{"s" if n != 1 else ""} ({params:,} params) '
            f'get{"s" if n == 1 else ""} {what}, so no regularizer bounds '
            f'{"its" if n == 1 else "their"} norm. Left out of {method} because '
            f'{"; ".join(parts)}. {remedy}']
