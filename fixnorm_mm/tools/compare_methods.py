"""Train the same model on the same data with each norm-control method and
compare them: weight decay, FixNorm (Algo 1), per-layer FixNorm (Hoffer et
al.), epsilon-shifted L2 (Li et al.) and WRS (Liu et al.).

Every run goes through mmengine's Runner with the same config except the
method, which is switched by its fragment (``configs/_base_/methods/``,
:func:`fixnorm_mm.norm_control.apply_method`); the seed, the data order and the
initial weights are the same for all. Writes to ``--work-dir``:

* ``results.md``: final / best validation accuracy, final training loss,
  MCBR (Eq. 9 of the FixNorm paper) of the final layer, and the norms each
  method controls: the global norm of the kernels (conv/linear weights but the
  final layer; what FixNorm fixes), the mean norm of their output units (what
  WRS sets to 1, what epsilon-shifted L2 bounds below by eps) and the final
  layer's norm (what sets MCBR, Sec. 2.3);
* ``results.json``: the same plus every curve;
* ``curves.png``: training loss, validation accuracy, MCBR and kernel norm.

Default task: a small BN CNN on scikit-learn's 8x8 handwritten digits
(1797 real images shipped with scikit-learn, loaded offline)::

    fixnorm-compare                                         # ~1 min on a CPU
    fixnorm-compare --methods wd,wrs --conv ConvWS
    fixnorm-compare --smoke                                 # seconds: the test

Your own model and data: any config of this project or of mmpretrain::

    fixnorm-compare --config my_cfg.py --layer head.fc \\
        --metric accuracy/top1 --cfg-options train_cfg.max_epochs=10

(``python -m fixnorm_mm.tools.compare_methods`` and ``tools/compare_methods.py``
are the same tool.)
"""
import argparse
import copy
import json
import os
import os.path as osp
import time
from typing import Dict, List, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate  # noqa: F401  (registered collate fn)
from mmengine.hooks import Hook
from mmengine.runner import Runner
from torch import nn

import fixnorm_mm  # noqa: F401  (registers the plugin)
import fixnorm_mm.testing.digits  # noqa: F401  (registers the digits task: data, ToyNet, metric)
from fixnorm_mm.engine import batch_labels
from fixnorm_mm.mcbr import mcbr
from fixnorm_mm.norm_control import apply_method, available_methods, unwrap
from fixnorm_mm.norm_control.methods import method_label
from fixnorm_mm.tools.configs import resolve_config



# --------------------------------------------------------------------------- task
def digits_config(epochs: int = 20, batch_size: int = 32, lr: float = 0.1, conv: str = 'Conv2d',
                  smoke: bool = False) -> Config:
    """The comparison task as an mmengine config, trained with weight decay
    (every method then replaces the optim wrapper)."""
    subset = dict(train=256, val=128) if smoke else dict(train=None, val=None)
    loader = lambda split, bs, shuffle: dict(  # noqa: E731
        batch_size=bs, num_workers=0,
        dataset=dict(type='DigitsDataset', protocol='class_fraction', split=split,
                     subset=subset[split]),
        sampler=dict(type='DefaultSampler', shuffle=shuffle),
        collate_fn=dict(type='pseudo_collate'))
    warmup = 1
    return Config(dict(
        default_scope=None,
        # three conv-BN-ReLU blocks (8x8 -> 4x4 -> 2x2), global pooling, a plain FC
        model=dict(type='ToyNet', in_channels=1, channels=(16, 32, 64), strides=(1, 2, 2),
                   plain_conv=False, fc_type='fc', num_classes=10, conv=conv),
        train_dataloader=loader('train', batch_size, True),
        val_dataloader=loader('val', 256, False),
        val_evaluator=dict(type='ToyAccuracy'),
        train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=1),
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9, nesterov=True,
                                          weight_decay=1e-4)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=warmup,
                 convert_to_iter_based=True),
            dict(type='CosineAnnealingLR', by_epoch=True, begin=warmup, end=epochs,
                 T_max=epochs - warmup, eta_min=0, convert_to_iter_based=True)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=50),
                           checkpoint=dict(type='CheckpointHook', interval=-1, save_last=False)),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0, deterministic=False),
        log_level='WARNING'))


