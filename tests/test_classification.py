"""ImageNet / mmpretrain (paper Sec. 3, Tables 1, 2 and 5): the FixNorm head,
the backbones with EfficientNet's tricks, every config through a real Runner
on a generated ImageNet folder, and the models' size against Table 2."""
import copy
import glob
import math
import os.path as osp
import re

import pytest
import torch

pytest.importorskip('mmpretrain')

from mmengine.analysis import get_model_complexity_info  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmpretrain.models import EfficientNet, LinearClsHead, MobileNetV2  # noqa: E402
from mmpretrain.models.utils import SELayer  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402
from torch.nn.modules.conv import _ConvNd  # noqa: E402

import fixnorm_mm  # noqa: E402
import fixnorm_mm.classification  # noqa: E402,F401
from fixnorm_mm.classification import (EfficientNetWNSE, FixNormClsHead,  # noqa: E402
                                       MobileNetV2SE, ResNetV1dSE)
from fixnorm_mm.layers import FixNormLinear, WNConv2d  # noqa: E402
from fixnorm_mm.testing.classification import (IMAGENET_ITERS_PER_EPOCH,  # noqa: E402
                                               make_imagenet_dataset,
                                               shrink_imagenet_config)
from fixnorm_mm.testing.common import rescaled_schedulers  # noqa: E402

CONFIG_DIR = osp.join(osp.dirname(fixnorm_mm.__file__), '.mim', 'configs', 'imagenet')
FIXNORM, WD = 'fixnorm', 'wd'
# Tables 1, 2, 5: config -> (kind, lr, alpha or weight decay, epochs, paper top-1)
ROWS = {
    'resnet50d_fixnorm_16xb64-120e_in1k': (FIXNORM, 1.4, 0.5, 120, 78.62),
    'resnet50d_wd_16xb64-120e_in1k': (WD, 0.4, 1e-4, 120, 78.37),
    'resnet50d_bo-wd_16xb64-120e_in1k': (WD, 0.53, 8.6e-5, 120, 78.53),
    'resnet50d_fixnorm_16xb64-350e_in1k': (FIXNORM, 1.1, 0.5, 350, 79.29),
    'resnet50d_wd_16xb64-350e_in1k': (WD, 0.4, 1e-4, 350, 79.04),
    'resnet50d-tricks_fixnorm_16xb64-350e_in1k': (FIXNORM, 1.1, 1.0, 350, 81.27),
    'resnet50d-tricks_wd_16xb64-350e_in1k': (WD, 0.4, 1e-4, 350, 80.80),
    'resnet50d-tricks-gn32_fixnorm_16xb64-350e_in1k': (FIXNORM, 1.4, 1.0, 350, 80.92),
    'resnet50d-tricks-gn32_wd_16xb64-350e_in1k': (WD, 0.4, 1e-4, 350, 80.31),
    'mobilenet-v2_fixnorm_16xb64-150e_in1k': (FIXNORM, 0.5, 16.0, 150, 73.20),
    'mobilenet-v2_wd_16xb64-150e_in1k': (WD, 0.2, 4e-5, 150, 72.04),
    'mobilenet-v2_bo-wd_16xb64-150e_in1k': (WD, 0.64, 2.2e-5, 150, 72.84),
    'mobilenet-v2_fixnorm_16xb64-350e_in1k': (FIXNORM, 0.35, 8.0, 350, 73.97),
    'mobilenet-v2_wd_16xb64-350e_in1k': (WD, 0.2, 4e-5, 350, 73.38),
    'mobilenet-v2-x1.12-tricks_fixnorm_16xb64-350e_in1k': (FIXNORM, 0.5, 8.0, 350, 77.40),
    'mobilenet-v2-x1.12-tricks_wd_16xb64-350e_in1k': (WD, 0.2, 4e-5, 350, 76.72),
    'mobilenet-v2-x1.54-tricks_fixnorm_16xb64-350e_in1k': (FIXNORM, 0.65, 4.0, 350, 79.18),
    'mobilenet-v2-x1.54-tricks_wd_16xb64-350e_in1k': (WD, 0.2, 4e-5, 350, 78.75),
    'efficientnet-b0_fixnorm_16xb64-350e_in1k': (FIXNORM, 0.5, 4.0, 350, 77.72),
    # EfficientNet's own recipe (RMSProp): lr 0.016 per 256 images
    'efficientnet-b0_wd_16xb64-350e_in1k': (WD, 0.064, 1e-5, 350, 77.30),
    'efficientnet-b1_fixnorm_16xb64-350e_in1k': (FIXNORM, 0.8, 8.0, 350, 79.52),
    'efficientnet-b1_wd_16xb64-350e_in1k': (WD, 0.064, 1e-5, 350, 79.20),
}
# Table 2 (and Table 5): FixNorm config -> (#Params, #FLOPS, input resolution)
TABLE2 = {
    'mobilenet-v2_fixnorm_16xb64-150e_in1k': (3.5e6, 300e6, 224),
    'efficientnet-b0_fixnorm_16xb64-350e_in1k': (5.3e6, 384e6, 224),
    'efficientnet-b1_fixnorm_16xb64-350e_in1k': (7.8e6, 685e6, 240),
    'mobilenet-v2-x1.12-tricks_fixnorm_16xb64-350e_in1k': (4.7e6, 386e6, 224),
    'mobilenet-v2-x1.54-tricks_fixnorm_16xb64-350e_in1k': (8.0e6, 682e6, 224),
    'resnet50d_fixnorm_16xb64-120e_in1k': (25.6e6, 4.3e9, 224),
    'resnet50d-tricks_fixnorm_16xb64-350e_in1k': (28.1e6, 4.3e9, 224),
    'resnet50d-tricks-gn32_fixnorm_16xb64-350e_in1k': (28.1e6, 4.3e9, 224),
}
SE_MODELS = ('tricks', 'efficientnet')


