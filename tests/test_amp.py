"""FixNorm under AMP (fp16 and bf16) on the CPU, by its three routes: mmengine's
own AmpOptimWrapper with the norm-control constructor, FixNormHook on an
AmpOptimWrapper, and the legacy FixNormAmpOptimWrapper. All three see a step
the loss scaler skips the same way: no optimizer step, so no rescale.

mmengine's ``AmpOptimWrapper.__init__`` asserts that CUDA is available and
builds ``torch.cuda.amp.GradScaler``. To exercise the real wrapper here, the
``cpu_amp`` fixture knowingly patches two names *in mmengine's module only*,
for the duration of a test: ``is_cuda_available`` (-> True) and ``GradScaler``
(-> ``torch.amp.GradScaler('cpu', ...)``, the same scaler logic on CPU
tensors). Nothing else of mmengine is touched; forward passes run under
``torch.autocast('cpu', dtype)``. (The fixture is in conftest.py: Hyperball's
tests use it too.)
"""
from types import SimpleNamespace

import pytest
import torch
from mmengine.runner import Runner
from torch import nn

import fixnorm_mm  # noqa: F401
from fixnorm_mm.engine import (FixNormHook, FixNormOptimWrapperConstructor,
                               NormControlOptimWrapperConstructor)
from fixnorm_mm.layers import FixNormConv2d, FixNormLinear, WNConv2d, WNLinear
from fixnorm_mm.testing.toy import ToyNet, runner_cfg

DTYPES = [torch.float16, torch.bfloat16]


ROUTES = ['constructor', 'hook', 'legacy']


def build(dtype, init_scale=2.0 ** 10, route='constructor', **fixnorm):
    model = ToyNet()
    amp = dict(dtype=dtype, loss_scale=dict(init_scale=init_scale),
               optimizer=dict(type='SGD', lr=0.5, momentum=0.9))
    if route == 'legacy':
        wrapper = FixNormOptimWrapperConstructor(dict(
            type='FixNormAmpOptimWrapper', fixnorm=fixnorm, **amp))(model)
    elif route == 'constructor':
        wrapper = NormControlOptimWrapperConstructor(dict(
            type='AmpOptimWrapper', norm_control=dict(type='FixNorm', **fixnorm), **amp))(model)
    else:  # what the Runner does with custom_hooks=[dict(type='FixNormHook')]
        from mmengine.optim import build_optim_wrapper
        wrapper = build_optim_wrapper(model, dict(type='AmpOptimWrapper', **amp))
        runner = SimpleNamespace(model=model, optim_wrapper=wrapper, cfg={})
        FixNormHook(**fixnorm).before_run(runner)
    assert wrapper.norm_control.type_name == 'FixNorm'
    return model, wrapper


def step(model, wrapper, dtype, x, y, poison=False):
    with torch.autocast('cpu', dtype=dtype):
        loss = nn.functional.cross_entropy(model(x), y)
    if poison:  # an overflow: every gradient becomes inf/NaN
        loss = loss * float('inf')
    wrapper.update_params(loss)


def snapshot(model, wrapper):
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    bufs = {id(p): {k: v.clone() for k, v in s.items()}
            for p, s in wrapper.optimizer.state.items()}
    return params, bufs


@pytest.mark.parametrize('route', ROUTES)
@pytest.mark.parametrize('dtype', DTYPES)
def test_overflowed_step_is_skipped_bit_identically(cpu_amp, dtype, route):
    model, wrapper = build(dtype, route=route)
    assert isinstance(wrapper.loss_scaler, torch.amp.GradScaler)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    step(model, wrapper, dtype, x, y)  # a real step: FixNorm starts, momentum exists
    fixer = wrapper.norm_control.fixer
    ref = fixer.reference_norms['default'].clone()
    params, bufs = snapshot(model, wrapper)
    scale = wrapper.loss_scaler.get_scale()

    step(model, wrapper, dtype, x, y, poison=True)

    after, after_bufs = snapshot(model, wrapper)
    for n in params:  # no update and no rescale: bit-identical
        assert torch.equal(after[n], params[n]), n
    for k in bufs:
        for s in bufs[k]:
            assert torch.equal(after_bufs[k][s], bufs[k][s])
    assert wrapper.loss_scaler.get_scale() == scale * 0.5  # the scaler backed off
    assert torch.equal(fixer.reference_norms['default'], ref)


@pytest.mark.parametrize('route', ROUTES)
@pytest.mark.parametrize('dtype', DTYPES)
def test_normal_step_updates_and_rescales(cpu_amp, dtype, route):
    model, wrapper = build(dtype, route=route)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    w0 = model.backbone[0].weight.detach().clone()
    for _ in range(3):
        step(model, wrapper, dtype, x, y)
    fixer = wrapper.norm_control.fixer
    assert fixer.names['default'] == ['backbone.0.weight', 'backbone.3.weight', 'head.weight']
    ref = fixer.reference_norms['default']
    # the reference is ||W_0|| of the fixed set, and every step returns to it
    torch.testing.assert_close(fixer.norms()['default'], ref, rtol=1e-6, atol=0)
    assert not torch.equal(model.backbone[0].weight, w0)
    assert wrapper.loss_scaler.get_scale() == 2.0 ** 10  # no overflow, no back-off
    # the rescale is W * ||W_0|| / ||W||: the direction is that of the SGD update
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_three_routes_train_bit_identically_through_skipped_steps(cpu_amp):
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    results = []
    for route in ROUTES:
        torch.manual_seed(0)
        model, wrapper = build(torch.float16, route=route)
        for i in range(6):
            step(model, wrapper, torch.float16, x, y, poison=i in (1, 2, 4))
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
        assert wrapper.norm_control.steps == 3  # the three real steps
    for other in results[1:]:
        for n in results[0]:
            assert torch.equal(other[n], results[0][n]), n