# --------------------------------------------------------------------------- curves
class MethodCurvesHook(Hook):
    """Every ``interval`` iterations: training loss, MCBR (Eq. 9) of ``layer``,
    the kernels' global norm, their mean unit norm, the final layer's norm;
    after every validation: the metrics. Kept in ``self.curves``."""
    priority = 'LOWEST'  # after the method's own rescale

    def __init__(self, interval: int = 10, layer: Optional[str] = None) -> None:
        self.interval = interval
        self.layer_name = layer
        self.curves: Dict[str, list] = dict(iter=[], loss=[], mcbr=[], kernel_norm=[],
                                            unit_norm_mean=[], head_norm=[], val_iter=[],
                                            val=[])
        self._captured = None
        self._handle = None

    def before_train(self, runner) -> None:
        model = unwrap(runner.model)
        modules = dict(model.named_modules())
        if self.layer_name is None:
            linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
            self.layer_name = linears[-1] if linears else None
        elif self.layer_name not in modules:
            raise ValueError(f'--layer {self.layer_name!r} is not a module of the model')
        self.layer = modules.get(self.layer_name) if self.layer_name else None
        head = f'{self.layer_name}.weight' if self.layer_name else None
        self.kernels = [p for n, p in model.named_parameters()
                        if p.dim() > 1 and n != head and p.requires_grad]
        self.head = dict(model.named_parameters()).get(head)
        self._record(runner.iter, None)  # the initial norms

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if self.layer is not None and self.every_n_train_iters(runner, self.interval):
            self._handle = self.layer.register_forward_hook(
                lambda m, i, o: setattr(self, '_captured', i[0].detach()))

    @torch.no_grad()
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
        value = None
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
            labels = batch_labels(data_batch.get('data_samples'))
            if self._captured is not None and labels is not None and self._captured.dim() == 2:
                value = float(mcbr(self._captured, self.layer.weight, labels))
            self._captured = None
        self._record(runner.iter + 1, value, float(outputs['loss']) if outputs else None)

    def _record(self, it: int, mcbr_value, loss=None) -> None:
        norms = [torch.linalg.vector_norm(p.detach().reshape(p.shape[0], -1).float(), dim=1)
                 for p in self.kernels]
        units = torch.cat(norms)
        c = self.curves
        c['iter'].append(it)
        c['loss'].append(loss)
        c['mcbr'].append(mcbr_value)
        c['kernel_norm'].append(float(units.norm()))
        c['unit_norm_mean'].append(float(units.mean()))
        c['head_norm'].append(float(self.head.detach().norm()) if self.head is not None else None)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.curves['val_iter'].append(runner.iter)
        self.curves['val'].append(dict(metrics or {}))


# --------------------------------------------------------------------------- runs
def run_method(base: Config, method: str, work_dir: str, weight_decay: Optional[float],
               interval: int, layer: Optional[str], tau: Optional[int] = None) -> dict:
    cfg = apply_method(base, method)
    wd = cfg.optim_wrapper.optimizer.get('weight_decay', 0)
    if weight_decay is not None and wd:
        cfg.optim_wrapper.optimizer.weight_decay = weight_decay  # same lambda everywhere
    if tau is not None and method == 'wrs':
        cfg.optim_wrapper.norm_control.interval = tau
    cfg.work_dir = osp.join(work_dir, method)
    cfg.experiment_name = method
    runner = Runner.from_cfg(cfg)
    hook = MethodCurvesHook(interval=interval, layer=layer)
    runner.register_hook(hook)  # after the config's own hooks, as the last custom hook
    start = time.time()
    runner.train()
    return dict(method=method, seconds=time.time() - start, curves=hook.curves,
                weight_decay=cfg.optim_wrapper.optimizer.get('weight_decay', 0))


def _last(values: list):
    vals = [v for v in values if v is not None]
    return vals[-1] if vals else None


def summarize(results: List[dict], metric: Optional[str]) -> List[dict]:
    rows = []
    for r in results:
        c = r['curves']
        vals = c['val']
        key = metric or (next(iter(vals[-1])) if vals and vals[-1] else None)
        acc = [v.get(key) for v in vals] if key else []
        rows.append(dict(
            method=r['method'], metric=key, final=_last(acc),
            best=max([a for a in acc if a is not None], default=None),
            loss=_last(c['loss']), mcbr=_last(c['mcbr']),
            kernel_norm_start=c['kernel_norm'][0], kernel_norm_end=c['kernel_norm'][-1],
            unit_norm_mean_end=c['unit_norm_mean'][-1], head_norm_end=_last(c['head_norm']),
            weight_decay=r['weight_decay'], seconds=r['seconds']))
    return rows