def config_path(name):
    return osp.join(CONFIG_DIR, f'{name}.py')


_LOADED = {}


def load(name):
    """The config, parsed once per session (parsing ``mmpretrain::`` bases
    takes a second or more); callers get their own copy."""
    if name not in _LOADED:
        _LOADED[name] = Config.fromfile(config_path(name))
    return copy.deepcopy(_LOADED[name])


def build_model(cfg):
    return MODELS.build(cfg.model)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One intra-op thread: on a shared CPU, OpenMP threads that wait for each
    other make these full-size networks several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    return make_imagenet_dataset(str(tmp_path_factory.mktemp('imagenet')))


def test_every_provided_config_is_a_table_row():
    names = {osp.splitext(osp.basename(p))[0] for p in glob.glob(osp.join(CONFIG_DIR, '*.py'))}
    assert names == set(ROWS)


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize('name', list(ROWS))
def test_config_states_its_table_row(name):
    kind, lr, x, epochs, _ = ROWS[name]
    cfg = load(name)
    opt = cfg.optim_wrapper.optimizer
    assert cfg.custom_imports.imports == ['fixnorm_mm', 'fixnorm_mm.classification']
    assert opt.lr == lr and cfg.train_cfg.max_epochs == epochs
    # total batch 1024 = 16 GPUs x 64, and the lr is for that batch
    assert cfg.train_dataloader.batch_size == 64 and cfg.auto_scale_lr.base_batch_size == 1024
    assert cfg.model.head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                                       loss_weight=1.0)
    assert all(t.type != 'Mixup' for t in cfg.train_dataloader.dataset.pipeline)
    augments = (cfg.model.get('train_cfg') or {}).get('augments')
    assert not augments  # no mixup (Sec. 3)
    tricks = 'tricks' in name or 'efficientnet' in name
    assert any(t.type == 'AutoAugment' for t in cfg.train_dataloader.dataset.pipeline) == tricks
    if kind == FIXNORM:
        assert (cfg.optim_wrapper.type, cfg.optim_wrapper.constructor) == \
            ('OptimWrapper', 'NormControlOptimWrapperConstructor')
        assert cfg.optim_wrapper.norm_control.type == 'FixNorm'
        assert opt.weight_decay == 0 and cfg.model.head.type == 'FixNormClsHead'
        assert cfg.model.head.alpha == x
        assert 'bias' not in cfg.model.head  # the head's default: Eq. 10, no bias
    else:
        assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'
        assert opt.weight_decay == x and 'alpha' not in cfg.model.head
        assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0
    if name.startswith('efficientnet') and kind == WD:
        # EfficientNet's own recipe (Table 2's "ref." is the original result)
        assert (opt.type, opt.alpha, opt.momentum) == ('RMSprop', 0.9, 0.9)
        assert cfg.custom_hooks[0].type == 'EMAHook'
        return
    # Sec. 3: NAG, linear warm-up over 4 epochs, then one-cycle cosine decay
    assert (opt.type, opt.momentum, opt.nesterov) == ('SGD', 0.9, True)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, 4)
    assert (cosine.type, cosine.begin, cosine.end, cosine.eta_min) == \
        ('CosineAnnealingLR', 4, epochs, 0)
    assert warmup.convert_to_iter_based and cosine.convert_to_iter_based
    if kind == WD:
        assert cfg.optim_wrapper.paramwise_cfg.bias_decay_mult == 0  # no bias decay


