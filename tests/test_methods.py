"""The baselines of fixnorm_mm.norm_control against their papers' equations, and
every method through a real mmengine Runner.

* epsilon-shifted L2 (Li et al.): gradients against Eq. 27 (WN) and Eq. 28
  (WS) in closed form, computed here unit by unit, and against autograd of the
  penalties Eq. 25 / 26 written out here.
* WRS (Liu et al., Sec. 5): unit-norm kernels exactly at multiples of tau.
* per-layer fixed norm (Hoffer et al.): each layer at its own initial norm.
"""
import importlib.util
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import build_optim_wrapper
from mmengine.registry import HOOKS, MODELS
from mmengine.runner import Runner
from torch import nn

import fixnorm_mm  # noqa: F401
from fixnorm_mm.layers import WNConv2d
from fixnorm_mm.norm_control import (EpsShiftedL2, WeightRescaler, apply_method,
                                     available_methods, ws_layer_types)
from fixnorm_mm.testing.toy import runner_cfg

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: the registered methods, baseline first
METHODS = list(available_methods())


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: one thread is ~50x faster than two on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def conv_ws(*args, **kwargs):
    from mmcv.cnn.bricks.conv_ws import ConvWS2d
    return ConvWS2d(*args, **kwargs)


# ---------------------------------------------------------------- Eq. 27 / 28
def eq27(w, lam, eps):
    """lambda (1 - eps/||W_j||) W_j, one output unit at a time."""
    out = torch.empty_like(w)
    for j in range(w.shape[0]):
        out[j] = lam * (1 - eps / w[j].norm()) * w[j]
    return out


def eq28(w, lam, eps):
    """lambda ((1 - eps/v) W_i + eps/v * m), m and v = sqrt(||W - m||^2 / n) of
    each output unit."""
    out = torch.empty_like(w)
    for j in range(w.shape[0]):
        u = w[j]
        m = u.mean()
        v = ((u - m) ** 2).sum().div(u.numel()).sqrt()
        out[j] = lam * ((1 - eps / v) * u + eps / v * m)
    return out


