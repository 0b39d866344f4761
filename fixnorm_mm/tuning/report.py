"""Tables and Fig. 5-like plots of finished sweeps.

``write_report(out_dir, results)`` writes, for each method, ``<method>_trials.md``
and ``.csv`` (one row per trial: round, lr, alpha/wd, budget (what a pruned
trial ran), metric, work_dir), ``<method>_result.json`` (everything, re-readable with
:func:`load_result`), and one PNG (matplotlib, Agg) with the panels of the
paper's Fig. 5: metric vs lr per lr round, metric vs alpha at lr_best, and
the best full-budget metric against the cost spent, for every method given.
"""
import csv
import json
import math
import os
import os.path as osp
import textwrap
from typing import Dict, List, Optional, Sequence

from .trial import Trial, TuneResult


def _fmt(x, digits=4) -> str:
    if x is None:
        return '-'
    if isinstance(x, float):
        if math.isnan(x):
            return 'nan'
        return f'{x:.{digits}g}'
    return str(x)


def trials_rows(result: TuneResult) -> List[Dict[str, str]]:
    rows, cost = [], 0.0
    for i, t in enumerate(result.trials):
        cost += t.cost
        hp = t.alpha if t.weight_decay is None else t.weight_decay
        metric = ('failed: ' + str(t.info.get('error', ''))[:120]) if t.failed \
            else _fmt(t.metric, 6)
        if t.pruned:
            metric = f'pruned at step {t.info.get("pruned_step", "?")}: {metric}'
        rows.append({
            '#': str(i), 'round': str(t.round), 'lr': _fmt(t.lr),
            ('alpha' if t.weight_decay is None else 'weight_decay'): _fmt(hp),
            'budget (T_max)': _fmt(t.budget), 'cost so far': _fmt(cost),
            'metric': metric,
            'cached': 'yes' if t.info.get('cached') else '',
            'work_dir': t.info.get('work_dir', ''),
        })
    return rows


def summary(result: TuneResult, metric_name: str = 'metric') -> str:
    hp = (f'alpha={_fmt(result.best_alpha)}' if result.method.startswith('fixnorm')
          else f'weight_decay={_fmt(result.best_weight_decay)}')
    n_failed = sum(t.failed for t in result.trials)
    n_pruned = sum(t.pruned for t in result.trials)
    pruned = f', {n_pruned} pruned' if n_pruned else ''
    return (f'{result.method}: best {metric_name} {_fmt(result.best_metric, 6)} at '
            f'lr={_fmt(result.best_lr)}, {hp}; {len(result.trials)} trials '
            f'({n_failed} failed{pruned}), total cost {_fmt(result.total_cost)} T_max')


def markdown_table(rows: List[Dict[str, str]]) -> str:
    if not rows:
        return '(no trials)\n'
    cols = list(rows[0])
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    lines += ['| ' + ' | '.join(r[c].replace('|', '/') for c in cols) + ' |' for r in rows]
    return '\n'.join(lines) + '\n'


def load_result(path: str) -> TuneResult:
    """A :class:`TuneResult` from a ``<method>_result.json``."""
    with open(path) as f:
        d = json.load(f)
    trials = [Trial(**t) for t in d['trials']]
    return TuneResult(d['method'], trials, d['best_lr'], d['best_metric'],
                      d.get('best_alpha'), d.get('best_weight_decay'), d.get('lr_probes', []))