def test_user_config_inherits_through_the_package_scope(tmp_path):
    path = tmp_path / 'my_resnet.py'
    path.write_text("_base_ = 'fixnorm_mm::imagenet/resnet50d_fixnorm_16xb64-120e_in1k.py'\n"
                    "model = dict(head=dict(alpha=2.0))\n")
    cfg = Config.fromfile(str(path))
    assert cfg.model.head.type == 'FixNormClsHead' and cfg.model.head.alpha == 2.0
    assert cfg.optim_wrapper.optimizer.lr == 1.4


# ------------------------------------------------------------------ the head
def test_fixnorm_head_is_eq10_and_starts_as_the_linear_head():
    head = MODELS.build(dict(type='FixNormClsHead', num_classes=10, in_channels=16,
                             alpha=0.5))
    plain = LinearClsHead(num_classes=10, in_channels=16)
    head.init_weights()
    assert isinstance(head.fc, FixNormLinear) and head.alpha == 0.5
    assert head.fc.cap == pytest.approx(0.5 * math.sqrt(10))
    assert head.fc.bias is None  # Eq. 10 has no bias
    # mmpretrain's Normal(std=0.01) reached the FixNorm layer (a subclass of Linear)
    assert head.fc.weight.std().item() == pytest.approx(0.01, rel=0.3)
    # ... and g followed it at init_weights, before any forward
    assert head.fc.g.item() == pytest.approx(head.fc.weight.norm().item(), rel=1e-6)
    plain.fc.load_state_dict({'weight': head.fc.weight.detach(), 'bias': torch.zeros(10)})
    x = torch.randn(5, 16)
    torch.testing.assert_close(head((x,)), plain((x,)))  # g = ||W|| < cap
    with torch.no_grad():
        head.fc.g.fill_(100.0)  # above the cap: the cap rules, Eq. 10
    W = head.fc.weight
    expected = x @ W.t() / W.norm() * min(100.0, 0.5 * math.sqrt(10))
    torch.testing.assert_close(head((x,)), expected)
    # bias=True: an uncapped bias after the capped scaling
    biased = FixNormClsHead(num_classes=10, in_channels=16, alpha=0.5, bias=True)
    biased.init_weights()
    with torch.no_grad():
        biased.fc.g.fill_(100.0)
        biased.fc.bias.normal_()
    W, b = biased.fc.weight, biased.fc.bias
    expected = x @ W.t() / W.norm() * min(100.0, 0.5 * math.sqrt(10)) + b
    torch.testing.assert_close(biased((x,)), expected)
    with pytest.raises(TypeError, match='bias'):
        FixNormClsHead(num_classes=10, in_channels=16, alpha=0.5, bias=0.1)


