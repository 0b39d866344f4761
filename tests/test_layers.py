"""FixNorm-FC / FixNorm-Conv (Eq. 10, 29, 8) and WN layers."""
import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fixnorm_mm.layers import FixNormConv2d, FixNormLinear, WNConv2d, WNLinear


def test_fixnorm_linear_is_eq10_below_and_above_cap():
    layer = FixNormLinear(6, 4, alpha=0.5)
    x = torch.randn(3, 6)
    w, b = layer.weight.detach(), layer.bias.detach()
    cap = 0.5 * math.sqrt(4)
    assert layer.cap == pytest.approx(cap)
    for g in (0.3, 5.0):  # below and above the cap
        with torch.no_grad():
            layer.g.fill_(g)
        layer._gain_synced = True
        expected = x @ w.t() / w.norm() * min(g, cap) + b
        torch.testing.assert_close(layer(x), expected)


def test_fixnorm_conv_is_eq29():
    layer = FixNormConv2d(3, 5, 3, alpha=2.0, padding=1)
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        layer.g.fill_(100.0)
    layer._gain_synced = True
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
    plain = nn.Conv2d(4, 6, 3)
    plain.load_state_dict({'weight': layer.weight.detach(), 'bias': layer.bias.detach()})
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(layer(x), plain(x))
    assert float(layer.g) == pytest.approx(float(layer.weight.norm()), rel=1e-6)


def test_loaded_gain_is_not_resynchronised():
    src = FixNormLinear(3, 2, alpha=1.0)
    with torch.no_grad():
        src.g.fill_(0.123)
    dst = FixNormLinear(3, 2, alpha=1.0)
    dst.load_state_dict(src.state_dict())
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
