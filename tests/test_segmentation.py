"""Cityscapes / mmseg: the Base-OC head of OCNet, FixNorm-Conv pixel
classifier, the Table 3 configs, and real mmseg Runners on generated
Cityscapes-format data."""
import copy
import functools
import glob
import math
import os.path as osp
import uuid

import cv2
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import fixnorm_mm  # noqa: F401
from fixnorm_mm.layers import FixNormConv2d, WNConv2d
from fixnorm_mm.norm_control import (NormFixer, NormFollowTracer, drop_zero_norm,
                                     select_fixed_params)
from fixnorm_mm.segmentation import (BaseOCHead, ClassWeightedCrossEntropyLoss,
                                     ObjectContextBlock)
from fixnorm_mm.testing.segmentation import (IGNORE_INDEX, make_cityscapes_dataset,
                                             shrink_cityscapes_config)

CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'cityscapes')
BASELINE = 'baseoc_r101-d8_4xb2-40k_cityscapes-769x769.py'
BASELINE_COS = 'baseoc_r101-d8_4xb2-cos-40k_cityscapes-769x769.py'
FIXNORM = 'baseoc_r101-d8_fixnorm-tune_4xb2-40k_cityscapes-769x769.py'
FIXNORM_COS = 'baseoc_r101-d8_fixnorm-tune_4xb2-cos-40k_cityscapes-769x769.py'
#: Table 3: config -> (lr, weight decay, scheduler, alpha or None)
TABLE3 = {BASELINE: (0.01, 5e-4, 'PolyLR', None),
          BASELINE_COS: (0.01, 5e-4, 'CosineAnnealingLR', None),
          FIXNORM: (0.0335, 0, 'PolyLR', 1.0),
          FIXNORM_COS: (0.043, 0, 'CosineAnnealingLR', 1.0)}
BN = dict(type='BN', requires_grad=True)


def user_config(tmp_path, name, extra=''):
    """A user's config that inherits ours through the package scope."""
    path = tmp_path / f'user_{uuid.uuid4().hex[:8]}.py'
    path.write_text(f"_base_ = 'fixnorm_mm::cityscapes/{name}'\n{extra}")
    return Config.fromfile(str(path))


@pytest.fixture(scope='module', autouse=True)
def _cached_mmseg_metafiles():
    """mmengine resolves every `mmseg::` base by parsing all of mmseg's ~200
    metafiles (about a second each time); the answer never changes here."""
    import mmengine.config.utils as cfg_utils
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cfg_utils, '_get_cfg_metainfo',
                   functools.lru_cache(maxsize=None)(cfg_utils._get_cfg_metainfo))
        yield


@pytest.fixture(scope='module')
def table3(tmp_path_factory):
    """The four rows as a user gets them: ``_base_ = 'fixnorm_mm::cityscapes/...'``
    (loaded once; tests take deep copies)."""
    folder = tmp_path_factory.mktemp('user_configs')
    return {name: user_config(folder, name) for name in TABLE3}


def tiny_head(**kw):
    args = dict(in_channels=6, channels=8, key_channels=4, num_classes=5,
                dropout_ratio=0.0, norm_cfg=BN)
    args.update(kw)
    head = BaseOCHead(**args)
    head.init_weights()
    return head


# ---------------------------------------------------------------- the head

def reference_base_oc(head, x):
    """Base-OC written out from the OCNet paper with the head's weights
    (eval mode: BN with running statistics, no dropout)."""
    def conv_bn_relu(cm, t, padding=0):
        t = F.conv2d(t, cm.conv.weight, cm.conv.bias, padding=padding)
        bn = cm.bn
        t = F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0., bn.eps)
        return F.relu(t)

    oc = head.object_context
    feats = conv_bn_relu(head.context_conv, x, padding=1)               # 3x3, C_in -> C
    b, c, h, w = feats.shape
    q = conv_bn_relu(oc.key_project, feats).flatten(2)                  # Q = K, (B, d, N)
    v = F.conv2d(feats, oc.value_project.weight, oc.value_project.bias).flatten(2)
    d = q.shape[1]
    attn = torch.softmax(q.transpose(1, 2) @ q / math.sqrt(d), dim=-1)  # (B, N, N), rows sum to 1
    ctx = (v @ attn.transpose(1, 2)).reshape(b, d, h, w)                # context_i = sum_j A_ij V_j
    ctx = F.conv2d(ctx, oc.out_project.weight, oc.out_project.bias)     # W_o, d -> C
    fused = conv_bn_relu(head.fusion, torch.cat([ctx, feats], 1))       # [context, F] -> C
    return F.conv2d(fused, head.conv_seg.weight, head.conv_seg.bias)


