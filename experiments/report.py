"""What every experiment script shares besides training: the command line,
mean +- std over seeds, markdown tables, figures and the provenance line
(command, machine, wall time) that the results page states for each output.
"""
import argparse
import json
import os
import platform
import sys
import time
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(description: str, argv: Optional[Sequence[str]] = None,
               extra=None, seeds: int = 3) -> argparse.Namespace:
    """The common command line; ``extra(parser)`` adds a script's own options,
    ``seeds`` is the default of ``--seeds``."""
    p = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(p)
    p.add_argument('--smoke', action='store_true',
                   help='a seconds-long run on a subset (for the test suite); '
                        'writes to work_dirs/smoke unless --out is given')
    p.add_argument('--out', default=None,
                   help='output root: figures go to OUT/figures, tables and raw '
                        'results to OUT/results (default: docs/)')
    p.add_argument('--seeds', type=int, default=seeds, help='seeds per configuration')
    p.add_argument('--epochs', type=int, default=None, help='override the epochs')
    p.add_argument('--workers', type=int, default=1,
                   help='parallel training processes (one CPU thread each)')
    p.add_argument('--replot', action='store_true',
                   help='no training: rebuild tables and figures from the raw '
                        'results that an earlier run left in OUT/results/NAME.json')
    args = p.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(REPO, 'work_dirs', 'smoke') if args.smoke \
            else os.path.join(REPO, 'docs')
    if args.smoke:
        args.seeds = min(args.seeds, 2)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for sub in ('figures', 'results'):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    return args


def mean_std(values: Iterable[float]):
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    v = np.asarray(list(values), dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def pm(values: Iterable[float], digits: int = 2) -> str:
    m, s = mean_std(values)
    return f'{m:.{digits}f} ± {s:.{digits}f}'


def md_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ['| ' + ' | '.join(map(str, header)) + ' |',
             '|' + '|'.join(' --- ' for _ in header) + '|']
    lines += ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows]
    return '\n'.join(lines)


def machine() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return (f'{cpu}, {os.cpu_count()} logical CPUs (shared with other jobs), '
            f'torch {torch.__version__} CPU, 1 thread per training run, '
            f'Python {platform.python_version()}')


def best_index(means: Sequence[float], stds: Sequence[float]) -> int:
    """The best configuration: highest mean; a tie goes to the smaller
    seed-to-seed std (val accuracy of a few hundred images ties often)."""
    return min(range(len(means)), key=lambda i: (-round(means[i], 9), stds[i], i))


def train_or_load(args, name: str, specs: List[dict]):
    """Train ``specs`` (or, with ``--replot``, load the runs of an earlier
    run); return the runs and the provenance of the training."""
    if args.replot:
        with open(os.path.join(args.out, 'results', f'{name}.json')) as f:
            raw = json.load(f)
        return raw['runs'], raw['provenance']
    import digits
    t0 = time.perf_counter()
    runs = digits.train_many(specs, workers=args.workers)
    wall = time.perf_counter() - t0
    return runs, dict(argv=args.argv, workers=args.workers, wall_s=wall,
                      cpu_s=cpu_seconds(runs), machine=machine(),
                      date=time.strftime('%Y-%m-%d'))


def provenance(script: str, prov: dict) -> str:
    cmd = ' '.join(['python', os.path.relpath(script, REPO)] + prov['argv'])
    return (f'Produced by `{cmd}` on {prov["machine"]}, {prov["date"]}: wall time '
            f'{prov["wall_s"] / 60:.1f} min, CPU time of the training processes '
            f'{prov["cpu_s"] / 60:.1f} min (workers={prov["workers"]}).')


def write_outputs(args, name: str, markdown: str, raw: dict) -> None:
    with open(os.path.join(args.out, 'results', f'{name}.md'), 'w') as f:
        f.write(markdown.rstrip() + '\n')
    with open(os.path.join(args.out, 'results', f'{name}.json'), 'w') as f:
        json.dump(raw, f, indent=1, default=float)
    print(markdown)


def group_by(results: List[dict], *keys: str) -> Dict[tuple, List[dict]]:
    """Runs grouped by the values of ``keys`` in their spec (seeds pooled)."""
    out: Dict[tuple, List[dict]] = {}
    for r in results:
        out.setdefault(tuple(r['spec'].get(k) for k in keys), []).append(r)
    return out


def mean_curve(runs: List[dict], key: str):
    """x, mean, std of one curve over seeds (runs share their x)."""
    curves = [r['curves'].get(key, []) for r in runs]
    n = min(len(c) for c in curves)
    if n == 0:
        return np.array([]), np.array([]), np.array([])
    x = np.array([p[0] for p in curves[0][:n]])
    y = np.array([[p[1] for p in c[:n]] for c in curves])
    return x, y.mean(0), y.std(0, ddof=1) if len(y) > 1 else np.zeros(n)


def plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as pyplot
    return pyplot


def cpu_seconds(results: List[dict]) -> float:
    return float(sum(r['cpu_seconds'] for r in results))


def settings(args, smoke: dict, full: dict, overrides: Sequence[str] = ()) -> dict:
    """The experiment's settings: smoke or full, then the command-line overrides."""
    cfg = dict(smoke if args.smoke else full)
    cfg.update({k: getattr(args, k) for k in overrides if getattr(args, k) is not None})
    if args.epochs:
        cfg['epochs'] = args.epochs
    return cfg


def save_figure(fig, path: str, curves=()) -> None:
    """Grid and legend on each curve panel, then write the PNG and free the figure."""
    for a in curves:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt().close(fig)
