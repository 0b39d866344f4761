"""COCO / RetinaNet (paper App. D.3, Table 4): the heads, the four configs, and
a real mmdet Runner on a generated COCO-format dataset, evaluated by CocoMetric."""
import glob
import math
import os.path as osp

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('pycocotools')

from mmdet.models.dense_heads import RetinaHead  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.optim import OptimWrapper  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402
from torch import nn  # noqa: E402

import fixnorm_mm  # noqa: E402
from fixnorm_mm.detection import FixNormRetinaHead, WNRetinaHead  # noqa: E402
from fixnorm_mm.layers import (FixNormConv2d, NormalizedLayer, WNConv2d,  # noqa: E402
                               tensor_norm)
from fixnorm_mm.testing.detection import make_coco_dataset, shrink_coco_config  # noqa: E402

register_all_modules(init_default_scope=False)  # runners set their own scope

STEP, COSINE = 'step', 'cosine'
# Table 4: config, lr, weight decay, schedule, FixNorm alpha (None: baseline)
ROWS = {
    'retinanet_r50_fpn_wn_90k_coco': (0.01, 1e-4, STEP, None),
    'retinanet_r50_fpn_wn_cosine-90k_coco': (0.01, 1e-4, COSINE, None),
    'retinanet_r50_fpn_fixnorm_90k_coco': (0.0145, 0, STEP, 0.5),
    'retinanet_r50_fpn_fixnorm_cosine-90k_coco': (0.0145, 0, COSINE, 0.5),
}
PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)  # focal loss prior pi = 0.01
EVAL_BN_REASON = 'followed by BatchNorm2d in eval mode (frozen statistics): not scale-invariant'


def config_path(name):
    """Where ``fixnorm_mm::coco/<name>.py`` resolves (the package's .mim/configs)."""
    return osp.join(osp.dirname(fixnorm_mm.__file__), '.mim', 'configs', 'coco', f'{name}.py')


def user_config(tmp_path, name, extra=''):
    """A config of a user's own, inheriting ours through the package scope."""
    path = tmp_path / f'my_{name}.py'
    path.write_text(f"_base_ = 'fixnorm_mm::coco/{name}.py'\n{extra}")
    return Config.fromfile(str(path))


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny convs gain nothing from threads, and lose much on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    return make_coco_dataset(str(tmp_path_factory.mktemp('coco')), num_train=4, num_val=2)


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize('name', list(ROWS))
def test_config_states_table4_row(name):
    lr, wd, schedule, alpha = ROWS[name]
    cfg = Config.fromfile(config_path(name))
    assert cfg.custom_imports.imports == ['fixnorm_mm', 'fixnorm_mm.detection']
    # App. D.3 setup: 90k iterations at batch 16 = 8 GPUs x 2
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == 90000
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    model = cfg.model
    backbone = model.backbone
    assert backbone.depth == 50 and backbone.norm_eval and backbone.frozen_stages == 1
    assert backbone.init_cfg.checkpoint == 'torchvision://resnet50'  # ImageNet-pretrained
    pipeline = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert pipeline == ['LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomFlip',
                        'PackDetInputs']  # horizontal flip is the only augmentation
    assert cfg.train_dataloader.dataset.pipeline[2].scale == (1333, 800)
    head = model.bbox_head
    focal = head.loss_cls
    assert (focal.type, focal.alpha, focal.gamma) == ('FocalLoss', 0.25, 2.0)
    assert head.loss_bbox.type == 'SmoothL1Loss'
    # WN on every conv not followed by a norm, for all the models
    assert model.neck.conv_cfg.type == 'WNConv2d' and head.conv_cfg.type == 'WNConv2d'
    assert cfg.custom_hooks[0].type == 'MCBRHook'
    assert cfg.custom_hooks[0].layer == 'bbox_head.retina_cls'
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay, optimizer.momentum) == \
        ('SGD', lr, wd, 0.9)
    main = cfg.param_scheduler[-1]
    if schedule == STEP:
        assert (main.type, main.milestones, main.gamma) == ('MultiStepLR', [60000, 80000], 0.1)
    else:
        assert (main.type, main.T_max, main.eta_min) == ('CosineAnnealingLR', 90000, 0)
    if alpha is None:
        assert head.type == 'WNRetinaHead' and cfg.optim_wrapper.type == 'OptimWrapper'
    else:
        assert head.type == 'FixNormRetinaHead' and head.alpha == alpha
        assert cfg.optim_wrapper.type == 'OptimWrapper'
        assert cfg.optim_wrapper.constructor == 'NormControlOptimWrapperConstructor'
        assert cfg.optim_wrapper.norm_control.type == 'FixNorm'