def test_eps_l2_gradient_is_eq27_for_wn_weights():
    torch.manual_seed(0)
    conv = WNConv2d(3, 6, 3)
    fc = nn.Linear(5, 4)
    lam, eps = 0.05, 0.7  # eps of the order of ||W_j||, so the shift matters
    reg = EpsShiftedL2(wn={'conv': conv.weight, 'fc': fc.weight}, weight_decay=lam, eps=eps)
    got = reg.units.split(reg.gradient())
    for g, w in zip(got, (conv.weight, fc.weight)):
        torch.testing.assert_close(g, eq27(w.detach(), lam, eps), rtol=1e-5, atol=1e-7)
    # the closed form is the gradient of Eq. 25, (lambda/2)(||W_j|| - eps)^2
    pen = sum(0.5 * lam * (w.reshape(w.shape[0], -1).norm(dim=1) - eps).pow(2).sum()
              for w in (conv.weight, fc.weight))
    auto = torch.autograd.grad(pen, [conv.weight, fc.weight])
    for a, w in zip(auto, (conv.weight, fc.weight)):
        torch.testing.assert_close(a, eq27(w.detach(), lam, eps), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(reg.penalty(), pen, rtol=1e-5, atol=0)
    # some units are below eps and get pushed *up*: not plain decay
    assert any(((w.reshape(w.shape[0], -1).norm(dim=1) < eps) &
                ((g * w).reshape(w.shape[0], -1).sum(1) < 0)).any()
               for g, w in zip(got, (conv.weight, fc.weight)))
    # add_gradient_ adds exactly that to the existing gradient
    conv.weight.grad = torch.ones_like(conv.weight)
    reg.add_gradient_()
    torch.testing.assert_close(conv.weight.grad, 1 + eq27(conv.weight.detach(), lam, eps))
    assert fc.weight.grad is not None  # created for an unused weight, as a loss term would


def test_eps_l2_gradient_is_eq28_for_ws_weights():
    torch.manual_seed(0)
    conv = conv_ws(3, 6, 3)
    with torch.no_grad():
        conv.weight.add_(torch.linspace(-0.2, 0.3, 6)[:, None, None, None])  # non-zero means
    lam, eps = 0.05, 0.1
    reg = EpsShiftedL2(ws={'conv.weight': conv.weight}, weight_decay=lam, eps=eps)
    expected = eq28(conv.weight.detach(), lam, eps)
    torch.testing.assert_close(reg.units.split(reg.gradient())[0], expected,
                               rtol=1e-5, atol=1e-7)
    # Eq. 26: (lambda/2) n (m^2 + (v - eps)^2), written out
    w = conv.weight.reshape(6, -1)
    n = w.shape[1]
    m = w.mean(1)
    v = ((w - m[:, None]) ** 2).mean(1).sqrt()
    pen = (0.5 * lam * n * (m ** 2 + (v - eps) ** 2)).sum()
    auto, = torch.autograd.grad(pen, conv.weight)
    torch.testing.assert_close(auto, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(reg.penalty(), pen, rtol=1e-5, atol=0)
    # eps = 0 is plain L2: the gradient is lambda * W
    plain = EpsShiftedL2(ws={'w': conv.weight}, weight_decay=lam, eps=0.0)
    torch.testing.assert_close(plain.units.split(plain.gradient())[0],
                               lam * conv.weight.detach(), rtol=1e-5, atol=1e-8)


@MODELS.register_module()
class MixedNormNet(BaseModel):
    """One layer of every kind the methods tell apart."""

    def __init__(self):
        super().__init__()
        self.bn_conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.wn_conv = WNConv2d(8, 8, 3, padding=1)
        self.ws_conv = conv_ws(8, 8, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(2, 8)
        self.gn_conv = nn.Conv2d(8, 8, 1, bias=False)
        self.gn2 = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, list) else inputs
        x = F.relu(self.bn(self.bn_conv(x)))
        x = F.relu(self.wn_conv(x))
        x = F.relu(self.gn(self.ws_conv(x)))
        x = F.relu(self.gn2(self.gn_conv(x)))
        logits = self.head(x.mean((2, 3)))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, torch.cat([d.gt_label for d in data_samples])))
        return logits


def eps_wrapper(model, mode='gradient', **kw):
    return build_optim_wrapper(model, dict(
        type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.01),
        norm_control=dict(type='EpsShiftedL2', eps=0.5, mode=mode, **kw)))


