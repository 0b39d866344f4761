"""The one normalisation both FixNorm and weight-normalised layers share.

FixNorm (Zhou, Sun & Zhong, "FixNorm: Dissecting Weight Decay for Training
Deep Neural Networks", Eq. 10 and 29) divides by the norm of the *whole* weight
tensor; weight normalisation (Salimans & Kingma 2016) divides each output unit
by its own norm. Both are ``W / ||W||`` over different dimensions, computed in
fp32 so that fp16/bf16 autocast never rounds the norm.
"""
from typing import Optional

import torch
from torch import Tensor


def weight_norm(weight: Tensor, per_output: bool) -> Tensor:
    """||W||_2 in fp32: one scalar (``per_output=False``) or one value per output
    unit, shaped to broadcast against ``weight`` (``per_output=True``)."""
    w = weight.float()
    if not per_output:
        return torch.linalg.vector_norm(w)
    dims = tuple(range(1, w.dim()))
    return torch.linalg.vector_norm(w, dim=dims, keepdim=True)


def gain_over_norm(weight: Tensor, gain: Tensor, per_output: bool,
                   cap: Optional[float] = None, eps: float = 1e-12) -> Tensor:
    """``min(g, cap) / ||W||`` in fp32: the factor Eq. 10 / 29 (and WN) apply."""
    gain = gain.float()
    if cap is not None:
        gain = torch.clamp(gain, max=cap)
    return gain / weight_norm(weight, per_output).clamp_min(eps)


def normalized_weight(weight: Tensor, gain: Tensor, per_output: bool,
                      cap: Optional[float] = None, eps: float = 1e-12) -> Tensor:
    """``W / ||W|| * min(g, cap)``, returned in ``weight``'s dtype.

    Convolution and matrix products are linear in ``W``, so applying the factor
    to the weight equals applying it to the layer's output (Eq. 10 / 29). For a
    conv the weight is the smaller tensor; a linear classifier scales its output
    instead (``batch x classes`` is smaller than ``features x classes``).
    """
    scale = gain_over_norm(weight, gain, per_output, cap, eps)
    return (weight.float() * scale).to(weight.dtype)
