"""mmseg segmentors: label maps."""
from typing import Dict, Tuple

import torch
from torch import nn

from .base import TaskTracing, is_instance, loaded_class, out_features
from ..registry import TRACING_TASKS


@TRACING_TASKS.register_module('segmentation')
class SegmentationTracing(TaskTracing):
    """Any mmseg segmentor. The batch's label maps are random rectangles of
    random classes on a background class; the loss path runs the decode
    head(s) and every auxiliary head (a ``forward(x)`` runs the decode head
    only)."""
    task = 'segmentation'
    ground_truth = 'label maps'
    default_image_size = 64

    def accepts(self, model: nn.Module) -> bool:
        return is_instance(model, loaded_class('mmseg.models.segmentors', 'BaseSegmentor'))

    def for_small_batches(self, model: nn.Module, image_size: Tuple[int, int]) -> None:
        # mmseg pads every batch to the crop size (512x1024 for Cityscapes)
        pre = getattr(model, 'data_preprocessor', None)
        if getattr(pre, 'size', None) is not None:
            pre.size = tuple(image_size)

    def batch(self, model: nn.Module, image_size: Tuple[int, int],
              batch_size: int = 2, seed: int = 0) -> dict:
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        g = self.generator(seed)
        h, w = image_size
        classes = max(1, self._num_classes(model))
        inputs = self.random_images(g, batch_size, image_size)
        samples = []
        for i in range(batch_size):
            label = torch.zeros(1, h, w, dtype=torch.long)
            for _ in range(3):
                y0, x0 = (int(torch.randint(0, s // 2, (), generator=g)) for s in (h, w))
                y1, x1 = (int(torch.randint(s // 2 + 1, s + 1, (), generator=g)) for s in (h, w))
                label[:, y0:y1, x0:x1] = int(torch.randint(0, classes, (), generator=g))
            sample = SegDataSample(metainfo=dict(self.image_meta(i, image_size),
                                                 pad_shape=tuple(image_size)))
            sample.gt_sem_seg = PixelData(data=label)
            samples.append(sample)
        return dict(inputs=inputs, data_samples=samples)

    @staticmethod
    def _decode_heads(model: nn.Module):
        base = loaded_class('mmseg.models.decode_heads.decode_head', 'BaseDecodeHead')
        return [(n, m) for n, m in model.named_modules() if is_instance(m, base)]

    def _num_classes(self, model: nn.Module) -> int:
        heads = self._decode_heads(model)
        return heads[0][1].num_classes if heads else 1

    def final_layers(self, model: nn.Module) -> Dict[str, str]:
        """``conv_seg`` of every decode and auxiliary head (the per-pixel
        classifier of each), and ``cls_embed`` of query-based heads
        (Mask2Former, MaskFormer: the class scores of each query, over the
        classes and "no object")."""
        found = {}
        for name, head in self._decode_heads(model):
            conv = getattr(head, 'conv_seg', None)
            if isinstance(conv, (nn.Conv2d, nn.Linear)):
                found[f'{name}.conv_seg'] = (f'pixel classifier of {type(head).__name__} '
                                             f'(conv_seg, {out_features(conv)} classes)')
        for name, head in model.named_modules():
            fc, classes = getattr(head, 'cls_embed', None), getattr(head, 'num_classes', None)
            if isinstance(fc, nn.Linear) and isinstance(classes, int) \
                    and fc.out_features in (classes, classes + 1):
                found[f'{name}.cls_embed'] = (f'query class scores of {type(head).__name__} '
                                              f'(cls_embed, {fc.out_features} outputs)')
        return found
