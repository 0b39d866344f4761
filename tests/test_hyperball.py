"""Hyperball (Wen et al. 2026, arXiv 2606.16899) against its equation:

    W_{t+1} = R Normalize(W_t - eta_t R Normalize(u_t)),   R = ||W_0||_F per matrix,

on a small pre-norm ViT under AdamW and SGD, through mmengine's own optim
wrappers: the norms stay at R, the step is the equation's, the parameters it
leaves alone get exactly the base optimizer's update, its weight decay is
taken over."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from fixnorm_mm.norm_control import Hyperball, apply_method
from fixnorm_mm.testing.vit import DigitsViT

#: what the default selection controls in DigitsViT(depth=2): every linear weight
MATRICES = [f'layers.{i}.{m}.weight' for i in range(2)
            for m in ('attn.qkv', 'attn.proj', 'ffn.fc1', 'ffn.fc2')] + ['head.fc.weight']


def normalize(x):
    return x / x.norm()


def vit(seed=0):
    torch.manual_seed(seed)
    return DigitsViT(width=16, depth=2, heads=2)


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)


def loss_of(model, seed):
    x, y = batch(seed)
    return F.cross_entropy(model.logits(x), y)


def wrapper(model, control=None, optimizer=None, **kw):
    cfg = dict(type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
               optimizer=optimizer or dict(type='AdamW', lr=1e-2, weight_decay=0.0), **kw)
    if control is not None:
        cfg['norm_control'] = control
    return build_optim_wrapper(model, cfg)


def test_the_plain_object_is_the_equation():
    torch.manual_seed(0)
    a, b = torch.randn(5, 4), torch.randn(3, 2, 3, 3)
    ball = Hyperball({'a': a, 'b': b})
    R = torch.stack([a.norm(), b.norm()])
    w_t = [a.clone(), b.clone()]
    ball.remember()
    a.sub_(0.3 * torch.randn(5, 4))              # any base step
    b.sub_(0.01 * torch.randn(3, 2, 3, 3))
    w_step = [a.clone(), b.clone()]
    u_norm = ball.project([0.1, 0.2])
    for i, (w, w0, ws, eta) in enumerate(zip((a, b), w_t, w_step, (0.1, 0.2))):
        u = w0 - ws
        moved = w0 - eta * R[i] * normalize(u)
        assert (moved - w0).norm() == pytest.approx(eta * R[i], rel=1e-5)   # |step| = eta R
        torch.testing.assert_close(w, R[i] * normalize(moved), rtol=1e-5, atol=1e-6)
        assert w.norm() == pytest.approx(R[i], rel=1e-6)
        assert u_norm[i] == pytest.approx(u.norm(), rel=1e-5)


def test_no_update_leaves_the_weight_alone_and_a_zero_matrix_is_refused():
    w = torch.randn(4, 4)
    ball = Hyperball({'w': w})
    before = w.clone()
    ball.remember()
    ball.project(0.5)                            # the optimizer did not move it (no grad)
    torch.testing.assert_close(w, before)
    with pytest.raises(ValueError, match=r"R = 0 for \['z'\]"):
        Hyperball({'z': torch.zeros(3, 3)})


@pytest.mark.parametrize('optimizer', [dict(type='AdamW', lr=1e-2, weight_decay=0.0),
                                       dict(type='SGD', lr=0.5, momentum=0.9)])
def test_first_step_is_the_equation_and_the_rest_is_the_base_optimizer(optimizer):
    """One step from the same weights and gradients: Hyperball's model against
    a twin trained by the plain base optimizer (u_t = the twin's step)."""
    model, twin = vit(), vit()
    ow = wrapper(model, dict(type='Hyperball', lr=0.05), optimizer)
    options = {k: v for k, v in optimizer.items() if k != 'type'}
    plain = getattr(torch.optim, optimizer['type'])(twin.parameters(), **options)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    ow.update_params(loss_of(model, 0))
    loss_of(twin, 0).backward()
    plain.step()
    assert ow.norm_control.ball.names == MATRICES
    params, stepped = dict(model.named_parameters()), dict(twin.named_parameters())
    for n in params:
        if n in MATRICES:
            R = w0[n].norm()
            moved = w0[n] - 0.05 * R * normalize(w0[n] - stepped[n])
            torch.testing.assert_close(params[n], R * normalize(moved), rtol=1e-5, atol=1e-6)
        else:  # input embedding, tokens, positions, biases, LayerNorms: plain optimizer
            torch.testing.assert_close(params[n], stepped[n], rtol=0, atol=0)


def test_every_controlled_matrix_keeps_its_initial_norm_under_adamw_with_a_schedule():
    model = vit()
    ow = wrapper(model, dict(type='Hyperball', lr=0.02),
                 dict(type='AdamW', lr=1e-3, weight_decay=0.05))
    radii = {n: p.detach().norm() for n, p in model.named_parameters() if n in MATRICES}
    for step in range(12):
        for group in ow.optimizer.param_groups:   # a decaying schedule on the base lr
            group['lr'] = 1e-3 * (1 - step / 12)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if n in MATRICES}
        ow.update_params(loss_of(model, step))
        etas = ow.norm_control.etas()
        assert etas == pytest.approx([0.02 * (1 - step / 12)] * len(MATRICES))
        for n, p in model.named_parameters():
            if n in MATRICES:
                assert float(p.detach().norm()) == pytest.approx(float(radii[n]), rel=1e-5)
                # on the sphere, a step of length eta R before projecting moves W by
                # at most that much
                assert float((p - before[n]).detach().norm()) <= etas[0] * float(radii[n]) * (1 + 1e-4)


