"""The small-scale testbed of the experiments: scikit-learn's handwritten
digits, a small BN ResNet, and one function that trains it with the real
mmengine ``Runner``.

Data: ``sklearn.datasets.load_digits`` (1797 real 8x8 grey-scale images of 10
digits, shipped inside scikit-learn, no download). One fixed stratified split,
the same for every run: 400 train / 397 val / 1000 test. The training set is
small on purpose: in a single-seed probe with 1000 training images the methods
reached 99.0-99.5% and the differences drowned in the noise of single test
images. Hyper-parameters are chosen on val; test is reported.

Model: a small ResNet (a stem and two basic blocks), every conv followed by
BatchNorm (so every conv weight is scale-invariant and lands in FixNorm's fixed
set), global average pooling, and the final classifier ``head.fc``, whose type
is what Sec. 2.3 varies: a plain FC (Eq. 5), WN-FC (Eq. 6) or FixNorm-FC
(Eq. 10).

Optimisation: SGD with Nesterov momentum 0.9, batch 50 (8 iterations an epoch),
linear warm-up then cosine decay to 0, no weight decay on biases and BN parameters (He et al.
2019, as in the paper's App. C). The three ways of treating weights are
``method``:

* ``'wd'``: weight decay ``wd`` on every conv and FC weight (the baseline);
* ``'algo1'``: Algo 1 (``FixNormOptimWrapper``): conv weights fixed, weight
  decay ``wd_fc`` only on the plain FC (line 3 of Algo 1);
* ``'algo1_fc'``: Algo 1 @ WN-FC / FixNorm-FC: the final layer is
  normalised, its direction joins the fixed set (W^{Conv+FC}, App. A) and no
  weight decay is used anywhere.
"""
import copy
import inspect
import tempfile
import time
import uuid
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS
from mmengine.structures import BaseDataElement
from torch import nn

import fixnorm_mm  # noqa: F401  (registers FixNormOptimWrapper, MCBRHook, layers)
from fixnorm_mm.layers import FixNormLinear, WNLinear

NUM_CLASSES = 10
SPLIT_SIZES = dict(train=400, val=397, test=1000)
#: run_config keys that set the scale of a run, and their smoke-test values
#: (2 iterations on 100 images, curves and validation at every step).
SCALE_KEYS = ('train_subset', 'eval_subset', 'batch_size', 'curve_interval', 'val_interval')
SMOKE_SCALE = dict(train_subset=100, eval_subset=100, curve_interval=1, val_interval=1)

#: The final-layer variants of Sec. 2.3 (and their config).
FC_TYPES = {
    'fc': lambda cin, alpha: nn.Linear(cin, NUM_CLASSES),                # Eq. 5
    # Salimans & Kingma's WN: one g per class (core WNLinear)
    'wn_fc': lambda cin, alpha: WNLinear(cin, NUM_CLASSES),
    # Eq. 6 as written: whole-tensor norm and one scalar g, i.e. FixNorm-FC
    # whose cap is never reached
    'wn_fc_eq6': lambda cin, alpha: FixNormLinear(cin, NUM_CLASSES, alpha=1e6),
    'fixnorm_fc': lambda cin, alpha: FixNormLinear(cin, NUM_CLASSES, alpha=alpha),  # Eq. 10
}


# ----------------------------------------------------------------------------- data
_CACHE: Dict[str, tuple] = {}


def load_split(split: str):
    """``(images (N, 1, 8, 8) float32, standardised; labels (N,) int64)``.

    The split is fixed (stratified, ``random_state=0``) so that every run of
    every experiment sees the same images; standardisation uses train statistics.
    """
    if not _CACHE:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        digits = load_digits()
        x = digits.images.astype(np.float32) / 16.0
        y = digits.target.astype(np.int64)
        idx = np.arange(len(y))
        train, rest = train_test_split(idx, train_size=SPLIT_SIZES['train'],
                                       stratify=y, random_state=0)
        val, test = train_test_split(rest, train_size=SPLIT_SIZES['val'],
                                     stratify=y[rest], random_state=0)
        mean, std = x[train].mean(), x[train].std()
        for k, part in (('train', train), ('val', val), ('test', test)):
            part = np.sort(part)
            _CACHE[k] = (torch.from_numpy((x[part] - mean) / std)[:, None],
                         torch.from_numpy(y[part]))
    return _CACHE[split]


