"""Algo 1: the fixer, the selection of the fixed set, and the optim wrapper."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from torch import nn

from fixnorm_mm.layers import FixNormLinear, WNConv2d
from fixnorm_mm.norm_fixing import NormFixer, NormFollowTracer, select_fixed_params


def bn_net(width=8, classes=5):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, bias=False), nn.GroupNorm(2, width), nn.ReLU(),
        nn.Conv2d(width, width, 1), nn.ReLU(),  # no norm after it: not fixed
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), FixNormLinear(width, classes, alpha=1.0))


def wrapper_for(model, lr=0.5, **kw):
    return build_optim_wrapper(model, dict(
        type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=lr, momentum=0.9, nesterov=True), **kw))


def train(model, wrapper, steps, batch=4):
    for _ in range(steps):
        x = torch.randn(batch, 3, 9, 9)
        y = torch.randint(0, 5, (batch,))
        wrapper.update_params(F.cross_entropy(model(x), y))


def global_norm(tensors):
    return torch.linalg.vector_norm(torch.stack([t.detach().norm() for t in tensors]))


def test_global_norm_is_fixed_after_sgd_momentum_steps():
    model = bn_net()
    wrapper = wrapper_for(model)
    fixed_names = ['0.weight', '3.weight', '10.weight']
    initial = global_norm([dict(model.named_parameters())[n] for n in fixed_names])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, wrapper, steps=8)
    fixer = wrapper.fixnorm.fixer
    assert fixer.names == {'default': fixed_names}
    params = dict(model.named_parameters())
    now = global_norm([params[n] for n in fixed_names])
    assert abs(now / initial - 1) < 1e-5
    assert abs(fixer.reference_norms['default'] / initial - 1) < 1e-6
    # the weights did move, and not every tensor kept its own norm: the norm is global
    assert not torch.allclose(before['0.weight'], params['0.weight'])
    per_tensor_ratio = params['0.weight'].norm() / before['0.weight'].norm()
    assert abs(per_tensor_ratio - 1) > 1e-4


def test_rescale_leaves_bn_followed_outputs_unchanged():
    conv, bn = nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6)
    other = nn.Conv2d(3, 6, 3, bias=False)
    x = torch.randn(4, 3, 8, 8)
    out = bn(conv(x))
    with torch.no_grad():
        conv.weight.mul_(3.0)
        other.weight.mul_(0.2)
    fixer = NormFixer({'g': {'a': conv.weight, 'b': other.weight}},
                      reference_norms={'g': torch.tensor(1.7)})
    fixer.rescale()
    assert float(fixer.norms()['g']) == pytest.approx(1.7, rel=1e-6)
    torch.testing.assert_close(bn(conv(x)), out, rtol=1e-4, atol=1e-4)


def test_per_layer_fixing_keeps_each_tensor_norm():
    a, b = nn.Parameter(torch.randn(4, 4)), nn.Parameter(torch.randn(3, 2))
    fixer = NormFixer({'g': {'a': a, 'b': b}}, per_layer=True)
    ref = [a.norm().item(), b.norm().item()]
    with torch.no_grad():
        a.mul_(2.0)
        b.add_(1.0)
    fixer.rescale()
    assert [a.norm().item(), b.norm().item()] == pytest.approx(ref, rel=1e-6)


def test_selection_reasons_frozen_zero_eval_bn_and_never_bias_or_norm():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),            # 0 fixed
        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4),            # 2 frozen
        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4),            # 4 followed by an eval-mode BN
        nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4),  # 6 zero-initialised
        nn.Conv2d(4, 4, 3), nn.ReLU(), nn.BatchNorm2d(4),  # 8: ReLU in between: not "straight"
        WNConv2d(4, 4, 1))                                 # 11 fixed
    model[2].weight.requires_grad_(False)
    nn.init.zeros_(model[6].weight)
    model.train()
    model[5].eval()
    wrapper = wrapper_for(model)
    wrapper.update_params(model(torch.randn(2, 3, 12, 12)).square().mean())
    sel = wrapper.fixnorm.selection
    assert list(sel.groups['default']) == ['0.weight', '11.weight']
    why = {n: r for n, _, r in sel.excluded}
    assert why['2.weight'].startswith('frozen')
    assert 'eval mode' in why['4.weight']
    assert why['6.weight'].startswith('zero norm')
    assert why['8.weight'] == 'not followed by a normalization'
    fixed = set(sel.groups['default'])
    assert not any(n.endswith('.bias') or n.endswith('.g') for n in fixed)


def test_in_place_op_between_conv_and_norm_breaks_the_link():
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
    model = nn.ModuleDict(dict(conv=conv, bn=bn))
    with NormFollowTracer(model) as tracer:
        bn(conv(torch.randn(2, 3, 6, 6)).relu_())
    assert tracer.followed == {}
    with NormFollowTracer(model) as tracer:
        bn(conv(torch.randn(2, 3, 6, 6)))
    assert tracer.followed == {'conv': ('bn', 'BatchNorm2d', True)}


def test_include_exclude_groups_and_bad_pattern():
    model = bn_net()
    followed = {'0': ('1', 'BatchNorm2d', True), '3': ('4', 'GroupNorm', True)}
    sel = select_fixed_params(model, followed, include=['6.weight'], exclude=['3.*'],
                              groups=[dict(name='head', include=['10.*'])])
    assert sel.groups == {'default': {'0.weight': model[0].weight, '6.weight': model[6].weight},
                          'head': {'10.weight': model[10].weight}}
    with pytest.raises(ValueError, match="include pattern 'backbone.\\*' matches no parameter"):
        select_fixed_params(model, followed, include=['backbone.*'])


def test_groups_are_fixed_independently():
    model = bn_net()
    wrapper = wrapper_for(model, fixnorm=dict(groups=[dict(name='head', include=['10.*'])]))
    head0 = model[10].weight.norm().item()
    train(model, wrapper, steps=4)
    assert set(wrapper.fixnorm.fixer.names) == {'default', 'head'}
    assert model[10].weight.norm().item() == pytest.approx(head0, rel=1e-5)


def test_weight_decay_on_a_fixed_weight_is_refused():
    model = bn_net()
    cfg = dict(type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
               optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4))
    with pytest.raises(ValueError, match=r'weight decay is requested on 1 fixed weight.*10\.weight'):
        build_optim_wrapper(model, cfg)  # the FixNorm FC is known before any forward
    cfg['paramwise_cfg'] = dict(custom_keys={'10.': dict(decay_mult=0.0)})
    wrapper = build_optim_wrapper(model, cfg)
    weights_before = model[0].weight.detach().clone()
    with pytest.raises(ValueError, match=r'0\.weight \(weight_decay=0\.0001\).*'
                                         r'optim_wrapper\.optimizer\.weight_decay=0'):
        train(model, wrapper, steps=1)  # BN-followed conv: found by the first forward
    assert torch.equal(model[0].weight, weights_before)  # refused before any update


def test_gradient_accumulation_rescales_only_on_real_steps(monkeypatch):
    model = bn_net()
    wrapper = wrapper_for(model, accumulative_counts=2)
    calls = []
    real_step = wrapper.fixnorm.after_step
    monkeypatch.setattr(wrapper.fixnorm, 'after_step',
                        lambda skip=None: calls.append(1) or real_step(skip))
    wrapper.initialize_count_status(model, 0, 6)
    snapshot = None
    for i in range(6):
        if i % 2 == 1:
            snapshot = model[0].weight.detach().clone()
        x, y = torch.randn(4, 3, 9, 9), torch.randint(0, 5, (4,))
        wrapper.update_params(F.cross_entropy(model(x), y))
        if i % 2 == 0:
            assert len(calls) == i // 2  # accumulation iteration: no step, no rescale
    assert len(calls) == 3
    assert not torch.equal(model[0].weight, snapshot)


def test_wrapper_without_the_constructor_says_what_to_do():
    model = bn_net()
    wrapper = build_optim_wrapper(model, dict(type='FixNormOptimWrapper',
                                              optimizer=dict(type='SGD', lr=0.1)))
    with pytest.raises(RuntimeError, match="constructor='FixNormOptimWrapperConstructor'"):
        train(model, wrapper, steps=1)


def test_empty_fixed_set_is_an_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 5))
    wrapper = wrapper_for(model)
    with pytest.raises(ValueError, match='fixed set is empty'):
        train(model, wrapper, steps=1)


def test_nan_after_a_step_is_an_error():
    model = bn_net()
    wrapper = wrapper_for(model, lr=float('inf'))
    with pytest.raises(FloatingPointError, match='not finite after optimizer step 1'):
        train(model, wrapper, steps=1)


def test_rescale_is_fused_no_python_loop_per_tensor(monkeypatch):
    params = {f'p{i}': nn.Parameter(torch.randn(3, 3)) for i in range(50)}
    fixer = NormFixer({'g': params})
    calls = {'norm': 0, 'mul': 0}
    real_norm, real_mul = torch._foreach_norm, torch._foreach_mul_
    monkeypatch.setattr(torch, '_foreach_norm',
                        lambda *a, **k: calls.__setitem__('norm', calls['norm'] + 1) or real_norm(*a, **k))
    monkeypatch.setattr(torch, '_foreach_mul_',
                        lambda *a, **k: calls.__setitem__('mul', calls['mul'] + 1) or real_mul(*a, **k))
    fixer.rescale()
    assert calls == {'norm': 1, 'mul': 1}