def test_weight_decay_is_taken_over_on_the_matrices_and_kept_elsewhere():
    model = vit()
    ow = wrapper(model, dict(type='Hyperball'), dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                 paramwise_cfg=dict(norm_decay_mult=0.0))
    ow.update_params(loss_of(model, 0))
    decay = ow.norm_control.decay_of()
    named = dict(model.named_parameters())
    assert {n for n, p in named.items() if decay[id(p)] == 0.0} == set(MATRICES) | {
        f'layers.{i}.ln{j}.{k}' for i in range(2) for j in (1, 2) for k in ('weight', 'bias')
    } | {'ln_final.weight', 'ln_final.bias'}
    assert decay[id(named['pos_embed'])] == 0.05
    assert decay[id(named['patch_embed.projection.weight'])] == 0.05
    # the paper's setting: no weight decay anywhere
    model = vit()
    ow = wrapper(model, dict(type='Hyperball', uncontrolled_weight_decay='none'),
                 dict(type='AdamW', lr=1e-3, weight_decay=0.05))
    ow.update_params(loss_of(model, 0))
    assert set(ow.norm_control.decay_of().values()) == {0.0}


def test_gradient_accumulation_projects_only_on_real_steps():
    model = vit()
    ow = wrapper(model, dict(type='Hyperball', lr=0.05), accumulative_counts=2)
    ctrl = ow.norm_control
    calls = []
    real = ctrl.after_step
    ctrl.after_step = lambda skip=None: calls.append(ctrl.steps) or real(skip)
    for i in range(4):
        with ow.optim_context(model):
            loss = loss_of(model, i)
        ow.update_params(loss)
    assert calls == [1, 2]  # after the 2nd and the 4th backward only
    torch.testing.assert_close(ctrl.ball.norms(), ctrl.ball.radii, rtol=1e-5, atol=0)


def test_apply_method_derives_the_angular_lr_from_the_config():
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper',
                                         optimizer=dict(type='AdamW', lr=4e-3,
                                                        weight_decay=0.05))))
    out = apply_method(cfg, 'hyperball')
    control = out.optim_wrapper.norm_control
    assert control.type == 'Hyperball'
    assert control.lr == pytest.approx(math.sqrt(4e-3 * 0.05), rel=1e-3)
    assert out.optim_wrapper.optimizer.weight_decay == 0.05  # kept for the other tensors
    out = apply_method(Config(dict(optim_wrapper=dict(
        type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1, weight_decay=0)))),
        'hyperball')
    assert out.optim_wrapper.norm_control.lr is None  # no weight decay: eta is the lr


@pytest.mark.parametrize('options, message', [
    (dict(lr=0.0), r'optim_wrapper\.norm_control\.lr must be a finite number > 0'),
    (dict(input_layer='drop'), r"norm_control\.input_layer must be 'exclude' or 'include'"),
    (dict(exclude='head.*'), r'norm_control\.exclude must be a list of fnmatch patterns'),
    (dict(uncontrolled_weight_decay='zero'),
     r"norm_control\.uncontrolled_weight_decay must be one of \['keep', 'none'\]"),
])
def test_bad_options_name_their_key(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        wrapper(vit(), dict(type='Hyperball', **options))


def test_patterns_that_match_nothing_are_refused_at_the_first_step():
    model = vit()
    ow = wrapper(model, dict(type='Hyperball', exclude=['backbone.*']))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"norm_control\.exclude pattern 'backbone\.\*' "
                                         r'matches no parameter'):
        ow.update_params(loss_of(model, 0))
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])  # refused before any update


