"""FixNorm-FC / FixNorm-Conv (Eq. 10, 29, 8) and WN layers."""
import copy
import inspect
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fixnorm_mm.layers import (FixNormConv2d, FixNormLinear, WNConv2d, WNLinear,
                               normalized_weight, tensor_norm)


def test_fixnorm_linear_is_eq10_below_and_above_cap():
    layer = FixNormLinear(6, 4, alpha=0.5)
    x = torch.randn(3, 6)
    w, b = layer.weight.detach(), layer.bias.detach()
    cap = 0.5 * math.sqrt(4)
    assert layer.cap == pytest.approx(cap)
    for g in (0.3, 5.0):  # below and above the cap
        with torch.no_grad():
            layer.g.fill_(g)
        expected = x @ w.t() / w.norm() * min(g, cap) + b
        torch.testing.assert_close(layer(x), expected)


def test_fixnorm_conv_is_eq29():
    layer = FixNormConv2d(3, 5, 3, alpha=2.0, padding=1)
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        layer.g.fill_(100.0)
    w = layer.weight.detach()
    expected = F.conv2d(x, w, None, padding=1) / w.norm() * (2.0 * math.sqrt(5)) \
        + layer.bias.detach()[None, :, None, None]
    torch.testing.assert_close(layer(x), expected)
    assert float(layer.effective_scale) == pytest.approx(2.0 * math.sqrt(5))


def test_input_gradient_is_eq8():
    """-dL/dx = g/||W|| * sum_{j != k} p_j (W_k - W_j), with g the capped gain."""
    layer = FixNormLinear(5, 4, alpha=10.0, bias=False)
    x = torch.randn(5, requires_grad=True)
    k = 2
    logits = layer(x[None])[0]
    F.cross_entropy(logits[None], torch.tensor([k])).backward()
    w = layer.weight.detach()
    g = float(layer.effective_scale)
    p = logits.detach().softmax(0)
    closed = g / w.norm() * sum(p[j] * (w[k] - w[j]) for j in range(4) if j != k)
    torch.testing.assert_close(-x.grad, closed, rtol=1e-5, atol=1e-6)


def test_gain_follows_weight_reinitialised_after_construction():
    layer = FixNormConv2d(4, 6, 3, alpha=100.0)
    nn.init.normal_(layer.weight, std=0.01)  # what mmcv's normal_init does later
    layer.init_weights()  # what mmengine's BaseModule.init_weights calls next
    plain = nn.Conv2d(4, 6, 3)
    plain.load_state_dict({'weight': layer.weight.detach(), 'bias': layer.bias.detach()})
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(layer(x), plain(x))
    assert float(layer.g.detach()) == pytest.approx(float(layer.weight.detach().norm()), rel=1e-6)


def test_loaded_gain_is_not_resynchronised():
    src = FixNormLinear(3, 2, alpha=1.0)
    with torch.no_grad():
        src.g.fill_(0.123)
    dst = FixNormLinear(3, 2, alpha=1.0)
    dst.load_state_dict(src.state_dict())
    dst.init_weights()
    dst.apply(lambda m: None)
    dst(torch.randn(1, 3))
    assert float(dst.g) == pytest.approx(0.123)


@pytest.mark.parametrize('make', [
    lambda: FixNormLinear(6, 3, alpha=1.0),
    lambda: FixNormConv2d(3, 4, 3, alpha=1.0),
    lambda: WNConv2d(3, 4, 3, padding=1),
    lambda: WNLinear(6, 3)])
def test_state_dict_deepcopy_pickle_round_trips(make):
    layer = make()
    x = torch.randn(2, 6) if isinstance(layer, nn.Linear) else torch.randn(2, 3, 5, 5)
    y = layer(x)
    with torch.no_grad():
        layer.g.mul_(1.5)  # trained g, different from ||W||
    y = layer(x)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        torch.testing.assert_close(clone(x), y)
    fresh = make()
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fresh(x), y)
    assert set(layer.state_dict()) == {'weight', 'bias', 'g'}


def test_wn_is_per_output_unit_and_equals_plain_at_start():
    conv = WNConv2d(3, 4, 3)
    nn.init.kaiming_normal_(conv.weight)
    conv.init_weights()
    plain = nn.Conv2d(3, 4, 3)
    plain.load_state_dict({'weight': conv.weight.detach(), 'bias': conv.bias.detach()})
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(conv(x), plain(x))
    assert conv.g.shape == (4, 1, 1, 1)
    with torch.no_grad():
        conv.g.fill_(2.0)
        conv.weight.mul_(7.0)  # the direction's scale does not matter
    w = conv.weight.detach()
    w_eff = 2.0 * w / w.flatten(1).norm(dim=1)[:, None, None, None]
    torch.testing.assert_close(conv(x), F.conv2d(x, w_eff, conv.bias))


