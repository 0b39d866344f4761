"""The fixed-set tracer sees through shape-only ops, and only through them: a
layer is "followed by a normalization" when every use of its output is the
input of a norm, possibly after view / reshape / permute / flatten /
transpose / contiguous."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fixnorm_mm.norm_control import NormFollowTracer, select_fixed_params


class Between(nn.Module):
    """conv -> ``op`` -> channel-last LayerNorm, as ConvNeXt and mmcv's PatchEmbed
    put a permute / flatten-transpose between a conv and its norm."""

    def __init__(self, op):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 4)
        self.op = op

    def forward(self, x):
        y = self.norm(self.op(self.conv(x)))
        return self.head(y.reshape(-1, 8)).mean()


SHAPE_ONLY = {
    'permute': lambda y: y.permute(0, 2, 3, 1),
    'flatten-transpose': lambda y: y.flatten(2).transpose(1, 2),
    'torch.flatten-transpose-contiguous': lambda y: torch.flatten(y, 2).transpose(1, 2)
    .contiguous(),
    'view-permute': lambda y: y.view(y.shape[0], 8, -1).permute(0, 2, 1),
    'reshape-movedim': lambda y: y.reshape(y.shape[0], 8, -1).movedim(1, -1),
}
VALUE_CHANGING = {
    'multiply': lambda y: (y * 2.0).permute(0, 2, 3, 1),
    'gelu': lambda y: F.gelu(y).permute(0, 2, 3, 1),
    'add': lambda y: (y + 1.0).permute(0, 2, 3, 1),
    'in-place add': lambda y: y.add_(1.0).permute(0, 2, 3, 1),
}


def traced(model, x=None):
    x = torch.randn(2, 3, 6, 6) if x is None else x
    with NormFollowTracer(model) as tracer:
        model(x)
    return tracer


@pytest.mark.parametrize('op', sorted(SHAPE_ONLY))
def test_a_shape_only_op_between_layer_and_norm_keeps_the_layer_followed(op):
    model = Between(SHAPE_ONLY[op])
    tracer = traced(model)
    assert tracer.followed == {'conv': ('norm', 'LayerNorm', True)}
    sel = select_fixed_params(model, tracer.followed)
    assert list(sel.groups['default']) == ['conv.weight']
    assert sel.reasons['conv.weight'] == 'followed by LayerNorm'


@pytest.mark.parametrize('op', sorted(VALUE_CHANGING))
def test_a_value_changing_op_between_layer_and_norm_breaks_it(op):
    model = Between(VALUE_CHANGING[op])
    tracer = traced(model)
    assert tracer.followed == {}
    sel = select_fixed_params(model, tracer.followed)
    assert sel.groups == {}
    assert ('conv.weight', 8 * 3 * 9, 'not followed by a normalization') in sel.excluded


def test_the_scale_invariance_the_tracer_claims_holds():
    """What 'followed' means: scaling the weight leaves the output unchanged
    through a permute, and changes it through a GELU."""
    x = torch.randn(2, 3, 6, 6)
    for op, invariant in ((SHAPE_ONLY['permute'], True), (VALUE_CHANGING['gelu'], False)):
        model = Between(op)
        out = model(x)
        with torch.no_grad():
            model.conv.weight.mul_(3.0)
        assert torch.allclose(model(x), out, atol=1e-5) is invariant


class Residual(nn.Module):
    """linear -> LayerNorm, and the linear's output also carried past the norm
    (Swin's patch merging feeds the next block's norm *and* its shortcut)."""

    def __init__(self, residual=True):
        super().__init__()
        self.reduction = nn.Linear(6, 8, bias=False)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.residual = residual

    def forward(self, x):
        y = self.reduction(x)
        z = self.fc(self.norm(y))
        return (z + y if self.residual else z).sum()


def test_a_layer_whose_output_also_bypasses_the_norm_is_not_followed():
    model = Residual()
    tracer = traced(model, torch.randn(4, 6))
    assert tracer.followed == {}
    assert tracer.also_used == {'reduction': 'add'}
    sel = select_fixed_params(model, tracer.followed, other_uses=tracer.also_used)
    assert ('reduction.weight', 48, 'feeds a normalization and also another op (add): '
            'not scale-invariant') in sel.excluded
    # without the shortcut the same layer is scale-invariant and followed
    assert traced(Residual(residual=False), torch.randn(4, 6)).followed == {
        'reduction': ('norm', 'LayerNorm', True)}


def test_reading_the_shape_is_no_use_of_the_values():
    class ShapeReader(Between):
        def forward(self, x):
            y = self.conv(x)
            n, c, h, w = y.shape
            zeros = y.new_zeros(n)  # reads dtype/device only
            return self.norm(y.reshape(n, c, h * w).transpose(1, 2)).sum() + zeros.sum()
    assert traced(ShapeReader(None)).followed == {'conv': ('norm', 'LayerNorm', True)}


def test_the_tracer_costs_nothing_once_detached():
    model = Between(SHAPE_ONLY['permute'])
    tracer = NormFollowTracer(model).attach()
    model(torch.randn(2, 3, 6, 6))
    tracer.detach()
    assert torch._C._is_torch_function_mode_enabled() is False
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert tracer.followed == {'conv': ('norm', 'LayerNorm', True)}


def test_a_forward_that_raises_leaves_no_mode_behind():
    class Boom(Between):
        def forward(self, x):
            self.norm(self.conv(x).permute(0, 2, 3, 1))
            raise RuntimeError('boom')
    model = Boom(None)
    with NormFollowTracer(model) as tracer:
        with pytest.raises(RuntimeError, match='boom'):
            model(torch.randn(2, 3, 6, 6))
        assert torch._C._is_torch_function_mode_enabled() is False
    assert tracer.followed == {'conv': ('norm', 'LayerNorm', True)}


def test_stock_convnext_converts_with_its_depthwise_convs_fixed_directly():
    """mmpretrain's ConvNeXt-T: each depthwise conv feeds a channel-last LayerNorm
    through a permute, so it is followed by a normalization and fixed as it is;
    only the pointwise layers (GELU / layer scale after them) and the downsampling
    convs (into a block's shortcut) are weight-normalized."""
    from mmengine.registry import init_default_scope

    from fixnorm_mm.convert import build_and_convert
    from fixnorm_mm.zoo import fixnorm_model_cfg, load_config
    init_default_scope('mmpretrain')
    cfg = fixnorm_model_cfg(load_config('mmpretrain::convnext/convnext-tiny_32xb128_in1k.py'))
    cfg.pop('type')
    model, conversion = build_and_convert(**cfg)
    depthwise = [n for n, m in model.named_modules() if n.endswith('depthwise_conv')]
    assert len(depthwise) == 18
    for n in depthwise:
        assert conversion.trace.followed[n][1] == 'LayerNorm2d', n
        assert n not in conversion.converted
    assert conversion.trace.followed['backbone.downsample_layers.0.0'][1] == 'LayerNorm2d'  # stem
    wn = conversion.weight_normalized
    assert len(wn) == 18 * 2 + 3  # pointwise_conv1/2 of each block, 3 downsampling convs
    assert all(n.endswith(('pointwise_conv1', 'pointwise_conv2')) or '.downsample_layers.' in n
               for n in wn)
