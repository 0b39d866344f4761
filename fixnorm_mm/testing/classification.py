"""A tiny ImageNet-style folder dataset, and a shrinker that lets any mmpretrain
ImageNet config of this project train and validate in seconds on a CPU.

Used by the tests, and by tools and benchmarks that need a real mmpretrain
Runner without ImageNet (tuning, distributed runs, baselines)::

    from mmengine.config import Config
    from mmengine.runner import Runner
    from fixnorm_mm.testing.classification import (make_imagenet_dataset,
                                                   shrink_imagenet_config)

    data = make_imagenet_dataset('/tmp/toy_imagenet')      # JPEG folders + meta/*.txt
    cfg = Config.fromfile('fixnorm_mm::imagenet/resnet50d_fixnorm_16xb64-120e_in1k.py')
    cfg = shrink_imagenet_config(cfg, data, work_dir='/tmp/work', max_iters=2)
    runner = Runner.from_cfg(cfg)
    runner.train()                                         # then validates once
    runner.message_hub.get_scalar('val/accuracy/top1').current()

The shrinker never edits the config it is given (it returns a changed copy)
and keeps what the experiment is about: the model as configured (full size:
only its number of classes changes), the head (FixNorm-FC and its alpha), the
optimizer, the optim wrapper, custom hooks, the augmentation pipeline (at a
smaller resolution), and the *shape* of the learning-rate schedule (rescaled
in time). At 32 pixels a ResNet50-D step on 2 images takes about half a
second on one CPU core; on a CPU shared with other jobs, ``torch.set_num_threads(1)``
avoids OpenMP threads waiting for each other (several times slower).
"""
import copy
import math
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .common import innermost_dataset, schedule_length, set_everywhere, short_cpu_run

#: Iterations in one epoch of ImageNet-1k train (1,281,167 images) at the
#: paper's batch 1024 (16 GPUs x 64, ``ceil(80,073 / 64)`` per GPU): converts
#: epoch-based schedules into iterations before rescaling.
IMAGENET_ITERS_PER_EPOCH = 1252

#: Transforms whose sizes are in pixels, and the keys holding them.
_SIZE_KEYS = ('scale', 'crop_size', 'crop_padding', 'size')


@dataclass
class ImageNetToy:
    """Where :func:`make_imagenet_dataset` wrote a dataset (paths relative to ``root``).

    The layout is ImageNet's as mmpretrain reads it: ``train/<class>/*.JPEG``,
    ``val/<class>/*.JPEG`` and ``meta/{train,val}.txt`` ("<class>/<file> <label>").
    """
    root: str
    classes: Tuple[str, ...]
    image_size: Tuple[int, int]   # (height, width) of every stored image
    num_train: int = 0
    num_val: int = 0
    train_prefix: str = 'train'
    val_prefix: str = 'val'
    train_ann: str = 'meta/train.txt'
    val_ann: str = 'meta/val.txt'