def test_eps_l2_wrapper_selection_and_the_loss_term_form_agree():
    x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 4, (4,))
    trained = []
    for mode in ('gradient', 'loss'):
        torch.manual_seed(0)
        model = MixedNormNet()
        wrapper = eps_wrapper(model, mode)
        for _ in range(3):
            wrapper.update_params(F.cross_entropy(model(x), y))
        trained.append(model)
    reg = wrapper.norm_control.regularizer
    assert reg.forms == {'bn_conv.weight': 'WN', 'wn_conv.weight': 'WN', 'ws_conv.weight': 'WS'}
    assert set(reg.weight_decay.values()) == {0.01}  # lambda = the configured decay
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    m = trained[1]
    for p in (m.bn_conv.weight, m.wn_conv.weight, m.ws_conv.weight):
        assert decay[id(p)] == 0  # replaced by the regularizer
    for p in (m.gn_conv.weight, m.bn.weight, m.head.weight, m.wn_conv.g):
        assert decay[id(p)] == 0.01  # kept: GN is not per unit; BN gamma, FC, WN gain
    a, b = (dict(t.named_parameters()) for t in trained)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-5, atol=1e-6, msg=n)

    # the update is SGD on loss + Eq. 25/26, written out independently
    torch.manual_seed(0)
    ref = MixedNormNet()
    params = dict(ref.named_parameters())
    regd = {'bn_conv.weight', 'wn_conv.weight', 'ws_conv.weight'}
    opt = torch.optim.SGD([dict(params=[p], weight_decay=0.0 if n in regd else 0.01)
                           for n, p in params.items()], lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(ref(x), y)
        for n in ('bn_conv.weight', 'wn_conv.weight'):
            loss = loss + 0.5 * 0.01 * (params[n].flatten(1).norm(dim=1) - 0.5).pow(2).sum()
        w = params['ws_conv.weight'].flatten(1)
        mu, v = w.mean(1), w.var(1, unbiased=False).sqrt()
        loss = loss + (0.5 * 0.01 * w.shape[1] * (mu ** 2 + (v - 0.5) ** 2)).sum()
        loss.backward()
        opt.step()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(a[n], p, rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.parametrize('mode', ['gradient', 'loss'])
def test_eps_l2_gradient_is_added_after_gradient_clipping(mode):
    """Our choice (docs/paper_departures.md): the regularizer's gradient joins
    after clip_grad, as the optimizer's own weight decay does, so clipping the
    loss gradient does not weaken the regularizer it replaces."""
    x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 4, (4,))
    torch.manual_seed(0)
    model = MixedNormNet()
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.1, weight_decay=0.05), clip_grad=dict(max_norm=1e-3),
        norm_control=dict(type='EpsShiftedL2', eps=0.5, mode=mode)))
    wrapper.update_params(F.cross_entropy(model(x), y))

    torch.manual_seed(0)
    twin = MixedNormNet()
    F.cross_entropy(twin(x), y).backward()
    torch.nn.utils.clip_grad_norm_([p for p in twin.parameters() if p.grad is not None], 1e-3)
    for n, p in twin.named_parameters():
        w, g = ref[n], p.grad if p.grad is not None else torch.zeros_like(p)
        if n in ('bn_conv.weight', 'wn_conv.weight'):
            g = g + eq27(w, 0.05, 0.5)
        elif n == 'ws_conv.weight':
            g = g + eq28(w, 0.05, 0.5)
        else:
            g = g + 0.05 * w  # the optimizer's own weight decay, also after clipping
        torch.testing.assert_close(dict(model.named_parameters())[n].detach(), w - 0.1 * g,
                                   rtol=1e-5, atol=1e-7, msg=n)


def test_eps_l2_refuses_a_shared_param_group_with_weight_decay():
    model = MixedNormNet()
    wrapper = build_optim_wrapper(model, dict(
        type='EpsShiftedL2OptimWrapper',
        optimizer=dict(type='SGD', lr=0.1, weight_decay=0.01)))
    wrapper.attach_model(model)
    x, y = torch.randn(2, 3, 6, 6), torch.randint(0, 4, (2,))
    with pytest.raises(ValueError, match="constructor='NormControlOptimWrapperConstructor'"):
        wrapper.update_params(F.cross_entropy(model(x), y))


# ---------------------------------------------------------------- WRS
@HOOKS.register_module()
class UnitNormRecorder(Hook):
    priority = 'LOWEST'  # after the optimizer step and the rescale

    def __init__(self, names):
        self.names = names
        self.norms = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        params = dict(runner.model.named_parameters())
        self.norms.append({n: params[n].detach().flatten(1).norm(dim=1).clone()
                           for n in self.names})


def wrs_cfg(work_dir, tau, max_iters, **extra):
    kernels = ['backbone.0.weight', 'backbone.3.weight']
    cfg = runner_cfg(
        work_dir, max_iters=max_iters,
        optim_wrapper=dict(type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
                           optimizer=dict(type='SGD', lr=0.5, momentum=0.9, weight_decay=5e-4),
                           norm_control=dict(type='WRS', interval=tau)),
        custom_hooks=[dict(type='UnitNormRecorder', names=kernels)], **extra)
    return cfg


