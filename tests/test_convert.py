"""FixNorm for any config (fixnorm_mm/convert.py): the FixNormModel builder
converts the named final layer to FixNorm-FC/Conv and the convs no
normalization follows to WN, at build time, so that a stock upstream config
trains with FixNorm after a few added lines."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner
from torch import nn

import fixnorm_mm  # noqa: F401
from fixnorm_mm.convert import convert_to_fixnorm
from fixnorm_mm.fold import fold_checkpoint, plain_model_cfg
from fixnorm_mm.layers import FixNormConv2d, FixNormLinear, WNConv2d, WNLinear
import rank_dump  # noqa: F401  (registers RankDumpHook)


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
    assert isinstance(model.decode_head.conv_seg, FixNormConv2d)
    assert model.decode_head.conv_seg.cap == pytest.approx(19 ** 0.5)
    # every ASPP conv feeds a BN; the auxiliary head does not run in the traced
    # forward (mode='tensor' runs the decode head only) and stays plain
    assert not any(isinstance(m, (WNConv2d, WNLinear)) for m in model.modules())
    assert type(model.auxiliary_head.conv_seg) is nn.Conv2d
    # the converted model keeps the upstream state_dict keys, plus one g per layer
    init_default_scope('mmseg')
    plain = MODELS.build(plain_model_cfg(cfg.model))
    assert type(plain.decode_head.conv_seg) is nn.Conv2d
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {'decode_head.conv_seg.g'}
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

    fixer = runner.optim_wrapper.fixnorm.fixer
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