def randomize(head):
    """Non-trivial weights and BN statistics (W_o is zero after init)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in head.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


# 97 = the feature size of a 769 crop at output stride 8 (769 -> 385 -> 193 -> 97)
@pytest.mark.parametrize('hw', [(13, 9), (97, 3)])
def test_base_oc_head_is_ocnet_base_oc_on_odd_sizes(hw):
    head = tiny_head()
    randomize(head)
    head.eval()
    x = torch.randn(2, 6, *hw)
    out = head([x])  # mmseg heads take the backbone's tuple of stages
    assert out.shape == (2, 5, *hw)
    torch.testing.assert_close(out, reference_base_oc(head, x), rtol=1e-5, atol=1e-5)
    # the attention really mixes pixels: changing one pixel moves all outputs
    x2 = x.clone()
    x2[:, :, 0, 0] += 3.0
    far = (head([x2]) - out)[:, :, -1, -1].abs().max()
    assert far > 1e-4


def test_base_oc_head_gradients_are_correct_on_odd_sizes():
    torch.manual_seed(0)
    head = tiny_head(in_channels=3, channels=4, key_channels=2, num_classes=3).double()
    randomize(head)
    head.train()  # BN with batch statistics; dropout_ratio=0 keeps it deterministic
    names = ['object_context.key_project.conv.weight', 'object_context.value_project.weight',
             'object_context.out_project.weight', 'conv_seg.weight']
    params = dict(head.named_parameters())

    def f(x, *ws):
        return torch.func.functional_call(head, {**params, **dict(zip(names, ws))}, ([x],))

    x = torch.randn(2, 3, 5, 3, dtype=torch.double, requires_grad=True)
    ws = [params[n].detach().clone().requires_grad_() for n in names]
    # fast mode: the Jacobian checked along random directions (seconds, not minutes)
    assert torch.autograd.gradcheck(f, (x, *ws), eps=1e-6, atol=1e-5, fast_mode=True)


def test_pixel_classifier_is_fixnorm_conv_eq29():
    head = tiny_head(classifier_cfg=dict(type='FixNormConv2d', alpha=0.5))
    cls = head.conv_seg
    assert isinstance(cls, FixNormConv2d) and cls.out_channels == 5 and cls.kernel_size == (1, 1)
    assert cls.cap == pytest.approx(0.5 * math.sqrt(5))            # alpha * sqrt(C_out)
    # mmseg's init (Normal std 0.01) ran on the FixNorm layer and g followed it
    # at init_weights, before any forward
    assert cls.g.item() == pytest.approx(cls.weight.norm().item(), rel=1e-6)
    head.eval()
    feats = {}
    cls.register_forward_hook(lambda m, i, o: feats.update(x=i[0]))  # returns None
    x = torch.randn(1, 6, 7, 9)
    out = head([x])
    # mmseg's init (Normal std 0.01) ran on the FixNorm layer; g = ||W||
    assert cls.weight.std().item() == pytest.approx(0.01, rel=0.3)
    assert cls.g.item() == pytest.approx(cls.weight.norm().item(), rel=1e-6)
    w = cls.weight
    torch.testing.assert_close(out, F.conv2d(feats['x'], w / w.norm() * min(cls.g.item(), cls.cap),
                                             cls.bias))
    with torch.no_grad():
        cls.g.fill_(10.0)                                           # above the cap
    out = head([x])
    torch.testing.assert_close(out, F.conv2d(feats['x'], w / w.norm() * cls.cap, cls.bias))


def test_zero_initialised_output_projection_plain_and_weight_normalized():
    x = torch.randn(2, 8, 5, 7)
    plain = ObjectContextBlock(8, 4, norm_cfg=BN)
    assert plain.out_project.weight.abs().sum() == 0 and plain.out_project.bias.abs().sum() == 0
    out = plain(x)
    assert out.shape == x.shape and out.abs().max() == 0
    out.mul(torch.randn_like(out)).sum().backward()
    assert plain.out_project.weight.grad.abs().sum() > 0           # it learns

    wn = ObjectContextBlock(8, 4, norm_cfg=BN, projection_conv_cfg=dict(type='WNConv2d'))
    assert isinstance(wn.value_project, WNConv2d) and isinstance(wn.out_project, WNConv2d)
    # zero gain, random direction: still zero output, and g is not re-synced
    # to ||v|| by init_weights, an initialiser or the first forward
    wn.init_weights()
    wn.apply(lambda m: None)
    out = wn(x)
    assert wn.out_project.weight.norm() > 0 and wn.out_project.g.abs().max() == 0
    assert out.abs().max() == 0
    out.mul(torch.randn_like(out)).sum().backward()
    assert wn.out_project.g.grad.abs().sum() > 0                    # not dead
    assert wn.out_project.g.abs().max() == 0


def traced_selection(head, **kw):
    head.train()
    with NormFollowTracer(head) as tracer:
        head([torch.randn(2, 6, 5, 7)])
    return drop_zero_norm(select_fixed_params(head, tracer.followed, **kw))


def test_zero_initialised_layer_does_not_break_norm_fixing():
    # a user who forces the zero-initialised W_o into the fixed set: the core
    # drops it (its direction is undefined), per-layer fixing stays finite
    head = tiny_head(classifier_cfg=dict(type='FixNormConv2d', alpha=1.0))
    out_w = 'object_context.out_project.weight'
    sel = traced_selection(head, include=[out_w])
    fixed = sel.groups['default']
    assert out_w not in fixed
    assert (out_w, 8 * 4, 'zero norm at start (zero-initialised)') in sel.excluded
    assert sel.reasons['conv_seg.weight'] == 'FixNorm layer'
    assert {'context_conv.conv.weight', 'object_context.key_project.conv.weight',
            'fusion.conv.weight'} <= set(fixed)
    left_out = {n: why for n, _, why in sel.excluded}
    assert left_out['object_context.value_project.weight'] == 'not followed by a normalization'

    def step(fixer):
        opt = torch.optim.SGD(head.parameters(), lr=0.5)
        head([torch.randn(2, 6, 5, 7)]).square().mean().backward()
        opt.step()
        opt.zero_grad()
        fixer.rescale()

    fixer = NormFixer(sel.groups, per_layer=True)
    step(fixer)
    assert all(torch.isfinite(p).all() for p in head.parameters())
    assert head.object_context.out_project.weight.norm() > 0        # W_o learns
    norms = fixer.norms()['default']
    torch.testing.assert_close(norms, fixer.reference_norms['default'])
    # what the drop prevents: a zero reference norm would zero W_o for ever
    broken = NormFixer({'g': {out_w: head.object_context.out_project.weight}},
                       per_layer=True, reference_norms={'g': torch.zeros(1)})
    broken.rescale()
    assert head.object_context.out_project.weight.abs().max() == 0

    # weight-normalised projections: both directions join the fixed set
    wn = tiny_head(projection_conv_cfg=dict(type='WNConv2d'))
    sel = traced_selection(wn)
    assert sel.reasons[out_w] == 'weight-normalized'
    assert sel.reasons['object_context.value_project.weight'] == 'weight-normalized'


def test_class_weighted_loss_is_pytorchs_weighted_mean():
    torch.manual_seed(0)
    weights = torch.rand(19) + 0.5
    logits = torch.randn(2, 19, 9, 7)
    label = torch.randint(0, 19, (2, 9, 7))
    label[0, :3] = IGNORE_INDEX
    loss = ClassWeightedCrossEntropyLoss(class_weight=weights.tolist(), loss_weight=0.4)
    want = torch.nn.CrossEntropyLoss(weight=weights, ignore_index=IGNORE_INDEX)(logits, label)
    torch.testing.assert_close(loss(logits, label), 0.4 * want)
    # by hand: sum_i w_y CE_i / sum_i w_y over labelled pixels
    keep = label != IGNORE_INDEX
    ce = -logits.log_softmax(1).gather(1, label.clamp(max=18)[:, None])[:, 0]
    w_y = weights[label.clamp(max=18)] * keep
    torch.testing.assert_close(loss(logits, label), 0.4 * (w_y * ce).sum() / w_y.sum())
    # a per-pixel weight (mmseg's pixel samplers) multiplies both sums
    pix = torch.rand(2, 9, 7)
    torch.testing.assert_close(loss(logits, label, weight=pix),
                               0.4 * (pix * w_y * ce).sum() / (pix * w_y).sum())
    assert loss.loss_name == 'loss_ce'
    # mmseg's own class-weighted loss cannot take the ignore index (mmseg#3734)
    from mmseg.models.losses import CrossEntropyLoss
    with pytest.raises(IndexError):
        CrossEntropyLoss(class_weight=weights.tolist())(logits, label, ignore_index=IGNORE_INDEX)


# ---------------------------------------------------------------- configs

@pytest.mark.parametrize('name', list(TABLE3))
def test_table3_configs(table3, name):
    lr, wd, scheduler, alpha = TABLE3[name]
    cfg = copy.deepcopy(table3[name])
    model = cfg.model
    assert model.backbone.type == 'ResNetV1c' and model.backbone.depth == 101
    assert model.pretrained == 'open-mmlab://resnet101_v1c'
    # dilated, output stride 8: the last two stages keep the resolution
    assert tuple(model.backbone.strides) == (1, 2, 1, 1)
    assert tuple(model.backbone.dilations) == (1, 1, 2, 4)
    head = model.decode_head
    assert (head.type, head.in_channels, head.channels, head.key_channels,
            head.num_classes) == ('BaseOCHead', 2048, 512, 256, 19)
    assert model.auxiliary_head.type == 'FCNHead' and model.auxiliary_head.in_index == 2
    # OCNet's losses: class-balanced CE on both branches, deep supervision x 0.4
    for loss, weight in ((head.loss_decode, 1.0), (model.auxiliary_head.loss_decode, 0.4)):
        assert loss.type == 'ClassWeightedCrossEntropyLoss' and loss.loss_weight == weight
        assert len(loss.class_weight) == 19 and loss.class_weight[0] == 0.8373
    # data: Cityscapes, 769x769 crops from 2048x1024, 2 images x 4 GPUs
    assert cfg.train_dataloader.dataset.type == 'CityscapesDataset'
    assert cfg.train_dataloader.dataset.data_prefix.img_path == 'leftImg8bit/train'
    assert cfg.val_dataloader.dataset.data_prefix.seg_map_path == 'gtFine/val'
    crop = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomCrop']
    assert tuple(crop[0].crop_size) == (769, 769)
    assert tuple(model.data_preprocessor.size) == (769, 769)
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 8
    assert cfg.train_cfg.max_iters == 40000
    assert cfg.val_evaluator.type == 'IoUMetric'
    # Table 3's hyperparameters
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay, opt.momentum) == ('SGD', lr, wd, 0.9)
    assert [s.type for s in cfg.param_scheduler] == [scheduler]
    assert cfg.param_scheduler[0].end == 40000
    assert cfg.custom_hooks[0].type == 'MCBRHook'
    assert cfg.custom_hooks[0].layer == 'decode_head.conv_seg'
    assert cfg.custom_hooks[0].ignore_index == 255
    assert cfg.custom_imports.imports == ['fixnorm_mm', 'fixnorm_mm.segmentation']
    if alpha is None:
        assert 'classifier_cfg' not in head
        assert cfg.optim_wrapper.type == 'OptimWrapper'
    else:
        assert head.classifier_cfg == dict(type='FixNormConv2d', alpha=alpha)
        assert cfg.optim_wrapper.type == 'OptimWrapper'
        assert cfg.optim_wrapper.constructor == 'NormControlOptimWrapperConstructor'
        assert cfg.optim_wrapper.norm_control.type == 'FixNorm'


def test_config_file_and_package_scope_give_the_same_experiment(table3):
    direct = Config.fromfile(osp.join(CONFIG_DIR, FIXNORM))  # tools/train.py's way

    def plain(d):  # mmengine tags dicts with the scope they came from
        if isinstance(d, dict):
            return {k: plain(v) for k, v in d.items() if k != '_scope_'}
        if isinstance(d, (list, tuple)):
            return [plain(v) for v in d]
        return d
    for key in ('model', 'optim_wrapper', 'param_scheduler', 'train_dataloader',
                'custom_hooks', 'train_cfg'):
        assert plain(direct[key]) == plain(table3[FIXNORM][key]), key


def test_user_config_overrides_ours(tmp_path):
    cfg = user_config(tmp_path, FIXNORM_COS,
                      "optim_wrapper = dict(optimizer=dict(lr=0.05))\n"
                      "model = dict(decode_head=dict(classifier_cfg=dict(alpha=2.0)))\n")
    assert cfg.optim_wrapper.optimizer.lr == 0.05
    assert cfg.optim_wrapper.optimizer.weight_decay == 0
    assert cfg.model.decode_head.classifier_cfg == dict(type='FixNormConv2d', alpha=2.0)
    assert cfg.param_scheduler[0].type == 'CosineAnnealingLR'


# ---------------------------------------------------------------- real runners

@pytest.fixture(scope='module')
def cityscapes(tmp_path_factory):
    return make_cityscapes_dataset(str(tmp_path_factory.mktemp('cityscapes')),
                                   num_train=4, num_val=2, height=64, width=128)


def test_generated_dataset_has_the_cityscapes_layout(cityscapes):
    imgs = sorted(glob.glob(osp.join(cityscapes.root, 'leftImg8bit', 'train', '*',
                                     '*_leftImg8bit.png')))
    segs = sorted(glob.glob(osp.join(cityscapes.root, 'gtFine', 'train', '*',
                                     '*_gtFine_labelTrainIds.png')))
    assert len(imgs) == len(segs) == 4
    assert {osp.basename(osp.dirname(p)) for p in imgs} == {'aachen', 'bremen'}
    seg = cv2.imread(segs[0], cv2.IMREAD_UNCHANGED)
    assert seg.shape == (64, 128) and seg.dtype == 'uint8'
    assert set(seg.flat) <= set(range(19)) | {IGNORE_INDEX}
    assert IGNORE_INDEX in seg and len(set(seg.flat)) >= 6
    assert cv2.imread(imgs[0]).shape == (64, 128, 3)


class Recorder(Hook):
    """Records, after every iteration, the fixed set's global norm and an
    independent MCBR (Eq. 9) of the pixel classifier."""
    priority = 'LOWEST'  # after the optim wrapper's rescale and MCBRHook

    def __init__(self):
        self.norms, self.mcbr, self.feature_sizes, self.label_sizes = [], [], [], []

    def before_train(self, runner):
        model = runner.model
        self.initial = {n: p.detach().norm().item() for n, p in model.named_parameters()}
        self.initial_cls = model.decode_head.conv_seg.weight.detach().clone()
        model.decode_head.conv_seg.register_forward_hook(self._features)
        model.data_preprocessor.register_forward_hook(self._samples)

    def _features(self, module, inputs, output):
        if module.training:
            # the batch and the weight it was classified with (the step then changes it)
            self.x, self.w = inputs[0].detach(), module.weight.detach().clone()

    def _samples(self, module, inputs, output):
        if module.training:
            self.labels = torch.stack([s.gt_sem_seg.data for s in output['data_samples']])

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        ctrl = getattr(runner.optim_wrapper, 'norm_control', None)
        if ctrl is not None:
            fixed = ctrl.selection.groups['default']
            self.norms.append(math.sqrt(sum(p.detach().norm().item() ** 2 for p in fixed.values())))
        self.feature_sizes.append(tuple(self.x.shape[-2:]))
        self.label_sizes.append(tuple(self.labels.shape[-2:]))
        self.mcbr.append(naive_mcbr(self.x, self.w, self.labels))


def naive_mcbr(x, weight, labels):
    """Eq. 9 term by term: labels resized to the features' resolution, each
    pixel's sum over j != y of cos(x, W_j - W_y), pixels labelled 255 left out."""
    y = F.interpolate(labels.float(), size=x.shape[-2:], mode='nearest').long().flatten()
    feats = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    keep = y != IGNORE_INDEX
    feats, y = feats[keep].double(), y[keep]
    w = weight.reshape(weight.shape[0], -1).double()
    diff = w[None, :, :] - w[y][:, None, :]                       # (N, C, D), zero at j = y
    cos = F.cosine_similarity(feats[:, None, :], diff, dim=-1)    # 0 where diff = 0
    return (cos.sum(1) / (w.shape[0] - 1)).mean().item()


