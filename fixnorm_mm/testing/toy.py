"""The toy task of the tests, the tuning configs and the benchmarks: synthetic
8x8 images, a small conv-BN classifier, a top-1 metric and the config of a
short Runner training. Everything trains in seconds on one CPU core.

Registered (mmengine's root registries, once, here):

* ``ToyDataset`` (DATASETS): ``num_samples`` images of ``num_classes``
  classes drawn from ``seed``. ``pattern='offset'``: Gaussian noise plus
  0.5 x the class index (separable in a few steps: the core's Runner tests).
  ``pattern='prototypes'``: one smooth random prototype a class, each sample shifted
  by up to one pixel, plus noise, with a share ``label_noise`` of the labels
  replaced at random (``configs/toy``: the label noise is what makes alpha
  matter, a large cap lets g grow and fit the noise, Sec. 2.3; the short
  schedule what makes lr matter).
* ``ToyNet`` (MODELS): conv-BN-ReLU blocks, optionally a plain conv with no
  norm after it, global average pooling and a final layer chosen by
  ``fc_type`` (:data:`FC_TYPES`: plain FC, WN-FC, FixNorm-FC).
* ``ToyAccuracy`` (METRICS): top-1 accuracy in percent under ``key``.
* ``ToyNaNHook`` (HOOKS): makes a training fail the way a diverging one fails.
* ``ToyKillHook`` (HOOKS): SIGKILLs its own training once (at an iteration,
  or in the middle of a checkpoint save), as the OOM killer does.

A sample is ``dict(inputs=image, data_samples=BaseDataElement(gt_label=(1,)
tensor))``; every model of :class:`ToyClassifier` (here and in
:mod:`fixnorm_mm.testing.digits`) reads it with mmengine's ``pseudo_collate``
or ``default_collate``. :func:`runner_cfg` is the config of the core's Runner
tests.
"""
import os
import os.path as osp
import signal
import uuid
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS
from mmengine.structures import BaseDataElement
from torch import nn
from torch.utils.data import Dataset

from ..layers import FixNormLinear, WNLinear

#: The final-layer variants of Sec. 2.3, by ``fc_type``.
FC_TYPES = {
    'fc': lambda cin, num_classes, alpha: nn.Linear(cin, num_classes),  # Eq. 5
    # Salimans & Kingma's WN: one g per class (core WNLinear)
    'wn_fc': lambda cin, num_classes, alpha: WNLinear(cin, num_classes),
    # Eq. 6 as written: whole-tensor norm and one scalar g, i.e. FixNorm-FC
    # whose cap is never reached
    'wn_fc_eq6': lambda cin, num_classes, alpha: FixNormLinear(cin, num_classes, alpha=1e6),
    'fixnorm_fc': lambda cin, num_classes, alpha: FixNormLinear(cin, num_classes,
                                                                alpha=alpha),  # Eq. 10
}


def check_fc_type(fc_type: str, who: str) -> None:
    """Refuse an unknown final layer before any layer draws initial weights."""
    if fc_type not in FC_TYPES:
        raise ValueError(f'{who}: fc_type must be one of {list(FC_TYPES)}, got {fc_type!r}')


