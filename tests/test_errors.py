"""Every bad input of issue 7 gives one clear error naming the key or the
parameter, through the config/Runner path (and tools/train.py), before any
weight is updated where that is possible."""
import importlib.util
import os.path as osp
import re

import pytest
import torch
from mmengine.runner import Runner

import fixnorm_mm  # noqa: F401
from fixnorm_mm.testing.toy import runner_cfg

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def weights(runner):
    return {n: p.detach().clone() for n, p in runner.model.named_parameters()}


def assert_untouched(runner, before):
    """No optimizer step happened: every weight is what init gave it."""
    after = weights(runner)
    for n in before:
        assert torch.equal(after[n], before[n]), n


def initialised(cfg):
    runner = Runner.from_cfg(cfg)
    runner._init_model_weights()  # what train() does first; idempotent for the toy
    return runner


def converted(model, **kw):
    return dict(type='FixNormModel', model_type=model['type'], **kw,
                **{k: v for k, v in model.items() if k != 'type'})


# ---- alpha <= 0 -------------------------------------------------------------

@pytest.mark.parametrize('alpha', [0, -1.0, float('nan'), float('inf'), True, '1'])
def test_alpha_is_refused_when_the_model_is_built(tmp_path, alpha):
    cfg = runner_cfg(tmp_path, model=dict(type='ToyNet', alpha=alpha))
    with pytest.raises(ValueError, match=r"alpha must be a finite number > 0 .*"
                                         rf"got {alpha!r}".replace('(', r'\(')
                       .replace(')', r'\)')):
        Runner.from_cfg(cfg)


def test_alpha_is_refused_by_fixnorm_model_before_building(tmp_path):
    cfg = runner_cfg(tmp_path, model=converted(dict(type='ToyNet', fc_type='fc'),
                                               final_layer='head', alpha=0.0))
    with pytest.raises(ValueError, match=r'^model\.alpha must be a finite number > 0 .*got 0\.0$'):
        Runner.from_cfg(cfg)


# ---- a misspelt key: named, with the nearest valid one (issue 23) --------------------

def _typo(word):
    """``word`` with a letter dropped: what a hurried hand types."""
    i = len(word) // 2
    return word[:i] + word[i + 1:]


def test_every_methods_options_name_a_misspelt_key_and_the_nearest_option():
    from mmengine.optim import build_optim_wrapper

    from fixnorm_mm.config_keys import accepted_keys
    from fixnorm_mm.norm_control.controller import registered_controllers
    from fixnorm_mm.testing.toy import ToyNet
    checked = set()
    for cls in registered_controllers():
        options = sorted(accepted_keys(cls) - {'cfg_key'})
        option = max(options, key=len)  # a method-specific one where there is one
        typo = _typo(option)
        assert typo not in options
        with pytest.raises(TypeError) as err:
            build_optim_wrapper(ToyNet(), dict(
                type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
                optimizer=dict(type='SGD', lr=0.1),
                norm_control={'type': cls.type_name, typo: 1}))
        message = str(err.value)
        assert message.startswith(f'optim_wrapper.norm_control.{typo} is not an option of '
                                  f"{cls.type_name}; did you mean '{option}'?"), message
        assert all(o in message.splitlines()[-1] for o in options)
        # one error of its own, not a TypeError of the constructor chained to it
        assert err.value.__cause__ is None and err.value.__context__ is None
        checked.add(cls.type_name)
    assert {'FixNorm', 'EpsShiftedL2', 'WRS', 'WeightDecay'} <= checked
    with pytest.raises(TypeError, match=r"^optim_wrapper\.norm_control\.exlude is not an option "
                                        r"of FixNorm; did you mean 'exclude'\?"):
        build_optim_wrapper(ToyNet(), dict(
            type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
            optimizer=dict(type='SGD', lr=0.1), norm_control=dict(type='FixNorm', exlude=['x'])))


@pytest.mark.parametrize('key,meant', [('final_layr', 'final_layer'), ('alpah', 'alpha'),
                                       ('fc_typ', 'fc_type')])
def test_fixnorm_model_names_a_misspelt_key_before_building(tmp_path, key, meant):
    """Keys of FixNormModel and of the model it builds are checked together."""
    model = converted(dict(type='ToyNet', fc_type='fc'), final_layer='head')
    model[key] = model.pop(meant, 0.5)
    with pytest.raises(TypeError, match=rf"^model\.{key} is not an option of FixNormModel or "
                                        rf"ToyNet; did you mean '{meant}'\?"):
        Runner.from_cfg(runner_cfg(tmp_path, model=model))