def test_fixnorm_head_dropout_only_in_training():
    head = FixNormClsHead(num_classes=3, in_channels=64, alpha=1.0, dropout_rate=0.5)
    x = torch.randn(4, 64)
    head.eval()
    torch.testing.assert_close(head((x,)), head((x,)))
    head.train()
    assert not torch.allclose(head((x,)), head((x,)))
    with pytest.raises(ValueError, match='dropout_rate'):
        FixNormClsHead(num_classes=3, in_channels=4, alpha=1.0, dropout_rate=1.0)
    with pytest.raises(ValueError, match='alpha'):
        FixNormClsHead(num_classes=3, in_channels=4, alpha=0)


# ------------------------------------------------------------------ backbones
def se_layers(model):
    return [m for m in model.modules() if isinstance(m, SELayer)]


def test_resnet50d_star_has_wn_se_swish_and_stochastic_depth():
    net = ResNetV1dSE(depth=50, se_conv_cfg=dict(type='WNConv2d'), drop_path_rate=0.2)
    blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
    assert len(blocks) == 16 and len(se_layers(net)) == 16
    for b in blocks:
        assert isinstance(b.se_layer.conv1.conv, WNConv2d)
        assert b.se_layer.conv1.conv.out_channels == b.out_channels // 16
        assert type(b.relu).__name__ == 'Swish'
        assert type(b.se_layer.conv1.activate).__name__ == 'Swish'
    assert all(type(c.activate).__name__ == 'Swish' for c in net.stem)
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, 'drop_prob') else 0. for b in blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.2)
    assert rates == sorted(rates)
    net.init_weights()
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    out = net(x)[0]
    assert out.shape == (2, 2048, 1, 1)
    # stochastic depth is on in training only: the eval output is deterministic
    torch.testing.assert_close(net(x)[0], out)
    gn = ResNetV1dSE(depth=50, norm_cfg=dict(type='GN', num_groups=32, requires_grad=True))
    assert not any(isinstance(m, _BatchNorm) for m in gn.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in gn.modules()) == 3 + 16 * 3 + 4
    with pytest.raises(KeyError, match='depth'):
        ResNetV1dSE(depth=18)


def test_mobilenet_v2_star_widths_se_and_stochastic_depth():
    net = MobileNetV2SE(widen_factor=1.12, se_conv_cfg=dict(type='WNConv2d'),
                        drop_path_rate=0.2)
    outs = [getattr(net, f'layer{i}')[-1].linear_conv.conv.out_channels for i in range(1, 8)]
    assert net.conv1.conv.out_channels == int(32 * 1.12)
    assert outs == [int(c * 1.12) for c in (16, 24, 32, 64, 96, 160, 320)]
    assert net.conv2.conv.out_channels == int(1280 * 1.12) == 1433
    blocks = [b for i in range(1, 8) for b in getattr(net, f'layer{i}')]
    assert len(blocks) == 17 and len(se_layers(net)) == 17
    for b in blocks:
        assert isinstance(b.se.conv1.conv, WNConv2d) and isinstance(b.se.conv2.conv, WNConv2d)
        # EfficientNet's rule: squeeze to a quarter of the block's input channels
        in_channels = b.expand_conv.conv.in_channels if b.with_expand_conv \
            else b.depthwise_conv.conv.in_channels
        assert b.se.conv1.conv.out_channels == int(in_channels * 0.25)
        assert type(b.depthwise_conv.activate).__name__ == 'Swish'
    assert net.drop_path_rates[0] == 0 and net.drop_path_rates[-1] == pytest.approx(0.2)
    assert net(torch.randn(2, 3, 32, 32))[0].shape == (2, 1433, 1, 1)
    # channel_divisor=8 gives mmpretrain's MobileNetV2 widths
    rounded = MobileNetV2SE(widen_factor=1.12, channel_divisor=8)
    stock = MobileNetV2(widen_factor=1.12)
    assert [m.out_channels for m in rounded.modules() if isinstance(m, nn.Conv2d)
            and m.groups > 1] == [m.out_channels for m in stock.modules()
                                  if isinstance(m, nn.Conv2d) and m.groups > 1]