def make_imagenet_dataset(root: str, num_classes: int = 4, train_per_class: int = 2,
                          val_per_class: int = 1, image_size: Tuple[int, int] = (40, 48),
                          seed: int = 0) -> ImageNetToy:
    """Write a tiny ImageNet-style dataset of learnable JPEG images.

    Every class has its own colour (a hue on the colour wheel) and a stripe
    orientation, plus noise, so that a classifier can learn the labels and
    crops, flips and AutoAugment still leave something to recognise.

    Args:
        root: folder to write into (created if missing).
        num_classes: number of classes (folders ``n0000``, ``n0001``, ...).
        train_per_class / val_per_class: images per class in each split.
        image_size: (height, width) of the stored images; make it larger than
            the crop the shrunk config takes, as ImageNet's images are.
        seed: of the noise.

    Returns:
        An :class:`ImageNetToy` describing what was written.
    """
    from PIL import Image
    if num_classes < 2:
        raise ValueError(f'make_imagenet_dataset: num_classes must be >= 2, got {num_classes}')
    h, w = image_size
    rng = np.random.default_rng(seed)
    classes = tuple(f'n{i:04d}' for i in range(num_classes))
    yy, xx = np.mgrid[0:h, 0:w]
    counts = {}
    for split, per_class in (('train', train_per_class), ('val', val_per_class)):
        lines: List[str] = []
        for label, name in enumerate(classes):
            os.makedirs(osp.join(root, split, name), exist_ok=True)
            angle = math.pi * label / num_classes
            stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 0.6)
            hue = 2 * math.pi * label / num_classes
            colour = 127 + 100 * np.array([math.cos(hue + k * 2 * math.pi / 3) for k in range(3)])
            for j in range(per_class):
                img = colour + 40 * stripes[..., None] + rng.normal(0, 20, (h, w, 3))
                file = f'{name}/{split}_{label}_{j}.JPEG'
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                    osp.join(root, split, file), quality=95)
                lines.append(f'{file} {label}')
        os.makedirs(osp.join(root, 'meta'), exist_ok=True)
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        counts[split] = len(lines)
    return ImageNetToy(root=root, classes=classes, image_size=(h, w),
                       num_train=counts['train'], num_val=counts['val'])


def shrink_imagenet_config(cfg, data: ImageNetToy, work_dir: str, max_iters: int = 1,
                           batch_size: int = 2, input_size: int = 32,
                           val_interval: Optional[int] = None,
                           save_checkpoint: bool = False, seed: int = 0):
    """A copy of an mmpretrain ImageNet config that trains on ``data`` in
    seconds on a CPU.

    What changes:

    * data: every dataloader reads ``data`` (its classes as ``metainfo``,
      its ``meta/*.txt`` annotation files), ``batch_size`` images per batch,
      no worker processes. Every size in the pipelines (``scale``,
      ``crop_size``, ``crop_padding``) is multiplied by ``input_size / R``,
      where R is the training crop of the config (224, 240, ...): a 256-pixel
      resize before a 224 center crop stays 8/7 of the crop.
    * model: ``num_classes`` everywhere (head, loss, data preprocessor) and
      ``topk`` of heads and evaluators limited to the number of classes.
      The architecture is untouched, FixNorm-FC's cap becomes
      ``alpha * sqrt(len(data.classes))`` as Eq. 10 says.
    * schedule: an ``IterBasedTrainLoop`` of ``max_iters`` that validates
      every ``val_interval`` (default: once, at the end). Every parameter
      scheduler moves to iterations (an epoch counts
      :data:`IMAGENET_ITERS_PER_EPOCH`) and is rescaled in time by
      ``max_iters / original length``, every scheduler kept at least two
      iterations long; an ``ExponentialLR`` gets the gamma that gives the
      same total decay. A warm-up stays a warm-up, a cosine stays a cosine.
    * runtime: ``work_dir``, the config dumped without yapf formatting (it
      takes seconds), log every iteration, hooks with an ``interval``
      (MCBRHook, EMAHook, ...) every iteration, a checkpoint at the end only
      with ``save_checkpoint``, seed, no launcher, no ``load_from``/resume,
      gloo as the distributed backend.

    Args:
        cfg: an mmengine ``Config`` or dict (not modified).
        data: from :func:`make_imagenet_dataset`.
        work_dir: where the Runner writes logs (and checkpoints).
        max_iters: training iterations.
        batch_size: images per batch of every dataloader (use >= 2: a
            BatchNorm in training mode needs two values per channel, and the
            last stage of an ImageNet network is 1x1 at 32 pixels).
        input_size: side of the training crop, in pixels.
        val_interval: validate every this many iterations.
        save_checkpoint: save a checkpoint after the last iteration.
        seed: of the Runner.

    Returns:
        The shrunk ``Config``.
    """
    from mmengine.config import Config
    cfg = copy.deepcopy(cfg) if isinstance(cfg, Config) else Config(copy.deepcopy(cfg))
    # the Runner logs and dumps the config; formatting it with yapf takes
    # seconds, longer than the whole shrunk training
    object.__setattr__(cfg, '_format_python_code', False)
    num_classes = len(data.classes)

    scale = input_size / _training_resolution(cfg)
    _shrink_data(cfg, data, batch_size, scale, num_classes)
    _set_num_classes(cfg.model, num_classes)
    if cfg.get('data_preprocessor') is not None:
        cfg.data_preprocessor['num_classes'] = num_classes

    short_cpu_run(cfg, work_dir, max_iters, _schedule_length(cfg), seed, val_interval,
                  checkpoint_interval=max_iters if save_checkpoint else -1,
                  iters_per_epoch=IMAGENET_ITERS_PER_EPOCH)
    if 'visualization' in cfg.default_hooks:
        cfg.default_hooks.visualization = dict(type='VisualizationHook', enable=False)
    return cfg