# ---- head options name their config key --------------------------------------------

def _build_error(registry, cfg):
    with pytest.raises((TypeError, ValueError)) as err:
        registry.build(cfg)
    return str(err.value)


def test_classification_head_options_name_model_head():
    pytest.importorskip('mmpretrain')
    from mmpretrain.registry import MODELS

    import fixnorm_mm.classification  # noqa: F401
    head = dict(type='FixNormClsHead', num_classes=10, in_channels=8)
    assert _build_error(MODELS, dict(head, alpha=0)) == (
        'model.head.alpha must be a finite number > 0 (the cap on g is alpha * sqrt(C_out)), '
        'got 0')
    assert _build_error(MODELS, head).startswith('model.head.alpha is required by FixNormClsHead')
    assert _build_error(MODELS, dict(head, alpah=0.5)).startswith(
        "model.head.alpah is not an option of FixNormClsHead; did you mean 'alpha'?")
    assert _build_error(MODELS, dict(head, alpha=1.0, bias=1)) == \
        'model.head.bias must be True or False, got 1'
    assert _build_error(MODELS, dict(head, alpha=1.0, dropout_rate=1.0)) == \
        'model.head.dropout_rate must be a number in [0, 1), got 1.0'
    assert _build_error(MODELS, dict(head, alpha=1.0, num_classes=0)) == \
        'model.head.num_classes must be an integer > 0, got 0'
    # through a whole classifier, as a config builds it
    message = _build_error(MODELS, dict(
        type='ImageClassifier', backbone=dict(type='ResNet', depth=18),
        neck=dict(type='GlobalAveragePooling'), head=dict(head, in_channels=512, alpha=-1.0)))
    assert message.startswith('model.head.alpha must be a finite number > 0'), message
    assert MODELS.build(dict(head, alpha=0.5)).alpha == 0.5


def test_detection_head_options_name_model_bbox_head():
    pytest.importorskip('mmdet')
    from mmdet.registry import MODELS

    import fixnorm_mm.detection  # noqa: F401
    head = dict(type='FixNormRetinaHead', num_classes=3, in_channels=8, feat_channels=8,
                stacked_convs=1)
    assert _build_error(MODELS, dict(head, alpha=0)).startswith(
        'model.bbox_head.alpha must be a finite number > 0 (the cap on g is ')
    assert _build_error(MODELS, dict(head, alpha=float('nan'))).endswith('got nan')
    assert _build_error(MODELS, dict(head, stacked_conv=2)).startswith(
        "model.bbox_head.stacked_conv is not an option of FixNormRetinaHead; "
        "did you mean 'stacked_convs'?")
    assert _build_error(MODELS, dict(head, type='WNRetinaHead', alpha=1.0)).startswith(
        'model.bbox_head.alpha is not an option of WNRetinaHead')  # the baselines' head
    assert MODELS.build(dict(head, alpha=0.5)).retina_cls.alpha == 0.5


def test_segmentation_head_options_name_model_decode_head():
    pytest.importorskip('mmseg')
    from mmseg.registry import MODELS

    import fixnorm_mm.segmentation  # noqa: F401
    head = dict(type='BaseOCHead', in_channels=8, channels=8, key_channels=4, num_classes=3)
    key = 'model.decode_head.classifier_cfg'
    assert _build_error(MODELS, dict(head, classifier_cfg=dict(type='FixNormConv2d', alpha=0))) \
        == f'{key}.alpha must be a finite number > 0 (the cap on g is alpha * sqrt(C_out)), got 0'
    assert _build_error(MODELS, dict(head, classifier_cfg=dict(type='FixNormConv2d'))) \
        .startswith(f'{key}.alpha is required by FixNormConv2d')
    assert _build_error(MODELS, dict(head, classifier_cfg='FixNormConv2d')).startswith(
        f'{key} must be a conv config dict or None')
    assert _build_error(MODELS, dict(head, key_channel=4)).startswith(
        "model.decode_head.key_channel is not an option of BaseOCHead; "
        "did you mean 'key_channels'?")
    built = MODELS.build(dict(head, classifier_cfg=dict(type='FixNormConv2d', alpha=2.0)))
    assert built.conv_seg.alpha == 2.0


# ---- a layer name that does not exist ------------------------------------------

