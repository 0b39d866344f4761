"""Algo 1: the fixer, the selection of the fixed set, and FixNorm attached to
mmengine's own OptimWrapper by the norm-control constructor."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from torch import nn

from fixnorm_mm.layers import FixNormLinear, WNConv2d
from fixnorm_mm.norm_control import NormFixer, NormFollowTracer, select_fixed_params


def bn_net(width=8, classes=5):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, bias=False), nn.GroupNorm(2, width), nn.ReLU(),
        nn.Conv2d(width, width, 1), nn.ReLU(),  # no norm after it: not fixed
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), FixNormLinear(width, classes, alpha=1.0))


def wrapper_for(model, lr=0.5, fixnorm=None, **kw):
    return build_optim_wrapper(model, dict(
        type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=lr, momentum=0.9, nesterov=True),
        norm_control=dict(type='FixNorm', **(fixnorm or {})), **kw))


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
    fixer = wrapper.norm_control.fixer
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
    sel = wrapper.norm_control.selection
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
    assert set(wrapper.norm_control.fixer.names) == {'default', 'head'}
    assert model[10].weight.norm().item() == pytest.approx(head0, rel=1e-5)


def test_weight_decay_of_fixed_weights_is_taken_over():
    model = bn_net()
    cfg = dict(type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
               optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4),
               norm_control=dict(type='FixNorm'))
    wrapper = build_optim_wrapper(model, cfg)
    # one group per tensor, so that each can have its own decay
    assert all(len(g['params']) == 1 for g in wrapper.optimizer.param_groups)
    train(model, wrapper, steps=1)
    decay = wrapper.norm_control.decay_of()
    for name, p in model.named_parameters():
        fixed = name in ('0.weight', '3.weight', '10.weight')
        assert decay[id(p)] == (0.0 if fixed else 1e-4), name
    # a bare torch optimizer with one group: the FixNorm FC is known before any
    # forward, and its decay cannot be taken over alone
    from fixnorm_mm.norm_control import build_controller
    model = bn_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4)
    with pytest.raises(ValueError, match=r'10\.weight shares a param group \(weight_decay='
                                         r'0\.0001\) with 10 other tensors'):
        build_controller(dict(type='FixNorm')).attach(model, optimizer)


def test_gradient_accumulation_rescales_only_on_real_steps(monkeypatch):
    model = bn_net()
    wrapper = wrapper_for(model, accumulative_counts=2)
    calls = []
    real_step = wrapper.norm_control.after_step
    monkeypatch.setattr(wrapper.norm_control, 'after_step',
                        lambda skip=None: calls.append(1) or real_step(skip))
    assert type(wrapper).__name__ == 'OptimWrapper'  # mmengine's own wrapper
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
    with pytest.raises(RuntimeError, match="constructor='NormControlOptimWrapperConstructor'"
                                           ".*'FixNormOptimWrapperConstructor'"):
        train(model, wrapper, steps=1)
    with pytest.raises(ValueError, match=r"no method: set optim_wrapper\.norm_control"):
        build_optim_wrapper(model, dict(type='OptimWrapper',
                                        constructor='NormControlOptimWrapperConstructor',
                                        optimizer=dict(type='SGD', lr=0.1)))


def test_empty_fixed_set_is_an_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 5))
    wrapper = wrapper_for(model)
    with pytest.raises(ValueError, match='fixed set is empty'):
        train(model, wrapper, steps=1)


def test_nan_after_a_step_is_an_error():
    model = bn_net()
    wrapper = wrapper_for(model)
    x, y = torch.randn(4, 3, 9, 9), torch.randint(0, 5, (4,))
    with pytest.raises(FloatingPointError, match='not finite after optimizer step 1'):
        wrapper.update_params(F.cross_entropy(model(x), y) * float('nan'))


@pytest.mark.parametrize('key,value', [('lr', float('inf')), ('lr', float('nan')),
                                       ('weight_decay', float('nan'))])
def test_non_finite_hyperparameters_are_refused_before_any_update(key, value):
    model = bn_net()
    optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0)
    optimizer[key] = value
    with pytest.raises(ValueError, match=f'optim_wrapper.optimizer.{key} must be a finite'):
        build_optim_wrapper(model, dict(type='OptimWrapper',
                                        constructor='NormControlOptimWrapperConstructor',
                                        optimizer=optimizer, norm_control=dict(type='FixNorm')))


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


# ------------------------------------------------------------- the registry and the switch
THROWAWAY = '''
"""A throw-away method: after every real step, the BN-fed convs get unit norm."""
import torch
from fixnorm_mm.norm_control import NormController, select_fixed_params
from fixnorm_mm.registry import NORM_CONTROLLERS


@NORM_CONTROLLERS.register_module('UnitNormForTest')
class UnitNormForTest(NormController):
    type_name = 'UnitNormForTest'
    methods = {'unitnorm_for_test': __file__.replace('.py', '_fragment.py')}

    def start(self, model, followed, resumed_state):
        sel = select_fixed_params(model, followed)
        self.params = [p for n, p in sel.groups['default'].items() if sel.reasons[n] != 'FixNorm layer']

    @torch.no_grad()
    def after_step(self, skip=None):
        for p in self.params:
            p.div_(p.norm())
'''
FRAGMENT = '''
custom_imports = dict(imports=['throwaway_method'], allow_failed_imports=False)
optim_wrapper = dict(type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
                     optimizer=dict(weight_decay=0), norm_control=dict(type='UnitNormForTest'))
'''


@pytest.fixture
def throwaway_registry():
    """Forget the throw-away method afterwards (later tests list the registry)."""
    from fixnorm_mm.registry import NORM_CONTROLLERS
    yield
    NORM_CONTROLLERS.module_dict.pop('UnitNormForTest', None)


def test_a_new_method_is_one_file_one_decorator_and_one_fragment(tmp_path, monkeypatch,
                                                                   throwaway_registry):
    """docs/DEVELOPING.md's recipe: nothing else to edit for --method to offer it."""
    import importlib.util
    import os.path as osp

    from mmengine.config import Config
    from mmengine.runner import Runner

    from fixnorm_mm.norm_control import apply_method, available_methods
    from fixnorm_mm.testing.toy import runner_cfg
    (tmp_path / 'throwaway_method.py').write_text(THROWAWAY)
    (tmp_path / 'throwaway_method_fragment.py').write_text(FRAGMENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg_file = tmp_path / 'cfg.py'
    Config(dict(runner_cfg(tmp_path / 'work', max_iters=2),
                custom_imports=dict(imports=['fixnorm_mm.testing.toy', 'throwaway_method']))).dump(str(cfg_file))
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    spec = importlib.util.spec_from_file_location('train_tool', osp.join(root, 'tools', 'train.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = tool.argparse.Namespace(config=str(cfg_file), launcher='none', method='unitnorm_for_test',
                                   work_dir=None, amp=False, auto_scale_lr=False, resume=None,
                                   cfg_options=None)
    cfg = tool.build_cfg(args)  # the config's custom_imports registered the method
    assert 'unitnorm_for_test' in available_methods()
    assert cfg.optim_wrapper.norm_control.type == 'UnitNormForTest'
    runner = Runner.from_cfg(cfg)
    runner.train()
    for name in ('backbone.0.weight', 'backbone.3.weight'):
        assert float(dict(runner.model.named_parameters())[name].norm()) == pytest.approx(1.0)
    assert apply_method(cfg, 'fixnorm').optim_wrapper.norm_control.type == 'FixNorm'
    with pytest.raises(ValueError, match="--method 'no_such'.*not a registered"):
        tool.build_cfg(tool.argparse.Namespace(**dict(vars(args), method='no_such')))


# ------------------------------------------------------------- options are checked by name
@pytest.mark.parametrize('options,error', [
    (dict(per_layer='False'), r"optim_wrapper\.norm_control\.per_layer must be True or False"),
    (dict(groups=[dict(name='head', include='10.*')]),
     r"optim_wrapper\.norm_control\.groups\[0\]\.include must be a list of fnmatch patterns"),
    (dict(include='0.weight'), r"optim_wrapper\.norm_control\.include must be a list"),
    (dict(check_finite_interval=-1), r"optim_wrapper\.norm_control\.check_finite_interval"),
    (dict(on_method_change='ignore'), r"optim_wrapper\.norm_control\.on_method_change must be"),
    (dict(per_layers=True), r"optim_wrapper\.norm_control\.per_layers is not an option of "
                            r"FixNorm; did you mean 'per_layer'\?"),
])
def test_fixnorm_options_are_checked_by_name(options, error):
    with pytest.raises((TypeError, ValueError), match=error):
        wrapper_for(bn_net(), fixnorm=options)


@pytest.mark.parametrize('control,error', [
    (dict(type='WRS', interval=0), r'optim_wrapper\.norm_control\.interval must be an integer >= 1'),
    (dict(type='WRS', rescale_at_start='yes'), r'rescale_at_start must be True or False'),
    (dict(type='EpsShiftedL2', eps=-1.0), r'optim_wrapper\.norm_control\.eps must be a finite'),
    (dict(type='EpsShiftedL2', mode='grad'), r"optim_wrapper\.norm_control\.mode must be one of"),
    (dict(type='EpsShiftedL2', weight_decay=float('nan')), r'norm_control\.weight_decay must be'),
    (dict(type='NoSuchMethod'), r"optim_wrapper\.norm_control\.type='NoSuchMethod' is not a registered"),
])
def test_baseline_options_are_checked_by_name(control, error):
    with pytest.raises((TypeError, ValueError, KeyError), match=error):
        build_optim_wrapper(bn_net(), dict(type='OptimWrapper',
                                           constructor='NormControlOptimWrapperConstructor',
                                           optimizer=dict(type='SGD', lr=0.1), norm_control=control))


def test_legacy_keys_are_named_in_errors():
    with pytest.raises(TypeError, match=r'optim_wrapper\.fixnorm\.per_layer must be True or False'):
        build_optim_wrapper(bn_net(), dict(
            type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
            optimizer=dict(type='SGD', lr=0.1), fixnorm=dict(per_layer='False')))


def test_amp_switch_keeps_every_method_and_refuses_the_cpu_by_name(monkeypatch):
    from mmengine.config import Config

    from fixnorm_mm.norm_control import apply_method
    from fixnorm_mm.norm_control import methods as methods_module
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=1))))
    with pytest.raises(ValueError, match='--amp: mixed precision needs a GPU'):
        methods_module.enable_amp(apply_method(cfg, 'wrs'))
    monkeypatch.setattr('mmengine.device.get_device', lambda: 'cuda')
    for method in ('wrs', 'eps_l2', 'fixnorm'):
        amp = methods_module.enable_amp(apply_method(cfg, method)).optim_wrapper
        assert amp.type == 'AmpOptimWrapper' and amp.loss_scale == 'dynamic'
    legacy = Config(dict(optim_wrapper=dict(type='WRSOptimWrapper', wrs=dict(interval=10),
                                            optimizer=dict(type='SGD', lr=1))))
    amp = methods_module.enable_amp(legacy).optim_wrapper
    assert amp.type == 'AmpOptimWrapper' and amp.norm_control == dict(type='WRS', interval=10)