@pytest.mark.parametrize('alpha', [0, -1.0, float('nan'), 'big', None])
def test_bad_alpha_is_rejected_by_name(alpha):
    with pytest.raises(ValueError, match='alpha'):
        FixNormLinear(3, 2, alpha=alpha)


def test_norms_in_fp32_under_autocast():
    layer = FixNormLinear(8, 4, alpha=1.0)
    x = torch.randn(2, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), layer(x), rtol=2e-2, atol=2e-2)


def test_registered_as_mmcv_conv_types():
    import mmcv.cnn as mmcv_cnn
    m = mmcv_cnn.ConvModule(3, 4, 3, conv_cfg=dict(type='WNConv2d'), norm_cfg=None)
    assert isinstance(m.conv, WNConv2d)
    c = mmcv_cnn.build_conv_layer(dict(type='FixNormConv', alpha=0.5), 3, 4, 1)
    assert isinstance(c, FixNormConv2d) and c.alpha == 0.5


# ------------------------------------------------------------------ g follows W
def test_forward_never_touches_g():
    """g is set when W is initialised or loaded, never in forward."""
    layer = FixNormConv2d(4, 6, 3, alpha=100.0)
    with torch.no_grad():
        layer.weight.mul_(3.0)  # W changed behind the layer's back
    before = layer.g.detach().clone()
    layer(torch.randn(1, 4, 8, 8))
    layer(torch.randn(1, 4, 8, 8))
    assert torch.equal(layer.g.detach(), before)
    layer.init_weights()  # the initialisation step that follows a re-init
    assert float(layer.g) == pytest.approx(float(layer.weight.detach().norm()), rel=1e-6)


@pytest.mark.parametrize('make', [lambda: FixNormLinear(6, 3, alpha=1.0),
                                  lambda: WNConv2d(3, 4, 3),
                                  lambda: WNLinear(6, 3, per_output=False)])
def test_gain_set_by_hand_is_kept_by_init_weights_apply_and_sync_gains(make):
    from fixnorm_mm.layers import sync_gains
    layer = make()
    with torch.no_grad():
        layer.g.fill_(0.5)
        layer.weight.normal_()
    layer.init_weights()
    layer.apply(lambda m: nn.init.normal_(m.weight) if m is layer else None)
    assert sync_gains(nn.Sequential(layer)) == 0
    assert torch.all(layer.g.detach() == 0.5)
    layer.sync_gain()  # the explicit call always sets g = ||W||
    torch.testing.assert_close(layer.g.detach(), tensor_norm(layer.weight, layer.per_output))


def test_reset_parameters_and_apply_resynchronise_g():
    layer = WNConv2d(3, 5, 3)
    layer.reset_parameters()
    torch.testing.assert_close(layer.g.detach(), tensor_norm(layer.weight, True))
    layer.apply(lambda m: nn.init.normal_(m.weight, std=3.0))  # model.apply(init) idiom
    torch.testing.assert_close(layer.g.detach(), tensor_norm(layer.weight, True))
    with torch.no_grad():
        layer.weight.mul_(2.0)
    from fixnorm_mm.layers import sync_gains
    assert sync_gains(nn.Sequential(nn.ReLU(), layer)) == 1
    torch.testing.assert_close(layer.g.detach(), tensor_norm(layer.weight, True))


def test_state_dict_without_gain_sets_g_from_the_loaded_weight():
    plain = nn.Linear(5, 3)
    layer = FixNormLinear(5, 3, alpha=10.0)
    result = layer.load_state_dict(plain.state_dict(), strict=False)
    assert result.missing_keys == ['g']  # reported, and set from W
    assert float(layer.g) == pytest.approx(float(plain.weight.detach().norm()), rel=1e-6)
    x = torch.randn(4, 5)
    torch.testing.assert_close(layer(x), plain(x))
    with pytest.raises(RuntimeError, match='Missing key'):
        FixNormLinear(5, 3, alpha=10.0).load_state_dict(plain.state_dict())


