"""FixNorm-FC/Conv (Eq. 10, 29), WN-FC (Eq. 6) and weight normalisation as
functions with an analytic backward.

    y = op(x, W) * s + b,     s = min(g, cap) / ||W||_2                 (6, 10, 29)

``op`` is the FC layer's product or the convolution. ||W|| is the norm of the
whole tensor and g one scalar (FixNorm, WN-FC), or the norm of each output
unit j with one g_j each (weight normalisation); WN has no cap. With
G = dL/dy, Gw = op_W^T(G) the weight gradient of the plain layer (G^T x for an
FC layer) and d_j = <G_j, op(x, W)_j> = <Gw_j, W_j> (op is linear in W_j):

    dL/dx   = op_x^T(s * G)
    dL/dW_j = s_j * (Gw_j - d_j / ||W_j||^2 * W_j)     Gw_j projected off W_j
    dL/dg_j = d_j / ||W_j||   where g_j <= cap, else 0 (the cap holds g)
    dL/db   = G summed over all but the channel dimension

Autograd through ``W / ||W||`` builds the second term as a weight-sized tensor
of its own and adds it to the first; here it is added in place to the one
weight gradient that the plain layer computes as well, and d comes from the
output when that is the smaller tensor (an FC classifier: batch x classes
against features x classes). The norms and s are fp32; under autocast the
product / convolution runs in the autocast dtype, as autocast would run it.
Saved for backward: the input, W, and the output before scaling when it is
no larger than W. Double backward is not supported (``once_differentiable``).
With no backward to prepare (``torch.no_grad``, frozen layers) and under
``torch.jit.trace`` (mmengine's FLOP counter, export) the same forward runs
as plain ops.
"""
from contextlib import nullcontext
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .normalize import normalized_weight, tensor_norm, wide

EPS = 1e-12  # ||W|| is clamped to this, as in normalize.gain_over_norm


class _Linear:
    """op(x, W) = x W^T over the last dimension of x."""
    channel_dim = -1

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return F.linear(x, w)

    def grads(self, gy: Tensor, x: Tensor, w: Tensor, need_x: bool, need_w: bool):
        """op_x^T(gy) and op_W^T(gy), each only if needed."""
        gx = gy @ w if need_x else None
        gw = gy.reshape(-1, w.shape[0]).t() @ x.reshape(-1, w.shape[1]) if need_w else None
        return gx, gw


class _Conv2d:
    """op(x, W) = conv2d(x, W) with integer padding."""
    channel_dim = 1

    def __init__(self, stride, padding, dilation, groups: int) -> None:
        self.args = (list(stride), list(padding), list(dilation), False, [0, 0], groups)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)

    def grads(self, gy: Tensor, x: Tensor, w: Tensor, need_x: bool, need_w: bool):
        """op_x^T(gy) and op_W^T(gy), each only if needed, in one call."""
        gx, gw, _ = torch.ops.aten.convolution_backward(
            gy, x, w, None, *self.args, [need_x, need_w, False])
        return gx, gw


def _compute_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype autocast would run the product / convolution in, or None."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def _without_autocast(device_type: str):
    """Autocast off (this module casts explicitly); a no-op when it is off."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return nullcontext()


def _cast(t: Tensor, dtype: Optional[torch.dtype]) -> Tensor:
    # autocast's rule: floating-point tensors other than float64
    if dtype is None or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def _per_channel(t: Tensor, op, ndim: int) -> Tensor:
    """A per-output-unit factor (shaped like g) laid along the output's channel dim."""
    if t.dim() == 0:
        return t
    shape = [1] * ndim
    shape[op.channel_dim] = -1
    return t.reshape(shape)


def _sum_but_channel(t: Tensor, op) -> Tensor:
    dims = [d for d in range(t.dim()) if d != op.channel_dim % t.dim()]
    return t.sum(dims) if dims else t


def _unit_dot_outputs(a: Tensor, b: Tensor, op, per_output: bool, like: Tensor) -> Tensor:
    """<a_j, b_j> of two outputs, per output unit (shaped like ``like``) or
    over everything, in fp32."""
    if not per_output and a.dtype == b.dtype == like.dtype:
        return torch.dot(a.reshape(-1), b.reshape(-1))
    prod = wide(a) * wide(b)
    return _sum_but_channel(prod, op).reshape(like.shape) if per_output else prod.sum()


def _unit_dot_weights(a: Tensor, b: Tensor, per_output: bool, like: Tensor) -> Tensor:
    """<a_j, b_j> of two weight-shaped fp32 tensors, without a product tensor."""
    if not per_output:
        return torch.dot(a.reshape(-1), b.reshape(-1))
    rows = a.shape[0]
    return torch.bmm(a.reshape(rows, 1, -1), b.reshape(rows, -1, 1)).reshape(like.shape)


def _forward(x, weight, gain, bias, op, per_output, cap, keep_z):
    """The forward in plain ops (autograd through them is the reference
    gradient): y, and the cast input, the unscaled output (``keep_z`` and no
    larger than W, else None), ||W||, s and the compute dtype."""
    dtype = _compute_dtype(x)
    with _without_autocast(x.device.type):
        x = _cast(x, dtype)
        norm = tensor_norm(weight, per_output).clamp_min(EPS)
        capped = wide(gain) if cap is None else torch.clamp(wide(gain), max=cap)
        scale = capped / norm
        z = op.forward(x, _cast(weight, dtype))
        s = _per_channel(scale, op, z.dim()).to(z.dtype)
        # keep the unscaled output when it is the cheaper way to get d
        keep = keep_z and z.numel() <= weight.numel()
        y = z * s if keep else z.mul_(s)
        if bias is not None:
            y.add_(_per_channel(bias, op, y.dim()).to(y.dtype))
    return y, x, (z if keep else None), norm, scale, dtype


