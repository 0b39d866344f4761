"""The figure of docs/monitoring.md: what MCBRHook shows in TensorBoard for a
real run, Fig. 2 of the paper in small.

Two trainings of the digits testbed (:mod:`digits`, 30 epochs of 8
iterations, lr 0.2, seed 0), logged as any user's run is logged: ``LoggerHook``
every epoch, ``MCBRHook(layer='head.fc')``, mmengine's ``LocalVisBackend`` and
``TensorboardVisBackend``:

* Algo 1 @ WN-FC (per-class g, no cap, no weight decay),
* Algo 1 @ FixNorm-FC (alpha 0.5: cap alpha * sqrt(10) = 1.58).

The figure is drawn from the TensorBoard event files the runs wrote
(:func:`fixnorm_mm.monitoring.read_scalars`), with TensorBoard's smoothing::

    python experiments/monitoring.py [--work-dir work_dirs/monitoring] [--smoke]

writes ``docs/figures/monitoring.png`` (``--smoke``: 1 epoch, a PNG in the
work dir only) and prints a text-log line of each run.
"""
import argparse
import copy
import glob
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import digits  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RUNS = {  # label: (method, fc_type)
    'Algo 1 @ WN-FC': ('algo1_fc', 'wn_fc'),
    'Algo 1 @ FixNorm-FC (alpha 0.5)': ('algo1_fc', 'fixnorm_fc'),
}
TAGS = ['accuracy', 'loss', 'fixnorm/mcbr', 'fixnorm/g', 'fixnorm/g_capped',
        'fixnorm/norm_default', 'lr', 'fixnorm/default_effective_lr']
TITLES = {
    'accuracy': 'accuracy (val, %)  [Fig. 2 left]',
    'loss': 'loss (train)',
    'fixnorm/mcbr': 'fixnorm/mcbr  [Eq. 9, Fig. 2 bottom right]',
    'fixnorm/g': 'fixnorm/g  [Fig. 2 top right]',
    'fixnorm/g_capped': 'fixnorm/g_capped = min(g, cap)',
    'fixnorm/norm_default': 'fixnorm/norm_default  [Algo 1]',
    'lr': 'lr',
    'fixnorm/default_effective_lr': 'fixnorm/default_effective_lr = lr/norm²',
}


def run_one(label: str, work_dir: str, epochs: int, smoke: bool) -> str:
    from mmengine.config import Config
    from mmengine.runner import Runner
    import torch
    torch.set_num_threads(1)
    method, fc_type = RUNS[label]
    scale = digits.SMOKE_SCALE if smoke else {}
    cfg = digits.run_config(method, lr=0.2, seed=0, fc_type=fc_type, alpha=0.5, epochs=epochs,
                            work_dir=work_dir, **{k: v for k, v in scale.items()
                                                  if k != 'curve_interval'})
    cfg = copy.deepcopy(cfg)
    per_epoch = 2 if smoke else 8
    # val metrics at the iteration, so that every panel shares one x axis
    cfg['default_hooks'] = dict(logger=dict(type='LoggerHook', interval=per_epoch,
                                            log_metric_by_epoch=False), checkpoint=None)
    cfg['custom_hooks'] = [dict(type='MCBRHook', interval=per_epoch, layer='head.fc')]
    cfg['visualizer'] = dict(type='Visualizer', vis_backends=[
        dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
    cfg['log_level'] = 'INFO'
    runner = Runner.from_cfg(Config(cfg))
    runner.train()
    digits._close_runner(runner)
    return work_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'monitoring'))
    p.add_argument('--smoke', action='store_true', help='1 epoch on 100 images')
    args = p.parse_args(argv)
    from fixnorm_mm.monitoring import plot_scalars, read_scalars
    epochs = 1 if args.smoke else 30
    runs = {}
    for i, label in enumerate(RUNS):
        wd = osp.join(args.work_dir, f'run{i}')
        run_one(label, wd, epochs, args.smoke)
        runs[label] = read_scalars(wd)
        log = sorted(glob.glob(osp.join(wd, '*', '*.log')))[-1]
        lines = [s for s in open(log) if 'fixnorm/' in s and 'Epoch(train)' in s]
        print(f'{label}: {log}\n  {lines[-1].strip() if lines else "(no line)"}')
    out = osp.join(args.work_dir, 'monitoring.png') if args.smoke else \
        osp.join(ROOT, 'docs', 'figures', 'monitoring.png')
    os.makedirs(osp.dirname(out), exist_ok=True)
    print(plot_scalars(runs, out, TAGS, TITLES, log_tags=['lr', 'fixnorm/default_effective_lr'],
                       raw_tags=['accuracy', 'lr', 'fixnorm/default_effective_lr',
                                 'fixnorm/norm_default', 'fixnorm/g', 'fixnorm/g_capped']))


if __name__ == '__main__':
    main()
