"""A tiny Cityscapes-format dataset, and a shrinker that lets any mmseg
Cityscapes config of this project train and evaluate in seconds on a CPU.

Used by the tests, and by tools and benchmarks that need a real mmseg Runner
without Cityscapes (tuning, distributed, folding)::

    from mmengine.hub import get_config      # Config.fromfile takes a file path
    from mmengine.runner import Runner
    from fixnorm_mm.testing.segmentation import (make_cityscapes_dataset,
                                                 shrink_cityscapes_config)

    data = make_cityscapes_dataset('/tmp/toy_cityscapes')     # PNGs, standard layout
    cfg = get_config(
        'fixnorm_mm::cityscapes/baseoc_r101-d8_fixnorm-tune_4xb2-40k_cityscapes-769x769.py')
    cfg = shrink_cityscapes_config(cfg, data, work_dir='/tmp/work', max_iters=4)
    runner = Runner.from_cfg(cfg)
    runner.train()                                            # then validates once
    runner.message_hub.get_scalar('val/mIoU').current()

The shrinker never edits the config it is given (it returns a changed copy)
and keeps what the experiment is about: model and head types, FixNorm/WN
layers, the dilated backbone's strides and dilations (output stride 8), the
auxiliary head, optimizer, optim wrapper, custom hooks, slide inference, and
the *shape* of the learning-rate schedule (rescaled in time). Crops stay odd,
like Cityscapes' 769: odd sizes catch off-by-one errors in resizing.
"""
import copy
import os
import os.path as osp
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .common import innermost_dataset, short_cpu_run

#: Cityscapes train ids (the 19 evaluated classes) that the generator draws,
#: with their colours (RGB) from mmseg's CityscapesDataset palette.
SCENE_CLASSES = {'road': (0, (128, 64, 128)), 'sidewalk': (1, (244, 35, 232)),
                 'building': (2, (70, 70, 70)), 'pole': (5, (153, 153, 153)),
                 'vegetation': (8, (107, 142, 35)), 'sky': (10, (70, 130, 180)),
                 'person': (11, (220, 20, 60)), 'car': (13, (0, 0, 142))}
#: The label Cityscapes' ``*_labelTrainIds.png`` give to unlabelled pixels.
IGNORE_INDEX = 255


@dataclass
class CityscapesToy:
    """Where :func:`make_cityscapes_dataset` wrote a dataset.

    ``height`` x ``width`` is the size of every image (Cityscapes: 1024 x 2048).
    """
    root: str
    height: int
    width: int
    cities: Tuple[str, ...]
    num_train: int
    num_val: int