# ---- AMP: a step the loss scaler skips is no step -----------------------------------

def amp_wrapper(model, dtype, fused=False, **control):
    from fixnorm_mm.engine import NormControlOptimWrapperConstructor
    return NormControlOptimWrapperConstructor(dict(
        type='AmpOptimWrapper', dtype=dtype, loss_scale=dict(init_scale=2.0 ** 10),
        optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.0, fused=fused),
        norm_control=dict(type='Hyperball', lr=0.05, **control)))(model)


def amp_step(model, ow, dtype, seed, poison=False):
    with torch.autocast('cpu', dtype=dtype):
        loss = loss_of(model, seed)
    ow.update_params(loss * float('inf') if poison else loss)


@pytest.mark.parametrize('fused', [False, True])
def test_a_skipped_amp_step_leaves_weights_and_radii_alone(cpu_amp, fused):
    """Non-fused: GradScaler does not call step(), so no hook runs. Fused:
    the optimizer skips inside its kernel and Hyperball gets found_inf: the
    weights stay exactly as they were."""
    dtype = torch.bfloat16 if fused else torch.float16
    model = vit()
    ow = amp_wrapper(model, dtype, fused=fused)
    amp_step(model, ow, dtype, 0)                      # a real step: Hyperball starts
    ball = ow.norm_control.ball
    radii = ball.radii.clone()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    amp_step(model, ow, dtype, 1, poison=True)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert torch.equal(ball.radii, radii)
    amp_step(model, ow, dtype, 2)                      # and training goes on, on the spheres
    torch.testing.assert_close(ball.norms(), radii, rtol=1e-5, atol=0)
    assert not torch.equal(model.layers[0].attn.qkv.weight, before['layers.0.attn.qkv.weight'])


# ---- resume -----------------------------------------------------------------------

def _runner_cfg(work_dir, **kw):
    from fixnorm_mm.testing.toy import runner_cfg
    return runner_cfg(work_dir, model=dict(type='DigitsViT', width=16, depth=1, heads=2,
                                           in_channels=3, num_classes=4),
                      optim_wrapper=dict(
                          type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
                          optimizer=dict(type='AdamW', lr=3e-3, weight_decay=0.05),
                          paramwise_cfg=dict(norm_decay_mult=0.0),
                          norm_control=dict(type='Hyperball', lr=0.02)), **kw)


def test_resume_continues_bit_exactly(tmp_path):
    from mmengine.runner import Runner

    import fixnorm_mm.testing.vit  # noqa: F401  (registers DigitsViT)
    straight = Runner.from_cfg(_runner_cfg(tmp_path / 'a', max_iters=6))
    straight.train()
    first = Runner.from_cfg(_runner_cfg(tmp_path / 'b', max_iters=3))
    first.train()
    ckpt = str(tmp_path / 'b' / 'iter_3.pth')
    state = torch.load(ckpt, weights_only=True)  # safe loading stays on
    assert state['optimizer']['norm_control'] == 'Hyperball'
    saved = state['optimizer']['hyperball']
    assert saved['params'] == straight.optim_wrapper.norm_control.ball.names
    resumed = Runner.from_cfg(_runner_cfg(tmp_path / 'b', max_iters=6, resume=True,
                                          load_from=ckpt))
    resumed.train()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ball = resumed.optim_wrapper.norm_control.ball
    assert torch.equal(ball.radii.cpu(), saved['radii'])  # R restored, not re-measured
    assert torch.equal(ball.radii, straight.optim_wrapper.norm_control.ball.radii)


def test_resuming_weights_that_left_their_spheres_is_refused(tmp_path):
    from mmengine.runner import Runner

    import fixnorm_mm.testing.vit  # noqa: F401
    Runner.from_cfg(_runner_cfg(tmp_path, max_iters=3)).train()
    ckpt = torch.load(tmp_path / 'iter_3.pth', weights_only=False)
    ckpt['state_dict']['layers.0.attn.qkv.weight'] *= 1.5
    torch.save(ckpt, tmp_path / 'tampered.pth')
    runner = Runner.from_cfg(_runner_cfg(tmp_path / 'c', max_iters=6, resume=True,
                                         load_from=str(tmp_path / 'tampered.pth')))
    with pytest.raises(ValueError, match=r'Hyperball: the resumed weight layers\.0\.attn\.qkv'
                                         r'\.weight has norm .* R = .*on_method_change'):
        runner.train()