def test_wrs_kernels_have_unit_norm_exactly_at_multiples_of_tau(tmp_path):
    tau = 3
    runner = Runner.from_cfg(wrs_cfg(tmp_path, tau, max_iters=7))
    runner.train()
    wrapper = runner.optim_wrapper
    assert wrapper.norm_control.rescaler.names == ['backbone.0.weight', 'backbone.3.weight']
    rec = next(h for h in runner.hooks if isinstance(h, UnitNormRecorder))
    for step, norms in enumerate(rec.norms, start=1):
        worst = max(float((v - 1).abs().max()) for v in norms.values())
        if step % tau == 0:
            assert worst < 1e-5, (step, worst)
        else:
            assert worst > 1e-4, (step, worst)  # drifts between rescales
    # weight decay: off on the rescaled kernels, kept on BN gamma and the rest
    decay = {n: g['weight_decay'] for n, p in runner.model.named_parameters()
             for g in wrapper.optimizer.param_groups if any(q is p for q in g['params'])}
    assert decay['backbone.0.weight'] == decay['backbone.3.weight'] == 0
    assert decay['backbone.1.weight'] == decay['backbone.4.weight'] == 5e-4
    assert decay['backbone.6.weight'] == 5e-4  # no norm after it: not rescaled
    log = open(next((tmp_path).glob('*/*.log'))).read()
    assert 'WRS (tau=3)' in log and 'not followed by a normalization' in log
    assert 'FixNorm layer: scale-invariant as a whole tensor' in log  # the FixNorm-FC head


def test_wrs_resume_keeps_the_rescale_phase(tmp_path):
    Runner.from_cfg(wrs_cfg(tmp_path, 3, max_iters=4)).train()
    resumed = Runner.from_cfg(wrs_cfg(tmp_path, 3, max_iters=6, resume=True,
                                      load_from=str(tmp_path / 'iter_3.pth')))
    resumed.train()
    assert resumed.optim_wrapper.norm_control.steps == 6
    rec = next(h for h in resumed.hooks if isinstance(h, UnitNormRecorder))
    assert len(rec.norms) == 3  # iterations 4, 5, 6
    assert max(float((v - 1).abs().max()) for v in rec.norms[0].values()) > 1e-3
    assert max(float((v - 1).abs().max()) for v in rec.norms[2].values()) < 1e-5


def test_weight_rescaler_plain_pytorch():
    a = nn.Parameter(torch.randn(4, 3, 3, 3) * 3)
    b = nn.Parameter(torch.randn(5, 7))
    with torch.no_grad():
        b[2] = 0  # a dead unit stays 0 instead of becoming NaN
    direction = a.detach() / a.detach().flatten(1).norm(dim=1)[:, None, None, None]
    r = WeightRescaler({'a': a, 'b': b})
    r.rescale()
    torch.testing.assert_close(a.detach(), direction)
    norms = r.unit_norms()
    assert norms.shape == (9,) and torch.isfinite(b).all() and float(b[2].abs().sum()) == 0
    torch.testing.assert_close(norms[norms > 0], torch.ones(8))


