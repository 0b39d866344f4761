"""A tiny COCO-format detection dataset, and a shrinker that lets any mmdet
COCO config of this project train and evaluate in seconds on a CPU.

Used by the tests, and by tools and benchmarks that need a real mmdet Runner
without COCO (tuning, distributed, folding)::

    from mmengine.config import Config
    from mmengine.runner import Runner
    from fixnorm_mm.testing.detection import make_coco_dataset, shrink_coco_config

    data = make_coco_dataset('/tmp/toy_coco')               # images + COCO json
    cfg = Config.fromfile('fixnorm_mm::coco/retinanet_r50_fpn_fixnorm_90k_coco.py')
    cfg = shrink_coco_config(cfg, data, work_dir='/tmp/work', max_iters=4)
    runner = Runner.from_cfg(cfg)
    runner.train()                                          # then validates once
    runner.message_hub.get_scalar('val/coco/bbox_mAP').current()

The shrinker never edits the config it is given (it returns a changed copy)
and keeps what the experiment is about: model type, head, WN/FixNorm layers,
frozen backbone stages and eval-mode BN, optimizer, optim wrapper, custom
hooks, and the *shape* of the learning-rate schedule (rescaled in time).
"""
import copy
import json
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .common import innermost_dataset, schedule_length, set_everywhere, short_cpu_run

#: Colours (RGB) of the drawn boxes, one per class.
PALETTE = ((220, 40, 40), (40, 200, 40), (40, 80, 230), (230, 200, 30),
           (200, 40, 200), (30, 200, 210))

#: Iterations in one epoch of COCO train2017 at batch 16 (117,266 images with
#: boxes): converts epoch-based schedules into iterations before rescaling.
COCO_ITERS_PER_EPOCH = 7330


@dataclass
class CocoToy:
    """Where :func:`make_coco_dataset` wrote a dataset (paths relative to ``root``)."""
    root: str
    classes: Tuple[str, ...]
    image_size: int
    train_ann: str = 'annotations/instances_train.json'
    val_ann: str = 'annotations/instances_val.json'
    train_img: str = 'train/'
    val_img: str = 'val/'
    num_train: int = 0
    num_val: int = 0


def _place_boxes(rng: np.random.Generator, size: int, n: int,
                 min_frac: float, max_frac: float) -> List[Tuple[int, int, int, int]]:
    """Up to ``n`` non-overlapping boxes (x, y, w, h); sides in
    [min_frac, max_frac] * size, the range of RetinaNet's P3/P4 anchors at 128px."""
    boxes = []
    for _ in range(50 * n):
        if len(boxes) == n:
            break
        w, h = (int(rng.integers(int(min_frac * size), int(max_frac * size) + 1))
                for _ in range(2))
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        if all(x + w <= bx or bx + bw <= x or y + h <= by or by + bh <= y
               for bx, by, bw, bh in boxes):
            boxes.append((x, y, w, h))
    return boxes


