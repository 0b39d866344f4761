"""A run's logged scalars, read back and drawn the way TensorBoard shows them.

:func:`read_scalars` reads what mmengine's visualizer wrote in a work dir:
TensorBoard event files (``TensorboardVisBackend``) or, without them,
``vis_data/scalars.json`` (``LocalVisBackend``). :func:`plot_scalars` draws
one panel per tag, every run in its own colour, the raw values faint and
TensorBoard's smoothed curve (its debiased exponential moving average) on
top; ``tools/plot_scalars.py`` is the command line, docs/monitoring.md the
figure it made of a digits run.
"""
import glob
import json
import math
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

#: tag -> [(step, value)], in the order logged
Scalars = Dict[str, List[Tuple[int, float]]]


def _newest(pattern: str) -> Optional[str]:
    found = sorted(glob.glob(pattern, recursive=True), key=osp.getmtime)
    return found[-1] if found else None


def read_scalars(run_dir: str) -> Scalars:
    """Every scalar of the newest run under ``run_dir`` (a work dir, a run's
    timestamp dir, or its ``vis_data``)."""
    events = _newest(osp.join(run_dir, '**', 'events.out.tfevents.*'))
    if events is not None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(osp.dirname(events), size_guidance={'scalars': 0})
        acc.Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
                for tag in acc.Tags()['scalars']}
    path = _newest(osp.join(run_dir, '**', 'scalars.json'))
    if path is None:
        raise FileNotFoundError(
            f'{run_dir}: no TensorBoard events and no vis_data/scalars.json. Log with '
            "visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend'), "
            "dict(type='TensorboardVisBackend')]).")
    out: Scalars = {}
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            step = d.get('step', d.get('iter'))
            for k, v in d.items():
                if k not in ('step', 'iter', 'epoch') and isinstance(v, (int, float)):
                    out.setdefault(k, []).append((step, float(v)))
    return out


def smooth(values: Sequence[float], weight: float = 0.6) -> List[float]:
    """TensorBoard's smoothing: a debiased exponential moving average."""
    out, last, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        n += 1
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight ** n))
    return out


def _flat_stays_flat(ax) -> None:
    """A curve constant up to float rounding (Algo 1's norm) is drawn flat, in
    a +-1 % band, not as the rounding noise that autoscaling would magnify."""
    ys = [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y)]
    if not ys or ax.get_yscale() == 'log':
        return
    lo, hi = min(ys), max(ys)
    mid = (lo + hi) / 2
    if hi - lo <= 1e-5 * max(abs(mid), 1e-12):
        ax.set_ylim(mid - 0.01 * abs(mid) - 1e-12, mid + 0.01 * abs(mid) + 1e-12)
        ax.ticklabel_format(axis='y', useOffset=False)


def plot_scalars(runs: Dict[str, Scalars], path: str, tags: Optional[Sequence[str]] = None,
                 titles: Optional[Dict[str, str]] = None, smoothing: float = 0.6,
                 columns: int = 4, log_tags: Sequence[str] = (),
                 raw_tags: Sequence[str] = ()) -> str:
    """One panel per tag (default: every ``fixnorm/*`` tag), one colour per run.

    Args:
        titles: tag -> panel title (default: the tag).
        smoothing: TensorBoard's smoothing weight; the raw values stay, faint.
        log_tags: tags drawn on a log scale.
        raw_tags: tags drawn without smoothing (smooth curves such as lr, where
            the moving average would only lag).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if tags is None:
        tags = sorted({t for s in runs.values() for t in s if t.startswith('fixnorm/')})
    tags = list(tags)
    if not tags:
        raise ValueError('plot_scalars: no tag to plot (the runs logged no fixnorm/* scalars; '
                         'pass tags=...)')
    rows = math.ceil(len(tags) / columns)
    cols = min(columns, len(tags))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        for i, (label, scalars) in enumerate(runs.items()):
            points = scalars.get(tag)
            if not points:
                continue
            steps, values = zip(*points)
            color = f'C{i}'
            if smoothing and tag not in raw_tags:
                ax.plot(steps, values, color=color, alpha=0.25, lw=1)
                values = smooth(values, smoothing)
            ax.plot(steps, values, color=color, lw=1.6, label=label)
        ax.set_title((titles or {}).get(tag, tag), fontsize=9, loc='left')
        if tag in log_tags:
            ax.set_yscale('log')
        _flat_stays_flat(ax)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.set_xlabel('iteration', fontsize=8)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis('off')
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if len(runs) > 1:
        for ax in axes.flat:  # the first panel may lack a run: collect from all
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, labels, loc='lower center', ncol=len(labels), fontsize=8,
                   frameon=False)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