def markdown_table(rows: List[dict]) -> str:
    f = lambda v, fmt='.4g': '-' if v is None else format(v, fmt)  # noqa: E731
    metric = next((r['metric'] for r in rows if r['metric']), 'metric')
    lines = [f'| method | final {metric} | best {metric} | final loss | MCBR | '
             'kernel norm (start -> end) | mean unit norm | final-layer norm | lambda | time (s) |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(
            f"| {method_label(r['method'])} | {f(r['final'], '.2f')} | "
            f"{f(r['best'], '.2f')} | {f(r['loss'])} | {f(r['mcbr'], '.3f')} | "
            f"{f(r['kernel_norm_start'])} -> {f(r['kernel_norm_end'])} | "
            f"{f(r['unit_norm_mean_end'])} | {f(r['head_norm_end'])} | "
            f"{f(r['weight_decay'], 'g')} | {f(r['seconds'], '.1f')} |")
    return '\n'.join(lines)


def plot(results: List[dict], metric: Optional[str], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [('loss', 'training loss'), ('val', 'validation ' + (metric or 'metric')),
              ('mcbr', 'MCBR of the final layer (Eq. 9)'),
              ('kernel_norm', 'global norm of the kernels')]
    for ax, (key, title) in zip(axes.flat, panels):
        for r in results:
            c = r['curves']
            if key == 'val':
                k = metric or (next(iter(c['val'][-1])) if c['val'] and c['val'][-1] else None)
                xs, ys = c['val_iter'], [v.get(k) for v in c['val']]
            else:
                xs, ys = c['iter'], c[key]
            pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
            if pts:
                ax.plot(*zip(*pts), label=method_label(r['method']))
        ax.set_title(title)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='fixnorm-compare', description=__doc__.split('\n\n')[0])
    p.add_argument('--config', help='model/data config to compare on (default: digits CNN)')
    methods = list(available_methods())
    p.add_argument('--methods', default=','.join(methods),
                   help=f'comma-separated, from {",".join(methods)} (the registered '
                        'methods) or fragment paths')
    p.add_argument('--work-dir', default='work_dirs/compare_methods')
    p.add_argument('--epochs', type=int, default=20, help='digits task only')
    p.add_argument('--lr', type=float, default=0.1, help='digits task only')
    p.add_argument('--conv', default='Conv2d',
                   help="digits task's conv type: Conv2d, ConvWS (mmcv), WNConv2d")
    p.add_argument('--weight-decay', type=float, default=None,
                   help='lambda for every method that has one (default: each fragment\'s)')
    p.add_argument('--tau', type=int, default=None, help='WRS interval (default: fragment\'s)')
    p.add_argument('--interval', type=int, default=10, help='curve sampling, iterations')
    p.add_argument('--layer', default=None, help='final layer for MCBR (default: last Linear)')
    p.add_argument('--metric', default=None, help='validation metric for the table')
    p.add_argument('--smoke', action='store_true',
                   help='a few iterations on a subset: checks the pipeline in seconds')
    p.add_argument('--threads', type=int, default=1,
                   help='torch CPU threads (a small model is fastest on one)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='overrides applied to the base config before the method')
    return p.parse_args(argv)


def main(argv=None) -> List[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.config:
        base = Config.fromfile(resolve_config(args.config))
    else:
        base = digits_config(epochs=2 if args.smoke else args.epochs, lr=args.lr,
                             conv=args.conv, smoke=args.smoke)
        if args.smoke:
            args.interval = min(args.interval, 2)
    if args.cfg_options:
        base.merge_from_dict(args.cfg_options)
    methods = [m for m in args.methods.split(',') if m]
    os.makedirs(args.work_dir, exist_ok=True)
    results = []
    for method in methods:
        torch.manual_seed(0)
        results.append(run_method(copy.deepcopy(base), method, args.work_dir,
                                  args.weight_decay, args.interval, args.layer, args.tau))
        print(f'{method}: done in {results[-1]["seconds"]:.1f}s', flush=True)
    rows = summarize(results, args.metric)
    table = markdown_table(rows)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(dict(rows=rows, runs=results), f, indent=1)
    plot(results, rows[0]['metric'] if rows else None, osp.join(args.work_dir, 'curves.png'))
    print(table)
    return rows


if __name__ == '__main__':
    main()