def test_efficientnet_wn_se_computes_the_plain_efficientnet():
    torch.manual_seed(0)
    plain = EfficientNet(arch='b0', drop_path_rate=0.2)
    plain.init_weights()
    wn = EfficientNetWNSE(arch='b0', drop_path_rate=0.2)
    missing = wn.load_state_dict(plain.state_dict(), strict=False).missing_keys
    se_convs = [c.conv for se in se_layers(wn) for c in (se.conv1, se.conv2)]
    assert len(se_convs) == 2 * 16 and all(isinstance(c, WNConv2d) for c in se_convs)
    assert len(missing) == len(se_convs) and all(k.endswith('.g') for k in missing)
    # App. C: WN-FC layers (Eq. 6), one scalar g over the whole weight
    assert all(not c.per_output and c.g.shape == () for c in se_convs)
    plain.eval()
    wn.eval()
    x = torch.randn(2, 3, 64, 64)
    # g = ||v|| of the loaded weights: WN changes the parametrisation only
    torch.testing.assert_close(wn(x)[0], plain(x)[0], rtol=1e-4, atol=1e-5)
    per_channel = EfficientNetWNSE(arch='b0', se_conv_cfg=dict(type='WNConv2d'))
    convs = [c.conv for se in se_layers(per_channel) for c in (se.conv1, se.conv2)]
    assert all(c.per_output and c.g.shape == (c.out_channels, 1, 1, 1) for c in convs)


# ------------------------------------------------------------------ Table 2 sizes
def count_gains(model):
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith('.g'))


@pytest.mark.parametrize('name', list(TABLE2))
def test_params_and_flops_match_table2(name):
    params, flops, resolution = TABLE2[name]
    cfg = load(name)
    model = build_model(cfg)
    model.eval()
    info = get_model_complexity_info(model, input_shape=(3, resolution, resolution),
                                     show_table=False, show_arch=False)
    assert info['params'] == pytest.approx(params, rel=0.03), info['params_str']
    assert info['flops'] == pytest.approx(flops, rel=0.05), info['flops_str']
    # the weight-decay reference trains the same network, without FixNorm's
    # and WN's gains g and without the FC bias (Eq. 10 has none)
    reference = build_model(load(name.replace('_fixnorm_', '_wd_')))
    n_ref = sum(p.numel() for p in reference.parameters())
    assert model.head.fc.bias is None and reference.head.fc.bias is not None
    assert info['params'] - count_gains(model) + model.head.num_classes == n_ref
    assert count_gains(reference) == 0
    if any(k in name for k in SE_MODELS):  # App. C: the SE layers are WN-FC (Eq. 6)
        se = [m for m in model.modules() if isinstance(m, WNConv2d)]
        assert se and all(not m.per_output and m.g.shape == () for m in se)


# ------------------------------------------------------------------ Runner
def fixed_tensors_in_log(runner):
    """Parameter names listed under 'controlled tensors:' in the startup
    table's per-tensor list (a file beside the log; the log has the summary)."""
    log = glob.glob(osp.join(runner.log_dir, '*.log'))
    assert len(log) == 1
    assert 'FixNorm fixed set' in open(log[0]).read()
    text = open(osp.join(runner.log_dir, 'fixnorm_tensors.txt')).read()
    section = text.split('controlled tensors:\n', 1)[1]
    names = []
    for line in section.splitlines():
        m = re.match(r'\s+\[(\w+)\] (\S+)  \(', line)
        if m is None:
            break
        names.append(m.group(2))
    return names


