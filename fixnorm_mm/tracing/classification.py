"""mmpretrain classifiers: class labels."""
from typing import Dict, Tuple

import torch
from torch import nn

from .base import TaskTracing, is_instance, loaded_class, out_features, weight_layers
from ..registry import TRACING_TASKS


@TRACING_TASKS.register_module('classification')
class ClassificationTracing(TaskTracing):
    """Any mmpretrain image classifier (the batch augments of its data
    preprocessor, Mixup / CutMix, run as in training). Images are 64x64, or
    224x224 for a model that takes only the ImageNet size (VGG's FC layers,
    Swin's windows)."""
    task = 'classification'
    ground_truth = 'class labels'
    default_image_size = 64
    fallback_image_size = 224

    def accepts(self, model: nn.Module) -> bool:
        return is_instance(model, loaded_class('mmpretrain.models.classifiers',
                                               'BaseClassifier'))

    @staticmethod
    def _heads(model: nn.Module):
        bases = (loaded_class('mmpretrain.models.heads', 'ClsHead'),
                 loaded_class('mmpretrain.models.heads', 'MultiLabelClsHead'))
        return [(n, m) for n, m in model.named_modules()
                if is_instance(m, *bases) and isinstance(getattr(m, 'num_classes', None), int)]

    def batch(self, model: nn.Module, image_size: Tuple[int, int],
              batch_size: int = 2, seed: int = 0) -> dict:
        from mmpretrain.structures import DataSample
        g = self.generator(seed)
        heads = self._heads(model)
        classes = heads[0][1].num_classes if heads else 2
        inputs = self.random_images(g, batch_size, image_size)
        samples = [DataSample(metainfo=self.image_meta(i, image_size)).set_gt_label(
            int(torch.randint(0, classes, (), generator=g))) for i in range(batch_size)]
        return dict(inputs=inputs, data_samples=samples)

    def final_layers(self, model: nn.Module) -> Dict[str, str]:
        """The layers of each classification head with ``num_classes``
        outputs (``head.fc``, ``head.layers.head``, DeiT's distillation head);
        for a backbone that holds its own classifier (VGG, with a plain
        ``ClsHead``), its last layer with the backbone's ``num_classes``
        outputs."""
        found = {}
        for name, head in self._heads(model):
            for sub, layer in weight_layers(head):
                if isinstance(layer, (nn.Conv2d, nn.Linear)) and \
                        out_features(layer) == head.num_classes:
                    found[f'{name}.{sub}'] = (f'{type(head).__name__} output with '
                                              f'num_classes={head.num_classes}')
        backbone = getattr(model, 'backbone', None)
        classes = getattr(backbone, 'num_classes', None)
        if not found and isinstance(classes, int) and classes > 0:
            last = [n for n, m in weight_layers(backbone)
                    if isinstance(m, (nn.Conv2d, nn.Linear)) and out_features(m) == classes]
            if last:
                found[f'backbone.{last[-1]}'] = (
                    f'classifier inside {type(backbone).__name__}: its last layer with '
                    f'num_classes={classes} outputs')
        return found
