"""A tiny real training task for tuning tests and the CPU benchmark.

An mmengine Runner trains a small BN CNN (three conv-BN-ReLU blocks, global
pooling, a FixNorm-FC classifier, Eq. 10) on synthetic 8x8 "digits": ten
smooth random prototypes, each sample shifted by up to one pixel, plus noise,
with a share of the training labels flipped at random. The label noise is what
makes alpha matter (a large cap lets g grow and fit the noise, Sec. 2.3) and
the short schedule what makes lr matter; a full training takes a few seconds
on one CPU core. ``head='linear'`` gives the weight-decay twin for BO+WD.

Configs: ``configs/toy/toy_fixnorm.py`` and ``configs/toy/toy_wd.py``; the
metric is ``accuracy/top1`` (percent), as mmpretrain names it.
"""
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS
from torch import nn
from torch.utils.data import Dataset

from ..layers import FixNormLinear


@DATASETS.register_module()
class TuneToyDigits(Dataset):
    """Synthetic 1x8x8 images of ``num_classes`` classes.

    Args:
        num_samples: dataset size.
        split_seed: seed of this split's samples (train and val differ).
        prototype_seed: seed of the class prototypes (shared by all splits).
        noise: std of the pixel noise (prototypes have unit std).
        label_noise: fraction of labels replaced by a random class.
    """

    def __init__(self, num_samples: int = 1024, num_classes: int = 10, split_seed: int = 0,
                 prototype_seed: int = 1234, noise: float = 1.0,
                 label_noise: float = 0.0) -> None:
        protos = np.random.RandomState(prototype_seed).randn(num_classes, 10, 10)
        # smooth 3x3 box filter: neighbouring pixels correlate, as in images
        protos = sum(protos[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3)) / 3.0
        rng = np.random.RandomState(split_seed)
        labels = rng.randint(num_classes, size=num_samples)
        shifts = rng.randint(-1, 2, size=(num_samples, 2))
        images = np.stack([np.roll(protos[c], tuple(s), axis=(0, 1))
                           for c, s in zip(labels, shifts)])
        images = images + noise * rng.randn(*images.shape)
        flip = rng.rand(num_samples) < label_noise
        labels = np.where(flip, rng.randint(num_classes, size=num_samples), labels)
        self.images = torch.as_tensor(images[:, None], dtype=torch.float32)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.metainfo = dict(classes=tuple(str(i) for i in range(num_classes)))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> dict:
        return dict(inputs=self.images[idx], labels=self.labels[idx])


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


@MODELS.register_module()
class TuneToyNet(BaseModel):
    """conv-BN-ReLU x 3, global average pooling, FixNorm-FC (or a plain FC).

    Args:
        head: ``'fixnorm'`` (FixNormLinear with ``alpha``) or ``'linear'``.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, alpha: float = 1.0,
                 head: str = 'fixnorm', data_preprocessor: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        self.backbone = nn.Sequential(_block(1, width, 1), _block(width, 2 * width, 2),
                                      _block(2 * width, 2 * width, 1),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        if head == 'fixnorm':
            self.head = FixNormLinear(2 * width, num_classes, alpha=alpha)
        elif head == 'linear':
            self.head = nn.Linear(2 * width, num_classes)
        else:
            raise ValueError(f"TuneToyNet: head must be 'fixnorm' or 'linear', got {head!r}")

    def forward(self, inputs, labels=None, mode: str = 'tensor'):
        # mmengine's default collate (pseudo_collate) gives lists of samples
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(inputs)
        if isinstance(labels, (list, tuple)):
            labels = torch.stack(labels)
        logits = self.head(self.backbone(inputs))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        if mode == 'predict':
            return [dict(pred=int(p), label=int(t))
                    for p, t in zip(logits.argmax(1), labels)]
        return logits


@METRICS.register_module()
class TuneToyAccuracy(BaseMetric):
    """Top-1 accuracy in percent, reported as ``accuracy/top1``."""
    default_prefix = 'accuracy'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        self.results += [float(d['pred'] == d['label']) for d in data_samples]

    def compute_metrics(self, results: List[float]) -> dict:
        return dict(top1=100.0 * sum(results) / max(1, len(results)))


@HOOKS.register_module()
class TuneToyFaultHook(Hook):
    """Makes a trial fail the way a diverging training fails, for the tests of a
    sweep's failure handling: when the optimizer's lr exceeds ``lr_above``, a
    NaN is written into the first conv weight before iteration ``at_iter``; the
    next optimizer step spreads it and FixNorm's finite-norm check (Algo 1)
    stops the run with a ``FloatingPointError``, as it does for a real NaN.
    """

    def __init__(self, lr_above: float, at_iter: int = 1) -> None:
        self.lr_above, self.at_iter = lr_above, at_iter

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        group = runner.optim_wrapper.optimizer.param_groups[0]
        base_lr = group.get('initial_lr', group['lr'])  # the configured lr, before warm-up
        if runner.iter + 1 == self.at_iter and base_lr > self.lr_above:
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            with torch.no_grad():
                model.backbone[0][0].weight.view(-1)[0] = float('nan')
