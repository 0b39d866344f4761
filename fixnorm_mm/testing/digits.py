"""scikit-learn's handwritten digits as a real small classification task, and
the small BN ResNet of the experiments (``experiments/``). The plain BN CNN
of ``tools/compare_methods.py`` is :class:`~fixnorm_mm.testing.toy.ToyNet`.

Data: ``sklearn.datasets.load_digits`` (1797 real 8x8 grey-scale images of 10
digits, shipped inside scikit-learn, no download), scaled to [0, 1] and
standardised with the training split's mean and std. Two fixed ways to split
them (``protocol`` of :class:`DigitsDataset`):

* ``'fixed_sizes'`` (the experiments): one stratified split, the same for
  every run, 400 train / 397 val / 1000 test (:data:`SPLIT_SIZES`). The
  training set is small on purpose: with 1000 training images the methods
  reached 99.0-99.5% and the differences drowned in the noise of single test
  images.
* ``'class_fraction'`` (``tools/compare_methods.py``): ``val_fraction`` of
  every class held out at random (``seed``) for val, the rest is train.

Model: :class:`DigitsResNet`, a stem and two basic blocks, every conv followed
by BatchNorm (so every conv weight is scale-invariant and lands in FixNorm's
fixed set), global average pooling, and the final classifier ``head.fc``,
whose type is what Sec. 2.3 varies (:data:`~fixnorm_mm.testing.toy.FC_TYPES`).
"""
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.registry import DATASETS, MODELS
from mmengine.structures import BaseDataElement
from torch import nn
from torch.utils.data import Dataset

from .toy import FC_TYPES, ToyClassifier, check_fc_type

NUM_CLASSES = 10
SPLIT_SIZES = dict(train=400, val=397, test=1000)
PROTOCOLS = ('fixed_sizes', 'class_fraction')

_CACHE: Dict[tuple, Dict[str, tuple]] = {}


def _digits() -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def _fixed_sizes() -> Dict[str, tuple]:
    from sklearn.model_selection import train_test_split
    x, y = _digits()
    idx = np.arange(len(y))
    train, rest = train_test_split(idx, train_size=SPLIT_SIZES['train'], stratify=y,
                                   random_state=0)
    val, test = train_test_split(rest, train_size=SPLIT_SIZES['val'], stratify=y[rest],
                                 random_state=0)
    mean, std = x[train].mean(), x[train].std()
    out = {}
    for k, part in (('train', train), ('val', val), ('test', test)):
        part = np.sort(part)
        out[k] = (torch.from_numpy((x[part] - mean) / std)[:, None], torch.from_numpy(y[part]))
    return out


def _class_fraction(val_fraction: float, seed: int) -> Dict[str, tuple]:
    x, y = _digits()
    rng = np.random.RandomState(seed)
    val = np.zeros(len(y), bool)
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        val[idx[:int(round(val_fraction * len(idx)))]] = True
    mean, std = x[~val].mean(), x[~val].std()  # training statistics only
    return {k: (torch.from_numpy((x[keep] - mean) / std)[:, None], torch.from_numpy(y[keep]))
            for k, keep in (('train', ~val), ('val', val))}


def load_split(split: str, protocol: str = 'fixed_sizes', val_fraction: float = 0.25,
               seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 1, 8, 8) float32, standardised; labels (N,) int64)`` of
    one split; computed once per process and protocol."""
    if protocol not in PROTOCOLS:
        raise ValueError(f'DigitsDataset: protocol must be one of {PROTOCOLS}, got {protocol!r}')
    key = (protocol,) if protocol == 'fixed_sizes' else (protocol, val_fraction, seed)
    if key not in _CACHE:
        _CACHE[key] = (_fixed_sizes() if protocol == 'fixed_sizes'
                       else _class_fraction(val_fraction, seed))
    splits = _CACHE[key]
    if split not in splits:
        raise ValueError(f'DigitsDataset: split must be one of {list(splits)} with '
                         f'protocol={protocol!r}, got {split!r}')
    return splits[split]


@DATASETS.register_module()
class DigitsDataset(Dataset):
    """One split of the digits.

    Args:
        split: ``'train'``, ``'val'`` or (``'fixed_sizes'``) ``'test'``.
        protocol: ``'fixed_sizes'`` or ``'class_fraction'`` (module docstring).
        subset: keep only the first ``subset`` images (smoke runs).
        val_fraction: share of every class held out for val (``'class_fraction'``).
        seed: seed of that hold-out (``'class_fraction'``).
    """

    def __init__(self, split: str = 'train', protocol: str = 'fixed_sizes',
                 subset: Optional[int] = None, val_fraction: float = 0.25,
                 seed: int = 0) -> None:
        self.images, self.labels = load_split(split, protocol, val_fraction, seed)
        if subset is not None:
            self.images, self.labels = self.images[:subset], self.labels[:subset]
        self.metainfo = dict(classes=tuple(str(i) for i in range(NUM_CLASSES)))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=self.images[i],
                    data_samples=BaseDataElement(gt_label=self.labels[i:i + 1]))


class BasicBlock(nn.Module):
    """ResNet basic block; every conv feeds a BatchNorm directly."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class _Head(nn.Module):
    def __init__(self, fc: nn.Module) -> None:
        super().__init__()
        self.fc = fc


@MODELS.register_module()
class DigitsResNet(ToyClassifier):
    """stem 3x3 conv (8x8) -> block (8x8, w) -> block (4x4, 2w) -> GAP -> head.fc.

    Args:
        width: channels of the stem and the first block.
        fc_type: the final layer, a key of :data:`~fixnorm_mm.testing.toy.FC_TYPES`.
        alpha: FixNorm-FC's alpha (Eq. 10).
    """

    def __init__(self, width: int = 16, fc_type: str = 'fc', alpha: float = 1.0,
                 data_preprocessor=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        check_fc_type(fc_type, 'DigitsResNet')
        self.backbone = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            BasicBlock(width, width), BasicBlock(width, 2 * width, stride=2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = _Head(FC_TYPES[fc_type](2 * width, NUM_CLASSES, alpha))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head.fc(self.backbone(images))