def test_user_config_overrides_fixnorm_config(tmp_path):
    cfg = user_config(tmp_path, 'retinanet_r50_fpn_fixnorm_90k_coco',
                      'model = dict(bbox_head=dict(alpha=2.0, num_classes=20))\n')
    assert cfg.optim_wrapper.optimizer.lr == 0.0145
    head = MODELS.build(cfg.model.bbox_head)
    assert isinstance(head, FixNormRetinaHead)
    assert head.retina_cls.alpha == 2.0
    assert head.retina_cls.cap == pytest.approx(2.0 * math.sqrt(9 * 20))  # A * K channels


# ---------------------------------------------------------------- heads
@pytest.mark.parametrize('head_type', ['WNRetinaHead', 'FixNormRetinaHead'])
def test_head_starts_as_plain_retina_head(head_type):
    """WN everywhere, FixNorm-Conv classifier, prior bias kept; at init the
    head computes what mmdet's RetinaHead with the same weights computes."""
    kwargs = dict(num_classes=3, in_channels=16, feat_channels=16, stacked_convs=2)
    extra = dict(alpha=0.5) if head_type == 'FixNormRetinaHead' else {}
    head = MODELS.build(dict(type=head_type, **kwargs, **extra))
    assert type(head) is dict(WNRetinaHead=WNRetinaHead, FixNormRetinaHead=FixNormRetinaHead)[head_type]
    head.init_weights()
    assert all(isinstance(m.conv, WNConv2d) for m in [*head.cls_convs, *head.reg_convs])
    assert type(head.retina_reg) is WNConv2d  # regression: WN, never FixNorm
    if head_type == 'FixNormRetinaHead':
        assert isinstance(head.retina_cls, FixNormConv2d)
        assert head.retina_cls.cap == pytest.approx(0.5 * math.sqrt(9 * 3))  # alpha sqrt(A K)
    else:
        assert type(head.retina_cls) is WNConv2d
    assert torch.equal(head.retina_cls.bias, torch.full((27,), PRIOR_BIAS))
    assert head.retina_cls.weight.std().item() == pytest.approx(0.01, rel=0.1)
    # g followed mmdet's Normal init at init_weights, before any forward
    assert_gains_follow_weights(head, expected=2 + 2 + 2)

    plain = RetinaHead(**kwargs)
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if not k.endswith('.g')})
    x = [torch.randn(2, 16, 8, 8), torch.randn(2, 16, 4, 4)]
    (cls, reg), (cls_ref, reg_ref) = head(x), plain(x)
    for a, b in zip(cls + reg, cls_ref + reg_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # g was set to ||W|| at init_weights, below the cap
    w_norm = head.retina_cls.weight.norm()
    if head_type == 'FixNormRetinaHead':
        assert head.retina_cls.g.item() == pytest.approx(w_norm.item(), rel=1e-6)
        assert head.retina_cls.g.item() < head.retina_cls.cap


def assert_gains_follow_weights(model, expected):
    """Every FixNorm/WN layer has g = ||W|| (per output unit for WN)."""
    layers = [m for m in model.modules() if isinstance(m, NormalizedLayer)]
    assert len(layers) == expected
    for m in layers:
        torch.testing.assert_close(m.g.detach(), tensor_norm(m.weight, m.per_output))


@pytest.mark.parametrize('name', ['retinanet_r50_fpn_wn_90k_coco',
                                  'retinanet_r50_fpn_fixnorm_90k_coco'])
def test_config_head_equals_plain_retina_head_after_init_weights(name):
    """The head of the provided config, as mmdet builds and initialises it
    (init_cfg: Normal(std=0.01) on every conv, prior bias on retina_cls), is
    its plain RetinaHead twin right after init_weights()."""
    cfg = Config.fromfile(config_path(name)).model.bbox_head
    cfg.update(num_classes=2, in_channels=32, feat_channels=32)
    head = MODELS.build(cfg)
    head.init_weights()
    assert_gains_follow_weights(head, expected=10)
    plain_cfg = {k: v for k, v in cfg.items() if k not in ('alpha', 'conv_cfg')}
    plain = MODELS.build(dict(plain_cfg, type='RetinaHead'))
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if not k.endswith('.g')})
    x = [torch.randn(1, 32, 8, 8), torch.randn(1, 32, 4, 4)]
    head.eval(), plain.eval()
    for a, b in zip(sum(head(x), []), sum(plain(x), [])):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_detector_fpn_convs_follow_their_xavier_init(coco, tmp_path):
    """mmdet's FPN (conv_cfg=WNConv2d) keeps its convs in ModuleLists, which
    mmengine's init_weights does not descend into: g still follows the
    Xavier init_cfg (through Module.apply)."""
    cfg = shrink_coco_config(Config.fromfile(config_path('retinanet_r50_fpn_fixnorm_90k_coco')),
                             coco, work_dir=str(tmp_path))
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert isinstance(model.neck.fpn_convs[0].conv, WNConv2d)
    assert_gains_follow_weights(model, expected=18)  # FPN: 8, head: 10