# ---------------------------------------------------------------- per-layer FixNorm
def test_per_layer_fixing_keeps_each_layer_at_its_own_initial_norm(tmp_path):
    kernels = ['backbone.0.weight', 'backbone.3.weight', 'head.weight']
    base = Config(runner_cfg(tmp_path, max_iters=5, optim_wrapper=dict(
        optimizer=dict(type='SGD', lr=0.5, momentum=0.9, nesterov=True))))
    results = {}
    for method in ('fixnorm_per_layer', 'fixnorm'):
        cfg = apply_method(base, method)
        cfg.work_dir = str(tmp_path / method)
        cfg.custom_hooks = [dict(type='UnitNormRecorder', names=kernels)]
        runner = Runner.from_cfg(cfg)
        initial = {n: p.detach().norm().item() for n, p in runner.model.named_parameters()}
        runner.train()
        assert runner.optim_wrapper.norm_control.per_layer == (method == 'fixnorm_per_layer')
        rec = next(h for h in runner.hooks if isinstance(h, UnitNormRecorder))
        results[method] = (initial, [{n: float(v.norm()) for n, v in r.items()}
                                     for r in rec.norms])
    initial, steps = results['fixnorm_per_layer']
    assert len({round(initial[n], 3) for n in kernels}) == 3  # different norms to keep
    for norms in steps:
        for n in kernels:
            assert norms[n] == pytest.approx(initial[n], rel=1e-5), n
    # global FixNorm keeps only the norm of the whole set: layers trade norm
    initial, steps = results['fixnorm']
    total0 = sum(initial[n] ** 2 for n in kernels) ** 0.5
    assert sum(steps[-1][n] ** 2 for n in kernels) ** 0.5 == pytest.approx(total0, rel=1e-5)
    assert max(abs(steps[-1][n] / initial[n] - 1) for n in kernels) > 1e-3


# ---------------------------------------------------------------- config switch
def test_apply_method_switches_only_the_method():
    base = Config(dict(optim_wrapper=dict(
        type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.3, momentum=0.9, weight_decay=0),
        fixnorm=dict(per_layer=False), clip_grad=dict(max_norm=5.0)),
        custom_hooks=[dict(type='MCBRHook', interval=10, layer='head.fc')]))
    wd = apply_method(base, 'wd').optim_wrapper
    assert wd.type == 'OptimWrapper' and 'fixnorm' not in wd
    assert wd.optimizer == dict(type='SGD', lr=0.3, momentum=0.9, weight_decay=1e-4)
    assert wd.clip_grad == dict(max_norm=5.0)
    assert wd.norm_control == dict(type='WeightDecay')
    wrs = apply_method(base, 'wrs')
    assert wrs.optim_wrapper.type == 'OptimWrapper'
    assert wrs.optim_wrapper.norm_control.type == 'WRS'
    assert wrs.optim_wrapper.norm_control.interval == 40
    assert 'fixnorm' not in wrs.optim_wrapper  # the legacy key of the old method is gone
    assert 'fixnorm_mm' in wrs.custom_imports.imports
    assert [h.layer for h in wrs.custom_hooks if h.type == 'MCBRHook'] == ['head.fc']
    eps = apply_method(base, 'eps_l2').optim_wrapper
    assert eps.norm_control.eps == 1e-3 and eps.optimizer.weight_decay == 1e-4
    per_layer = apply_method(apply_method(base, 'wd'), 'fixnorm_per_layer').optim_wrapper
    # FixNorm takes over the decay of what it fixes, the rest keeps the config's
    assert per_layer.norm_control.per_layer is True and per_layer.optimizer.weight_decay == 1e-4
    assert per_layer.norm_control.uncontrolled_weight_decay == 'keep'
    assert per_layer.norm_control.type == 'FixNorm'
    amp = Config(dict(optim_wrapper=dict(type='AmpOptimWrapper', optimizer=dict(type='SGD', lr=1))))
    for method in ('fixnorm', 'wrs', 'eps_l2'):  # every method keeps AMP: mmengine's wrapper
        assert apply_method(amp, method).optim_wrapper.type == 'AmpOptimWrapper'
    legacy = Config(dict(optim_wrapper=dict(type='FixNormAmpOptimWrapper',
                                            optimizer=dict(type='SGD', lr=1))))
    assert apply_method(legacy, 'wrs').optim_wrapper.type == 'AmpOptimWrapper'
    hyperball = apply_method(apply_method(base, 'wd'), 'hyperball').optim_wrapper
    assert hyperball.norm_control.type == 'Hyperball'
    assert hyperball.norm_control.lr == pytest.approx((0.3 * 1e-4) ** 0.5, rel=1e-3)
    assert set(METHODS) == {'wd', 'fixnorm', 'fixnorm_per_layer', 'hyperball', 'eps_l2', 'wrs'}
    assert ws_layer_types()  # mmcv's ConvWS is known