def test_layers_nested_anywhere_follow_the_hosts_init_cfg():
    """mmengine calls init_weights only on a module's direct children, after
    its init_cfg; a WN conv in an mmcv ConvModule in a ModuleList (FPN) is
    reached through Module.apply. A g set before init_weights is kept."""
    from mmcv.cnn import ConvModule
    from mmengine.model import BaseModule

    class Host(BaseModule):
        def __init__(self):
            super().__init__(init_cfg=dict(type='Normal', layer='Conv2d', std=0.5))
            self.convs = nn.ModuleList(
                ConvModule(4, 4, 3, padding=1, conv_cfg=dict(type='WNConv2d'), norm_cfg=None)
                for _ in range(2))
            self.cls = FixNormConv2d(4, 3, 1, alpha=100.0)
            self.kept = WNConv2d(4, 4, 1)

    host = Host()
    with torch.no_grad():
        host.kept.g.fill_(0.25)  # e.g. a zero-ish gain a user chose
    host.init_weights()
    for m in (host.convs[0].conv, host.convs[1].conv, host.cls):
        assert m.weight.detach().std().item() == pytest.approx(0.5, rel=0.3)  # Normal ran
        torch.testing.assert_close(m.g.detach(), tensor_norm(m.weight, m.per_output))
    assert torch.all(host.kept.g.detach() == 0.25)
    assert host.kept.weight.detach().std().item() == pytest.approx(0.5, rel=0.3)



def test_settle_gains_after_hosts_that_initialise_after_their_children():
    """A host's init that runs after its layers' init_weights: W re-drawn
    (g = ||W|| again), g drawn like a weight by xavier over every parameter
    with dim > 1 (g = ||W||), W zeroed (a direction and g = 0: the output is
    the bias, and g has a gradient); a g set from outside stays."""
    from mmengine.model import BaseModule
    from fixnorm_mm.layers import gain_snapshot, settle_gains

    class Host(BaseModule):
        def __init__(self):
            super().__init__()
            self.cls = FixNormLinear(8, 3, alpha=100.0)
            self.ffn = WNLinear(8, 16)
            self.offsets = WNLinear(8, 4)
            self.kept = WNLinear(8, 4)   # g chosen by hand before the init
            self.zero_gain = WNLinear(8, 4)  # g zeroed by the init, W untouched

        def init_weights(self):
            super().init_weights()
            for name, p in self.named_parameters():  # DIIHead, DETR's transformers
                if p.dim() > 1 and not name.startswith(('kept', 'zero_gain')):
                    nn.init.xavier_uniform_(p)
            nn.init.constant_(self.offsets.weight, 0.0)  # mmcv's deformable attention
            nn.init.constant_(self.offsets.bias, 0.5)
            nn.init.xavier_uniform_(self.kept.weight)
            with torch.no_grad():
                self.zero_gain.g.zero_()

    host = Host()
    with torch.no_grad():
        host.kept.g.fill_(0.25)
    before = gain_snapshot(host)
    host.init_weights()
    assert float(host.cls.g.detach()) != pytest.approx(float(host.cls.weight.detach().norm()))
    assert bool((host.ffn.g < 0).any())  # drawn like a weight
    done = settle_gains(host, before)
    assert done == {'resynced': ['cls'], 'gain_as_weight': ['ffn'], 'zero_weight': ['offsets']}
    for m in (host.cls, host.ffn):
        torch.testing.assert_close(m.g.detach(), tensor_norm(m.weight, m.per_output))
    assert host.offsets.weight.norm() > 0 and bool((host.offsets.g == 0).all())
    x = torch.randn(5, 8)
    out = host.offsets(x)
    torch.testing.assert_close(out, torch.full((5, 4), 0.5))
    out.sum().backward()
    assert host.offsets.g.grad.abs().sum() > 0
    assert bool((host.kept.g == 0.25).all()) and bool((host.zero_gain.g == 0).all())
    # the zero gain of 'offsets' is its own now: a later sync leaves it
    assert settle_gains(host, gain_snapshot(host)) == {
        'resynced': [], 'gain_as_weight': [], 'zero_weight': []}
    assert bool((host.offsets.g == 0).all())