def test_final_layer_that_does_not_exist(tmp_path):
    cfg = runner_cfg(tmp_path, model=converted(dict(type='ToyNet', fc_type='fc'),
                                               final_layer='haed'))
    with pytest.raises(ValueError, match=r"final_layer='haed' is not a module of "
                                         r"ToyNet\. Did you mean \['head'\]"):
        Runner.from_cfg(cfg)


def test_final_layer_that_is_not_a_conv_or_linear(tmp_path):
    cfg = runner_cfg(tmp_path, model=converted(dict(type='ToyNet', fc_type='fc'),
                                               final_layer='backbone.1'))
    with pytest.raises(ValueError, match=r"final_layer='backbone.1' is a BatchNorm2d"):
        Runner.from_cfg(cfg)


def test_final_layer_is_required(tmp_path):
    cfg = runner_cfg(tmp_path, model=converted(dict(type='ToyNet')))
    with pytest.raises(ValueError, match='final_layer is required'):
        Runner.from_cfg(cfg)
    cfg = runner_cfg(tmp_path, model=dict(type='FixNormModel', final_layer='head'))
    with pytest.raises(ValueError, match='model_type is required'):
        Runner.from_cfg(cfg)


def test_weight_norm_pattern_that_matches_nothing(tmp_path):
    cfg = runner_cfg(tmp_path, model=converted(dict(type='ToyNet', fc_type='fc'),
                                               final_layer='head', weight_norm=['neck.*']))
    with pytest.raises(ValueError, match=r"weight_norm pattern 'neck\.\*' matches no"):
        Runner.from_cfg(cfg)


@pytest.mark.parametrize('key', ['include', 'exclude'])
def test_fixed_set_pattern_that_matches_nothing(tmp_path, key):
    cfg = runner_cfg(tmp_path)
    cfg['optim_wrapper']['fixnorm'] = {key: ['backbone.9.weight']}
    runner = initialised(cfg)
    before = weights(runner)
    with pytest.raises(ValueError, match=rf"{key} pattern 'backbone.9.weight' matches no "
                                         'parameter'):
        runner.train()
    assert_untouched(runner, before)


def test_mcbr_layer_that_does_not_exist(tmp_path):
    cfg = runner_cfg(tmp_path, custom_hooks=[dict(type='MCBRHook', interval=1,
                                                  layer='head.fc')])
    runner = initialised(cfg)
    before = weights(runner)
    with pytest.raises(ValueError, match=r"MCBRHook: layer='head.fc' is not a module"):
        runner.train()
    assert_untouched(runner, before)


# ---- an empty fixed set ----------------------------------------------------------

def test_empty_fixed_set(tmp_path):
    cfg = runner_cfg(tmp_path)
    cfg['optim_wrapper']['fixnorm'] = dict(exclude=['*'])
    runner = initialised(cfg)
    before = weights(runner)
    with pytest.raises(ValueError, match=r'the fixed set is empty.*Left out: .*'
                                         r'backbone\.0\.weight \(exclude pattern\)'):
        runner.train()
    assert_untouched(runner, before)  # raised at the first step, before it updated


# ---- weight decay on a fixed weight: taken over, the rest keeps the config's -------------

def _log_text(runner):
    import glob
    return open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]).read()


@pytest.mark.parametrize('rule', ['keep', 'none'])
def test_weight_decay_of_the_fixed_weights_is_taken_over(tmp_path, rule):
    cfg = runner_cfg(tmp_path, max_iters=2, model=dict(type='ToyNet', fc_type='fc'))
    cfg['optim_wrapper']['optimizer']['weight_decay'] = 1e-4
    cfg['optim_wrapper']['fixnorm'] = dict(uncontrolled_weight_decay=rule)
    runner = Runner.from_cfg(cfg)
    runner.train()
    ctrl = runner.optim_wrapper.norm_control
    fixed = {n for named in ctrl.selection.groups.values() for n in named}
    assert fixed == {'backbone.0.weight', 'backbone.3.weight'}  # the BN-followed convs
    decay = ctrl.decay_of()
    for name, p in runner.model.named_parameters():
        assert decay[id(p)] == (0.0 if name in fixed or rule == 'none' else 1e-4), name
    text = _log_text(runner)
    if rule == 'keep':  # the plain FC keeps its weight decay: Algo 1, line 3
        assert "weight decay: 0 on the 2 controlled tensors (taken over from 0.0001); the " \
               "config's on the 8 other tensors (uncontrolled_weight_decay='keep'): " \
               '0.0001 on 8' in text
        assert 'get neither FixNorm nor weight decay' not in text
    else:  # the plain conv and FC have neither: the warning says so, and which key did it
        assert "none on the other tensors either (uncontrolled_weight_decay='none'" in text
        assert re.search(r'2 trainable weight tensors \(96 params\) get neither FixNorm nor '
                         r'weight decay.*backbone\.6\.weight, head\.weight.*'
                         r"optim_wrapper\.fixnorm\.uncontrolled_weight_decay='none' takes their "
                         r'weight decay away', text)