@DATASETS.register_module(force=True)
class DigitsDataset(torch.utils.data.Dataset):
    """One split of the digits; ``subset`` keeps the first n images (smoke runs)."""

    def __init__(self, split: str, subset: Optional[int] = None) -> None:
        self.images, self.labels = load_split(split)
        if subset is not None:
            self.images, self.labels = self.images[:subset], self.labels[:subset]
        self.metainfo = dict(classes=[str(i) for i in range(NUM_CLASSES)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=self.images[i],
                    data_samples=BaseDataElement(gt_label=self.labels[i:i + 1]))


# ----------------------------------------------------------------------------- model
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


@MODELS.register_module(force=True)
class DigitsResNet(BaseModel):
    """stem 3x3 conv (8x8) -> block (8x8, w) -> block (4x4, 2w) -> GAP -> head.fc."""

    def __init__(self, width: int = 16, fc_type: str = 'fc', alpha: float = 1.0,
                 data_preprocessor=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        if fc_type not in FC_TYPES:
            raise ValueError(f'DigitsResNet: fc_type must be one of {list(FC_TYPES)}, '
                             f'got {fc_type!r}')
        self.backbone = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            BasicBlock(width, width), BasicBlock(width, 2 * width, stride=2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = _Head(FC_TYPES[fc_type](2 * width, alpha))

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        logits = self.head.fc(self.backbone(inputs))
        if mode == 'tensor':
            return logits
        labels = torch.cat([ds.gt_label for ds in data_samples])
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        return [dict(pred=p, gt=g) for p, g in zip(logits.argmax(1), labels)]


@METRICS.register_module(force=True)
class DigitsAccuracy(BaseMetric):
    """Top-1 accuracy in percent."""
    default_prefix = ''

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        self.results += [int(d['pred'] == d['gt']) for d in data_samples]

    def compute_metrics(self, results: list) -> dict:
        return dict(accuracy=100.0 * sum(results) / max(len(results), 1))


# ----------------------------------------------------------------------------- curves
@torch.no_grad()
def conv_weight_norm(model: nn.Module) -> float:
    """||W^Conv||_2: global norm of all conv weights (Fig. 1 left)."""
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(convs))))


def fc_weight_norm(fc: nn.Module) -> float:
    """Norm of the weight the final layer effectively applies: ||W^FC|| for a
    plain FC, ||g|| for per-class WN (each row has norm g_i), min(g, cap) for
    FixNorm-FC / Eq. 6."""
    with torch.no_grad():
        if isinstance(fc, FixNormLinear):
            return float(fc.effective_scale)
        if isinstance(fc, WNLinear):
            return float(fc.wn_weight().norm())
        return float(fc.weight.norm())


@HOOKS.register_module(force=True)
class CurveRecorder(Hook):
    """Collects the curves of a run in ``self.curves`` (plain lists):
    the scalars that ``MCBRHook`` puts in the message hub (``train/fixnorm/*``:
    MCBR, g), ||W^Conv||, the final layer's effective norm, and the val
    accuracy after each validation."""
    priority = 'LOWEST'  # after MCBRHook has written this iteration's scalars

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.curves: Dict[str, list] = {}

    def before_train(self, runner) -> None:
        # ||W_0||: the reference Algo 1 rescales to (Fig. 1 left starts here)
        self._add('conv_norm', 0, conv_weight_norm(runner.model))

    def _add(self, key: str, it: int, value: float) -> None:
        self.curves.setdefault(key, []).append((it, float(value)))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
        it = runner.iter + 1
        hub = runner.message_hub
        for key in ('mcbr', 'g'):
            buf = hub.log_scalars.get(f'train/fixnorm/{key}')
            if buf is not None:
                self._add(key, it, buf.current())
        model = runner.model
        self._add('conv_norm', it, conv_weight_norm(model))
        self._add('fc_norm', it, fc_weight_norm(model.head.fc))
        self._add('loss', it, float(outputs['loss'].detach()))

    def after_val_epoch(self, runner, metrics=None) -> None:
        if metrics:
            self._add('val_accuracy', runner.iter, metrics['accuracy'])


