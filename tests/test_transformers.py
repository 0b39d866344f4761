"""Transformers and hybrids with AdamW, the stock configs through tools/train.py
(shrunk to tiny data, never edited): DeiT-tiny with Hyperball and with FixNorm
on WN projections (mmpretrain), DETR with Hyperball (mmdet), SegFormer with
FixNorm (mmseg). After every step the controlled norms are where the method
keeps them, the method took over the weight decay of what it controls, and
everything else kept the config's (paramwise_cfg included)."""
import json
import os.path as osp
import runpy
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

import fixnorm_mm  # noqa: F401
from fixnorm_mm.zoo import load_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEIT = 'mmpretrain::deit/deit-tiny_4xb256_in1k.py'


@HOOKS.register_module()
class DecayRecorder(Hook):
    """Writes {parameter name: weight decay of its param group} to the work dir
    at the end of training (what the method left on each tensor)."""

    def after_train(self, runner):
        decay = {id(p): g['weight_decay'] for g in runner.optim_wrapper.optimizer.param_groups
                 for p in g['params']}
        model = getattr(runner.model, 'module', runner.model)
        with open(osp.join(runner.work_dir, 'decay.json'), 'w') as f:
            json.dump({n: decay[id(p)] for n, p in model.named_parameters() if id(p) in decay}, f)


def train_tool(cfg, tmp_path, *args, monkeypatch, every_step=True):
    """tools/train.py on ``cfg`` (dumped). Returns the checkpoints (one after
    every iteration, or only the last) and {parameter: weight decay}."""
    iters = cfg.train_cfg.max_iters
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False,
                                        interval=1 if every_step else iters)
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [dict(type='DecayRecorder')]
    path = str(tmp_path / 'shrunk.py')
    cfg.dump(path)
    monkeypatch.setattr(sys, 'argv', ['train.py', path, *args])
    runpy.run_path(osp.join(ROOT, 'tools', 'train.py'), run_name='__main__')
    work = cfg.work_dir
    ckpts = [torch.load(osp.join(work, f'iter_{i}.pth'), map_location='cpu', weights_only=True)
             for i in (range(1, iters + 1) if every_step else [iters])]
    with open(osp.join(work, 'decay.json')) as f:
        return ckpts, json.load(f)


@pytest.fixture(scope='module')
def imagenet_toy(tmp_path_factory):
    from fixnorm_mm.testing.classification import make_imagenet_dataset
    return make_imagenet_dataset(str(tmp_path_factory.mktemp('imagenet')))


def test_deit_tiny_trains_with_hyperball_under_adamw(imagenet_toy, tmp_path, monkeypatch):
    from fixnorm_mm.testing.classification import shrink_imagenet_config
    cfg = shrink_imagenet_config(load_config(DEIT), imagenet_toy, str(tmp_path / 'work'),
                                 max_iters=2, input_size=32)
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    ckpts, by_name = train_tool(cfg, tmp_path, '--method', 'hyperball', monkeypatch=monkeypatch)
    state = ckpts[0]['optimizer']['hyperball']
    names, radii = state['params'], state['radii']
    # every attention / MLP projection; not the patch embedding (the input embedding)
    # nor DeiT's classifier, which its config initialises to 0 (R = 0)
    assert len(names) == 12 * 4 and 'head.layers.head.weight' not in names
    assert 'backbone.layers.0.attn.qkv.weight' in names
    assert 'backbone.layers.11.ffn.layers.1.weight' in names
    assert 'backbone.patch_embed.projection.weight' not in names
    for ckpt in ckpts:  # after every step, every matrix is back on its sphere
        assert torch.equal(ckpt['optimizer']['hyperball']['radii'], radii)
        norms = torch.stack([ckpt['state_dict'][n].float().norm() for n in names])
        torch.testing.assert_close(norms, radii, rtol=1e-5, atol=0)
    w = 'backbone.layers.0.attn.qkv.weight'
    assert not torch.equal(ckpts[0]['state_dict'][w], ckpts[-1]['state_dict'][w])
    # the angular lr: sqrt(lr x weight_decay) of the stock config, printed in the config
    dumped = Config.fromfile(osp.join(cfg.work_dir, 'shrunk.py'))
    assert dumped.optim_wrapper.norm_control.lr == pytest.approx((1e-3 * 0.05) ** 0.5, rel=1e-3)
    # weight decay: 0 on the matrices (taken over), the config's (0.05) on the patch
    # embedding, 0 on norms, biases, tokens (the config's paramwise_cfg)
    assert {by_name[n] for n in names} == {0.0}
    assert by_name['backbone.patch_embed.projection.weight'] == 0.05
    assert by_name['head.layers.head.weight'] == 0.05  # R = 0: left to AdamW, with its decay
    assert by_name['backbone.pos_embed'] == 0.0 and by_name['backbone.ln1.weight'] == 0.0