def history(runner, key):
    return list(runner.message_hub.get_scalar(key).data[0])


@pytest.mark.parametrize('name', list(TABLE3))
def test_runner_trains_and_evaluates_each_table3_row(tmp_path, cityscapes, table3, name):
    lr, wd, _, alpha = TABLE3[name]
    src = table3[name]
    original = copy.deepcopy(src.to_dict())
    max_iters = 2
    cfg = shrink_cityscapes_config(src, cityscapes, str(tmp_path / 'work'), max_iters=max_iters)
    assert src.to_dict() == original  # the shrinker returns a copy
    assert cfg.crop_size == (65, 65) and cfg.param_scheduler[0].end == max_iters
    # ResNet-18 with 8 base channels, still dilated to output stride 8
    bb = cfg.model.backbone
    assert (bb.type, bb.depth, bb.base_channels) == ('ResNetV1c', 18, 8)
    assert tuple(bb.strides) == (1, 2, 1, 1) and tuple(bb.dilations) == (1, 1, 2, 4)
    assert (cfg.model.decode_head.in_channels, cfg.model.auxiliary_head.in_channels) == (64, 32)
    assert (cfg.model.decode_head.get('classifier_cfg')
            == src.model.decode_head.get('classifier_cfg'))
    assert tuple(cfg.model.test_cfg.stride) == (43, 43)  # 769 / 513, kept
    assert cfg.optim_wrapper == src.optim_wrapper
    cfg.experiment_name = f'seg_{uuid.uuid4().hex[:8]}'  # a message hub of its own
    cfg.default_hooks.checkpoint = None  # saves time; checkpoints are not tested here
    runner = Runner.from_cfg(cfg)
    rec = Recorder()
    runner.register_hook(rec)
    runner.train()
    hub = runner.message_hub

    # evaluated with mmseg's IoUMetric on the generated val split
    assert type(runner.val_evaluator.metrics[0]).__name__ == 'IoUMetric'
    miou = hub.get_scalar('val/mIoU').current()
    assert 0.0 <= miou <= 100.0 and not math.isnan(miou)

    # odd crops: 65 -> ceil(65 / 8) = 9 at output stride 8, labels padded to 65
    assert rec.feature_sizes == [(9, 9)] * max_iters
    assert rec.label_sizes == [(65, 65)] * max_iters

    lrs = history(runner, 'train/lr')
    assert lrs[0] == pytest.approx(lr) and lrs[-1] < lrs[0]
    for group in runner.optim_wrapper.optimizer.param_groups:
        assert group['weight_decay'] == wd

    # MCBR of the pixel classifier, per pixel against the resized labels,
    # ignore index left out: logged every iteration and equal to Eq. 9
    logged = history(runner, 'train/fixnorm/mcbr')
    assert len(logged) == max_iters
    for got, want in zip(logged, rec.mcbr):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert all(-1.0 <= v <= 1.0 for v in logged)

    cls = runner.model.decode_head.conv_seg
    changed = (cls.weight.detach() - rec.initial_cls).abs().max().item()
    assert changed > 0
    if alpha is None:
        assert type(cls) is torch.nn.Conv2d
        assert history(runner, 'train/fixnorm/weight_norm')[-1] == pytest.approx(
            cls.weight.norm().item(), rel=1e-5)
        return

    # FixNorm rows: FixNorm-Conv classifier with g logged, the fixed set's norm
    # constant (Algo 1) while single tensors' norms move
    assert isinstance(cls, FixNormConv2d) and cls.alpha == alpha and cls.out_channels == 19
    gs = history(runner, 'train/fixnorm/g')
    assert len(gs) == max_iters and gs[-1] == pytest.approx(cls.g.item(), rel=1e-6)
    ctrl = runner.optim_wrapper.norm_control
    fixed = ctrl.selection.groups['default']
    reference = math.sqrt(sum(rec.initial[n] ** 2 for n in fixed))
    assert ctrl.fixer.reference_norms['default'].item() == pytest.approx(reference, rel=1e-6)
    assert rec.norms == pytest.approx([reference] * max_iters, rel=1e-5)
    assert history(runner, 'train/fixnorm/norm_default') == pytest.approx(
        [reference] * max_iters, rel=1e-5)
    moved = max(abs(p.detach().norm().item() - rec.initial[n]) / rec.initial[n]
                for n, p in fixed.items())
    assert moved > 1e-4
    # the startup table: the classifier is fixed, convs no norm follows are left out
    assert ctrl.selection.reasons['decode_head.conv_seg.weight'] == 'FixNorm layer'
    assert ctrl.selection.reasons['decode_head.fusion.conv.weight'].startswith('followed by')
    left_out = {n: why for n, _, why in ctrl.selection.excluded}
    for n in ('decode_head.object_context.value_project.weight',
              'decode_head.object_context.out_project.weight',
              'auxiliary_head.conv_seg.weight'):
        assert left_out[n] == 'not followed by a normalization'
