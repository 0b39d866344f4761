"""The one normalisation both FixNorm and weight-normalised layers share.

FixNorm (Zhou, Sun & Zhong, "FixNorm: Dissecting Weight Decay for Training
Deep Neural Networks", Eq. 6, 10 and 29) divides by the norm of the *whole*
weight tensor; weight normalisation (Salimans & Kingma 2016) divides each
output unit by its own norm. Both are ``W / ||W||`` over different dimensions,
computed in fp32 so that fp16/bf16 autocast never rounds the norm.
"""
from typing import Optional

import torch
from torch import Tensor


def wide(t: Tensor) -> Tensor:
    """``t`` in fp32, or as it is if wider (float64)."""
    return t if t.dtype == torch.float64 else t.float()


def tensor_norm(weight: Tensor, per_output: bool) -> Tensor:
    """||W||_2 in fp32: one scalar (``per_output=False``) or one value per output
    unit, shaped to broadcast against ``weight`` (``per_output=True``)."""
    w = wide(weight)
    if not per_output:
        return torch.linalg.vector_norm(w)
    dims = tuple(range(1, w.dim()))
    return torch.linalg.vector_norm(w, dim=dims, keepdim=True)


def gain_over_norm(weight: Tensor, gain: Tensor, per_output: bool,
                   cap: Optional[float] = None, eps: float = 1e-12) -> Tensor:
    """``min(g, cap) / ||W||`` in fp32: the factor Eq. 10 / 29 (and WN) apply."""
    gain = wide(gain)
    if cap is not None:
        gain = torch.clamp(gain, max=cap)
    return gain / tensor_norm(weight, per_output).clamp_min(eps)


def normalized_weight(weight: Tensor, gain: Tensor, per_output: bool,
                      cap: Optional[float] = None, eps: float = 1e-12) -> Tensor:
    """``W / ||W|| * min(g, cap)``, returned in ``weight``'s dtype: the weight of
    the plain layer that computes what the normalised layer computes (the
    product and the convolution are linear in ``W``)."""
    scale = gain_over_norm(weight, gain, per_output, cap, eps)
    return (wide(weight) * scale).to(weight.dtype)