def _draw_scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A street-like label map: sky, buildings, a tree, road with sidewalks,
    cars, people and poles; the bottom rows are the ego vehicle (ignored)."""
    c = {k: v[0] for k, v in SCENE_CLASSES.items()}
    seg = np.full((h, w), c['building'], np.uint8)
    sky = int(h * rng.uniform(0.15, 0.3))
    horizon = int(h * rng.uniform(0.45, 0.55))
    seg[:sky] = c['sky']
    x0 = int(rng.integers(0, w // 2))
    seg[sky // 2:horizon, x0:x0 + w // 5] = c['vegetation']
    seg[horizon:] = c['road']
    walk = max(2, w // 8)
    seg[horizon:, :walk] = c['sidewalk']
    seg[horizon:, w - walk:] = c['sidewalk']
    for _ in range(int(rng.integers(1, 4))):
        cw, ch = max(3, w // 8), max(2, h // 10)
        cx = int(rng.integers(walk, max(walk + 1, w - walk - cw)))
        cy = int(rng.integers(horizon, max(horizon + 1, h - ch - h // 16)))
        seg[cy:cy + ch, cx:cx + cw] = c['car']
    for side in (0, w - walk):
        px = side + int(rng.integers(0, max(1, walk - 1)))
        seg[horizon - h // 8:horizon + h // 8, px:px + max(1, w // 64)] = c['person']
    pole = int(rng.integers(0, w))
    seg[sky:horizon, pole:pole + max(1, w // 96)] = c['pole']
    seg[h - max(1, h // 16):] = IGNORE_INDEX  # ego vehicle, as in Cityscapes
    return seg


def _paint(rng: np.random.Generator, seg: np.ndarray) -> np.ndarray:
    """An RGB image whose colours are the classes' palette colours plus noise,
    so that a few iterations of training can learn something."""
    img = np.full(seg.shape + (3,), 40, np.float32)
    for train_id, rgb in SCENE_CLASSES.values():
        img[seg == train_id] = rgb
    img += rng.normal(0, 12, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def make_cityscapes_dataset(root: str, num_train: int = 4, num_val: int = 2,
                            height: int = 64, width: int = 128,
                            cities: Sequence[str] = ('aachen', 'bremen'),
                            seed: int = 0) -> CityscapesToy:
    """Write a Cityscapes-format dataset under ``root``, in the standard layout
    that mmseg's ``CityscapesDataset`` reads::

        root/leftImg8bit/{train,val}/<city>/<city>_000000_0000NN_leftImg8bit.png
        root/gtFine/{train,val}/<city>/<city>_000000_0000NN_gtFine_labelTrainIds.png

    Images are 8-bit RGB; masks are 8-bit train ids (0..18, 255 = ignore)
    drawn from :data:`SCENE_CLASSES`. Images are spread over ``cities``.

    Args:
        root: output folder (created).
        num_train, num_val: number of images of each split.
        height, width: image size (Cityscapes' aspect is 1:2).
        cities: city folder names.
        seed: the dataset is a pure function of the arguments.

    Returns:
        A :class:`CityscapesToy` to hand to :func:`shrink_cityscapes_config`.
    """
    import cv2
    if num_train < 1 or num_val < 1 or not cities:
        raise ValueError('make_cityscapes_dataset: need num_train >= 1, num_val >= 1 '
                         f'and a city, got {num_train}, {num_val}, {cities!r}')
    rng = np.random.default_rng(seed)
    for split, n in (('train', num_train), ('val', num_val)):
        for i in range(n):
            city = cities[i % len(cities)]
            stem = f'{city}_000000_{i:06d}'
            img_dir = osp.join(root, 'leftImg8bit', split, city)
            seg_dir = osp.join(root, 'gtFine', split, city)
            os.makedirs(img_dir, exist_ok=True)
            os.makedirs(seg_dir, exist_ok=True)
            seg = _draw_scene(rng, height, width)
            cv2.imwrite(osp.join(img_dir, f'{stem}_leftImg8bit.png'),
                        _paint(rng, seg)[..., ::-1])  # cv2 writes BGR
            cv2.imwrite(osp.join(seg_dir, f'{stem}_gtFine_labelTrainIds.png'), seg)
    return CityscapesToy(root=str(root), height=height, width=width,
                         cities=tuple(cities), num_train=num_train, num_val=num_val)


def shrink_cityscapes_config(cfg, data: CityscapesToy, work_dir: str,
                             max_iters: int = 4, batch_size: int = 2,
                             crop_size: int = 65, tiny_model: bool = True,
                             depth: int = 18, base_channels: int = 8,
                             width: int = 16, val_interval: Optional[int] = None,
                             seed: int = 0):
    """A copy of an mmseg Cityscapes config that trains on ``data`` in seconds
    on a CPU.

    What changes:

    * data: every dataloader reads ``data``, ``batch_size`` images per
      training batch (1 for val/test), no worker processes. Resizes target
      the toy image size instead of 2048 x 1024 (the random scale range is
      kept), random crops and the data preprocessor's padding are
      ``crop_size`` (keep it odd, like 769), slide inference uses
      ``crop_size`` windows with stride ``2 * crop_size // 3`` (769 / 513).
    * model: no pretrained weights (no download). With ``tiny_model``, a
      ResNet backbone gets ``depth`` (BasicBlock depths 18/34 or Bottleneck
      50/101/152) and ``base_channels`` (same strides, dilations,
      ``out_indices``, norm); decode and auxiliary heads get the matching
      ``in_channels`` (from their ``in_index``), ``width`` channels, and half
      of that as ``key_channels`` (Base-OC). ``num_classes`` stays 19.
    * schedule: an ``IterBasedTrainLoop`` of ``max_iters`` that validates
      every ``val_interval`` (default: once, at the end); every parameter
      scheduler is rescaled in time by ``max_iters / original max_iters``, so
      poly stays poly and cosine stays cosine over the short run.
    * runtime: ``work_dir``, log every iteration, a checkpoint at the end,
      custom hooks with an ``interval`` (MCBRHook, ...) every iteration,
      ``seed``, gloo instead of nccl, no cudnn benchmark.

    Args:
        cfg: an mmengine ``Config`` (not modified).
        data: from :func:`make_cityscapes_dataset`.
        work_dir: where the Runner writes logs and checkpoints.

    Returns:
        The shrunk ``Config``.
    """
    from mmengine.config import Config
    cfg = copy.deepcopy(cfg) if isinstance(cfg, Config) else Config(copy.deepcopy(cfg))
    crop = (crop_size, crop_size)

    cfg.crop_size = crop
    _shrink_data(cfg, data, batch_size, crop)
    _shrink_model(cfg.model, crop, tiny_model, depth, base_channels, width)
    old_len = float((cfg.get('train_cfg') or {}).get('max_iters', max_iters))
    short_cpu_run(cfg, work_dir, max_iters, old_len, seed, val_interval)
    return cfg


def _shrink_pipeline(pipeline: Optional[list], data: CityscapesToy,
                     crop: Tuple[int, int]) -> None:
    for t in pipeline or []:
        if t.get('type') in ('Resize', 'RandomResize') and 'scale' in t:
            t['scale'] = (data.width, data.height)  # mmcv scales are (w, h)
        if t.get('type') == 'RandomCrop':
            t['crop_size'] = crop


def _innermost_dataset(dataset: dict) -> dict:
    return innermost_dataset(dataset, 'data_prefix', 'shrink_cityscapes_config')


def _shrink_data(cfg, data: CityscapesToy, batch_size: int, crop: Tuple[int, int]) -> None:
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if loader is None:
            continue
        loader.batch_size = batch_size if key == 'train_dataloader' else 1
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.pop('pin_memory', None)
        outer = loader.dataset
        ds = _innermost_dataset(outer)
        ds.data_root = data.root
        ds.backend_args = None
        _shrink_pipeline(ds.get('pipeline'), data, crop)
        if outer is not ds:
            _shrink_pipeline(outer.get('pipeline'), data, crop)
    if 'train_pipeline' in cfg:  # the variables, for readers of the dumped config
        _shrink_pipeline(cfg.train_pipeline, data, crop)
    if 'test_pipeline' in cfg:
        _shrink_pipeline(cfg.test_pipeline, data, crop)


def resnet_stage_channels(backbone: dict) -> Tuple[int, ...]:
    """Output channels of the four stages of an mmseg ResNet config:
    ``base_channels * 2**i * expansion`` (expansion 1 for BasicBlock, 4 for
    Bottleneck)."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    block = MODELS.get(backbone['type']).arch_settings[backbone['depth']][0]
    base = backbone.get('base_channels', 64)
    return tuple(base * 2 ** i * block.expansion for i in range(4))


def _shrink_model(model: dict, crop: Tuple[int, int], tiny: bool, depth: int,
                  base_channels: int, width: int) -> None:
    model['pretrained'] = None
    backbone = model['backbone']
    backbone['init_cfg'] = None
    preprocessor = model.get('data_preprocessor')
    if preprocessor is not None and preprocessor.get('size') is not None:
        preprocessor['size'] = crop
    test_cfg = model.get('test_cfg') or {}
    if test_cfg.get('mode') == 'slide':
        test_cfg.update(crop_size=crop, stride=tuple(2 * c // 3 for c in crop))
    if not tiny:
        return
    if not str(backbone.get('type', '')).startswith('ResNet'):
        raise ValueError('shrink_cityscapes_config(tiny_model=True) knows ResNet '
                         f'backbones, got model.backbone.type={backbone.get("type")!r}; '
                         'pass tiny_model=False')
    backbone.update(depth=depth, base_channels=base_channels, stem_channels=base_channels)
    stages = resnet_stage_channels(backbone)
    heads = model.get('auxiliary_head')
    heads = [model['decode_head']] + (heads if isinstance(heads, list) else
                                      [heads] if heads else [])
    for head in heads:
        index = head.get('in_index', -1)
        head['in_channels'] = ([stages[i] for i in index] if isinstance(index, (list, tuple))
                               else stages[index])
        head['channels'] = width
        if 'key_channels' in head:
            head['key_channels'] = max(1, width // 2)