# ----------------------------------------------------------------------------- data
@DATASETS.register_module()
class ToyDataset(Dataset):
    """Synthetic ``channels`` x 8 x 8 images of ``num_classes`` classes.

    Args:
        num_samples: dataset size.
        num_classes: number of classes.
        seed: seed of this split's samples (train and val differ).
        pattern: ``'offset'`` (noise + 0.5 x class, torch's generator) or
            ``'prototypes'`` (shifted smooth class prototypes + noise, numpy's).
        channels: image channels.
        noise: std of the pixel noise (prototypes have unit std).
        label_noise: fraction of labels replaced by a random class (the image
            stays that of the true class).
        prototype_seed: seed of the class prototypes (``'prototypes'``; shared
            by all splits).
    """

    def __init__(self, num_samples: int = 32, num_classes: int = 4, seed: int = 0,
                 pattern: str = 'offset', channels: int = 3, noise: float = 1.0,
                 label_noise: float = 0.0, prototype_seed: int = 1234) -> None:
        if pattern == 'offset':
            images, labels = self._offset(num_samples, num_classes, seed, channels, noise,
                                          label_noise)
        elif pattern == 'prototypes':
            images, labels = self._prototypes(num_samples, num_classes, seed, channels, noise,
                                              label_noise, prototype_seed)
        else:
            raise ValueError(f"ToyDataset: pattern must be 'offset' or 'prototypes', "
                             f'got {pattern!r}')
        self.images, self.labels = images, labels
        self.metainfo = dict(classes=tuple(str(i) for i in range(num_classes)))

    @staticmethod
    def _offset(num_samples, num_classes, seed, channels, noise, label_noise):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, num_classes, (num_samples,), generator=g)
        x = torch.randn(num_samples, channels, 8, 8, generator=g)
        if noise != 1.0:
            x = noise * x
        x = x + y[:, None, None, None] * 0.5
        if label_noise > 0:
            flip = torch.rand(num_samples, generator=g) < label_noise
            y = torch.where(flip, torch.randint(0, num_classes, (num_samples,), generator=g), y)
        return x, y

    @staticmethod
    def _prototypes(num_samples, num_classes, seed, channels, noise, label_noise,
                    prototype_seed):
        protos = np.random.RandomState(prototype_seed).randn(num_classes, channels, 10, 10)
        # smooth 3x3 box filter: neighbouring pixels correlate, as in images
        protos = sum(protos[..., i:i + 8, j:j + 8] for i in range(3) for j in range(3)) / 3.0
        rng = np.random.RandomState(seed)
        labels = rng.randint(num_classes, size=num_samples)
        shifts = rng.randint(-1, 2, size=(num_samples, 2))
        images = np.stack([np.roll(protos[c], tuple(s), axis=(-2, -1))
                           for c, s in zip(labels, shifts)])
        images = images + noise * rng.randn(*images.shape)
        flip = rng.rand(num_samples) < label_noise
        labels = np.where(flip, rng.randint(num_classes, size=num_samples), labels)
        return (torch.as_tensor(images, dtype=torch.float32),
                torch.as_tensor(labels, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=self.images[i],
                    data_samples=BaseDataElement(gt_label=self.labels[i:i + 1]))


# ----------------------------------------------------------------------------- models
class ToyClassifier(BaseModel):
    """What every toy classifier does with a batch: ``logits(images)`` is the
    network; ``'loss'`` is the cross entropy, ``'predict'`` gives data samples
    with ``pred_label`` and ``gt_label`` (what :class:`ToyAccuracy` reads)."""

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, inputs, data_samples=None, mode: str = 'tensor', **unused):
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        logits = self.logits(x)
        if mode == 'tensor':
            return logits
        labels = torch.cat([d.gt_label for d in data_samples])
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        return [BaseDataElement(pred_label=p.reshape(1), gt_label=t.reshape(1))
                for p, t in zip(logits.argmax(1), labels)]


