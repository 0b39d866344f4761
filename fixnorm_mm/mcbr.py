"""Mean Cross-Boundary Risk, Eq. 9 of the FixNorm paper.

    MCBR(B, W) = 1 / (|B| (#class - 1)) * sum_{(x,y) in B} sum_{j != y} cos(x, W_j - W_y)   (9)

How far features lean towards the boundaries between their class and the
others, in [-1, 1]; a large final-layer norm (or g) drives it up (Sec. 2.3).

Computed without forming the |B| x #class x D tensor of differences:
x . (W_j - W_y) = s_j - s_y with s = x W^T, and
||W_j - W_y||^2 = ||W_j||^2 + ||W_y||^2 - 2 W_j . W_y.
"""
from typing import Optional

import torch
from torch import Tensor


@torch.no_grad()
def mcbr(features: Tensor, weight: Tensor, labels: Tensor,
         ignore_index: Optional[int] = None, eps: float = 1e-12) -> Tensor:
    """Eq. 9.

    Args:
        features: (N, D) inputs x of the final layer (for a 1x1 conv, one row
            per pixel).
        weight: (C, D, ...) final-layer weight; trailing 1x1 dims are flattened.
        labels: (N,) class indices.
        ignore_index: rows with this label are left out (segmentation).

    Returns:
        A scalar tensor; NaN when no row is left.
    """
    w = weight.reshape(weight.shape[0], -1).float()
    x = features.reshape(features.shape[0], -1).float()
    y = labels.reshape(-1).long()
    if x.shape[1] != w.shape[1]:
        raise ValueError(f'mcbr: features have {x.shape[1]} dims but the weight '
                         f'has {w.shape[1]} inputs per class')
    if ignore_index is not None:
        keep = y != ignore_index
        x, y = x[keep], y[keep]
    num_classes = w.shape[0]
    if x.shape[0] == 0 or num_classes < 2:
        return torch.tensor(float('nan'))
    logits = x @ w.t()                                   # s_j = x . W_j
    gram = w @ w.t()
    sq = gram.diagonal()
    dots = logits - logits.gather(1, y[:, None])         # x . (W_j - W_y)
    dist = (sq[None, :] + sq[y][:, None] - 2 * gram[y]).clamp_min(0).sqrt()
    cos = dots / (x.norm(dim=1, keepdim=True) * dist).clamp_min(eps)
    not_label = torch.ones_like(cos, dtype=torch.bool).scatter_(1, y[:, None], False)
    return (cos * not_label).sum() / (x.shape[0] * (num_classes - 1))