# ------------------------------------------------------------------ analytic backward
def reference(layer, x):
    """The layer's function, autograd through W / ||W|| * min(g, cap)."""
    w = normalized_weight(layer.weight, layer.g, layer.per_output, layer.cap)
    if isinstance(layer, nn.Linear):
        return F.linear(x, w, layer.bias)
    if layer.padding_mode != 'zeros':
        x = F.pad(x, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
        return F.conv2d(x, w, layer.bias, layer.stride, 0, layer.dilation, layer.groups)
    return F.conv2d(x, w, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)


GRAD_LAYERS = {
    'FixNormLinear': lambda bias: FixNormLinear(7, 5, alpha=0.5, bias=bias),
    'FixNormLinear-wide': lambda bias: FixNormLinear(40, 3, alpha=0.5, bias=bias),
    'FixNormConv2d': lambda bias: FixNormConv2d(4, 6, 3, alpha=0.5, stride=2, padding=2,
                                                dilation=2, groups=2, bias=bias),
    'WNConv2d': lambda bias: WNConv2d(4, 6, 3, padding=1, bias=bias, padding_mode='reflect'),
    'WNConv2d-whole': lambda bias: WNConv2d(4, 6, 1, bias=bias, per_output=False),
    'WNLinear': lambda bias: WNLinear(7, 5, bias=bias),
    'WNLinear-wide': lambda bias: WNLinear(40, 3, bias=bias, per_output=False),
}


def grad_input(layer, dtype=torch.float64):
    if isinstance(layer, nn.Linear):
        return torch.randn(2, 3, layer.in_features, dtype=dtype, requires_grad=True)
    return torch.randn(2, layer.in_channels, 7, 6, dtype=dtype, requires_grad=True)


def grads(fn, layer, x, gy):
    y = fn(x)
    return [y] + list(torch.autograd.grad(y, [x, *layer.parameters()], gy))


@pytest.mark.parametrize('bias', [True, False], ids=['bias', 'no-bias'])
@pytest.mark.parametrize('gain', ['below-cap', 'above-cap'])
@pytest.mark.parametrize('name', list(GRAD_LAYERS))
def test_analytic_backward_equals_autograd_float64(name, gain, bias):
    """dL/dx, dL/dW, dL/dg, dL/db of the analytic backward (layers/functional.py)
    against autograd through W / ||W|| * min(g, cap), in float64."""
    torch.manual_seed(0)
    layer = GRAD_LAYERS[name](bias).double()
    with torch.no_grad():
        if layer.cap is not None:
            layer.g.fill_(0.6 * layer.cap if gain == 'below-cap' else 3.0 * layer.cap)
        else:
            layer.g.mul_(0.5 if gain == 'below-cap' else 30.0)  # WN: no cap
    x = grad_input(layer)
    gy = torch.randn_like(layer(x))
    got, want = grads(layer, layer, x, gy), grads(lambda t: reference(layer, t), layer, x, gy)
    assert len(got) == (5 if bias else 4)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # inference takes the plain-ops path
        torch.testing.assert_close(layer(x), got[0], rtol=1e-12, atol=1e-12)
    if layer.cap is not None and gain == 'above-cap':
        assert got[-1].item() == 0  # dL/dg (g is the last parameter): the cap holds g


def test_gain_gradient_is_d_over_norm():
    """dL/dg = <dL/dy, x W^T> / ||W|| below the cap (Eq. 10 differentiated)."""
    layer = FixNormLinear(6, 4, alpha=10.0, bias=False).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    gy = torch.randn(3, 4, dtype=torch.float64)
    layer(x).backward(gy)
    w = layer.weight.detach()
    torch.testing.assert_close(layer.g.grad, (gy * (x @ w.t())).sum() / w.norm())


@pytest.mark.parametrize('name', ['FixNormLinear', 'FixNormConv2d', 'WNConv2d', 'WNLinear'])
def test_analytic_backward_in_fp32_and_under_bf16_autocast(name):
    torch.manual_seed(0)
    layer = GRAD_LAYERS[name](True)
    x = grad_input(layer, torch.float32)
    gy = torch.randn_like(layer(x))
    got, want = grads(layer, layer, x, gy), grads(lambda t: reference(layer, t), layer, x, gy)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = grads(layer, layer, x, gy.bfloat16())
        want = grads(lambda t: reference(layer, t), layer, x, gy.bfloat16())
    assert got[0].dtype == torch.bfloat16
    assert [t.dtype for t in got[1:]] == [torch.float32] * (len(got) - 1)  # x and the params
    for a, b in zip(got, want):
        scale = b.abs().max().float()
        assert (a.float() - b.float()).abs().max() <= 3e-2 * scale


def test_conv_with_asymmetric_same_padding_and_3d_linear_input():
    conv = WNConv2d(3, 4, 2, padding='same')  # even kernel: asymmetric padding
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(conv(x), reference(conv, x))
    fc = FixNormLinear(5, 2, alpha=1.0)
    x = torch.randn(5)  # unbatched input
    torch.testing.assert_close(fc(x), reference(fc, x))


# ------------------------------------------------------------------ plain twins
def test_from_plain_keeps_everything_and_to_plain_round_trips():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, bias=False,
                     padding_mode='reflect', dtype=torch.float64)
    conv.weight.requires_grad_(False)
    conv.eval()
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    for new in (FixNormConv2d.from_plain(conv, alpha=100.0), WNConv2d.from_plain(conv),
                WNConv2d.from_plain(conv, per_output=False)):
        for attr in ('in_channels', 'out_channels', 'kernel_size', 'stride', 'padding',
                     'dilation', 'groups', 'padding_mode'):
            assert getattr(new, attr) == getattr(conv, attr), attr
        assert new.bias is None and not new.training
        assert new.weight.dtype == torch.float64 and not new.weight.requires_grad
        assert not new.g.requires_grad  # a frozen layer stays frozen
        torch.testing.assert_close(new(x), conv(x))
        back = new.to_plain()
        assert type(back) is nn.Conv2d and not back.training and back.bias is None
        assert not back.weight.requires_grad and back.padding_mode == 'reflect'
        torch.testing.assert_close(back(x), conv(x))
    fc = nn.Linear(5, 3)
    for new in (FixNormLinear.from_plain(fc, alpha=100.0), WNLinear.from_plain(fc)):
        assert new.weight.requires_grad and new.bias.requires_grad and new.training
        x = torch.randn(2, 5)
        torch.testing.assert_close(new(x), fc(x))
        assert type(new.to_plain()) is nn.Linear