@MODELS.register_module()
class ToyNet(ToyClassifier):
    """conv-BN-ReLU blocks, an optional plain conv, global pooling, a final layer.

    The defaults are the core tests' net: conv-BN-ReLU x 2 (3 -> 8 -> 8), a
    1x1 conv with bias and no norm after it (a weight Algo 1 must leave alone),
    FixNorm-FC. ``configs/toy``: ``in_channels=1, channels=(16, 32, 32),
    strides=(1, 2, 1), plain_conv=False, num_classes=10``.
    ``tools/compare_methods.py``: ``channels=(16, 32, 64), strides=(1, 2, 2)``,
    a plain FC, and ``conv`` to try other conv layers.

    Parameters are named ``backbone.<i>.*`` (one flat ``nn.Sequential``) and
    ``head.*``.

    Args:
        in_channels: image channels.
        channels: output channels of each conv-BN-ReLU block (3x3 convs).
        strides: stride of each block's conv.
        plain_conv: add a 1x1 conv with bias and ReLU after the blocks.
        fc_type: the final layer, a key of :data:`FC_TYPES`.
        alpha: FixNorm-FC's alpha (Eq. 10).
        num_classes: outputs of the final layer.
        conv: the blocks' conv type: ``'Conv2d'`` or any registered conv
            (``'ConvWS'`` of mmcv, ``'WNConv2d'``).
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (8, 8),
                 strides: Sequence[int] = (1, 1), plain_conv: bool = True,
                 fc_type: str = 'fixnorm_fc', alpha: float = 1.0, num_classes: int = 4,
                 conv: str = 'Conv2d', data_preprocessor: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        if len(channels) != len(strides):
            raise ValueError(f'ToyNet: channels and strides must have one entry per block, '
                             f'got channels={channels!r}, strides={strides!r}')
        check_fc_type(fc_type, 'ToyNet')
        layers = []
        for c_in, c_out, stride in zip([in_channels, *channels], channels, strides):
            layers += [self._conv(conv, c_in, c_out, stride), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
        width = channels[-1]
        if plain_conv:
            layers += [nn.Conv2d(width, width, 1), nn.ReLU(inplace=True)]
        self.backbone = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = FC_TYPES[fc_type](width, num_classes, alpha)

    @staticmethod
    def _conv(conv: str, c_in: int, c_out: int, stride: int) -> nn.Module:
        if conv == 'Conv2d':
            return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        if conv in ('ConvWS', 'ConvAWS'):
            import mmcv.cnn  # noqa: F401  (registers mmcv's convs)
        return MODELS.build(dict(type=conv, in_channels=c_in, out_channels=c_out,
                                 kernel_size=3, stride=stride, padding=1, bias=False))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


# ----------------------------------------------------------------------------- metric
@METRICS.register_module()
class ToyAccuracy(BaseMetric):
    """Top-1 accuracy in percent, reported as ``key`` (``configs/toy`` use
    mmpretrain's ``'accuracy/top1'``).

    Args:
        key: the metric's name.
        count_samples: also report ``samples``, how many predictions were
            gathered (to check that every sample is evaluated once).
    """

    def __init__(self, key: str = 'accuracy', count_samples: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.key, self.count_samples = key, count_samples

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        # mmengine's evaluator hands over data samples converted to dicts
        self.results += [float(d['pred_label'][0] == d['gt_label'][0]) for d in data_samples]

    def compute_metrics(self, results: list) -> dict:
        out = {self.key: 100.0 * sum(results) / max(len(results), 1)}
        if self.count_samples:
            out['samples'] = len(results)
        return out


# ----------------------------------------------------------------------------- failure
@HOOKS.register_module()
class ToyNaNHook(Hook):
    """Makes a training fail the way a diverging training fails, for the
    tests of a sweep's failure handling: when the optimizer's lr exceeds
    ``lr_above``, a NaN is written into the first conv weight before iteration
    ``at_iter``; the next optimizer step spreads it and FixNorm's finite-norm
    check (Algo 1) stops the run with a ``FloatingPointError``, as it does for
    a real NaN.
    """

    def __init__(self, lr_above: float, at_iter: int = 1) -> None:
        self.lr_above, self.at_iter = lr_above, at_iter

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        group = runner.optim_wrapper.optimizer.param_groups[0]
        base_lr = group.get('initial_lr', group['lr'])  # the configured lr, before warm-up
        if runner.iter + 1 == self.at_iter and base_lr > self.lr_above:
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
            with torch.no_grad():
                conv.weight.view(-1)[0] = float('nan')


@HOOKS.register_module()
class ToyKillHook(Hook):
    """Kills its own training with SIGKILL, as the kernel's OOM killer does,
    on the first attempt only: for the tests of what a sweep does with a
    killed trial (it must run it again, resuming, and get the same result).

    The training is killed if its configured lr is ``lr``, its
    ``train_cfg.max_iters`` is ``max_iters`` and its ``model.alpha`` is
    ``alpha`` (each: any if None):

    * ``during_save=False``: before iteration ``at_iter`` (1-based) runs;
    * ``during_save=True``: in the middle of the first checkpoint save at or
      after iteration ``at_iter``: the checkpoint file being written (the
      temporary file of :class:`~fixnorm_mm.engine.checkpoint_hook.AtomicCheckpointHook`)
      is cut to half its length, then the process is killed.

    "First attempt": the hook writes ``<work_dir>/toy_kill_hook.killed``
    before killing and does nothing when that file exists.
    """
    MARK = 'toy_kill_hook.killed'

    def __init__(self, at_iter: int, lr: Optional[float] = None,
                 max_iters: Optional[int] = None, alpha: Optional[float] = None,
                 during_save: bool = False) -> None:
        if not isinstance(at_iter, int) or at_iter < 1:
            raise ValueError(f'ToyKillHook: at_iter must be an int >= 1, got {at_iter!r}')
        self.at_iter, self.lr, self.max_iters = at_iter, lr, max_iters
        self.alpha, self.during_save = alpha, during_save

    def _armed(self, runner) -> bool:
        if osp.exists(osp.join(runner.work_dir, self.MARK)):
            return False
        group = runner.optim_wrapper.optimizer.param_groups[0]
        base_lr = group.get('initial_lr', group['lr'])
        if self.lr is not None and abs(base_lr - self.lr) > 1e-9 * max(1.0, abs(self.lr)):
            return False
        if self.alpha is not None and runner.cfg.get('model', {}).get('alpha') != self.alpha:
            return False
        return self.max_iters is None or runner.max_iters == self.max_iters

    def _kill(self, runner) -> None:
        with open(osp.join(runner.work_dir, self.MARK), 'w') as f:
            f.write(f'killed at iteration {runner.iter + 1}\n')
        os.kill(os.getpid(), signal.SIGKILL)

    def before_train(self, runner) -> None:
        if not (self.during_save and self._armed(runner)):
            return
        save = runner.save_checkpoint

        def dying_save(out_dir, filename, *args, **kwargs):
            save(out_dir, filename, *args, **kwargs)
            if runner.iter + 1 < self.at_iter:
                return
            path = osp.join(out_dir, filename)
            with open(path, 'r+b') as f:  # what a kill during the write leaves
                f.truncate(osp.getsize(path) // 2)
            self._kill(runner)

        runner.save_checkpoint = dying_save

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not self.during_save and runner.iter + 1 == self.at_iter and self._armed(runner):
            self._kill(runner)


# ----------------------------------------------------------------------------- config
def runner_cfg(work_dir, max_iters: int = 6, optim_wrapper: Optional[dict] = None,
               custom_hooks=(), **extra) -> dict:
    """The config of a short Runner training of ``ToyNet`` on ``ToyDataset``
    (batch 4, FixNorm with SGD-Nesterov lr 0.5, a checkpoint every 3
    iterations, a log line every iteration); ``extra`` replaces top-level keys."""
    loader = dict(dataset=dict(type='ToyDataset'), batch_size=4, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='pseudo_collate'))
    cfg = dict(
        model=dict(type='ToyNet'),
        work_dir=str(work_dir),
        train_dataloader=loader,
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        optim_wrapper=optim_wrapper or dict(
            type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
            optimizer=dict(type='SGD', lr=0.5, momentum=0.9, nesterov=True)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(custom_hooks),
        randomness=dict(seed=0, deterministic=False),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        default_scope=None,
        log_level='INFO',
        # runners started within one second would share a logger (and its file)
        experiment_name=f'toy_{uuid.uuid4().hex[:8]}')
    cfg.update(extra)
    return cfg