class _NormalizedOp(torch.autograd.Function):
    """y = op(x, W) * min(g, cap) / ||W|| + b; see the module docstring."""

    @staticmethod
    def forward(ctx, x, weight, gain, bias, op, per_output, cap):
        ctx.x_dtype = x.dtype
        y, x, z, norm, scale, dtype = _forward(x, weight, gain, bias, op, per_output, cap,
                                               ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        ctx.op, ctx.per_output, ctx.cap, ctx.dtype = op, per_output, cap, dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.save_for_backward(x, weight, gain, z, norm, scale)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, weight, gain, z, norm, scale = ctx.saved_tensors
        op, per_output = ctx.op, ctx.per_output
        need_x, need_w, need_g, need_b = ctx.needs_input_grad[:4]
        gx = gw = gg = gb = None
        with _without_autocast(gy.device.type):
            if need_b:
                gb = _sum_but_channel(gy, op).to(ctx.bias_dtype)
            gs = gy * _per_channel(scale, op, gy.dim()).to(gy.dtype)  # s * G
            w = _cast(weight, ctx.dtype)
            need_gw = need_w or need_g
            # with d from the output, s * G gives dL/dx and s * Gw in one go;
            # else d needs the plain Gw, which is scaled afterwards
            gx, gw = op.grads(gs, x, w, need_x, need_gw and z is not None)
            if gx is not None:
                gx = gx.to(ctx.x_dtype)
            if need_gw:
                if z is not None:
                    d = _unit_dot_outputs(gy, z, op, per_output, scale)
                    gw = wide(gw)
                else:
                    gw = wide(op.grads(gy, x, w, False, True)[1])
                    d = _unit_dot_weights(gw, wide(weight), per_output, scale)
                    gw.mul_(scale)
                d_over_norm = d / norm
                if need_g:
                    gg = d_over_norm if ctx.cap is None else \
                        d_over_norm * (wide(gain) <= ctx.cap)  # clamp's gradient
                    gg = gg.to(gain.dtype)
                if need_w:
                    coef = (scale / norm).mul_(d_over_norm)  # s * d / ||W||^2
                    gw = gw.addcmul_(wide(weight), coef, value=-1).to(weight.dtype)
                else:
                    gw = None
        return gx, gw, gg, gb, None, None, None


def _apply(x, weight, gain, bias, op, per_output, cap) -> Tensor:
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, gain, bias))
    if not needs_grad or torch.jit.is_tracing():
        # no backward to save, or a trace (mmengine's FLOP counter, export)
        # that must see the product / convolution itself
        return _forward(x, weight, gain, bias, op, per_output, cap, False)[0]
    return _NormalizedOp.apply(x, weight, gain, bias, op, per_output, cap)


def normalized_linear(x: Tensor, weight: Tensor, gain: Tensor, bias: Optional[Tensor] = None,
                      per_output: bool = False, cap: Optional[float] = None) -> Tensor:
    """``x W^T / ||W|| * min(g, cap) + b``: FixNorm-FC (Eq. 10), WN-FC (Eq. 6,
    ``cap=None``) or a weight-normalised FC layer (``per_output=True``, g of
    shape ``(out_features, 1)``)."""
    return _apply(x, weight, gain, bias, _Linear(), per_output, cap)


def normalized_conv2d(x: Tensor, weight: Tensor, gain: Tensor, bias: Optional[Tensor] = None,
                      stride: Union[int, Sequence[int]] = 1,
                      padding: Union[int, Sequence[int], str] = 0,
                      dilation: Union[int, Sequence[int]] = 1, groups: int = 1,
                      per_output: bool = False, cap: Optional[float] = None) -> Tensor:
    """``Conv(x, W) / ||W|| * min(g, cap) + b``: FixNorm-Conv (Eq. 29), or a
    weight-normalised conv (``per_output=True``, g of shape ``(c_out, 1, 1, 1)``).
    Zero padding only (pad ``x`` first for other modes)."""
    pair = torch.nn.modules.utils._pair
    pad = _int_padding(padding, weight.shape[-2:], pair(dilation))
    if pad is None:  # asymmetric 'same' padding: the weight-side form, through autograd
        w = normalized_weight(weight, gain, per_output, cap, EPS)
        return F.conv2d(x, w, bias, stride, padding, dilation, groups)
    op = _Conv2d(pair(stride), pad, pair(dilation), groups)
    return _apply(x, weight, gain, bias, op, per_output, cap)


def _int_padding(padding, kernel, dilation) -> Optional[Tuple[int, int]]:
    if not isinstance(padding, str):
        return torch.nn.modules.utils._pair(padding)
    if padding == 'valid':
        return (0, 0)
    total = [d * (k - 1) for d, k in zip(dilation, kernel)]  # 'same' (stride 1)
    if any(t % 2 for t in total):
        return None
    return tuple(t // 2 for t in total)