def _decay_by_name(cfg):
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    return {n: decay[id(p)] for n, p in model.named_parameters()}


def test_wd_fragment_decays_no_bias_and_no_bn_parameter_as_the_papers_reference(tmp_path):
    """App. C: the weight-decay reference uses the no-bias-decay strategy of He
    et al. (2019): no decay on biases nor on BN's gamma and beta. The fragment
    before issue 17 decayed all of them."""
    base = Config(runner_cfg(tmp_path, model=dict(type='ToyNet', plain_conv=True, fc_type='fc')))
    decay = _decay_by_name(apply_method(base, 'wd'))
    norms = {f'{n}.{k}' for n, m in MODELS.build(base.model).named_modules()
             if isinstance(m, nn.BatchNorm2d) for k in ('weight', 'bias')}
    biases = {n for n in decay if n.endswith('.bias')} - norms
    weights = set(decay) - norms - biases
    assert norms and biases and weights  # BN parameters, conv and FC biases, conv/FC weights
    assert {decay[n] for n in norms | biases} == {0.0}
    assert {decay[n] for n in weights} == {1e-4}
    # the config's own paramwise_cfg wins key by key; the fragment fills in the rest
    base.optim_wrapper['paramwise_cfg'] = dict(norm_decay_mult=1.0, custom_keys={
        'head': dict(decay_mult=0.0)})
    cfg = apply_method(base, 'wd')
    assert cfg.optim_wrapper.paramwise_cfg == dict(
        norm_decay_mult=1.0, bias_decay_mult=0.0, custom_keys={'head': dict(decay_mult=0.0)})
    decay = _decay_by_name(cfg)
    assert {decay[n] for n in norms} == {1e-4} and {decay[n] for n in biases} == {0.0}
    assert {decay[n] for n in weights if n.startswith('head')} == {0.0}