def test_deit_tiny_trains_with_fixnorm_on_wn_projections(imagenet_toy, tmp_path, monkeypatch):
    """The opt-in route the refusal names: FixNormModel(weight_norm='attention_mlp')."""
    from fixnorm_mm.testing.classification import shrink_imagenet_config
    user = tmp_path / 'deit_fixnorm.py'
    user.write_text(
        f"_base_ = '{DEIT}'\n"
        "custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)\n"
        "model = dict(type='FixNormModel', model_type=_base_.model.type, final_layer='auto',\n"
        "             weight_norm='attention_mlp')\n"
        "optim_wrapper = dict(constructor='NormControlOptimWrapperConstructor',\n"
        "                     norm_control=dict(type='FixNorm'))\n")
    cfg = shrink_imagenet_config(Config.fromfile(str(user)), imagenet_toy,
                                 str(tmp_path / 'work'), max_iters=2, input_size=32)
    ckpts, _ = train_tool(cfg, tmp_path, monkeypatch=monkeypatch)
    group = ckpts[0]['optimizer']['fixnorm']['groups']['default']
    names = group['params']
    assert 'backbone.layers.0.attn.qkv.weight' in names  # WN direction
    assert 'backbone.layers.0.attn.qkv.g' in ckpts[0]['state_dict']
    # FixNorm-FC: DeiT's config zeroes the classifier; the converted model's init_weights
    # gives it a random direction and g = 0, so its output starts at 0 as the plain one's
    assert 'head.layers.head.weight' in names and len(names) == 12 * 4 + 1
    assert float(ckpts[0]['state_dict']['head.layers.head.g']) < 1e-2
    for ckpt in ckpts:
        norm = torch.stack([ckpt['state_dict'][n].float().norm() for n in names]).norm()
        torch.testing.assert_close(norm, group['reference_norm'], rtol=1e-5, atol=0)


def test_stock_deit_is_refused_by_fixnorm_naming_both_routes():
    from mmengine.registry import init_default_scope

    from fixnorm_mm.convert import build_and_convert
    from fixnorm_mm.zoo import fixnorm_model_cfg
    cfg = load_config(DEIT)
    init_default_scope('mmpretrain')
    mcfg = fixnorm_model_cfg(cfg)
    mcfg.pop('type')
    with pytest.raises(ValueError, match=r"pre-norm transformer.*norm_control=dict\(type="
                                         r"'Hyperball'\) \(--method hyperball.*"
                                         r"weight_norm='attention_mlp'"):
        build_and_convert(**mcfg)


def test_detr_trains_with_hyperball_under_adamw(tmp_path, monkeypatch):
    from fixnorm_mm.testing.detection import make_coco_dataset, shrink_coco_config
    data = make_coco_dataset(str(tmp_path / 'coco'), num_train=2, num_val=1, image_size=64)
    cfg = shrink_coco_config(load_config('mmdet::detr/detr_r50_8xb2-150e_coco.py'), data,
                             str(tmp_path / 'work'), max_iters=2, tiny_model=False)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    ckpts, by_name = train_tool(cfg, tmp_path, '--method', 'hyperball', monkeypatch=monkeypatch,
                                every_step=False)
    state = ckpts[0]['optimizer']['hyperball']
    names = state['params']
    assert 'bbox_head.fc_cls.weight' in names
    assert any(n.endswith('attn.attn.in_proj_weight') for n in names)  # torch MHA matrices
    assert 'backbone.conv1.weight' not in names  # the input embedding
    for ckpt in ckpts:
        norms = torch.stack([ckpt['state_dict'][n].float().norm() for n in names])
        torch.testing.assert_close(norms, state['radii'], rtol=1e-5, atol=0)
    assert {by_name[n] for n in names} == {0.0}
    assert by_name['query_embedding.weight'] == 1e-4  # not a matrix of a layer: the config's


def test_segformer_trains_with_fixnorm_under_adamw(tmp_path, monkeypatch):
    """mmseg's SegFormer: its overlapping patch embeddings feed a LayerNorm
    through a flatten and a transpose, so the stock model has a fixed set."""
    from fixnorm_mm.testing.segmentation import make_cityscapes_dataset, shrink_cityscapes_config
    data = make_cityscapes_dataset(str(tmp_path / 'cityscapes'))
    cfg = shrink_cityscapes_config(
        load_config('mmseg::segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py'),
        data, str(tmp_path / 'work'), max_iters=2, tiny_model=False)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    ckpts, by_name = train_tool(cfg, tmp_path, '--method', 'fixnorm', monkeypatch=monkeypatch,
                                every_step=False)
    group = ckpts[0]['optimizer']['fixnorm']['groups']['default']
    names = group['params']
    for i in range(4):  # every stage's patch embedding, fixed directly
        assert f'backbone.layers.{i}.0.projection.weight' in names
    for ckpt in ckpts:
        norm = torch.stack([ckpt['state_dict'][n].float().norm() for n in names]).norm()
        torch.testing.assert_close(norm, group['reference_norm'], rtol=1e-5, atol=0)
    assert {by_name[n] for n in names} == {0.0}
    assert by_name['backbone.layers.0.1.0.attn.attn.in_proj_weight'] == 0.01  # the config's
