"""The small-scale testbed of the experiments: scikit-learn's handwritten
digits, a small BN ResNet, and one function that trains it with the real
mmengine ``Runner``.

Data and model are :mod:`fixnorm_mm.testing.digits`: the digits
(``sklearn.datasets.load_digits``, 1797 real 8x8 images) in one fixed
stratified split, the same for every run, 400 train / 397 val / 1000 test;
``DigitsResNet`` (a stem and two basic blocks, every conv followed by
BatchNorm, global average pooling, the final classifier ``head.fc``), whose
``fc_type`` is what Sec. 2.3 varies: a plain FC (Eq. 5), WN-FC (Eq. 6) or
FixNorm-FC (Eq. 10). Hyper-parameters are chosen on val; test is reported.

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
import json
import os
import tempfile
import time
import uuid
from typing import Dict, List, Optional

import torch
from mmengine.hooks import Hook
from torch import nn

import fixnorm_mm  # noqa: F401  (registers FixNormOptimWrapper, MCBRHook, layers)
from fixnorm_mm.layers import FixNormLinear, WNLinear
from fixnorm_mm.testing.digits import NUM_CLASSES, SPLIT_SIZES  # noqa: F401  (registers them)
from fixnorm_mm.testing.vit import DigitsViT  # noqa: F401  (registers it)

#: run_config keys that set the scale of a run, and their smoke-test values
#: (2 iterations on 100 images, curves and validation at every step).
SCALE_KEYS = ('train_subset', 'eval_subset', 'batch_size', 'curve_interval', 'val_interval')
SMOKE_SCALE = dict(train_subset=100, eval_subset=100, curve_interval=1, val_interval=1)


# ----------------------------------------------------------------------------- curves
@torch.no_grad()
def conv_weight_norm(model: nn.Module) -> float:
    """||W^Conv||_2: global norm of all conv weights (Fig. 1 left)."""
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(convs))))


@torch.no_grad()
def linear_weight_norm(model: nn.Module) -> Optional[float]:
    """Global norm of the weights the hidden linear layers apply (a ViT's
    attention and MLP projections; g v / ||v|| for a WN layer), all linear
    layers but ``head.fc``; None for a model without any (the ResNet)."""
    final = model.head.fc
    ws = [m.folded_weight() if hasattr(m, 'folded_weight') else m.weight
          for m in model.modules() if isinstance(m, nn.Linear) and m is not final]
    if not ws:
        return None
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(ws))))


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


class CurveRecorder(Hook):
    """Collects the curves of a run in ``self.curves`` (plain lists):
    the scalars that ``MCBRHook`` puts in the message hub (``train/fixnorm/*``:
    MCBR, g), ||W^Conv||, the final layer's effective norm, and the val
    accuracy after each validation. :func:`train_once` adds it to the
    Runner, sampling when ``MCBRHook`` does."""
    priority = 'LOWEST'  # after MCBRHook has written this iteration's scalars

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.curves: Dict[str, list] = {}

    def before_train(self, runner) -> None:
        # ||W_0||: the reference Algo 1 rescales to (Fig. 1 left starts here)
        self._add('conv_norm', 0, conv_weight_norm(runner.model))
        linear = linear_weight_norm(runner.model)
        if linear is not None:
            self._add('linear_norm', 0, linear)

    def _add(self, key: str, it: int, value: float) -> None:
        self.curves.setdefault(key, []).append((it, float(value)))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
        it = runner.iter + 1
        hub = runner.message_hub
        for key in ('mcbr', 'g', 'sphere_max_rel_dev'):  # the last one: Hyperball's
            buf = hub.log_scalars.get(f'train/fixnorm/{key}')
            if buf is not None:
                self._add(key, it, buf.current())
        model = runner.model
        self._add('conv_norm', it, conv_weight_norm(model))
        linear = linear_weight_norm(model)
        if linear is not None:
            self._add('linear_norm', it, linear)
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
               eval_subset: Optional[int] = None, work_dir: str = '',
               model: Optional[dict] = None, optim_wrapper: Optional[dict] = None) -> dict:
    """The mmengine config of one training run.

    ``model`` / ``optim_wrapper`` (config dicts) replace the default
    ``DigitsResNet`` (``width``, ``fc_type``, ``alpha``) and
    :func:`optim_wrapper_cfg` (``method``, ``lr``, ``wd``, ``wd_fc``): the
    ViT experiments train another model with other optimizers on the same
    data, schedule and Runner."""
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
        model=model if model is not None else dict(
            type='DigitsResNet', width=width, fc_type=fc_type, alpha=alpha),
        work_dir=work_dir,
        experiment_name=f'digits_{uuid.uuid4().hex[:10]}',
        train_dataloader=loader('train', True, train_subset),
        val_dataloader=loader('val', False, eval_subset),
        test_dataloader=loader('test', False, eval_subset),
        val_evaluator=dict(type='ToyAccuracy'),
        test_evaluator=dict(type='ToyAccuracy'),
        train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=val_interval),
        val_cfg=dict(), test_cfg=dict(),
        optim_wrapper=(optim_wrapper if optim_wrapper is not None
                       else optim_wrapper_cfg(method, lr, wd, wd_fc)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup_iters),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup_iters,
                 end=total_iters, T_max=total_iters - warmup_iters, eta_min=0.0)],
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=10 ** 6)),
        custom_hooks=[dict(type='MCBRHook', interval=curve_interval, layer='head.fc')],
        randomness=dict(seed=seed),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        log_level='WARNING',
    )


def train_once(spec: dict) -> dict:
    """Train one configuration with the mmengine Runner; return the final
    val/test accuracy, the curves and the wall time.

    ``spec`` holds keyword arguments of :func:`run_config` (``work_dir``
    defaults to a temporary folder that is removed afterwards), optionally
    ``cfg_options`` (merged into the config, as ``--cfg-options`` would be),
    and may hold labels of the caller's, which are only passed through.
    """
    from mmengine.config import Config
    from mmengine.runner import Runner
    torch.set_num_threads(1)  # the machine is shared; one run = one core
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix='fixnorm_digits_') as tmp:
        # keys that run_config does not know are labels of the caller's
        kwargs = {k: v for k, v in spec.items() if k in inspect.signature(run_config).parameters}
        cfg = run_config(**dict(kwargs, work_dir=spec.get('work_dir') or tmp))
        config = Config(cfg)
        if spec.get('cfg_options'):  # e.g. a FixNorm-tune budget (scale_schedule)
            config.merge_from_dict(spec['cfg_options'])
        runner = Runner.from_cfg(config)
        recorder = CurveRecorder(interval=next(
            h['interval'] for h in cfg['custom_hooks'] if h['type'] == 'MCBRHook'))
        runner.register_hook(recorder)
        runner.train()
        curves = copy.deepcopy(recorder.curves)
        val_acc = curves['val_accuracy'][-1][1] if 'val_accuracy' in curves else float('nan')
        test_acc = runner.test()['accuracy']
        fixed = sphere = None
        ctrl = getattr(runner.optim_wrapper, 'norm_control', None)
        if ctrl is not None and ctrl.started and getattr(ctrl, 'fixer', None) is not None:
            fixed = {g: list(n) for g, n in ctrl.fixer.names.items()}
        if ctrl is not None and ctrl.started and getattr(ctrl, 'ball', None) is not None:
            sphere = hyperball_sphere(ctrl.ball)
        _close_runner(runner)
    return dict(spec=spec, val_accuracy=val_acc, test_accuracy=test_acc, curves=curves,
                fixed=fixed, sphere=sphere, seconds=time.perf_counter() - t0,
                cpu_seconds=time.process_time() - c0)


def hyperball_sphere(ball) -> dict:
    """Hyperball's matrices after training: names, R, their final norms and
    the largest relative distance from the sphere of radius R."""
    radii, norms = ball.radii.tolist(), ball.norms().tolist()
    return dict(names=list(ball.names), radii=radii, final_norms=norms,
                max_rel_dev=max(abs(n - r) / r for n, r in zip(norms, radii)))


def _close_runner(runner) -> None:
    """Release the run's log file handlers (many runs share one process)."""
    import logging
    for handler in list(runner.logger.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            runner.logger.removeHandler(handler)


def train_once_or_diverged(spec: dict) -> dict:
    """:func:`train_once`, but a run that a method stops because its norms
    became non-finite (FixNorm's ``FloatingPointError``) is recorded, not
    raised: chance accuracy (10%) and ``diverged`` = the error message, so
    that one diverging cell does not stop a grid. (Runs without such a check
    diverge into NaN logits, whose argmax is also a constant class.)"""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        return dict(train_once(spec), diverged=None)
    except FloatingPointError as e:
        chance = 100.0 / NUM_CLASSES
        return dict(spec=spec, val_accuracy=chance, test_accuracy=chance, curves={},
                    fixed=None, sphere=None, diverged=str(e).splitlines()[0],
                    seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)


def spec_key(spec: dict) -> str:
    """A run's identity in a cache: its spec as canonical JSON."""
    return json.dumps(json.loads(json.dumps(spec, default=str)), sort_keys=True)


def load_cache(path: Optional[str]) -> Dict[str, dict]:
    """The finished runs of a JSON-lines cache, by :func:`spec_key`."""
    known: Dict[str, dict] = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:  # a line cut short when the process was stopped
                    continue
                known[spec_key(r['spec'])] = r
    return known


def train_many(specs: List[dict], workers: int = 1, progress: bool = True,
               fn=None, cache: Optional[str] = None) -> List[dict]:
    """Run ``specs`` (in order), in ``workers`` processes when > 1, with
    ``fn`` (default :func:`train_once`).

    ``cache``: a JSON-lines file of finished runs. A spec found in it is not
    trained again, and every run is appended to it as soon as it ends, so an
    interrupted experiment resumes where it stopped."""
    fn = fn or train_once
    results: List[Optional[dict]] = [None] * len(specs)
    if cache:
        known = load_cache(cache)
        results = [known.get(spec_key(s)) for s in specs]
        if progress and any(r is not None for r in results):
            print(f'{sum(r is not None for r in results)} of {len(specs)} runs found in {cache}',
                  flush=True)
    todo = [i for i, r in enumerate(results) if r is None]
    t0 = time.perf_counter()

    def report(i, r):
        results[i] = r
        if cache:
            with open(cache, 'a') as f:
                f.write(json.dumps(r, default=float) + '\n')
        if progress:
            done = sum(x is not None for x in results)
            s = r['spec']
            what = (f'width={s["width"]} second={s["second"]:g}' if 'second' in s
                    else f'fc={s.get("fc_type", "fc")} alpha={s.get("alpha", "-")}')
            print(f'[{done}/{len(specs)}] {s.get("method")} lr={s["lr"]:g} {what} '
                  f'seed={s["seed"]}: '
                  f'val {r["val_accuracy"]:.2f} test {r["test_accuracy"]:.2f} '
                  f'({r["seconds"]:.1f}s wall, {r["cpu_seconds"]:.1f}s CPU; '
                  f'{time.perf_counter() - t0:.0f}s so far)', flush=True)

    if workers <= 1:
        for i in todo:
            report(i, fn(specs[i]))
    else:
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing as mp
        with ProcessPoolExecutor(workers, mp_context=mp.get_context('spawn')) as pool:
            futures = {pool.submit(fn, specs[i]): i for i in todo}
            from concurrent.futures import as_completed
            for f in as_completed(futures):
                report(futures[f], f.result())
    return results  # type: ignore[return-value]