def make_coco_dataset(root: str, num_train: int = 8, num_val: int = 2,
                      image_size: int = 128,
                      classes: Sequence[str] = ('red', 'green', 'blue'),
                      max_boxes: int = 3, seed: int = 0) -> CocoToy:
    """Write a COCO-format detection dataset under ``root``.

    Each image is grey noise with 1..``max_boxes`` filled, outlined
    rectangles; a rectangle's colour is its class (:data:`PALETTE`) and its
    annotation is its exact box, with the rectangle as its polygon mask
    (``segmentation``), so that instance-segmentation configs train too. Layout::

        root/train/000000.png ...   root/annotations/instances_train.json
        root/val/000000.png ...     root/annotations/instances_val.json

    Args:
        root: output folder (created).
        num_train, num_val: number of images of each split.
        image_size: side of the square images, in pixels.
        classes: class names (at most ``len(PALETTE)``); category ids are 1..K.
        max_boxes: most boxes per image.
        seed: the dataset is a pure function of the arguments.

    Returns:
        A :class:`CocoToy` to hand to :func:`shrink_coco_config`.
    """
    import cv2
    classes = tuple(classes)
    if not 1 <= len(classes) <= len(PALETTE):
        raise ValueError(f'make_coco_dataset: 1 to {len(PALETTE)} classes, got {classes!r}')
    data = CocoToy(root=str(root), classes=classes, image_size=image_size,
                   num_train=num_train, num_val=num_val)
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=c) for i, c in enumerate(classes)]
    for n, img_dir, ann in ((num_train, data.train_img, data.train_ann),
                            (num_val, data.val_img, data.val_ann)):
        os.makedirs(osp.join(root, img_dir), exist_ok=True)
        images, annotations = [], []
        for i in range(n):
            img = rng.normal(128, 20, (image_size, image_size, 3)).clip(0, 255).astype(np.uint8)
            for x, y, w, h in _place_boxes(rng, image_size, int(rng.integers(1, max_boxes + 1)),
                                           0.25, 0.55):
                label = int(rng.integers(len(classes)))
                rgb = PALETTE[label]
                cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), rgb[::-1], thickness=-1)
                cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), (0, 0, 0), thickness=1)
                # the rectangle's outline as a polygon: instance masks for
                # Mask R-CNN and other mask heads (LoadAnnotations(with_mask=True))
                polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
                annotations.append(dict(id=len(annotations) + 1, image_id=i + 1,
                                        category_id=label + 1, bbox=[x, y, w, h],
                                        area=w * h, iscrowd=0, segmentation=[polygon]))
            name = f'{i:06d}.png'
            cv2.imwrite(osp.join(root, img_dir, name), img)
            images.append(dict(id=i + 1, file_name=name, height=image_size, width=image_size))
        with open(osp.join(root, ann), 'w') as f:
            json.dump(dict(images=images, annotations=annotations,
                           categories=categories), f)
    return data


def shrink_coco_config(cfg, data: CocoToy, work_dir: str, max_iters: int = 4,
                       batch_size: int = 2, image_size: Optional[int] = None,
                       tiny_model: bool = True, width: int = 16,
                       val_interval: Optional[int] = None, score_thr: float = 0.0,
                       seed: int = 0, format_python_code: bool = False):
    """A copy of an mmdet COCO config that trains on ``data`` in seconds on a CPU.

    What changes:

    * data: every dataloader reads ``data`` (its classes as ``metainfo``),
      ``batch_size`` images per batch, no worker processes; resizes go to
      ``image_size`` (default ``data.image_size``); the COCO evaluators read
      the val annotation file.
    * model: ``num_classes`` everywhere; ``init_cfg`` of the backbone dropped
      (no ImageNet download). With ``tiny_model``, a ResNet backbone becomes
      ResNet-18 with ``base_channels=8`` (same ``frozen_stages``,
      ``norm_eval``, ``out_indices``) and the neck and heads (one-stage,
      RPN, RoI) get ``width`` channels: mmdet's RetinaNet and Faster R-CNN
      ResNet-FPN configs shrink as well as this project's. Test-time
      ``score_thr`` (default 0): an untrained detector scores below mmdet's
      0.05, and COCO mAP needs detections to rank.
    * schedule: an ``IterBasedTrainLoop`` of ``max_iters`` that validates
      every ``val_interval`` (default: once, at the end); every parameter
      scheduler is rescaled in time by ``max_iters / original length`` and
      counted in iterations (an epoch counts :data:`COCO_ITERS_PER_EPOCH`),
      so a step schedule keeps its steps and a warmup stays a warmup.
    * runtime: ``work_dir``, log every iteration, a checkpoint at the end,
      hooks with an ``interval`` (MCBRHook, ...) every iteration, seed; and
      no yapf formatting of the config text (``format_python_code``): the
      Runner logs, dumps and checkpoints it five times, which takes longer
      than training the tiny model.

    Args:
        cfg: an mmengine ``Config`` (not modified).
        data: from :func:`make_coco_dataset`.
        work_dir: where the Runner writes logs and checkpoints.

    Returns:
        The shrunk ``Config``.
    """
    from mmengine.config import Config
    cfg = copy.deepcopy(cfg) if isinstance(cfg, Config) else Config(copy.deepcopy(cfg))
    size = image_size or data.image_size

    _shrink_data(cfg, data, batch_size, size)
    _shrink_model(cfg.model, len(data.classes), tiny_model, width, score_thr)
    old_len = _schedule_length(cfg)
    short_cpu_run(cfg, work_dir, max_iters, old_len, seed, val_interval,
                  iters_per_epoch=COCO_ITERS_PER_EPOCH)
    return Config(cfg.to_dict(), filename=cfg.filename,
                  format_python_code=format_python_code)


