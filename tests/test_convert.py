"""FixNorm for any config (fixnorm_mm/convert.py, fixnorm_mm/tracing/): the
FixNormModel builder converts the final layers (named, or found in the heads
with final_layer='auto') to FixNorm-FC/Conv and the convs/FCs no
normalization follows in the model's own training loss to WN, at build
time, so that a stock upstream config trains with FixNorm after a few added
lines."""
import os.path as osp
import re
import runpy
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModule
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner
from torch import nn

import fixnorm_mm  # noqa: F401
from fixnorm_mm.convert import build_and_convert, convert_to_fixnorm
from fixnorm_mm.fold import fold_checkpoint, plain_model_cfg
from fixnorm_mm.layers import FixNormConv2d, FixNormLinear, WNConv2d, WNLinear
import rank_dump  # noqa: F401  (registers RankDumpHook)
from fixnorm_mm.testing.common import set_everywhere
from fixnorm_mm.testing.toy import ToyNet


class Net(nn.Module):
    """stem conv->BN, a conv->frozen BN, an un-normalized conv, a conv->GN,
    a 1x1 conv classifier, and an FC classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.frozen_conv = nn.Conv2d(8, 8, 3, padding=1)
        self.frozen_bn = nn.BatchNorm2d(8).eval()
        self.plain = nn.Conv2d(8, 8, 1)
        self.gn_conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(2, 8)
        self.seg = nn.Conv2d(8, 5, 1)
        self.fc = nn.Linear(8, 4)

    def train(self, mode=True):
        super().train(mode)
        self.frozen_bn.eval()  # like mmdet's norm_eval=True
        return self

    def forward(self, x):
        x = self.plain(self.frozen_bn(self.frozen_conv(self.bn(self.stem(x)).relu())).relu())
        x = self.gn(self.gn_conv(x.relu())).relu()
        return self.seg(x), self.fc(x.mean((2, 3)))


def test_convert_final_layers_and_unnormalized_convs():
    model = Net()
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    want = model(x)
    done = convert_to_fixnorm(model, ['seg', 'fc'], alpha=100.0)
    assert done == {'seg': 'FixNormConv2d', 'fc': 'FixNormLinear', 'plain': 'WNConv2d'}
    assert isinstance(model.seg, FixNormConv2d) and model.seg.cap == pytest.approx(100 * 5 ** 0.5)
    assert isinstance(model.fc, FixNormLinear) and model.fc.cap == pytest.approx(100 * 2.0)
    # followed by a BN using batch statistics, by GN, or by a frozen BN: stays plain
    for name in ('stem', 'gn_conv', 'frozen_conv'):
        assert type(getattr(model, name)) is nn.Conv2d, name
    assert model.frozen_bn.training is False
    # g = ||W|| (below the cap): the converted model computes the same function
    got = model(x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the weights were carried over
    assert model.seg.weight.requires_grad


def test_convert_with_patterns_and_exclude():
    model = Net()
    done = convert_to_fixnorm(model, 'fc', weight_norm=['plain', 'seg'])
    assert done == {'fc': 'FixNormLinear', 'plain': 'WNConv2d', 'seg': 'WNConv2d'}
    model = Net()
    done = convert_to_fixnorm(model, 'fc', weight_norm_exclude=['pla*'])
    assert done == {'fc': 'FixNormLinear', 'seg': 'WNConv2d'}  # no norm follows seg
    model = Net()
    assert convert_to_fixnorm(model, 'seg', weight_norm=False) == {'seg': 'FixNormConv2d'}
    assert isinstance(Net().fc, nn.Linear) and not isinstance(model.fc, WNLinear)



def test_a_shared_layer_is_converted_once_and_stays_shared():
    """One Linear held at several places (Deformable DETR's cls_branches
    without box refinement): named_modules() lists it once; every reference
    becomes the one converted layer, and its parameters stay one set."""
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            fc, reg = nn.Linear(4, 3), nn.Linear(4, 2)
            self.cls_branches = nn.ModuleList([fc, fc, fc])
            self.reg_branches = nn.ModuleList([reg, reg, reg])
            self.also = fc

        def forward(self, x):
            return [b(x) for b in self.cls_branches] + [b(x) for b in self.reg_branches]

    model = Shared()
    x = torch.randn(2, 4)
    want = model(x)
    done = convert_to_fixnorm(model, 'cls_branches.0', weight_norm=['reg_branches.*'])
    assert done == {'cls_branches.0': 'FixNormLinear', 'reg_branches.0': 'WNLinear'}
    assert all(b is model.cls_branches[0] for b in (*model.cls_branches, model.also))
    assert all(b is model.reg_branches[0] for b in model.reg_branches)
    assert isinstance(model.also, FixNormLinear) and isinstance(model.reg_branches[2], WNLinear)
    assert len(list(model.parameters())) == 3 + 3  # weight, bias, g of each
    for a, b in zip(model(x), want):
        torch.testing.assert_close(a, b)



class XavierHost(BaseModule):
    """Draws W after its layers' init_weights, as mmdet's DIIHead does."""

    def __init__(self):
        super().__init__()
        self.fc = FixNormLinear(4, 3, alpha=10.0)

    def init_weights(self):
        super().init_weights()
        nn.init.xavier_uniform_(self.fc.weight)


def test_converted_init_weights_follows_deepcopy_and_pickle():
    """FixNormModel's init_weights (the model's own, then g where the layers'
    rules put it) acts on the copy it belongs to."""
    import copy
    import pickle
    from fixnorm_mm.convert import _InitWeights

    model = XavierHost()
    model.init_weights = _InitWeights(model)
    w = model.fc.weight.detach().clone()
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other.init_weights.model is other
        other.init_weights()
        assert not torch.equal(other.fc.weight, w)
        assert float(other.fc.g.detach()) == pytest.approx(float(other.fc.weight.detach().norm()))
    assert torch.equal(model.fc.weight, w)  # the original was not initialised through them


ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FCOS = osp.join(ROOT, 'configs/convert/fcos_r50-caffe_fpn_gn-head_fixnorm_1x_coco.py')
DEEPLABV3 = osp.join(ROOT, 'configs/convert/'
                     'deeplabv3_r50-d8_fixnorm_4xb2-40k_cityscapes-512x1024.py')


def _tiny_deeplabv3():
    cfg = Config.fromfile(DEEPLABV3)
    assert cfg.model.type == 'FixNormModel' and cfg.model.model_type == 'EncoderDecoder'
    cfg.model.pretrained = None
    cfg.model.backbone.update(depth=18, base_channels=8, stem_channels=8)
    cfg.model.decode_head.update(in_channels=64, channels=16, dilations=(1, 2))
    cfg.model.auxiliary_head.update(in_channels=32, channels=8)
    return cfg


def test_deeplabv3_builds_converted_with_its_own_class():
    cfg = _tiny_deeplabv3()
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'EncoderDecoder'
    # final_layer='auto': the pixel classifier of the decode head and of the
    # auxiliary head (which runs only in the loss path, traced here)
    for head in (model.decode_head, model.auxiliary_head):
        assert isinstance(head.conv_seg, FixNormConv2d)
        assert head.conv_seg.cap == pytest.approx(19 ** 0.5)
    # every other conv of the ASPP and FCN heads feeds a BN
    assert not any(isinstance(m, (WNConv2d, WNLinear)) for m in model.modules())
    # the converted model keeps the upstream state_dict keys, plus one g per layer
    init_default_scope('mmseg')
    plain = MODELS.build(plain_model_cfg(cfg.model))
    assert type(plain.decode_head.conv_seg) is nn.Conv2d
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {'decode_head.conv_seg.g', 'auxiliary_head.conv_seg.g'}
    assert set(plain.state_dict()) <= set(model.state_dict())


def test_stock_fcos_config_trains_with_a_constant_fixed_set_norm(tmp_path):
    """mmdet's FCOS (which no provided config uses) + the documented lines
    (configs/convert/fcos_*.py), trained, then folded back into stock FCOS."""
    from fixnorm_mm.testing.detection import make_coco_dataset, shrink_coco_config
    data = make_coco_dataset(str(tmp_path / 'coco'), num_train=2, num_val=1, image_size=64)
    cfg = Config.fromfile(FCOS)
    assert cfg.model.type == 'FixNormModel' and cfg.model.model_type == 'FCOS'
    cfg = shrink_coco_config(cfg, data, work_dir=str(tmp_path / 'work'), max_iters=3,
                             width=32)  # GN(32) in the FCOS head
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.custom_hooks = [dict(type='RankDumpHook', out_dir=str(tmp_path))]
    runner = Runner.from_cfg(cfg)
    model = runner.model
    assert type(model).__name__ == 'FCOS'
    assert isinstance(model.bbox_head.conv_cls, FixNormConv2d)
    assert model.bbox_head.conv_cls.cap == pytest.approx(0.5 * 3 ** 0.5)  # 3 toy classes
    assert isinstance(model.neck.fpn_convs[0].conv, WNConv2d)  # no norm follows FPN convs
    assert isinstance(model.bbox_head.conv_reg, WNConv2d)
    assert type(model.bbox_head.cls_convs[0].conv) is nn.Conv2d  # GroupNorm follows
    w0 = model.neck.fpn_convs[0].conv.weight.detach().clone()
    runner.train()

    fixer = runner.optim_wrapper.norm_control.fixer
    names = fixer.names['default']
    assert 'bbox_head.conv_cls.weight' in names
    assert 'neck.fpn_convs.0.conv.weight' in names
    assert 'bbox_head.cls_convs.0.conv.weight' in names  # followed by GroupNorm
    assert not any(n.startswith('backbone.') for n in names)  # frozen BN (norm_eval)
    hook = next(h for h in runner.hooks if type(h).__name__ == 'RankDumpHook')
    assert len(hook.norms) == 3
    ref = fixer.reference_norms['default']
    for norms in hook.norms:  # after every step, the global norm is ||W_0||
        torch.testing.assert_close(norms['default'], ref, rtol=1e-6, atol=0)
    assert not torch.equal(model.neck.fpn_convs[0].conv.weight, w0)  # it did train
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert osp.exists(tmp_path / 'work' / 'iter_3.pth')
    # the trained checkpoint folds into one of the stock FCOS config (derived
    # from the FixNormModel config: model_type back in type)
    report = fold_checkpoint(cfg, str(tmp_path / 'work' / 'iter_3.pth'),
                             str(tmp_path / 'plain.pth'), input_shape=(2, 3, 64, 64))
    assert report['plain_checked'] and report['difference'] <= 1e-5
    assert report['folded']['bbox_head.conv_cls'] == 'FixNormConv2d'
    plain = MODELS.build(plain_model_cfg(cfg.model))
    assert type(plain.bbox_head.conv_cls) is nn.Conv2d
    plain.load_state_dict(torch.load(tmp_path / 'plain.pth', weights_only=True)['state_dict'],
                          strict=True)


# ---- layers no norm follows, refusals, unknown models -------------------------------

class MLP(nn.Module):
    """fc1 -> BN1d (scale-invariant), fc2 (no norm follows), fc classifier."""

    def __init__(self):
        super().__init__()
        self.fc1, self.bn = nn.Linear(6, 8), nn.BatchNorm1d(8)
        self.fc2, self.fc = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.fc2(self.bn(self.fc1(x)).relu()).relu())


class PreNormBlock(nn.Module):
    """A pre-norm transformer block: LayerNorm before each linear layer,
    residual sums into the next norm; no layer feeds a norm."""

    def __init__(self, d=8):
        super().__init__()
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 4)

    def forward(self, x):
        q, k, v = self.qkv(self.ln1(x)).chunk(3, -1)
        x = x + self.proj(torch.softmax(q @ k.transpose(-1, -2), -1) @ v)
        x = x + self.fc2(self.fc1(self.ln2(x)).relu())
        return self.head(self.norm(x).mean(1))


def test_fc_layers_no_norm_follows_become_wn():
    model = MLP()
    x = torch.randn(4, 6)
    want = model.eval()(x)
    done = convert_to_fixnorm(model, 'fc', trace_input_shape=(6,))
    assert done == {'fc': 'FixNormLinear', 'fc2': 'WNLinear'}  # fc1 feeds BN1d
    assert type(model.fc1) is nn.Linear
    torch.testing.assert_close(model.eval()(x), want, rtol=1e-5, atol=1e-6)


def test_tracing_leaves_the_random_streams_alone():
    from fixnorm_mm.tracing import trace_tensor_forward
    model = Net()
    torch.manual_seed(3)
    want = torch.rand(3)
    torch.manual_seed(3)
    trace = trace_tensor_forward(model, (3, 8, 8))  # a random batch
    torch.testing.assert_close(torch.rand(3), want)
    assert set(trace.followed) == {'stem', 'frozen_conv', 'gn_conv'}
    assert trace.followed['frozen_conv'] == ('frozen_bn', 'BatchNorm2d', False)


def test_model_without_a_scale_invariant_weight_is_refused():
    with pytest.raises(ValueError, match=r'no conv/linear layer of PreNormBlock feeds a '
                                         r'normalization .*pre-norm transformer.*FixNorm does '
                                         r"not apply.*weight_norm=\['"):
        convert_to_fixnorm(PreNormBlock(), 'head', trace_input_shape=(5, 8))
    # what would apply: WN on chosen layers
    model = PreNormBlock()
    done = convert_to_fixnorm(model, 'head', weight_norm=['fc1', 'fc2'])
    assert done == {'head': 'FixNormLinear', 'fc1': 'WNLinear', 'fc2': 'WNLinear'}


def test_openmmlab_model_that_no_task_knows():
    """A BaseModel outside mmdet/mmseg/mmpretrain: no synthetic batch for it;
    trace_input_shape traces its tensor forward instead."""
    with pytest.raises(ValueError, match=r'no task of TRACING_TASKS \(.*detection.*\) knows '
                                         r'ToyNet\. Set trace_input_shape=\(C, H, W\).*'
                                         r'weight_norm=\[fnmatch patterns\]'):
        convert_to_fixnorm(ToyNet(fc_type='fc'), 'head')
    with pytest.raises(ValueError, match=r"final_layer='auto' finds .* ToyNet is none "
                                         r'of them: name them'):
        convert_to_fixnorm(ToyNet(fc_type='fc'), 'auto', trace_input_shape=(3, 8, 8))
    model = ToyNet(fc_type='fc')
    done = convert_to_fixnorm(model, 'head', trace_input_shape=(3, 8, 8))
    assert done == {'head': 'FixNormLinear', 'backbone.6': 'WNConv2d'}


# ---- two-stage, cascade and mask heads (tiny versions of the stock configs) ----------

def _tiny_mmdet(name, **fixnorm):
    """The FixNormModel config of a stock mmdet config, shrunk (ResNet-18 with
    8 base channels, 16-channel neck and heads, 3 classes)."""
    from fixnorm_mm.testing.detection import _shrink_model
    from fixnorm_mm.zoo import fixnorm_model_cfg, load_config
    cfg = load_config(name)
    init_default_scope('mmdet')
    model = fixnorm_model_cfg(cfg, **fixnorm)
    _shrink_model(model, num_classes=3, tiny=True, width=16, score_thr=0.0)
    model.pop('type')
    return model


def test_faster_rcnn_is_traced_through_its_loss():
    """RPN and RoI head run only in the loss path: traced there, their convs and
    FCs become WN, fc_cls FixNorm-FC; the frozen-BN backbone stays plain and
    the log says why and how to change it."""
    cfg = _tiny_mmdet('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    model, conversion = build_and_convert(**cfg)
    head = model.roi_head.bbox_head
    assert conversion.final_rules == {'roi_head.bbox_head.fc_cls': (
        'class scores of Shared2FCBBoxHead (4 outputs: 3 classes + background)')}
    assert isinstance(head.fc_cls, FixNormLinear) and head.fc_cls.cap == pytest.approx(2.0)
    assert all(isinstance(m, WNLinear) for m in (*head.shared_fcs, head.fc_reg))
    rpn = model.rpn_head
    assert all(isinstance(m, WNConv2d) for m in (rpn.rpn_conv, rpn.rpn_cls, rpn.rpn_reg))
    assert all(isinstance(m.conv, WNConv2d) for m in (*model.neck.lateral_convs,
                                                       *model.neck.fpn_convs))
    assert not any(isinstance(m, (WNConv2d, WNLinear, FixNormConv2d))
                   for m in model.backbone.modules())
    assert len(conversion.converted) == 1 + 14
    log = conversion.format()
    assert 'the detection loss of FasterRCNN on a synthetic batch of 2 images 128x128 ' \
           'with boxes and labels' in log
    assert re.search(r'15 conv\(s\) feed BatchNorm2d in eval mode \(frozen statistics', log)
    assert 'FixNormModel(backbone_norm_eval=False) lets the backbone\'s BN train' in log
    assert re.search(r'5 layer\(s\) do not train \(requires_grad=False.*backbone.conv1, '
                     r'backbone.layer1.0.conv1', log)


def test_backbone_norm_eval_brings_the_backbone_convs_in():
    cfg = _tiny_mmdet('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
                      backbone_norm_eval=False)
    backbone_cfg = cfg['backbone']
    model, conversion = build_and_convert(**cfg)
    assert backbone_cfg['norm_eval'] is True  # the caller's config is not changed
    assert model.backbone.norm_eval is False
    model.train()
    assert model.backbone.layer2[0].bn1.training and not model.backbone.layer1[0].bn1.training
    assert conversion.frozen_statistics == [  # frozen_stages=1: stem and stage 1
        (n, 'BatchNorm2d') for n in conversion.frozen_weights]
    assert conversion.frozen_weights[:2] == ['backbone.conv1', 'backbone.layer1.0.conv1']
    log = conversion.format()
    assert 'backbone.norm_eval: True in the config -> False' in log
    assert 'backbone.frozen_stages=1 still keeps the stem and the first 1 stage(s) frozen' in log
    # the fixed set then takes the backbone's stages 2-4
    from fixnorm_mm.norm_fixing import select_fixed_params
    from fixnorm_mm.tracing import find_task, trace_loss
    fixed = select_fixed_params(model, trace_loss(model, find_task(model)).followed).reasons
    assert fixed['backbone.layer2.0.conv1.weight'] == 'followed by BatchNorm2d'
    assert 'backbone.layer1.0.conv1.weight' not in fixed

    with pytest.raises(ValueError, match="backbone_norm_eval must be None .* got 'no'"):
        build_and_convert(**dict(cfg, backbone_norm_eval='no'))


def test_cascade_and_mask_heads():
    cfg = _tiny_mmdet('mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py')
    model, conversion = build_and_convert(**cfg)
    assert conversion.final_layers == [f'roi_head.bbox_head.{i}.fc_cls' for i in range(3)]
    for i in range(3):
        assert isinstance(model.roi_head.bbox_head[i].fc_cls, FixNormLinear)
        assert isinstance(model.roi_head.bbox_head[i].shared_fcs[1], WNLinear)
        mask = model.roi_head.mask_head[i]
        # mask logits: per-pixel scores of the class the box head chose: WN, no cap
        assert isinstance(mask.conv_logits, WNConv2d)
        assert isinstance(mask.convs[0].conv, WNConv2d)
        assert (f'roi_head.mask_head.{i}.upsample', 'ConvTranspose2d') in \
            conversion.not_convertible
    assert 'images 128x128 with boxes, labels and masks' in conversion.format()


# ---- the three-line user config through tools/train.py ------------------------------

def test_three_line_faster_rcnn_config_trains_through_tools_train(tmp_path, monkeypatch):
    from fixnorm_mm.testing.detection import make_coco_dataset, shrink_coco_config
    user = tmp_path / 'faster_rcnn_fixnorm.py'
    user.write_text(
        "_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'\n"
        "model = dict(type='FixNormModel', model_type=_base_.model.type, final_layer='auto')\n"
        "optim_wrapper = dict(constructor='NormControlOptimWrapperConstructor', "
        "norm_control=dict(type='FixNorm'))\n")
    data = make_coco_dataset(str(tmp_path / 'coco'), num_train=2, num_val=1, image_size=64)
    cfg = shrink_coco_config(Config.fromfile(str(user)), data, str(tmp_path / 'work'),
                             max_iters=3, width=16)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint.interval = 1
    cfg.dump(str(tmp_path / 'shrunk.py'))
    monkeypatch.setattr(sys, 'argv', ['train.py', str(tmp_path / 'shrunk.py')])
    runpy.run_path(osp.join(ROOT, 'tools', 'train.py'), run_name='__main__')

    ckpts = [torch.load(tmp_path / 'work' / f'iter_{i}.pth', map_location='cpu',
                        weights_only=False) for i in (1, 2, 3)]
    state = ckpts[-1]['state_dict']
    assert 'roi_head.bbox_head.fc_cls.g' in state  # FixNorm-FC
    assert state['roi_head.bbox_head.shared_fcs.0.g'].shape == (32, 1)  # WN FC (per unit)
    for ckpt in ckpts:  # after every step, the fixed set's global norm is ||W_0||
        fixnorm = ckpt['optimizer']['fixnorm']['groups']['default']
        names = fixnorm['params']
        assert 'roi_head.bbox_head.fc_cls.weight' in names
        assert 'rpn_head.rpn_conv.weight' in names
        assert not any(n.startswith('backbone.') for n in names)  # frozen BN
        norm = torch.stack([ckpt['state_dict'][n].float().norm() for n in names]).norm()
        torch.testing.assert_close(norm, fixnorm['reference_norm'], rtol=1e-6, atol=0)
    w = 'roi_head.bbox_head.shared_fcs.0.weight'
    assert not torch.equal(ckpts[0]['state_dict'][w], state[w])  # it trained
    # weight decay: taken over on the fixed set, the stock config's 1e-4 everywhere else
    groups = ckpts[-1]['optimizer']['param_groups']
    assert {g['weight_decay'] for g in groups} == {0.0, 1e-4}
    assert sum(g['weight_decay'] == 0.0 for g in groups) == len(names)


# ---- query-based detectors and YOLOv3 (small versions of the stock configs) --------

def _small_query_detector(name):
    """The FixNormModel config of a stock mmdet config, small: ResNet-18 with 8
    base channels, 3 classes, 2 encoder and 2 decoder layers, 100 queries;
    Sparse R-CNN with 2 stages."""
    from fixnorm_mm.zoo import fixnorm_model_cfg, load_config
    cfg = load_config(name)
    init_default_scope('mmdet')
    model = fixnorm_model_cfg(cfg)
    model.pop('type')

    set_everywhere(model, dict(num_classes=3))
    backbone = model['backbone']
    backbone.update(depth=18, base_channels=8, init_cfg=None)
    model['neck']['in_channels'] = [8 * 2 ** i for i in backbone['out_indices']]
    for part in ('encoder', 'decoder'):
        if part in model:
            model[part]['num_layers'] = 2
    if 'num_queries' in model:
        model['num_queries'] = 100
    roi = model.get('roi_head')
    if roi is not None and 'num_stages' in roi:  # Sparse R-CNN
        roi.update(num_stages=2, stage_loss_weights=roi['stage_loss_weights'][:2],
                   bbox_head=roi['bbox_head'][:2])
        model['train_cfg']['rcnn'] = model['train_cfg']['rcnn'][:2]
    return model


QUERY_DETECTORS = {
    # config: (the final layers 'auto' must choose, their outputs: 3 classes
    # (+ no-object with DETR's softmax), the names of one shared Linear)
    'detr/detr_r50_8xb2-150e_coco.py': (['bbox_head.fc_cls'], 4, []),
    # without box refinement one Linear serves both decoder layers
    'deformable_detr/deformable-detr_r50_16xb2-50e_coco.py': (
        ['bbox_head.cls_branches.0'], 3,
        ['bbox_head.cls_branches.0', 'bbox_head.cls_branches.1']),
    # with refinement one per decoder layer; the encoder's proposals (index 2)
    # are class-agnostic in Deformable DETR: not a classifier
    'deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py': (
        ['bbox_head.cls_branches.0', 'bbox_head.cls_branches.1'], 3, []),
    # DINO ranks and trains its encoder's proposals on the class scores
    'dino/dino-4scale_r50_8xb2-12e_coco.py': (
        ['bbox_head.cls_branches.0', 'bbox_head.cls_branches.1', 'bbox_head.cls_branches.2'],
        3, []),
    'sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py': (
        ['roi_head.bbox_head.0.fc_cls', 'roi_head.bbox_head.1.fc_cls'], 3, []),
}


@pytest.mark.parametrize('config', list(QUERY_DETECTORS))
def test_query_based_detectors_final_layers_and_init(config):
    """final_layer='auto' takes exactly the class logits of DETR-like heads
    (fc_cls, cls_branches.<i>) and of Sparse R-CNN's stages; they become
    FixNorm-FC with the cap of their class channels, keep the heads' bias
    prior, and after the model's init_weights g = ||W|| again."""
    from mmengine.model import bias_init_with_prob
    from fixnorm_mm.layers.normalize import tensor_norm
    finals, outputs, shared = QUERY_DETECTORS[config]
    model, conversion = build_and_convert(**_small_query_detector('mmdet::' + config))
    assert conversion.final_layers == finals
    for name in finals:
        assert conversion.final_rules[name].startswith('class scores of ')
        layer = model.get_submodule(name)
        assert isinstance(layer, FixNormLinear), name
        assert layer.out_features == outputs and layer.cap == pytest.approx(outputs ** 0.5)
    # nothing else is FixNorm-FC, and a shared Linear is replaced at every index
    assert {n for n, m in model.named_modules(remove_duplicate=False)
            if isinstance(m, FixNormLinear)} == set(finals) | set(shared)
    if shared:
        assert len({id(model.get_submodule(n)) for n in shared}) == 1
        weight = model.get_submodule(shared[0]).weight
        assert sum(p is weight for p in model.parameters()) == 1
        assert conversion.final_rules[shared[0]] == (
            'class scores of DeformableDETRHead (one Linear shared as cls_branches.0-1 by the 2 '
            'decoder layers; 3 outputs: 3 classes)')
    if 'refine-twostage' in config:  # the encoder's proposal scores: WN like other layers
        assert isinstance(model.bbox_head.cls_branches[2], WNLinear)

    model.init_weights()  # as the Runner does, after the conversion
    for name in finals:
        layer = model.get_submodule(name)
        torch.testing.assert_close(layer.g.detach(), tensor_norm(layer.weight, False))
        if outputs == 3:  # sigmoid focal loss: the prior-probability bias
            assert torch.all(layer.bias == bias_init_with_prob(0.01))
    for name, m in model.named_modules():
        if isinstance(m, WNLinear):  # no gain drawn like a weight (xavier over dim > 1)
            norm = tensor_norm(m.weight, True)
            assert bool((norm > 0).all()), name  # zero-initialised ones got a direction
            assert torch.equal(m.g.detach(), norm) or bool((m.g == 0).all()), name
    if 'deformable' in config:  # mmcv's deformable attention zeroes sampling_offsets
        offsets = model.encoder.layers[0].self_attn.sampling_offsets
        assert isinstance(offsets, WNLinear) and bool((offsets.g == 0).all())


def test_yolov3_is_refused_with_the_reason():
    """YOLOv3's output convs mix box, objectness and class channels: 'auto'
    refuses and says why and what to do; naming them converts them."""
    from fixnorm_mm.zoo import fixnorm_model_cfg, load_config
    cfg = load_config('mmdet::yolo/yolov3_d53_8xb8-320-273e_coco.py')
    init_default_scope('mmdet')
    model_cfg = fixnorm_model_cfg(cfg)
    convs = [f'bbox_head.convs_pred.{i}' for i in range(3)]
    with pytest.raises(ValueError, match=re.escape(
            "FixNormModel: final_layer='auto' does not apply to YOLOV3Head (bbox_head): each "
            f'of its output convs ({", ".join(convs)}) predicts, for each of its 3 anchors, 4 '
            'box offsets, 1 objectness score and 80 class scores (3 x 85 = 255 channels in '
            'one conv).') + r'.*would cap the box and objectness channels.*'
            + re.escape(f'set model.final_layer to these convs by name, final_layer={convs}')):
        MODELS.build(model_cfg)
    model = MODELS.build(plain_model_cfg(model_cfg))
    done = convert_to_fixnorm(model, convs, weight_norm=False)
    assert done == {n: 'FixNormConv2d' for n in convs}