def test_weight_decay_that_cannot_be_taken_over_alone_is_refused_before_training(tmp_path):
    """A method attached by a hook to a wrapper built without the norm-control
    constructor: one param group for every tensor, with weight decay."""
    cfg = runner_cfg(tmp_path, optim_wrapper=dict(
        type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4)),
        custom_hooks=[dict(type='NormControlHook', norm_control=dict(type='FixNorm'))])
    runner = initialised(cfg)
    before = weights(runner)
    with pytest.raises(ValueError, match=r'head\.weight shares a param group '
                                         r'\(weight_decay=0\.0001\).*'
                                         r"NormControlOptimWrapperConstructor"):
        runner.train()
    assert_untouched(runner, before)


def test_decay_mult_zero_on_fixed_weights_is_accepted(tmp_path):
    cfg = runner_cfg(tmp_path, max_iters=1, model=dict(type='ToyNet', fc_type='fc'))
    cfg['optim_wrapper']['optimizer']['weight_decay'] = 1e-4
    cfg['optim_wrapper']['paramwise_cfg'] = dict(custom_keys={
        'backbone.0.weight': dict(decay_mult=0), 'backbone.3.weight': dict(decay_mult=0)})
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.optim_wrapper.fixnorm.started


# ---- NaN / Inf after a step ---------------------------------------------------------

def test_diverged_step_stops_training(tmp_path):
    cfg = runner_cfg(tmp_path, max_iters=5)
    cfg['optim_wrapper']['optimizer']['lr'] = 1e30
    runner = Runner.from_cfg(cfg)
    with pytest.raises(FloatingPointError, match=r'the norm of the fixed set is not finite '
                                                 r'after optimizer step 1 .*lower the lr'):
        runner.train()
    assert runner.iter == 0  # stopped at the step that diverged


# ---- resume from a checkpoint of another fixed set ---------------------------------------

TOY_CONFIG = """
custom_imports = dict(imports=['fixnorm_mm.testing.toy'], allow_failed_imports=False)
model = dict(type='ToyNet')
train_dataloader = dict(dataset=dict(type='ToyDataset'), batch_size=4, num_workers=0,
                        sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
                        collate_fn=dict(type='pseudo_collate'))
train_cfg = dict(by_epoch=False, max_iters=2, val_interval=1000)
optim_wrapper = dict(type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
                     optimizer=dict(type='SGD', lr=0.5, momentum=0.9))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False))
randomness = dict(seed=0)
default_scope = None
"""


def train_tool(monkeypatch, *argv):
    """tools/train.py's main(), in this process."""
    spec = importlib.util.spec_from_file_location('train_tool', osp.join(ROOT, 'tools', 'train.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr('sys.argv', ['train.py', *argv])
    tool.main()


def test_resume_from_another_fixed_set_through_the_tool(tmp_path, monkeypatch):
    config = tmp_path / 'toy.py'
    config.write_text(TOY_CONFIG)
    work = str(tmp_path / 'work')
    train_tool(monkeypatch, str(config), '--work-dir', work)
    ckpt = osp.join(work, 'iter_2.pth')
    assert osp.exists(ckpt)
    with pytest.raises(ValueError, match=r"fixed a different set of weights.*group 'default': "
                                         r"only in checkpoint \['backbone\.3\.weight'\]"):
        train_tool(monkeypatch, str(config), '--work-dir', work, '--resume', ckpt,
                   '--cfg-options', 'train_cfg.max_iters=4',
                   "optim_wrapper.fixnorm.exclude=['backbone.3.weight']")
    with pytest.raises(ValueError, match='trained with per_layer=False but the config says '
                                         'per_layer=True'):
        train_tool(monkeypatch, str(config), '--work-dir', work, '--resume', ckpt,
                   '--cfg-options', 'train_cfg.max_iters=4',
                   'optim_wrapper.fixnorm.per_layer=True')
    # the same fixed set resumes
    train_tool(monkeypatch, str(config), '--work-dir', work, '--resume', ckpt,
               '--cfg-options', 'train_cfg.max_iters=4')
    assert osp.exists(osp.join(work, 'iter_4.pth'))