def check_fixnorm_runner(runner, name):
    wrapper = runner.optim_wrapper
    assert type(wrapper).__name__ == 'OptimWrapper' and wrapper.norm_control.started
    assert all(g['weight_decay'] == 0 for g in wrapper.optimizer.param_groups)
    model = runner.model
    selection = wrapper.norm_control.selection
    fixed = set(selection.reasons)
    assert fixed == {n for named in selection.groups.values() for n in named}
    # the startup table lists every conv weight (BN-followed, GN-followed or WN)
    # and the FixNorm-FC weight, and no norm parameter, bias or gain
    convs = {f'{n}.weight' for n, m in model.named_modules() if isinstance(m, _ConvNd)}
    assert convs <= fixed
    assert fixed == convs | {'head.fc.weight'}
    assert selection.reasons['head.fc.weight'] == 'FixNorm layer'
    norm_params = {f'{n}.{p}' for n, m in model.named_modules()
                   if isinstance(m, (_BatchNorm, nn.GroupNorm)) for p, _ in m.named_parameters()}
    assert norm_params and not norm_params & fixed
    assert not any(n.endswith(('.bias', '.g')) for n in fixed)
    assert set(fixed_tensors_in_log(runner)) == fixed
    if any(k in name for k in SE_MODELS):  # App. C: the SE FC layers are WN and fixed
        se = [n for n in fixed if '.se' in n]
        assert se and all(selection.reasons[n] == 'weight-normalized' for n in se)
    # Algo 1, line 6: after the step the fixed set has its initial global norm
    fixer = wrapper.norm_control.fixer
    torch.testing.assert_close(fixer.norms()['default'], fixer.reference_norms['default'])
    mcbr = runner.message_hub.get_scalar('train/fixnorm/mcbr').current()
    assert -1 <= mcbr <= 1


def check_weight_decay_runner(runner, name, wd):
    model = runner.model
    decay = {}
    named = {id(p): n for n, p in model.named_parameters()}
    for group in runner.optim_wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[named[id(p)]] = group['weight_decay']
    norms = {f'{n}.{p}' for n, m in model.named_modules()
             if isinstance(m, (_BatchNorm, nn.GroupNorm)) for p, _ in m.named_parameters()}
    convs = {f'{n}.weight' for n, m in model.named_modules() if isinstance(m, _ConvNd)}
    assert all(decay[n] == pytest.approx(wd) for n in convs | {'head.fc.weight'})
    assert all(decay[n] == 0 for n in norms)
    if not name.startswith('efficientnet'):  # He et al.'s no-bias-decay
        assert all(decay[n] == 0 for n in decay if n.endswith('.bias'))


@pytest.mark.parametrize('name', list(ROWS))
def test_config_trains_one_iteration_and_validates(name, imagenet, tmp_path):
    kind, lr, x, epochs, _ = ROWS[name]
    cfg = shrink_imagenet_config(load(name), imagenet, str(tmp_path), max_iters=1)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1
    hub = runner.message_hub
    assert math.isfinite(hub.get_scalar('train/loss').current())
    assert 0 <= hub.get_scalar('val/accuracy/top1').current() <= 100
    # the warm-up starts the lr at start_factor * lr
    assert hub.get_scalar('train/lr').current() == pytest.approx(lr * 1e-3)
    head = runner.model.head
    assert head.num_classes == len(imagenet.classes)
    if kind == FIXNORM:
        assert head.fc.cap == pytest.approx(x * math.sqrt(len(imagenet.classes)))
        check_fixnorm_runner(runner, name)
    else:
        check_weight_decay_runner(runner, name, x)


