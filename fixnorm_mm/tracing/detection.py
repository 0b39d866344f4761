"""mmdet detectors: images with boxes, labels and (for mask heads) masks."""
import re
from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn

from .base import TaskTracing, is_instance, loaded_class, out_features, weight_layers
from ..registry import TRACING_TASKS

#: attribute names that hold proposal generators, not the detector's classifier
PROPOSAL_HEADS = ('rpn_head',)


def _num_classes(model: nn.Module) -> int:
    for name, m in model.named_modules():
        n = getattr(m, 'num_classes', None)
        if isinstance(n, int) and n > 0 and name.split('.')[0] not in PROPOSAL_HEADS:
            return n
    return 1


def _with_mask(model: nn.Module) -> bool:
    roi_head = getattr(model, 'roi_head', None)
    return bool(getattr(roi_head, 'with_mask', False)) or hasattr(model, 'mask_head')


def _with_semantic(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, 'roi_head', None), 'with_semantic', False))


def _attribute(name: str) -> str:
    """The last non-index part of a module name: 'rtm_cls.2' -> 'rtm_cls'."""
    parts = [p for p in name.split('.') if not p.isdigit()]
    return parts[-1] if parts else ''


@TRACING_TASKS.register_module('detection')
class DetectionTracing(TaskTracing):
    """Any mmdet detector: one-stage, two-stage, cascade, instance segmentation.

    The batch has 1-3 boxes per image (sides 20-60% of the image), labels
    in ``[0, num_classes)``, and, when the detector has a mask head, the
    boxes' filled masks (``BitmapMasks``); HTC's semantic head gets a label
    map. Its loss path runs the RPN, the RoI sampler, every cascade stage and
    the mask head, which a ``forward(x)`` never reaches.
    """
    task = 'detection'
    ground_truth = 'boxes and labels'
    default_image_size = 128

    def accepts(self, model: nn.Module) -> bool:
        return is_instance(model, loaded_class('mmdet.models.detectors', 'BaseDetector'))

    def for_small_batches(self, model: nn.Module, image_size: Tuple[int, int]) -> None:
        # YOLOX / RTMDet resize every batch to 480-800 px (BatchSyncRandomResize)
        pre = getattr(model, 'data_preprocessor', None)
        if getattr(pre, 'batch_augments', None) is not None:
            pre.batch_augments = None

    def ground_truth_of(self, model: nn.Module) -> str:
        parts = ['boxes', 'labels'] + [w for w, has in (('masks', _with_mask(model)),
                                                        ('label maps', _with_semantic(model)))
                                       if has]
        return ', '.join(parts[:-1]) + ' and ' + parts[-1]

    def batch(self, model: nn.Module, image_size: Tuple[int, int],
              batch_size: int = 2, seed: int = 0) -> dict:
        from mmdet.structures import DetDataSample
        from mmdet.structures.mask import BitmapMasks
        from mmengine.structures import InstanceData, PixelData
        g = self.generator(seed)
        h, w = image_size
        classes = _num_classes(model)
        inputs = self.random_images(g, batch_size, image_size)
        samples = []
        for i in range(batch_size):
            k = int(torch.randint(1, 4, (), generator=g))
            wh = (0.2 + 0.4 * torch.rand(k, 2, generator=g)) * torch.tensor([w, h])
            xy = torch.rand(k, 2, generator=g) * (torch.tensor([w, h]) - wh)
            boxes = torch.cat([xy, xy + wh], 1).floor()
            gt = InstanceData(bboxes=boxes,
                              labels=torch.randint(0, classes, (k,), generator=g))
            if _with_mask(model):
                masks = np.zeros((k, h, w), dtype=np.uint8)
                for j, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                    masks[j, y0:y1, x0:x1] = 1
                gt.masks = BitmapMasks(masks, h, w)
            sample = DetDataSample(metainfo=self.image_meta(i, image_size))
            sample.gt_instances = gt
            if _with_semantic(model):
                sample.gt_sem_seg = PixelData(
                    sem_seg=torch.randint(0, classes, (1, h, w), generator=g))
            samples.append(sample)
        return dict(inputs=inputs, data_samples=samples)

    def final_layers(self, model: nn.Module) -> Dict[str, str]:
        """The class-score layers of the dense heads (one-stage detectors) and
        of every RoI box head (each cascade stage): a conv/linear whose name
        says ``cls`` and whose outputs are a multiple of the head's class
        channels. Not chosen: the RPN's objectness (``rpn_head``: it ranks
        proposals, the RoI head classifies them), regression, centerness,
        objectness and mask-logit layers."""
        dense = loaded_class('mmdet.models.dense_heads.base_dense_head', 'BaseDenseHead')
        roi_box = loaded_class('mmdet.models.roi_heads.bbox_heads', 'BBoxHead')
        mask_base = loaded_class('mmdet.models.dense_heads.base_mask_head', 'BaseMaskHead')
        found: Dict[str, str] = {}
        for head_name, head in model.named_modules():
            if head_name.split('.')[0] in PROPOSAL_HEADS:
                continue
            if is_instance(head, roi_box):
                classes = head.num_classes
                channels = {classes, classes + 1}
                what = f'{classes} classes + background'
            elif is_instance(head, dense, mask_base):
                per = getattr(head, 'cls_out_channels', None) or head.num_classes
                channels = None
                what = f'a multiple of its {per} class channels'
            else:
                continue
            for sub, layer in weight_layers(head):
                attr = _attribute(sub)
                if not (re.search(r'(^|_)cls$', attr) or attr == 'cls_branches'):
                    continue
                n = out_features(layer)
                if (channels is not None and n in channels) or \
                        (channels is None and n % per == 0):
                    found[f'{head_name}.{sub}'] = (
                        f'class scores of {type(head).__name__} ({n} outputs: {what})')
        return found