def _innermost_dataset(dataset: dict) -> dict:
    return innermost_dataset(dataset, 'pipeline', 'shrink_imagenet_config')


def _training_resolution(cfg) -> int:
    """The side of the training crop: the last ``scale``/``crop_size`` of the
    training pipeline (RandomResizedCrop, EfficientNetRandomCrop, ...)."""
    pipeline = _innermost_dataset(cfg.train_dataloader.dataset).get('pipeline') or []
    for t in reversed(pipeline):
        for key in ('scale', 'crop_size'):
            size = t.get(key)
            if isinstance(size, int):
                return size
            if isinstance(size, (list, tuple)) and size and isinstance(size[0], int):
                return max(size)
    raise KeyError('shrink_imagenet_config: no crop size (scale/crop_size) in '
                   'train_dataloader.dataset.pipeline')


def _scaled_size(size, factor: float):
    if isinstance(size, bool) or size is None:
        return size
    if isinstance(size, int):
        return max(1, int(round(size * factor)))
    if isinstance(size, (list, tuple)) and all(isinstance(s, int) for s in size):
        return type(size)(max(1, int(round(s * factor))) for s in size)
    return size  # a float ratio or something else: not a size


def _shrink_pipeline(pipeline: Optional[list], factor: float) -> None:
    for t in pipeline or []:
        for key in _SIZE_KEYS:
            if key in t:
                t[key] = _scaled_size(t[key], factor)


def _shrink_data(cfg, data: ImageNetToy, batch_size: int, factor: float,
                 num_classes: int) -> None:
    for key, prefix, ann in (('train_dataloader', data.train_prefix, data.train_ann),
                             ('val_dataloader', data.val_prefix, data.val_ann),
                             ('test_dataloader', data.val_prefix, data.val_ann)):
        loader = cfg.get(key)
        if loader is None:
            continue
        loader.batch_size = batch_size
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.pop('pin_memory', None)
        loader.pop('prefetch_factor', None)
        ds = _innermost_dataset(loader.dataset)
        ds.pop('split', None)  # ImageNet(split=...) would look for its own meta files
        # serialize_data=False: serialising a dozen samples buys nothing and
        # costs a full gc.collect() per dataset
        ds.update(data_root=data.root, data_prefix=prefix, ann_file=ann,
                  metainfo=dict(classes=list(data.classes)), serialize_data=False)
        _shrink_pipeline(ds.get('pipeline'), factor)
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key)
        if evaluators is None:
            continue
        for ev in evaluators if isinstance(evaluators, list) else [evaluators]:
            if 'topk' in ev:
                ev['topk'] = _valid_topk(ev['topk'], num_classes)


def _valid_topk(topk, num_classes: int):
    ks = (topk,) if isinstance(topk, int) else tuple(topk)
    return tuple(k for k in ks if k <= num_classes) or (1,)


def _set_num_classes(model: dict, num_classes: int) -> None:
    set_everywhere(model, dict(num_classes=num_classes,
                               topk=lambda topk: _valid_topk(topk, num_classes)))


def _schedule_length(cfg) -> float:
    return schedule_length(cfg, IMAGENET_ITERS_PER_EPOCH, 'shrink_imagenet_config')