class _DilatedRetinaHead(RetinaHead):
    """A RetinaHead variant whose output convs are dilated and grouped."""

    def _init_layers(self):
        super()._init_layers()
        self.retina_cls = nn.Conv2d(self.feat_channels, self.num_base_priors *
                                    self.cls_out_channels, 3, padding=2, dilation=2, groups=2)
        self.retina_reg = nn.Conv2d(self.feat_channels, self.num_base_priors * 4, 3,
                                    padding=2, dilation=2, groups=2)


@pytest.mark.parametrize('head_type', [WNRetinaHead, FixNormRetinaHead])
def test_rebuilt_output_convs_keep_dilation_and_groups(head_type):
    kind = type(f'Dilated{head_type.__name__}', (head_type, _DilatedRetinaHead), {})
    head = kind(num_classes=2, in_channels=8, feat_channels=8, stacked_convs=1)
    assert isinstance(head.retina_cls, FixNormConv2d if head_type is FixNormRetinaHead
                      else WNConv2d)
    for conv in (head.retina_cls, head.retina_reg):
        assert (conv.dilation, conv.padding, conv.groups) == ((2, 2), (2, 2), 2)
    head.init_weights()
    cls_scores, _ = head([torch.randn(1, 8, 6, 6)])
    assert cls_scores[0].shape == (1, 9 * 2, 6, 6)


def _batch(boxes, size=128):
    samples = []
    for b in boxes:
        ds = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                         batch_input_shape=(size, size), scale_factor=(1., 1.)))
        ds.gt_instances = InstanceData(bboxes=torch.tensor(b, dtype=torch.float32).reshape(-1, 4),
                                       labels=torch.zeros(len(b), dtype=torch.long))
        samples.append(ds)
    return torch.randn(len(boxes), 3, size, size), samples


def test_losses_with_and_without_boxes(coco, tmp_path):
    cfg = shrink_coco_config(Config.fromfile(config_path('retinanet_r50_fpn_fixnorm_90k_coco')),
                             coco, work_dir=str(tmp_path))
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()

    def losses(boxes):
        out = model.loss(*_batch(boxes))
        return sum(out['loss_cls']).item(), sum(out['loss_bbox']).item()

    cls_loss, box_loss = losses([[], []])
    assert cls_loss > 0 and math.isfinite(cls_loss)  # every anchor is a negative
    assert box_loss == 0
    cls_loss, box_loss = losses([[[10, 10, 60, 70]], [[30, 20, 90, 100], [5, 5, 40, 40]]])
    assert cls_loss > 0 and box_loss > 0