# ----------------------------------------------------------------------------- one run
def optim_wrapper_cfg(method: str, lr: float, wd: float = 5e-4, wd_fc: float = 5e-4) -> dict:
    """The optim wrapper of each way of treating the weights (module docstring)."""
    optimizer = dict(type='SGD', lr=lr, momentum=0.9, nesterov=True)
    if method == 'wd':
        return dict(type='OptimWrapper', optimizer=dict(optimizer, weight_decay=wd),
                    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
    if method == 'algo1':
        # Weight decay only on the plain FC weight: every other parameter is
        # under `backbone` or is the FC bias, and gets decay_mult=0. The
        # constructor would refuse decay on a fixed (conv) weight.
        return dict(type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
                    optimizer=dict(optimizer, weight_decay=wd_fc),
                    paramwise_cfg=dict(custom_keys={'backbone': dict(decay_mult=0.0),
                                                    'head.fc.bias': dict(decay_mult=0.0)}))
    if method == 'algo1_fc':
        # Algo 1 @ WN-FC / FixNorm-FC: the FC direction is selected with the
        # convs (one global group, W^{Conv+FC}); lambda_FC = 0.
        return dict(type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
                    optimizer=dict(optimizer, weight_decay=0.0))
    raise ValueError(f"method must be 'wd', 'algo1' or 'algo1_fc', got {method!r}")


def run_config(method: str, lr: float, seed: int, fc_type: str = 'fc', alpha: float = 1.0,
               wd: float = 5e-4, wd_fc: float = 5e-4, epochs: int = 30, width: int = 16,
               batch_size: int = 50, warmup_iters: int = 40, val_interval: int = 3,
               curve_interval: int = 10, train_subset: Optional[int] = None,
               eval_subset: Optional[int] = None, work_dir: str = '') -> dict:
    """The mmengine config of one training run."""
    def loader(split, shuffle, subset):
        return dict(dataset=dict(type='DigitsDataset', split=split, subset=subset),
                    batch_size=batch_size if split == 'train' else 400,
                    num_workers=0, sampler=dict(type='DefaultSampler', shuffle=shuffle),
                    collate_fn=dict(type='default_collate'),
                    # no ragged last batch: a tiny batch would give BN noisy statistics
                    drop_last=split == 'train')

    n_train = train_subset or SPLIT_SIZES['train']
    total_iters = epochs * max(n_train // batch_size, 1)
    warmup_iters = min(warmup_iters, max(total_iters // 4, 1))
    return dict(
        model=dict(type='DigitsResNet', width=width, fc_type=fc_type, alpha=alpha),
        work_dir=work_dir,
        experiment_name=f'digits_{uuid.uuid4().hex[:10]}',
        train_dataloader=loader('train', True, train_subset),
        val_dataloader=loader('val', False, eval_subset),
        test_dataloader=loader('test', False, eval_subset),
        val_evaluator=dict(type='DigitsAccuracy'),
        test_evaluator=dict(type='DigitsAccuracy'),
        train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=val_interval),
        val_cfg=dict(), test_cfg=dict(),
        optim_wrapper=optim_wrapper_cfg(method, lr, wd, wd_fc),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup_iters),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup_iters,
                 end=total_iters, T_max=total_iters - warmup_iters, eta_min=0.0)],
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=10 ** 6)),
        custom_hooks=[dict(type='MCBRHook', interval=curve_interval, layer='head.fc'),
                      dict(type='CurveRecorder', interval=curve_interval)],
        randomness=dict(seed=seed),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        log_level='WARNING',
    )


def train_once(spec: dict) -> dict:
    """Train one configuration with the mmengine Runner; return the final
    val/test accuracy, the curves and the wall time.

    ``spec`` holds keyword arguments of :func:`run_config` (``work_dir``
    defaults to a temporary folder that is removed afterwards) and may hold
    labels of the caller's, which are only passed through.
    """
    from mmengine.config import Config
    from mmengine.runner import Runner
    torch.set_num_threads(1)  # the machine is shared; one run = one core
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix='fixnorm_digits_') as tmp:
        # keys that run_config does not know are labels of the caller's
        kwargs = {k: v for k, v in spec.items() if k in inspect.signature(run_config).parameters}
        cfg = run_config(**dict(kwargs, work_dir=spec.get('work_dir') or tmp))
        runner = Runner.from_cfg(Config(cfg))
        runner.train()
        recorder = next(h for h in runner.hooks if isinstance(h, CurveRecorder))
        curves = copy.deepcopy(recorder.curves)
        val_acc = curves['val_accuracy'][-1][1] if 'val_accuracy' in curves else float('nan')
        test_acc = runner.test()['accuracy']
        fixed = None
        ctrl = getattr(runner.optim_wrapper, 'fixnorm', None)
        if ctrl is not None and ctrl.started:
            fixed = {g: list(n) for g, n in ctrl.fixer.names.items()}
        _close_runner(runner)
    return dict(spec=spec, val_accuracy=val_acc, test_accuracy=test_acc, curves=curves,
                fixed=fixed, seconds=time.perf_counter() - t0,
                cpu_seconds=time.process_time() - c0)


def _close_runner(runner) -> None:
    """Release the run's log file handlers (many runs share one process)."""
    import logging
    for handler in list(runner.logger.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            runner.logger.removeHandler(handler)


def train_many(specs: List[dict], workers: int = 1, progress: bool = True) -> List[dict]:
    """Run ``specs`` (in order), in ``workers`` processes when > 1."""
    results: List[Optional[dict]] = [None] * len(specs)
    t0 = time.perf_counter()

    def report(i, r):
        results[i] = r
        if progress:
            done = sum(x is not None for x in results)
            s = r['spec']
            print(f'[{done}/{len(specs)}] {s.get("method")} fc={s.get("fc_type", "fc")} '
                  f'lr={s["lr"]:g} alpha={s.get("alpha", "-")} seed={s["seed"]}: '
                  f'val {r["val_accuracy"]:.2f} test {r["test_accuracy"]:.2f} '
                  f'({r["seconds"]:.1f}s wall, {r["cpu_seconds"]:.1f}s CPU; '
                  f'{time.perf_counter() - t0:.0f}s so far)', flush=True)

    if workers <= 1:
        for i, s in enumerate(specs):
            report(i, train_once(s))
    else:
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing as mp
        with ProcessPoolExecutor(workers, mp_context=mp.get_context('spawn')) as pool:
            futures = {pool.submit(train_once, s): i for i, s in enumerate(specs)}
            from concurrent.futures import as_completed
            for f in as_completed(futures):
                report(futures[f], f.result())
    return results  # type: ignore[return-value]

