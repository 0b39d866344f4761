"""FixNorm through a real mmengine Runner: resume, the hook path, logging."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

import fixnorm_mm  # noqa: F401
from fixnorm_mm.testing.toy import runner_cfg


def final_state(runner):
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def fixnorm_state(runner):
    return runner.optim_wrapper.fixnorm.state_dict()


def test_resume_equals_straight_training(tmp_path):
    straight = Runner.from_cfg(runner_cfg(tmp_path / 'a', max_iters=6))
    straight.train()

    first = Runner.from_cfg(runner_cfg(tmp_path / 'b', max_iters=3))
    first.train()
    ckpt = str(tmp_path / 'b' / 'iter_3.pth')
    assert osp.exists(ckpt)
    # safe loading stays on: the checkpoint loads with weights_only=True
    state = torch.load(ckpt, weights_only=True)
    assert 'fixnorm' in state['optimizer']
    resumed = Runner.from_cfg(runner_cfg(tmp_path / 'b', max_iters=6, resume=True, load_from=ckpt))
    resumed.train()
    assert resumed.iter == 6
    a, b = final_state(straight), final_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    ref_a = fixnorm_state(straight)['groups']['default']
    ref_b = fixnorm_state(resumed)['groups']['default']
    assert ref_a['params'] == ref_b['params']
    assert torch.equal(ref_a['reference_norm'], ref_b['reference_norm'])


class Evil:
    def __reduce__(self):
        return (print, ('a checkpoint ran code',))


def test_safe_loading_still_refuses_unknown_types(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'x': Evil()}, path)
    with pytest.raises(Exception, match='weights_only'):
        torch.load(path)


def test_resume_with_a_different_fixed_set_is_refused(tmp_path):
    Runner.from_cfg(runner_cfg(tmp_path, max_iters=3)).train()
    cfg = runner_cfg(tmp_path, max_iters=6, resume=True, load_from=str(tmp_path / 'iter_3.pth'))
    cfg['optim_wrapper']['fixnorm'] = dict(exclude=['backbone.3.weight'])
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match='fixed a different set of weights'):
        runner.train()


def test_hook_path_fixes_the_norm_and_resumes(tmp_path):
    plain = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.5, momentum=0.9))
    hook = dict(type='FixNormHook')
    runner = Runner.from_cfg(runner_cfg(tmp_path, max_iters=3, optim_wrapper=plain,
                                        custom_hooks=[hook]))
    w0 = {n: p.detach().norm() for n, p in runner.model.named_parameters()}
    runner.train()
    ctrl = next(h for h in runner.hooks if type(h).__name__ == 'FixNormHook').controller
    names = ctrl.fixer.names['default']
    assert names == ['backbone.0.weight', 'backbone.3.weight', 'head.weight']
    initial = torch.linalg.vector_norm(torch.stack([w0[n] for n in names]))
    assert float(ctrl.fixer.norms()['default']) == pytest.approx(float(initial), rel=1e-5)
    # resume: the hook's method keeps its state in the optimizer's state_dict
    state = torch.load(str(tmp_path / 'iter_3.pth'), weights_only=True)
    assert state['optimizer']['norm_control'] == 'FixNorm' and 'fixnorm' in state['optimizer']
    resumed = Runner.from_cfg(runner_cfg(tmp_path, max_iters=6, optim_wrapper=plain,
                                         custom_hooks=[hook], resume=True,
                                         load_from=str(tmp_path / 'iter_3.pth')))
    resumed.train()
    ctrl2 = next(h for h in resumed.hooks if type(h).__name__ == 'FixNormHook').controller
    assert torch.equal(ctrl2.fixer.reference_norms['default'],
                       ctrl.fixer.reference_norms['default'])


def test_startup_table_and_mcbr_hook_logging_with_tensorboard(tmp_path):
    cfg = runner_cfg(tmp_path, max_iters=4,
                     custom_hooks=[dict(type='MCBRHook', interval=2)],
                     visualizer=dict(type='Visualizer',
                                     vis_backends=[dict(type='TensorboardVisBackend')]))
    runner = Runner.from_cfg(cfg)
    runner.train()
    hub = runner.message_hub
    for key in ('mcbr', 'g', 'g_capped', 'norm_default', 'default_effective_lr'):
        assert f'train/fixnorm/{key}' in hub.log_scalars, key
    mcbr = hub.get_scalar('train/fixnorm/mcbr').current()
    assert -1.0 <= mcbr <= 1.0
    head = runner.model.head
    assert hub.get_scalar('train/fixnorm/g').current() == pytest.approx(float(head.g))
    norm = hub.get_scalar('train/fixnorm/norm_default').current()
    lr = runner.optim_wrapper.get_lr()['lr'][0]
    assert hub.get_scalar('train/fixnorm/default_effective_lr').current() == \
        pytest.approx(lr / norm ** 2, rel=1e-5)
    log = open(glob.glob(str(tmp_path / '*' / '*.log'))[0]).read()
    assert 'FixNorm fixed set' in log
    assert 'not followed by a normalization: 1 tensor, 64 params (backbone.6.weight)' in log
    tensors = open(glob.glob(str(tmp_path / '*' / 'fixnorm_tensors.txt'))[0]).read()
    assert '[default] head.weight  (FixNorm layer)' in tensors
    assert 'backbone.6.weight' in tensors and 'not followed by a normalization' in tensors
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = glob.glob(str(tmp_path / '*' / 'vis_data' / 'events.out.tfevents.*'))
    assert events
    acc = EventAccumulator(osp.dirname(events[0]))
    acc.Reload()
    assert 'fixnorm/mcbr' in acc.Tags()['scalars']


def test_mcbr_hook_names_a_missing_layer(tmp_path):
    runner = Runner.from_cfg(runner_cfg(
        tmp_path, max_iters=1, custom_hooks=[dict(type='MCBRHook', layer='head.fcc')]))
    with pytest.raises(ValueError, match="layer='head.fcc' is not a module"):
        runner.train()


def test_safe_getattr_only_returns_history_buffer_statistics():
    import pickle
    from mmengine.logging import HistoryBuffer

    from fixnorm_mm.engine.checkpoint import history_buffer_method
    assert history_buffer_method(HistoryBuffer, 'mean') is HistoryBuffer.mean
    with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
        history_buffer_method(torch.Tensor, 'numpy')