def test_fixnorm_head_in_any_mmpretrain_classifier(imagenet, tmp_path):
    """A user's config: mmpretrain's own ResNet-18 recipe with FixNorm."""
    path = tmp_path / 'resnet18_fixnorm.py'
    path.write_text(
        "_base_ = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'\n"
        "custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.classification'])\n"
        "model = dict(head=dict(type='FixNormClsHead', alpha=1.0))\n"
        "optim_wrapper = dict(type='FixNormOptimWrapper',\n"
        "                     constructor='FixNormOptimWrapperConstructor',\n"
        "                     optimizer=dict(weight_decay=0))\n")
    cfg = shrink_imagenet_config(Config.fromfile(str(path)), imagenet, str(tmp_path / 'work'),
                                 max_iters=2)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    selection = runner.optim_wrapper.fixnorm.selection  # the legacy wrapper's name
    convs = {f'{n}.weight' for n, m in runner.model.named_modules() if isinstance(m, _ConvNd)}
    assert set(selection.reasons) == convs | {'head.fc.weight'}


# ------------------------------------------------------------------ the shrinker
def test_shrinker_scales_sizes_and_schedule_and_keeps_the_config(imagenet, tmp_path):
    cfg = load('efficientnet-b1_wd_16xb64-350e_in1k')
    before = cfg.to_dict()
    small = shrink_imagenet_config(cfg, imagenet, str(tmp_path), max_iters=20, input_size=48)
    assert cfg.to_dict() == before  # the given config is not edited
    train = small.train_dataloader.dataset.pipeline
    assert [t.get('scale') for t in train if t.type == 'EfficientNetRandomCrop'] == [48]
    assert small.val_dataloader.dataset.pipeline[1].crop_size == 48  # 240 -> 48
    resnet = shrink_imagenet_config(load('resnet50d_fixnorm_16xb64-120e_in1k'), imagenet,
                                    str(tmp_path), input_size=32)
    resize, crop = resnet.val_dataloader.dataset.pipeline[1:3]
    assert (resize.scale, crop.crop_size) == (round(256 * 32 / 224), 32)
    assert resnet.custom_hooks[0].type == 'MCBRHook' and resnet.custom_hooks[0].interval == 1
    assert small.train_cfg == dict(type='IterBasedTrainLoop', max_iters=20, val_interval=20)
    warmup, decay = small.param_scheduler
    assert (warmup.begin, warmup.end, warmup.by_epoch) == (0, 2, False)  # >= 2 iterations
    # the exponential decay over 20 iterations is the decay over 350 epochs
    total = 0.97 ** (350 / 2.4)
    assert decay.gamma ** (decay.end - decay.begin) == pytest.approx(total, rel=1e-6)
    assert small.model.head.num_classes == 4 and small.val_evaluator.topk == (1,)


def test_rescaled_cosine_keeps_its_shape():
    scheds = [dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=4,
                   convert_to_iter_based=True),
              dict(type='CosineAnnealingLR', by_epoch=True, begin=4, end=120,
                   convert_to_iter_based=True)]
    warmup, cosine = rescaled_schedulers(scheds, 60 / (120 * IMAGENET_ITERS_PER_EPOCH),
                                         IMAGENET_ITERS_PER_EPOCH)
    assert (warmup['begin'], warmup['end']) == (0, 2)
    assert (cosine['begin'], cosine['end']) == (2, 60) and not cosine['by_epoch']


def test_generated_imagenet_folder(imagenet):
    assert imagenet.classes == ('n0000', 'n0001', 'n0002', 'n0003')
    lines = open(osp.join(imagenet.root, imagenet.train_ann)).read().split()
    assert len(lines) == 2 * imagenet.num_train == 2 * 8
    for file, label in zip(lines[::2], lines[1::2]):
        assert osp.exists(osp.join(imagenet.root, 'train', file))
        assert file.startswith(imagenet.classes[int(label)] + '/')
    assert len(glob.glob(osp.join(imagenet.root, 'val', '*', '*.JPEG'))) == imagenet.num_val == 4