# ------------------------------------------------------------- divergence checks
def test_finite_check_interval_remembers_the_first_bad_step_on_the_device():
    model = bn_net()
    wrapper = wrapper_for(model, fixnorm=dict(check_finite_interval=3))
    x, y = torch.randn(4, 3, 9, 9), torch.randint(0, 5, (4,))
    wrapper.update_params(F.cross_entropy(model(x), y))               # step 1: fine
    wrapper.update_params(F.cross_entropy(model(x), y) * float('nan'))  # step 2: diverges
    with pytest.raises(FloatingPointError, match='not finite after optimizer step 2'):
        wrapper.update_params(F.cross_entropy(model(x), y))           # step 3: checked


def test_a_diverged_state_is_never_saved():
    model = bn_net()
    wrapper = wrapper_for(model, fixnorm=dict(check_finite_interval=100))
    x, y = torch.randn(4, 3, 9, 9), torch.randint(0, 5, (4,))
    wrapper.update_params(F.cross_entropy(model(x), y) * float('nan'))
    with pytest.raises(FloatingPointError, match='not finite after optimizer step 1'):
        wrapper.state_dict()  # what the CheckpointHook calls


# ------------------------------------------------------------- process-wide state
def test_importing_the_plugin_only_registers():
    """No launcher code, no CPU DDP wrapper, no warnings of registries without locations."""
    import subprocess
    import sys
    code = (
        "import logging, sys\n"
        "import fixnorm_mm\n"
        "assert not [m for m in sys.modules if m.endswith('launch')], sys.modules.keys()\n"
        "from mmengine.registry import MODEL_WRAPPERS, DefaultScope\n"
        "assert 'CPUDistributedDataParallel' not in MODEL_WRAPPERS.module_dict\n"
        "from fixnorm_mm.registry import MODELS, NORM_CONTROLLERS\n"
        "with DefaultScope.overwrite_default_scope('fixnorm_mm'):\n"
        "    layer = MODELS.build(dict(type='FixNormLinear', in_features=2, out_features=3, alpha=1.0))\n"
        "print(type(layer).__name__, sorted(NORM_CONTROLLERS.module_dict))\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'FixNormLinear' in out.stdout and 'FixNorm' in out.stdout
    text = out.stdout + out.stderr
    assert 'not installed' not in text and 'did not set import location' not in text, text


def test_a_crafted_checkpoint_cannot_change_history_buffer_statistics(tmp_path):
    import io
    import pickle

    from mmengine.logging import HistoryBuffer, MessageHub
    evil = HistoryBuffer([1.0, 5.0], [1, 1])
    # what a crafted checkpoint would carry: 'mean' rebound to another statistic
    evil.__dict__['statistics_methods'] = {'mean': HistoryBuffer.max}
    original = HistoryBuffer.__getstate__
    HistoryBuffer.__getstate__ = lambda self: self.__dict__  # keep the crafted entry
    try:
        buf = io.BytesIO()
        torch.save({'hub': evil}, buf)
    finally:
        HistoryBuffer.__getstate__ = original
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)['hub']
    assert type(loaded) is HistoryBuffer
    assert loaded.mean() == 3.0 and loaded.statistics('mean') == 3.0  # not max
    assert HistoryBuffer([2.0, 4.0], [1, 1]).statistics('mean') == 3.0
    hub = MessageHub.get_instance('after_crafted_load')
    hub.update_scalar('x', 2.0)
    hub.update_scalar('x', 4.0)
    assert hub.get_scalar('x').mean() == 3.0
    with pytest.raises(pickle.UnpicklingError):
        from fixnorm_mm.engine.checkpoint import history_buffer_method
        history_buffer_method(HistoryBuffer, '__init__')
