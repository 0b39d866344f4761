"""Export (tools/fold_fixnorm.py): FixNorm-FC/Conv and WN layers folded into the
plain upstream model, which loads the checkpoint strictly and computes the same
outputs, for a classifier, RetinaNet and the OCNet segmenter."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

import fixnorm_mm  # noqa: F401
from fixnorm_mm.fold import fold_fixnorm, folded_state_dict
from fixnorm_mm.layers import FixNormConv2d, FixNormLinear, WNConv2d, WNLinear

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FIXNORM = (FixNormLinear, FixNormConv2d)
WN = (WNLinear, WNConv2d)


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'fold_fixnorm_tool', osp.join(ROOT, 'tools', 'fold_fixnorm.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@torch.no_grad()
def as_if_trained(model: nn.Module, seed: int = 0) -> None:
    """Give every g a value that training could have produced: the FixNorm
    layers' g above their cap (min(g, cap) = cap is what must be folded), the
    WN gains scattered per output unit."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, FIXNORM):
            m.sync_gain()
            m.g.fill_(2.0 * m.cap)
        elif isinstance(m, WN):
            m.sync_gain()
            m.g.mul_(0.5 + torch.rand(m.g.shape, generator=gen))


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        out = model(x, mode='tensor')
    flat = []

    def visit(o):
        if isinstance(o, torch.Tensor):
            flat.append(o)
        elif isinstance(o, (list, tuple)):
            for v in o:
                visit(v)
    visit(out)
    return flat


def build(cfg):
    init_default_scope(cfg.get('default_scope', None))
    return MODELS.build(cfg.model)


def fold_and_check(tmp_path, fixnorm_cfg, plain_cfg, input_shape):
    """Build the FixNorm model, make it look trained, save it, fold it with the
    tool, load the result strictly into the plain config's model, compare."""
    model = build(fixnorm_cfg)
    model.init_weights()
    as_if_trained(model)
    n_fixnorm = sum(isinstance(m, FIXNORM) for m in model.modules())
    n_wn = sum(isinstance(m, WN) for m in model.modules())
    assert n_fixnorm >= 1
    ckpt = tmp_path / 'fixnorm.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=['a']))),
               ckpt)
    fixnorm_cfg.dump(str(tmp_path / 'fixnorm_cfg.py'))
    plain_cfg.dump(str(tmp_path / 'plain_cfg.py'))
    load_tool().main([str(tmp_path / 'fixnorm_cfg.py'), str(ckpt), str(tmp_path / 'plain.pth'),
                      '--plain-config', str(tmp_path / 'plain_cfg.py'),
                      '--input-shape', *map(str, input_shape)])

    folded = torch.load(tmp_path / 'plain.pth', weights_only=True)
    assert folded['meta']['dataset_meta'] == dict(classes=['a'])
    assert len(folded['meta']['fixnorm_folded']['layers']) == n_fixnorm + n_wn
    assert not any(k.endswith('.g') for k in folded['state_dict'])
    plain = build(plain_cfg)
    assert not any(isinstance(m, FIXNORM + WN) for m in plain.modules())
    result = plain.load_state_dict(folded['state_dict'], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(*input_shape)
    got, want = outputs(plain, x), outputs(model, x)
    assert len(got) == len(want) >= 1
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    return model, plain


def test_fold_layers_in_place_equal_outputs():
    model = nn.Sequential(WNConv2d(3, 6, 3, padding=1), nn.ReLU(),
                          FixNormConv2d(6, 5, 1, alpha=0.5), nn.Flatten(),
                          WNLinear(5 * 4 * 4, 7), FixNormLinear(7, 3, alpha=4.0, bias=False),
                          WNLinear(3, 2, per_output=False))  # WN-FC, Eq. 6
    as_if_trained(model)
    model[5].g.data.fill_(0.3 * model[5].cap)  # g below the cap here: min(g, cap) = g
    model[6].g.data.fill_(3.5)
    x = torch.randn(2, 3, 4, 4)
    want = model(x)
    state = folded_state_dict(model)
    folded = fold_fixnorm(model)
    assert folded == {'0': 'WNConv2d', '2': 'FixNormConv2d', '4': 'WNLinear',
                      '5': 'FixNormLinear', '6': 'WNLinear'}
    assert [type(m) for m in model] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.Flatten,
                                        nn.Linear, nn.Linear, nn.Linear]
    # Eq. 6: the folded WN-FC weight's (whole) norm is g
    assert float(model[6].weight.detach().norm()) == pytest.approx(3.5, rel=1e-6)
    assert model[5].bias is None
    torch.testing.assert_close(model(x), want, rtol=1e-6, atol=1e-6)
    assert state.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k
    # Eq. 29 / 10: the folded weight's norm is min(g, alpha * sqrt(C_out))
    assert float(model[2].weight.detach().norm()) == pytest.approx(0.5 * 5 ** 0.5, rel=1e-5)
    assert float(model[5].weight.detach().norm()) == pytest.approx(0.3 * 4.0 * 3 ** 0.5, rel=1e-5)


