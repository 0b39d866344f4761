"""Resuming checks what it resumes: the fixed set by names, shapes and dtypes,
its norm against the saved reference, and the method against the checkpoint's;
the wrapper route and the hook route run the same checks. Legacy configs and
checkpoints (FixNormOptimWrapper, the `fixnorm` key, FixNormHook's top-level
state) still load and resume."""
import pytest
import torch
from mmengine.runner import Runner

import fixnorm_mm  # noqa: F401
from fixnorm_mm.testing.toy import runner_cfg

SGD = dict(type='SGD', lr=0.5, momentum=0.9, nesterov=True)


def new_style(**options):
    return dict(type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
                optimizer=dict(SGD), norm_control=dict(type='FixNorm', **options))


PLAIN = dict(type='OptimWrapper', optimizer=dict(SGD))
HOOK = [dict(type='FixNormHook')]


def first_run(tmp_path, iters=3, **cfg):
    Runner.from_cfg(runner_cfg(tmp_path, max_iters=iters, **cfg)).train()
    return str(tmp_path / f'iter_{iters}.pth')


def resume(tmp_path, ckpt, iters=6, **cfg):
    runner = Runner.from_cfg(runner_cfg(tmp_path, max_iters=iters, resume=True,
                                        load_from=ckpt, **cfg))
    runner.train()
    return runner


@pytest.mark.parametrize('route', ['wrapper', 'hook'])
def test_resume_into_another_width_is_refused_by_shape(tmp_path, route):
    cfg = dict(optim_wrapper=new_style()) if route == 'wrapper' else \
        dict(optim_wrapper=PLAIN, custom_hooks=HOOK)
    ckpt = first_run(tmp_path, **cfg)
    cfg['optim_wrapper'] = dict(cfg['optim_wrapper'], optimizer=dict(type='SGD', lr=0.5))
    with pytest.raises(ValueError, match=r'other shapes.*backbone\.0\.weight: shape '
                                         r'\(8, 3, 3, 3\) in the checkpoint, \(16, 3, 3, 3\)'):
        resume(tmp_path, ckpt, model=dict(type='ToyNet', channels=(16, 16)), **cfg)


def test_resume_into_another_number_of_classes_is_refused_before_sgd_fails(tmp_path):
    ckpt = first_run(tmp_path, optim_wrapper=new_style())
    with pytest.raises(ValueError, match=r'head\.weight: shape \(4, 8\) in the checkpoint, '
                                         r'\(6, 8\) in this model'):
        resume(tmp_path, ckpt, optim_wrapper=new_style(),
               model=dict(type='ToyNet', num_classes=6))


def test_resumed_weights_must_have_the_saved_reference_norm(tmp_path):
    ckpt = first_run(tmp_path, optim_wrapper=new_style())
    state = torch.load(ckpt, weights_only=True)
    state['state_dict']['backbone.0.weight'] *= 1.5  # weights of another training
    torch.save(state, ckpt)
    with pytest.raises(ValueError, match=r'resumed weights of group .default. have norm .*'
                                         r'not trained with this optimizer state'):
        resume(tmp_path, ckpt, optim_wrapper=new_style())


@pytest.mark.parametrize('route', ['wrapper', 'hook'])
def test_plain_checkpoint_into_fixnorm_is_an_explicit_choice(tmp_path, route):
    ckpt = first_run(tmp_path / 'plain', optim_wrapper=PLAIN,
                     model=dict(type='ToyNet', fc_type='fc'))
    cfg = dict(optim_wrapper=new_style(), model=dict(type='ToyNet', fc_type='fc')) \
        if route == 'wrapper' else dict(optim_wrapper=PLAIN, custom_hooks=HOOK,
                                        model=dict(type='ToyNet', fc_type='fc'))
    with pytest.raises(ValueError, match=r"trained without norm control.*"
                                         r"on_method_change='restart'"):
        resume(tmp_path / 'plain', ckpt, **cfg)
    if route == 'wrapper':
        cfg['optim_wrapper'] = new_style(on_method_change='restart')
    else:
        cfg['custom_hooks'] = [dict(type='FixNormHook', on_method_change='restart')]
    runner = resume(tmp_path / 'plain', ckpt, **cfg)
    ctrl = runner.optim_wrapper.norm_control
    # a new reference: the norm of the resumed weights, kept from then on
    torch.testing.assert_close(ctrl.fixer.norms()['default'], ctrl.fixer.reference_norms['default'])
    logs = [open(f).read() for f in (tmp_path / 'plain').glob('*/*.log')]
    assert any("on_method_change='restart': starting FixNorm afresh" in log for log in logs)


def test_a_checkpoint_of_another_method_is_refused(tmp_path):
    wrs = dict(type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
               optimizer=dict(SGD, weight_decay=1e-4), norm_control=dict(type='WRS', interval=2))
    ckpt = first_run(tmp_path, optim_wrapper=wrs)
    with pytest.raises(ValueError, match='trained with WRS, this config trains with FixNorm'):
        resume(tmp_path, ckpt, optim_wrapper=new_style())


# ----------------------------------------------------------------- legacy
def test_legacy_wrapper_checkpoint_resumes_into_the_new_style_bit_exactly(tmp_path):
    """A checkpoint of FixNormOptimWrapper (legacy `fixnorm` key, no type marker)
    resumes into type='OptimWrapper' + norm_control, and the run equals one
    straight new-style run."""
    legacy = dict(type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
                  optimizer=dict(SGD), fixnorm=dict(per_layer=False))
    ckpt = first_run(tmp_path / 'a', optim_wrapper=legacy)
    state = torch.load(ckpt, weights_only=True)
    # what an earlier version wrote: no type marker
    del state['optimizer']['norm_control']
    torch.save(state, ckpt)
    resumed = resume(tmp_path / 'a', ckpt, optim_wrapper=new_style())
    straight = Runner.from_cfg(runner_cfg(tmp_path / 'b', max_iters=6, optim_wrapper=new_style()))
    straight.train()
    for (n, a), (_, b) in zip(resumed.model.state_dict().items(),
                              straight.model.state_dict().items()):
        assert torch.equal(a, b), n


def test_legacy_hook_checkpoint_with_top_level_state_resumes(tmp_path):
    """Earlier FixNormHooks saved their state at the checkpoint's top level."""
    ckpt = first_run(tmp_path, optim_wrapper=PLAIN, custom_hooks=HOOK)
    state = torch.load(ckpt, weights_only=True)
    opt = state['optimizer']
    state['fixnorm'] = opt.pop('fixnorm')
    del opt['norm_control']
    torch.save(state, ckpt)
    runner = resume(tmp_path, ckpt, optim_wrapper=PLAIN, custom_hooks=HOOK)
    ctrl = runner.optim_wrapper.norm_control
    assert torch.equal(ctrl.fixer.reference_norms['default'],
                       state['fixnorm']['groups']['default']['reference_norm'])