def _innermost_dataset(dataset: dict) -> dict:
    return innermost_dataset(dataset, 'ann_file', 'shrink_coco_config')


def _shrink_pipeline(pipeline: Optional[list], size: int) -> None:
    for t in pipeline or []:
        if isinstance(t, (list, tuple)):  # RandomChoice's alternatives (DETR family)
            _shrink_pipeline(t, size)
            continue
        if 'scale' in t:
            t['scale'] = (size, size)
        if 'scales' in t:
            t['scales'] = [(size, size)]
        if t.get('type') in ('RandomResize',) and 'ratio_range' in t:
            t['ratio_range'] = (1.0, 1.0)
        if 'transforms' in t:
            _shrink_pipeline(t['transforms'], size)


def _shrink_data(cfg, data: CocoToy, batch_size: int, size: int) -> None:
    for key, ann, img in (('train_dataloader', data.train_ann, data.train_img),
                          ('val_dataloader', data.val_ann, data.val_img),
                          ('test_dataloader', data.val_ann, data.val_img)):
        loader = cfg.get(key)
        if loader is None:
            continue
        loader.batch_size = batch_size if key == 'train_dataloader' else 1
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.pop('pin_memory', None)
        outer = loader.dataset
        ds = _innermost_dataset(outer)
        ds.update(data_root=data.root, ann_file=ann, data_prefix=dict(img=img),
                  metainfo=dict(classes=data.classes), backend_args=None)
        _shrink_pipeline(ds.get('pipeline'), size)
        if outer is not ds:
            _shrink_pipeline(outer.get('pipeline'), size)
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key)
        if evaluators is None:
            continue
        for ev in evaluators if isinstance(evaluators, list) else [evaluators]:
            if 'ann_file' in ev:
                ev.update(ann_file=osp.join(data.root, data.val_ann), format_only=False,
                          backend_args=None)


#: ResNet variants whose ``depth=18, base_channels=8`` is the tiny backbone.
_RESNETS = ('ResNet', 'ResNetV1d', 'ResNetV1c')


def _shrink_model(model: dict, num_classes: int, tiny: bool, width: int,
                  score_thr: float) -> None:
    set_everywhere(model, dict(num_classes=num_classes, score_thr=score_thr))
    backbone = model.get('backbone', {})
    backbone['init_cfg'] = None
    if not tiny:
        return
    if backbone.get('type') not in _RESNETS:
        raise ValueError(f'shrink_coco_config(tiny_model=True) knows ResNet backbones '
                         f'{_RESNETS}, got model.backbone.type={backbone.get("type")!r}; '
                         'pass tiny_model=False')
    base = 8
    backbone.update(depth=18, base_channels=base)
    backbone.pop('stem_channels', None)
    stage_channels = [base * 2 ** i for i in range(4)]  # BasicBlock: expansion 1
    out_indices = backbone.get('out_indices', (0, 1, 2, 3))
    neck = model.get('neck')
    if neck is not None:
        for n in neck if isinstance(neck, list) else [neck]:
            n['in_channels'] = [stage_channels[i] for i in out_indices]
            n['out_channels'] = width
    for key in ('bbox_head', 'rpn_head'):
        head = model.get(key)
        if head is not None:
            head.update(in_channels=width, feat_channels=width)
    # two-stage detectors: RoI extractors and RoI heads (lists for cascades)
    roi_head = model.get('roi_head') or {}
    for key, part in roi_head.items():
        for p in part if isinstance(part, list) else [part]:
            if not isinstance(p, dict):
                continue
            if key.endswith('_roi_extractor'):
                p['out_channels'] = width
            elif key.endswith('_head'):
                p['in_channels'] = width
                for k in ('fc_out_channels', 'conv_out_channels'):
                    if k in p:
                        p[k] = 2 * width


def _schedule_length(cfg) -> float:
    return schedule_length(cfg, COCO_ITERS_PER_EPOCH, 'shrink_coco_config')