def test_eps_l2_fragment_follows_li_et_al_on_biases(tmp_path):
    """Li et al. (Sec. 6.1): "the weight decay ratio lambda [is] 0 for all the
    bias part in networks", BN and FC weights keep lambda = 1e-4 (the fragment
    decayed biases before)."""
    base = Config(runner_cfg(tmp_path, model=dict(type='ToyNet', plain_conv=True, fc_type='fc')))
    decay = _decay_by_name(apply_method(base, 'eps_l2'))
    model = MODELS.build(base.model)
    gammas = {f'{n}.weight' for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    biases = {n for n in decay if n.endswith('.bias')}  # conv, FC and BN (beta) biases
    assert len(biases) == 4 and {decay[n] for n in biases} == {0.0}
    assert gammas and {decay[n] for n in gammas} == {1e-4} and decay['head.weight'] == 1e-4


# ---------------------------------------------------------------- provided ImageNet config
IMAGENET = osp.join(ROOT, 'configs', 'imagenet', 'resnet50d_fixnorm_16xb64-120e_in1k.py')


@pytest.fixture(scope='module', autouse=True)
def _fast_external_configs():
    """mmengine re-reads every metafile of mmpretrain (255 YAML files, ~1 s)
    each time it resolves one `mmpretrain::` base; read them once here."""
    import functools

    from mmengine.config import utils
    original = utils._get_cfg_metainfo

    @functools.lru_cache(maxsize=None)
    def index(package_path):
        found = {}
        for meta_path in utils.load(osp.join(package_path, '.mim', 'model-index.yml'))['Import']:
            for model in utils.load(osp.join(package_path, '.mim', meta_path))['Models']:
                if 'Config' in model:
                    found.setdefault(model['Config'].partition('/')[-1], model)
        return found

    def cached(package_path, cfg_path):
        found = index(package_path)
        if cfg_path not in found:
            raise ValueError(f'{cfg_path} has no metafile entry')  # a base config
        return found[cfg_path]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(utils, '_get_cfg_metainfo', cached)
        yield
    assert utils._get_cfg_metainfo is original


@pytest.fixture(scope='module')
def imagenet_cfg():
    return Config.fromfile(IMAGENET)


@pytest.fixture(scope='module')
def imagenet_toy(tmp_path_factory):
    from fixnorm_mm.testing.classification import make_imagenet_dataset
    return make_imagenet_dataset(str(tmp_path_factory.mktemp('imagenet')))


@HOOKS.register_module()
class InitialWeights(Hook):
    """The weights the first step starts from (after the Runner's init_weights)."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == 0:
            self.weights = {n: p.detach().clone() for n, p in runner.model.named_parameters()}


@pytest.mark.parametrize('method', METHODS)
def test_each_method_trains_the_shrunk_resnet50d_imagenet_config(method, imagenet_cfg,
                                                                imagenet_toy, tmp_path):
    """ResNet50-D with FixNorm-FC (Table 1), switched to each method, 2 iterations
    and a validation through mmpretrain's Runner."""
    from fixnorm_mm.testing.classification import shrink_imagenet_config
    cfg = apply_method(imagenet_cfg, method)
    if method == 'wrs':
        cfg.optim_wrapper.norm_control.interval = 2
    cfg = shrink_imagenet_config(cfg, imagenet_toy, work_dir=str(tmp_path), max_iters=2)
    cfg.custom_hooks.append(dict(type='InitialWeights'))
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert 0 <= runner.message_hub.get_scalar('val/accuracy/top1').current() <= 100
    wrapper = runner.optim_wrapper
    params = dict(runner.model.named_parameters())
    w0 = next(h for h in runner.hooks if isinstance(h, InitialWeights)).weights
    stem, gamma = 'backbone.stem.0.conv.weight', 'backbone.stem.0.bn.weight'  # conv -> BN
    assert not torch.equal(params[stem], w0[stem])  # it trained
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    convs = [f'{n}.weight' for n, m in runner.model.named_modules() if isinstance(m, nn.Conv2d)]
    if method == 'wd':
        assert type(wrapper).__name__ == 'OptimWrapper'
        assert decay[id(params[stem])] == 1e-4
    elif method.startswith('fixnorm'):
        fixer = wrapper.norm_control.fixer
        assert fixer.per_layer == (method == 'fixnorm_per_layer')
        assert set(convs) < set(fixer.names['default'])  # + the FixNorm-FC weight
        now, ref = fixer.norms()['default'], fixer.reference_norms['default']
        torch.testing.assert_close(now, ref, rtol=1e-5, atol=0)
        if fixer.per_layer:
            i = fixer.names['default'].index(stem)
            assert float(ref[i]) == pytest.approx(float(w0[stem].norm()), rel=1e-5)
    elif method == 'eps_l2':
        reg = wrapper.norm_control.regularizer
        assert set(reg.names) == set(convs)  # every conv feeds a BN; not the FixNorm-FC
        assert set(reg.forms.values()) == {'WN'} and set(reg.weight_decay.values()) == {1e-4}
        assert decay[id(params[stem])] == 0 and decay[id(params[gamma])] == 1e-4
    elif method == 'hyperball':
        ball = wrapper.norm_control.ball
        # every conv and the classifier, but the input embedding (the stem's first conv)
        assert set(ball.names) == (set(convs) - {stem}) | {'head.fc.weight'}
        torch.testing.assert_close(ball.norms(), ball.radii, rtol=1e-5, atol=0)
        assert torch.equal(ball.radii[ball.names.index('head.fc.weight')],
                           w0['head.fc.weight'].norm())
    else:
        assert set(wrapper.norm_control.rescaler.names) == set(convs)
        assert wrapper.norm_control.steps == 2
        unit = params[stem].detach().flatten(1).norm(dim=1)
        torch.testing.assert_close(unit, torch.ones_like(unit), rtol=0, atol=1e-5)
        assert decay[id(params[stem])] == 0
        assert decay[id(params[gamma])] == 1e-4  # BN gamma keeps its weight decay


def test_a_method_fragment_is_one_base_line_beside_the_imagenet_bases(imagenet_cfg, tmp_path):
    """configs/imagenet/ keeps model, schedule and method in separate bases, so
    a method fragment replaces the method base: one `_base_` line."""
    for method in METHODS:
        path = tmp_path / f'r50d_{method}.py'
        path.write_text(
            "_base_ = ['fixnorm_mm::imagenet/_base_/resnet50d.py',\n"
            "          'fixnorm_mm::imagenet/_base_/cosine_120e.py',\n"
            f"          'fixnorm_mm::_base_/methods/{method}.py']\n"
            "optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.4, momentum=0.9, nesterov=True))\n")
        cfg = Config.fromfile(str(path))
        want = apply_method(imagenet_cfg, method).optim_wrapper
        assert cfg.optim_wrapper.type == want.type
        assert cfg.optim_wrapper.get('constructor') == want.get('constructor')
        for key in ('norm_control', 'fixnorm', 'eps_shifted_l2', 'wrs', 'paramwise_cfg'):
            assert cfg.optim_wrapper.get(key) == want.get(key), key
        # as a base, a fragment that sets no weight decay leaves the model base's
        assert cfg.optim_wrapper.optimizer.get('weight_decay', 0) == \
            want.optimizer.get('weight_decay', 0)


# ---------------------------------------------------------------- the comparison tool
def load_tool():
    spec = importlib.util.spec_from_file_location(
        'compare_methods', osp.join(ROOT, 'tools', 'compare_methods.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_methods_smoke(tmp_path):
    tool = load_tool()
    rows = tool.main(['--smoke', '--work-dir', str(tmp_path), '--tau', '5'])
    assert [r['method'] for r in rows] == list(METHODS)
    by = {r['method']: r for r in rows}
    for r in rows:
        assert 0 <= r['final'] <= 100 and -1 <= r['mcbr'] <= 1 and r['loss'] > 0
        # same data, same initial weights
        assert r['kernel_norm_start'] == by['wd']['kernel_norm_start']
    for m in ('fixnorm', 'fixnorm_per_layer'):
        assert by[m]['kernel_norm_end'] == pytest.approx(by[m]['kernel_norm_start'], rel=1e-4)
    assert by['wd']['kernel_norm_end'] != pytest.approx(by['wd']['kernel_norm_start'], rel=1e-3)
    # smoke: 16 steps with tau=5 -> rescaled after step 15, one step of drift
    assert by['wrs']['unit_norm_mean_end'] == pytest.approx(1.0, abs=0.05)
    table = (tmp_path / 'results.md').read_text()
    assert table.count('\n') == 2 + len(METHODS) and 'per-layer FixNorm' in table
    assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (tmp_path / 'results.json').exists()


def test_train_tool_method_switch_then_cfg_options(tmp_path):
    spec = importlib.util.spec_from_file_location(
        'train_tool', osp.join(osp.dirname(__file__), '..', 'tools', 'train.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg_file = tmp_path / 'cfg.py'
    Config(runner_cfg(tmp_path)).dump(str(cfg_file))
    args = tool.argparse.Namespace(
        config=str(cfg_file), launcher='none', method='wrs', work_dir=None, amp=False,
        auto_scale_lr=False, resume=None,
        cfg_options={'optim_wrapper.optimizer.lr': 0.25})
    cfg = tool.build_cfg(args)
    assert cfg.optim_wrapper.type == apply_method(Config(runner_cfg(tmp_path)), 'wrs').optim_wrapper.type
    assert cfg.optim_wrapper.norm_control.type == 'WRS'
    assert cfg.optim_wrapper.optimizer.lr == 0.25