# ---------------------------------------------------------------- Runner
class _InitialWeights(Hook):
    """Remembers the weights the first step starts from (after init_weights)."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if batch_idx == 0:
            self.weights = {n: p.detach().clone() for n, p in runner.model.named_parameters()}


def _global_norm(named, keys):
    return torch.linalg.vector_norm(torch.stack([named[k].norm() for k in keys])).item()


@pytest.mark.parametrize('name', list(ROWS))
def test_runner_trains_and_evaluates(name, coco, tmp_path):
    _, _, _, alpha = ROWS[name]
    cfg = shrink_coco_config(user_config(tmp_path, name), coco,
                             work_dir=str(tmp_path / 'work'), max_iters=3)
    runner = Runner.from_cfg(cfg)
    initial = _InitialWeights()
    runner.register_hook(initial, 'LOWEST')
    runner.train()  # validates at the end
    hub = runner.message_hub

    # CocoMetric (pycocotools) gave a bbox mAP
    m_ap = hub.get_scalar('val/coco/bbox_mAP').current()
    assert 0.0 <= m_ap <= 1.0
    assert 0.0 <= hub.get_scalar('val/coco/bbox_mAP_50').current() <= 1.0

    model = runner.model
    normalized = [f'{n}.weight' for n, m in model.named_modules()
                  if isinstance(m, (WNConv2d, FixNormConv2d))]
    assert len(normalized) == 8 + 10  # FPN: 3 lateral + 3 output + 2 extra; head: 4+4+cls+reg
    assert all(n.startswith(('neck.', 'bbox_head.')) for n in normalized)
    now = dict(model.named_parameters())
    norm_before = _global_norm(initial.weights, normalized)
    norm_after = _global_norm(now, normalized)
    moved = max((now[n] - initial.weights[n]).abs().max().item() for n in normalized)
    assert moved > 0  # the directions did train

    if alpha is None:
        assert type(runner.optim_wrapper) is OptimWrapper
        assert norm_after != pytest.approx(norm_before, rel=1e-7)  # nothing fixes it
        # the WN classifier's scale: ||g||, the norm of the weight it applies
        g_norm = model.bbox_head.retina_cls.g.norm().item()
        assert hub.get_scalar('train/fixnorm/g').current() == pytest.approx(g_norm, rel=1e-6)
        return

    wrapper = runner.optim_wrapper
    assert type(wrapper).__name__ == 'OptimWrapper'  # mmengine's, FixNorm attached
    head = model.bbox_head
    assert isinstance(head, FixNormRetinaHead) and head.retina_cls.alpha == alpha
    assert head.retina_cls.cap == pytest.approx(alpha * math.sqrt(9 * len(coco.classes)))

    # the fixed set: exactly the WN directions and the FixNorm-Conv weight
    selection = wrapper.norm_control.selection
    assert sorted(selection.groups) == ['default']
    assert sorted(selection.groups['default']) == sorted(normalized)
    backbone_convs = [f'{n}.weight' for n, m in model.named_modules()
                      if n.startswith('backbone.') and isinstance(m, nn.Conv2d)
                      and m.weight.requires_grad]
    left_out = {n: why for n, _, why in selection.excluded}
    assert all(left_out.get(n) == EVAL_BN_REASON for n in backbone_convs)
    frozen = [f'{n}.weight' for n, m in model.named_modules()  # frozen_stages: stem, layer1
              if n.startswith('backbone.') and isinstance(m, nn.Conv2d)
              and not m.weight.requires_grad]
    assert frozen and all(left_out[n] == 'frozen (requires_grad=False)' for n in frozen)

    # ... and the startup table in the log says so
    log = open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]).read()
    assert 'FixNorm fixed set' in log
    assert f'{EVAL_BN_REASON}: {len(backbone_convs)} tensors' in log
    tensors = open(osp.join(runner.log_dir, 'fixnorm_tensors.txt')).read()
    assert '  [default] bbox_head.retina_cls.weight  (FixNorm layer)' in tensors
    assert '  [default] neck.fpn_convs.0.conv.weight  (weight-normalized)' in tensors
    assert '[default] backbone.' not in tensors

    # its global norm is the initial one after every step (Algo 1)
    reference = wrapper.norm_control.fixer.reference_norms['default'].item()
    assert reference == pytest.approx(norm_before, rel=1e-6)
    assert norm_after == pytest.approx(reference, rel=1e-5)
    logged, counts = hub.get_scalar('train/fixnorm/norm_default').data
    assert len(logged) == 3
    assert logged == pytest.approx([reference] * 3, rel=1e-5)

    # g of the classification conv is logged at every iteration (MCBRHook)
    g_now = head.retina_cls.g.item()
    assert len(hub.get_scalar('train/fixnorm/g').data[0]) == 3
    assert hub.get_scalar('train/fixnorm/g').current() == pytest.approx(g_now, rel=1e-6)
    assert hub.get_scalar('train/fixnorm/g_capped').current() == \
        pytest.approx(min(g_now, head.retina_cls.cap), rel=1e-6)


def test_weight_decay_stays_on_the_frozen_bn_backbone(coco, tmp_path):
    """The backbone's convs are not in the fixed set: with the config's weight
    decay they keep it (docs/coco.md), and FixNorm takes over the decay of the
    weights it fixes (the WN directions and retina_cls)."""
    cfg = shrink_coco_config(Config.fromfile(config_path('retinanet_r50_fpn_fixnorm_90k_coco')),
                             coco, work_dir=str(tmp_path), max_iters=1)
    cfg.optim_wrapper.optimizer.weight_decay = 1e-4
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    decay = {id(p): g['weight_decay'] for g in runner.optim_wrapper.optimizer.param_groups
             for p in g['params']}
    assert decay[id(model.backbone.layer2[0].conv1.weight)] == 1e-4
    assert decay[id(model.neck.fpn_convs[0].conv.weight)] == 0
    assert decay[id(model.bbox_head.retina_cls.weight)] == 0
    assert decay[id(model.neck.fpn_convs[0].conv.g)] == 1e-4  # a gain: the config's
    assert 'bbox_head.retina_cls.weight' in runner.optim_wrapper.norm_control.selection.reasons


def test_shrink_keeps_the_schedule_shape(coco, tmp_path):
    """Step/cosine schedules are rescaled in time, epochs counted as COCO epochs
    of 7330 iterations; warmups stay at least two iterations long."""
    ours = shrink_coco_config(Config.fromfile(config_path('retinanet_r50_fpn_fixnorm_90k_coco')),
                              coco, work_dir=str(tmp_path), max_iters=9)
    warmup, step = ours.param_scheduler
    assert (warmup.begin, warmup.end) == (0, 2)
    assert step.milestones == [6, 8] and not step.by_epoch  # 60k, 80k of 90k
    cosine = Config.fromfile(config_path('retinanet_r50_fpn_wn_cosine-90k_coco'))
    cosine = shrink_coco_config(cosine, coco, work_dir=str(tmp_path), max_iters=9)
    cosine = cosine.param_scheduler[1]
    assert (cosine.T_max, cosine.end) == (9, 9)
    import mmdet
    upstream = Config.fromfile(osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs',
                                        'retinanet', 'retinanet_r50_fpn_1x_coco.py'))
    assert upstream.train_cfg.type == 'EpochBasedTrainLoop'  # 12 epochs, steps at 8 and 11
    shrunk = shrink_coco_config(upstream, coco, work_dir=str(tmp_path), max_iters=12)
    assert shrunk.train_cfg == dict(type='IterBasedTrainLoop', max_iters=12, val_interval=12)
    assert shrunk.param_scheduler[1].milestones == [8, 11]
    assert shrunk.model.backbone.depth == 18 and shrunk.model.bbox_head.num_classes == 3
    assert shrunk.val_evaluator.ann_file == osp.join(coco.root, coco.val_ann)