def write_report(out_dir: str, results: Sequence[TuneResult], metric_name: str = 'metric',
                 title: Optional[str] = None) -> Dict[str, str]:
    """Write tables, JSON and the PNG for ``results``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for r in results:
        rows = trials_rows(r)
        md = osp.join(out_dir, f'{r.method}_trials.md')
        with open(md, 'w') as f:
            f.write(f'# {r.method} trials\n\n{summary(r, metric_name)}\n\n{markdown_table(rows)}')
        with open(osp.join(out_dir, f'{r.method}_trials.csv'), 'w', newline='') as f:
            if rows:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        with open(osp.join(out_dir, f'{r.method}_result.json'), 'w') as f:
            json.dump(r.to_dict(), f, indent=1, default=str)
        paths[r.method] = md
    png = osp.join(out_dir, '_vs_'.join(r.method for r in results) + '.png')
    plot(results, png, metric_name, title)
    paths['png'] = png
    return paths


def progress_curve(result: TuneResult):
    """The progress panel's curve: ``((costs, best metrics), before)``, from the
    first full-budget result on; ``before`` is the cost spent before the trial
    that gave it (the short trials, failed ones too). None if no full-budget
    trial succeeded."""
    pts = result.progress()
    first = next((i for i, (_, b) in enumerate(pts) if b > -math.inf), None)
    if first is None:
        return None
    reached = pts[first:]
    before = pts[first - 1][0] if first > 0 else 0.0
    return ([c for c, _ in reached], [b for _, b in reached]), before


def alpha_tie_note(result: TuneResult, trials: Sequence[Trial]) -> str:
    """Which alpha Algo 2 chose when others reached the same metric, and why
    (empty when there is no tie)."""
    tied = sorted({t.alpha for t in trials
                   if t.metric == result.best_metric and t.alpha != result.best_alpha})
    if not tied:
        return ''
    others = ', '.join(_fmt(a) for a in tied)
    alpha0 = result.trials[0].alpha if result.trials else None
    if result.best_alpha == alpha0:
        why = (f'alpha_0 = {_fmt(alpha0)} of the lr rounds is kept: Algo 2 (line 13) '
               'replaces it only by a strictly better metric')
    else:
        why = ('the first of the tied candidates in the alpha list wins (line 12 keeps '
               'the first maximum)')
    return f'tie at {_fmt(result.best_metric, 6)}: alpha = {_fmt(result.best_alpha)} ' \
           f'chosen over alpha = {others}; {why}'


def plot(results: Sequence[TuneResult], path: str, metric_name: str = 'metric',
         title: Optional[str] = None) -> str:
    """Fig. 5 of the paper for these results: lr rounds, alpha round (FixNorm-tune),
    best metric vs cost (all methods)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fixnorm = [r for r in results if r.best_alpha is not None and r.lr_probes]
    panels = 2 * len(fixnorm) + 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    for r in results:
        curve = progress_curve(r)
        if curve is None:
            continue
        (xs, ys), before = curve
        line, = ax.step(xs, ys, where='post', marker='o', ms=3, label=r.method)
        color = line.get_color()
        # every trial's cost, the short ones included: a tick on the x axis at
        # the cumulative cost after it
        ax.plot([c for c, _ in r.progress()], [0.0] * len(r.trials), '|', ms=8, color=color,
                transform=ax.get_xaxis_transform())
        if before > 0:
            ax.axvspan(0.0, before, color=color, alpha=0.1, lw=0)
            ax.text(before / 2, 0.5, f'{r.method}: {before:.3g} T_max of short trials',
                    transform=ax.get_xaxis_transform(), rotation=90, ha='center',
                    va='center', fontsize=7, color=color)
    ax.set_xlim(left=0)
    ax.set_xlabel('cost (x T_max)')
    ax.set_ylabel(f'best full-budget {metric_name} so far')
    ax.set_title('progress')
    ax.grid(alpha=0.3)
    ax.legend()
    for r in fixnorm:
        ax = axes.pop(0)
        for rnd in sorted({t.round for t in r.trials if isinstance(t.round, int)}):
            ts = sorted((t for t in r.trials if t.round == rnd and not t.failed),
                        key=lambda t: t.lr)
            budget = next((t.budget for t in r.trials if t.round == rnd), None)
            ax.plot([t.lr for t in ts], [t.metric for t in ts], marker='o',
                    label=f'round {rnd} (T = {_fmt(budget)} T_max)')
            bad = [t for t in r.trials if t.round == rnd and t.failed]
            if bad:
                lo = min((t.metric for t in r.trials if not t.failed), default=0)
                ax.plot([t.lr for t in bad], [lo] * len(bad), 'x', color='red',
                        label='failed' if rnd == 0 else None)
        ax.axvline(r.best_lr, color='gray', ls='--', lw=0.8)
        ax.set_xlabel('lr')
        ax.set_ylabel(metric_name)
        ax.set_title(f'{r.method}: lr rounds (alpha = {_fmt(r.trials[0].alpha)})')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax = axes.pop(0)
        last = max(t.budget for t in r.trials)
        ts = [t for t in r.trials if t.lr == r.best_lr and t.budget == last and not t.failed]
        ts = sorted(ts, key=lambda t: t.alpha)
        ax.plot([t.alpha for t in ts], [t.metric for t in ts], marker='o')
        chosen = f'chosen: alpha = {_fmt(r.best_alpha)} ({metric_name} {_fmt(r.best_metric, 6)})'
        note = alpha_tie_note(r, ts)
        if note:
            chosen += '\n' + textwrap.fill(note, 44)
        ax.plot([r.best_alpha], [r.best_metric], marker='*', ms=14, ls='none', color='C3',
                label=chosen)
        ax.set_xscale('log', base=2)
        ax.set_xlabel('alpha')
        ax.set_ylabel(metric_name)
        ax.set_title(f'alpha round (lr = {_fmt(r.best_lr)})')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