def _classifier(name):
    """A provided ImageNet config with a small ResNet-D of the same kind."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs/imagenet', name))
    cfg.model.backbone.update(depth=18, stem_channels=8, base_channels=8)
    cfg.model.head.update(in_channels=64, num_classes=10)
    return cfg


FIXNORM_RESNET = 'resnet50d_fixnorm_16xb64-120e_in1k.py'
PLAIN_RESNET = 'resnet50d_wd_16xb64-120e_in1k.py'


def test_fold_classifier(tmp_path):
    """FixNormClsHead (FixNorm-FC, Eq. 10) into mmpretrain's LinearClsHead."""
    model, plain = fold_and_check(tmp_path, _classifier(FIXNORM_RESNET),
                                  _classifier(PLAIN_RESNET), (2, 3, 32, 32))
    assert isinstance(model.head.fc, FixNormLinear)
    assert type(plain.head).__name__ == 'LinearClsHead'
    # Eq. 10 has no bias; the plain head's bias is zero in the folded checkpoint
    assert model.head.fc.bias is None
    folded = torch.load(tmp_path / 'plain.pth', weights_only=True)['state_dict']
    assert torch.equal(folded['head.fc.bias'], torch.zeros(10))


def test_fold_retinanet(tmp_path):
    from fixnorm_mm.testing.detection import make_coco_dataset, shrink_coco_config
    data = make_coco_dataset(str(tmp_path / 'coco'), num_train=1, num_val=1, image_size=64)
    fixnorm = shrink_coco_config(
        Config.fromfile(osp.join(ROOT, 'configs/coco/retinanet_r50_fpn_fixnorm_90k_coco.py')),
        data, work_dir=str(tmp_path))
    plain = shrink_coco_config(get_config('mmdet::retinanet/retinanet_r50_fpn_90k_coco.py'),
                               data, work_dir=str(tmp_path))
    model, plain_model = fold_and_check(tmp_path, fixnorm, plain, (1, 3, 64, 64))
    assert isinstance(model.bbox_head.retina_cls, FixNormConv2d)
    assert isinstance(model.neck.fpn_convs[0].conv, WNConv2d)
    assert type(plain_model.bbox_head).__name__ == 'RetinaHead'


def test_fold_ocnet(tmp_path):
    from fixnorm_mm.testing.segmentation import (make_cityscapes_dataset,
                                                 shrink_cityscapes_config)
    data = make_cityscapes_dataset(str(tmp_path / 'cs'), num_train=1, num_val=1)
    cfgs = [shrink_cityscapes_config(Config.fromfile(osp.join(ROOT, 'configs/cityscapes', f)),
                                     data, work_dir=str(tmp_path))
            for f in ('baseoc_r101-d8_fixnorm-tune_4xb2-40k_cityscapes-769x769.py',
                      'baseoc_r101-d8_4xb2-40k_cityscapes-769x769.py')]
    model, _ = fold_and_check(tmp_path, cfgs[0], cfgs[1], (1, 3, 33, 65))
    assert isinstance(model.decode_head.conv_seg, FixNormConv2d)


def test_fold_refuses_a_plain_config_that_does_not_fit(tmp_path):
    fixnorm, plain = _classifier(FIXNORM_RESNET), _classifier(PLAIN_RESNET)
    plain.model.head.num_classes = 11  # another head: the shapes differ
    with pytest.raises(ValueError, match='(?s)does not fit the plain model.*size mismatch'):
        fold_and_check(tmp_path, fixnorm, plain, (1, 3, 32, 32))
    plain.model.backbone.depth = 34  # more blocks: keys the folded checkpoint lacks
    plain.model.head.num_classes = 10
    with pytest.raises(ValueError, match=r'does not fit the plain model: missing keys '
                                         r"\['backbone.layer1.2"):
        fold_and_check(tmp_path, fixnorm, plain, (1, 3, 32, 32))