def test_to_plain_folds_the_capped_gain():
    layer = FixNormLinear(6, 4, alpha=0.5)
    with torch.no_grad():
        layer.g.fill_(10.0)  # above the cap 0.5 * sqrt(4) = 1
    plain = layer.to_plain()
    assert float(plain.weight.detach().norm()) == pytest.approx(1.0, rel=1e-6)
    x = torch.randn(3, 6)
    torch.testing.assert_close(plain(x), layer(x))


def test_from_plain_rejects_other_layers_by_name():
    with pytest.raises(TypeError, match=r'FixNormConv2d.from_plain takes an nn.Conv2d, got Linear'):
        FixNormConv2d.from_plain(nn.Linear(3, 2), alpha=1.0)
    with pytest.raises(TypeError, match=r'got WNConv2d \(call .to_plain\(\) first\)'):
        FixNormConv2d.from_plain(WNConv2d(3, 2, 1), alpha=1.0)
    with pytest.raises(TypeError, match='per_output'):
        WNLinear(3, 2, per_output='yes')


@pytest.mark.parametrize('cfg, kind', [(dict(type='WNConv2d'), WNConv2d),
                                       (dict(type='WNConv2d', per_output=False), WNConv2d),
                                       (dict(type='FixNormConv', alpha=2.0), FixNormConv2d),
                                       (dict(type='Conv2d'), nn.Conv2d)])
def test_rebuild_conv_keeps_dilation_groups_and_weights(cfg, kind):
    import mmcv.cnn  # noqa: F401  (registers mmcv's conv types)
    from fixnorm_mm.layers import rebuild_conv
    conv = nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2)
    new = rebuild_conv(conv, cfg)
    assert type(new) is kind and new is not conv
    assert (new.dilation, new.groups, new.padding) == ((2, 2), 2, (2, 2))
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(new(x), conv(x))
    assert rebuild_conv(conv, None) is conv


def test_wn_fc_is_eq6_one_scalar_gain_without_cap():
    layer = WNLinear(6, 4, per_output=False)
    assert layer.g.shape == () and layer.cap is None
    with torch.no_grad():
        layer.g.fill_(1e4)  # Eq. 6 has no cap
    w, b = layer.weight.detach(), layer.bias.detach()
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), x @ w.t() / w.norm() * 1e4 + b)
    assert set(layer.state_dict()) == {'weight', 'bias', 'g'}


def test_weight_norm_names_the_module_and_tensor_norm_the_function():
    import fixnorm_mm.layers as layers
    assert 'weight_norm' not in layers.__all__ and 'tensor_norm' in layers.__all__
    assert inspect.ismodule(layers.weight_norm)
    assert layers.weight_norm.WNConv2d is WNConv2d
    w = torch.randn(4, 3)
    torch.testing.assert_close(tensor_norm(w, per_output=False), w.norm())


@pytest.mark.parametrize('name', ['FixNormLinear', 'FixNormConv2d', 'WNConv2d'])
def test_flop_counter_sees_the_product_and_the_convolution(name):
    """mmengine's FLOP counter traces the model: the traced layer shows the
    product / convolution, not an opaque autograd function."""
    from mmengine.analysis import FlopAnalyzer
    layer = GRAD_LAYERS[name](True)
    x = grad_input(layer, torch.float32).detach()
    plain = layer.to_plain()
    flops = FlopAnalyzer(layer, (x,)).total()
    assert flops >= FlopAnalyzer(plain, (x,)).total() > 0