def test_persistent_nan_under_amp_raises_after_max_skipped_steps(cpu_amp):
    model, wrapper = build(torch.float16, max_skipped_steps=5)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    step(model, wrapper, torch.float16, x, y)  # one real step
    for _ in range(5):  # five skipped steps in a row are tolerated ...
        step(model, wrapper, torch.float16, x, y, poison=True)
    assert wrapper.loss_scaler.get_scale() == 2.0 ** 10 * 0.5 ** 5
    with pytest.raises(FloatingPointError, match=r'last 5 optimizer steps were all skipped'
                                                 r'.*max_skipped_steps'):
        step(model, wrapper, torch.float16, x, y, poison=True)  # ... the sixth is not


def test_bf16_amp_through_the_runner(cpu_amp, tmp_path):
    """The Runner path (mmengine's own autocast, which on the CPU is bf16)."""
    cfg = runner_cfg(tmp_path, max_iters=3, optim_wrapper=dict(
        type='FixNormAmpOptimWrapper', constructor='FixNormOptimWrapperConstructor',
        dtype='bfloat16', optimizer=dict(type='SGD', lr=0.5, momentum=0.9)))
    runner = Runner.from_cfg(cfg)
    runner.train()
    fixer = runner.optim_wrapper.fixnorm.fixer
    torch.testing.assert_close(fixer.norms()['default'], fixer.reference_norms['default'],
                               rtol=1e-6, atol=0)
    assert 'fixnorm' in runner.optim_wrapper.state_dict()
    assert runner.optim_wrapper.state_dict()['norm_control'] == 'FixNorm'
    assert 'loss_scaler' in runner.optim_wrapper.state_dict()


LAYERS = [
    lambda: FixNormLinear(16, 4, alpha=1.0),
    lambda: FixNormConv2d(16, 4, 3, alpha=1.0, padding=1),
    lambda: WNLinear(16, 4),
    lambda: WNConv2d(16, 4, 3, padding=1),
]


def _input(layer):
    return torch.randn(2, 16) if isinstance(layer, nn.Linear) else torch.randn(2, 16, 5, 5)


@pytest.fixture
def norm_calls(monkeypatch):
    """(input dtype, output dtype) of every torch.linalg.vector_norm call."""
    calls = []
    norm = torch.linalg.vector_norm

    def spy(t, *args, **kwargs):
        out = norm(t, *args, **kwargs)
        calls.append((t.dtype, out.dtype))
        return out
    monkeypatch.setattr(torch.linalg, 'vector_norm', spy)
    return calls


IDS = ['FixNormLinear', 'FixNormConv2d', 'WNLinear', 'WNConv2d']


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('make', LAYERS, ids=IDS)
def test_norms_are_computed_in_fp32_under_autocast(norm_calls, make, dtype):
    layer = make()
    x = _input(layer)
    reference = layer(x)
    norm_calls.clear()
    with torch.autocast('cpu', dtype=dtype):
        out = layer(x)
    assert norm_calls and all(c == (torch.float32, torch.float32) for c in norm_calls), \
        norm_calls
    assert out.dtype == dtype  # the matmul/conv itself is autocast
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('make', LAYERS, ids=IDS)
def test_norms_are_computed_in_fp32_for_low_precision_weights(norm_calls, make, dtype):
    """A model cast to fp16/bf16 (``model.half()``): the norm is still taken
    in fp32, so g / ||W|| carries no low-precision rounding."""
    layer = make()
    x = _input(layer)
    reference = layer(x)
    layer.to(dtype)
    norm_calls.clear()
    out = layer(x.to(dtype))
    assert norm_calls and all(c == (torch.float32, torch.float32) for c in norm_calls), \
        norm_calls
    assert out.dtype == dtype
    err = (out.float() - reference).abs().max() / reference.abs().max()
    assert err < (0.01 if dtype == torch.float16 else 0.05)


def test_fused_optimizer_skipped_steps_are_exact_and_counted_on_the_device(cpu_amp):
    """fused=True optimizers skip inside their kernel, so GradScaler steps them
    anyway and hands them found_inf: the rescale factor is exactly 1 there,
    and a persistent overflow still raises (checked every few steps)."""
    model = ToyNet()
    wrapper = NormControlOptimWrapperConstructor(dict(
        type='AmpOptimWrapper', dtype=torch.bfloat16, loss_scale=dict(init_scale=2.0 ** 10),
        optimizer=dict(type='SGD', lr=0.5, momentum=0.9, fused=True),
        norm_control=dict(type='FixNorm', max_skipped_steps=5)))(model)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    step(model, wrapper, torch.bfloat16, x, y)
    params, _ = snapshot(model, wrapper)
    step(model, wrapper, torch.bfloat16, x, y, poison=True)
    after, _ = snapshot(model, wrapper)
    for n in params:
        assert torch.equal(after[n], params[n]), n
    with pytest.raises(FloatingPointError, match='optimizer steps were all skipped'):
        for _ in range(5 + 9):  # found within max_skipped_steps + check interval - 1
            step(model, wrapper, torch.bfloat16, x, y, poison=True)
