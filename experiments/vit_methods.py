"""Experiment 7 (issue 21, item 5): a small pre-norm ViT on the 8x8 digits,
trained with AdamW, under three ways of handling its weight norms, at equal
tuning effort; and how far each method's tuned learning rate carries across
width (Hyperball's lr-transfer claim).

The model is ``DigitsViT`` (``fixnorm_mm/testing/vit.py``: 2x2 patches, so 16
tokens + [cls], ``depth`` pre-norm blocks, heads of dimension 8, MLP ratio 2,
``ln_final`` and ``head.fc``). The optimizer is AdamW (betas 0.9, 0.999) for
all three methods:

* ``'adamw_wd'``, AdamW+WD: decoupled weight decay ``wd`` on every weight
  matrix (patch projection, attention and MLP projections, ``head.fc``), none
  on LayerNorm gains, biases, ``cls_token`` and ``pos_embed`` (``paramwise_cfg``
  as mmpretrain's ViT recipes). Tuned: lr x wd.
* ``'hyperball'``, Hyperball(AdamW): ``norm_control=dict(type='Hyperball',
  lr=eta)``: the attention/MLP projections and ``head.fc`` stay at their
  initial Frobenius norm R and move eta_t R a step; the patch projection (the
  input embedding), tokens, positions, gains and biases get plain AdamW at the
  optimizer's lr, which is *not* tied to eta but tuned as the second axis;
  the warm-up + cosine schedule applies to both. No weight decay anywhere
  (``uncontrolled_weight_decay='none'``, the paper's setting). Tuned: eta x lr.
* ``'fixnorm_wn'``, FixNorm + WN: ``FixNormModel(weight_norm='attention_mlp',
  final_layer='head.fc', alpha)`` turns the projections into WN layers and
  ``head.fc`` into FixNorm-FC (Eq. 10), whose directions Algo 1 keeps at their
  initial global norm (``norm_control=dict(type='FixNorm')``); AdamW without
  weight decay anywhere (the FixNorm paper's setting). Tuned: lr x alpha.

Equal tuning effort: every method gets a grid of the same shape, 5 values of
its learning rate (factor 2 apart) x 3 values of its second hyper-parameter,
each cell trained with the same 2 seeds (30 runs a method); the cell with the
best mean val accuracy is chosen. Then:

* ``final``: the chosen setting of each method with 5 fresh seeds, on test;
* ``transfer``: widths 16, 32, 64, 128 (heads = width / 8) x the 5 learning
  rates of the grid, second hyper-parameter at its chosen value: accuracy
  across width at the lr tuned at width 32 (3 fresh seeds), and where the
  best lr sits at each width (2 of those seeds at every lr of the grid).

    python experiments/vit_methods.py --workers 2   # the full run, writes docs/
    python experiments/vit_methods.py --smoke       # seconds (tests/test_experiments.py)

A full run appends every finished run to ``--cache`` (default
``work_dirs/vit_methods_runs.jsonl``) and skips the runs it finds there, so an
interrupted run resumes where it stopped.
"""
import copy
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits  # noqa: E402
import report  # noqa: E402

NAME = 'vit_methods'
METHODS = {'adamw_wd': 'AdamW+WD', 'hyperball': 'Hyperball(AdamW)', 'fixnorm_wn': 'FixNorm + WN'}
#: outside the equal-effort comparison: Hyperball at the setting tuned for it, with
#: head.fc left to AdamW (its norm free), in the final and width-sweep runs
ABLATION = 'hyperball_free_head'
ABLATION_LABEL = 'Hyperball(AdamW), head.fc left to AdamW'
#: the learning rate each method tunes, and its second hyper-parameter
LR_NAME = {'adamw_wd': 'lr', 'hyperball': 'eta', 'fixnorm_wn': 'lr'}
SECOND_NAME = {'adamw_wd': 'wd', 'hyperball': 'lr (other params)', 'fixnorm_wn': 'alpha'}
#: attention head dimension (heads = width / HEAD_DIM)
HEAD_DIM = 8
#: ViT recipes (mmpretrain's vit-base, DeiT): no decay on norms, biases, tokens, positions
VIT_PARAMWISE = dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                     custom_keys={'cls_token': dict(decay_mult=0.0),
                                  'pos_embed': dict(decay_mult=0.0)})
#: grids centred by a one-seed pilot of 8-10 runs a method at width 32 (docs/results.md, 7)
FULL = dict(
    epochs=100, width=32, depth=2, patch=2, widths=[16, 32, 64, 128],
    grids=dict(adamw_wd=dict(lr=[2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2], second=[0.1, 0.3, 1.0]),
               hyperball=dict(lr=[5e-3, 1e-2, 2e-2, 4e-2, 8e-2], second=[3e-3, 1e-2, 3e-2]),
               fixnorm_wn=dict(lr=[2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2], second=[0.25, 0.5, 1.0])),
    tune_seeds=2, transfer_seeds=3, transfer_grid_seeds=2, val_interval=10,
    curve_interval=40, grid_curve_interval=200)
SMOKE = dict(
    epochs=1, width=16, depth=1, patch=2, widths=[16, 32],
    grids=dict(adamw_wd=dict(lr=[1e-3, 4e-3], second=[0.1]),
               hyperball=dict(lr=[1e-2, 4e-2], second=[1e-2]),
               fixnorm_wn=dict(lr=[1e-3, 4e-3], second=[0.5])),
    tune_seeds=1, transfer_seeds=1, transfer_grid_seeds=1, grid_curve_interval=1,
    **digits.SMOKE_SCALE)
#: seeds of the three phases (disjoint: the reported runs did not choose the setting)
FIRST_SEED = dict(tune=0, final=100, transfer=10)


# ----------------------------------------------------------------------------- configs
def vit_model(method: str, width: int, depth: int, patch: int, alpha: float) -> dict:
    vit = dict(width=width, depth=depth, heads=max(width // HEAD_DIM, 1), patch=patch)
    if method == 'fixnorm_wn':
        return dict(type='FixNormModel', model_type='DigitsViT', final_layer='head.fc',
                    alpha=alpha, weight_norm='attention_mlp', **vit)
    return dict(type='DigitsViT', **vit)


def vit_optim_wrapper(method: str, lr: float, second: float) -> dict:
    """``lr``: the method's tuned learning rate (eta for Hyperball);
    ``second``: wd / the other parameters' lr / alpha (the model's)."""
    if method == 'adamw_wd':
        return dict(type='OptimWrapper', paramwise_cfg=VIT_PARAMWISE,
                    optimizer=dict(type='AdamW', lr=lr, weight_decay=second))
    control = dict(type='OptimWrapper', constructor='NormControlOptimWrapperConstructor')
    if method in ('hyperball', ABLATION):
        ball = dict(type='Hyperball', lr=lr, uncontrolled_weight_decay='none')
        if method == ABLATION:
            ball['exclude'] = ['head.fc.weight']
        return dict(control, optimizer=dict(type='AdamW', lr=second, weight_decay=0.0),
                    norm_control=ball)
    if method == 'fixnorm_wn':
        return dict(control, optimizer=dict(type='AdamW', lr=lr, weight_decay=0.0),
                    norm_control=dict(type='FixNorm'))
    raise ValueError(f'method must be one of {list(METHODS)}, got {method!r}')


def spec(cfg: dict, phase: str, method: str, lr: float, second: float, seed: int,
         width: int) -> dict:
    scale = {k: cfg[k] for k in digits.SCALE_KEYS if k in cfg}
    if phase != 'final':  # grid runs keep only a few points of their curves
        scale['curve_interval'] = cfg['grid_curve_interval']
    return dict(phase=phase, method=method, lr=lr, second=second, seed=seed, width=width,
                epochs=cfg['epochs'],
                model=vit_model(method, width, cfg['depth'], cfg['patch'],
                                second if method == 'fixnorm_wn' else 1.0),
                optim_wrapper=vit_optim_wrapper(method, lr, second), **scale)


def tune_specs(cfg: dict):
    return [spec(cfg, 'tune', m, lr, sec, FIRST_SEED['tune'] + s, cfg['width'])
            for m, g in cfg['grids'].items() for sec in g['second'] for lr in g['lr']
            for s in range(cfg['tune_seeds'])]


def later_specs(cfg: dict, chosen: dict, seeds: int):
    """The final runs (chosen settings, fresh seeds) and the width x lr grid."""
    out = [spec(cfg, 'final', m, c['lr'], c['second'], FIRST_SEED['final'] + s, cfg['width'])
           for m, c in chosen.items() for s in range(seeds)]
    for m in chosen:
        for w in cfg['widths']:
            for lr in cfg['grids'][m]['lr']:
                n = cfg['transfer_seeds' if lr == chosen[m]['lr'] else 'transfer_grid_seeds']
                out += [spec(cfg, 'transfer', m, lr, chosen[m]['second'],
                             FIRST_SEED['transfer'] + s, w) for s in range(n)]
    return out


def ablation_specs(cfg: dict, chosen: dict, seeds: int):
    """:data:`ABLATION` at Hyperball's chosen setting: the final seeds at the
    base width, and the width sweep at that setting (no lr grid, no tuning)."""
    c = chosen['hyperball']
    return ([spec(cfg, 'final', ABLATION, c['lr'], c['second'], FIRST_SEED['final'] + s,
                  cfg['width']) for s in range(seeds)]
            + [spec(cfg, 'transfer', ABLATION, c['lr'], c['second'],
                    FIRST_SEED['transfer'] + s, w)
               for w in cfg['widths'] for s in range(cfg['transfer_seeds'])])


def beyond(values, side: int) -> float:
    """One more grid value past the low (side -1) or high (+1) end, at the
    grid's last ratio (2 significant digits)."""
    ratio = values[1] / values[0] if side < 0 else values[-1] / values[-2]
    return float(f'{(values[0] / ratio if side < 0 else values[-1] * ratio):.2g}')


def edge_cells(cfg: dict, chosen: dict) -> dict:
    """Per method whose chosen setting lies on an edge of its grid: the cells
    of one more row/column past that edge (the *edge check*, outside the
    equal-effort comparison: does a wider grid find a better setting?)."""
    out = {}
    for m, g in cfg['grids'].items():
        lrs, secs, c = list(g['lr']), list(g['second']), chosen[m]
        new = {}
        for key, values in (('lr', lrs), ('second', secs)):
            new[key] = [] if len(values) < 2 else \
                [beyond(values, -1)] if c[key] == values[0] else \
                [beyond(values, 1)] if c[key] == values[-1] else []
        cells = [(lr, sec) for lr in new['lr'] for sec in secs + new['second']]
        cells += [(lr, sec) for lr in lrs for sec in new['second']]
        if cells:
            out[m] = dict(cells=cells, added_lr=new['lr'], added_second=new['second'])
    return out


def edge_specs(cfg: dict, chosen: dict):
    return [spec(cfg, 'edge', m, lr, sec, FIRST_SEED['tune'] + s, cfg['width'])
            for m, e in edge_cells(cfg, chosen).items() for lr, sec in e['cells']
            for s in range(cfg['tune_seeds'])]


def edge_choice(runs, cfg, chosen) -> dict:
    """Per method with an edge check: the best cell (mean val) of the grid
    plus the added cells."""
    by = report.group_by([r for r in runs if r['spec']['phase'] in ('tune', 'edge')],
                         'method', 'second', 'lr')
    out = {}
    for m, e in edge_cells(cfg, chosen).items():
        keys = [(sec, lr) for sec, lr in ((k[1], k[2]) for k in by if k[0] == m)]
        stats = [cell(by[(m, sec, lr)], 'val_accuracy') for sec, lr in keys]
        i = report.best_index([a for a, _ in stats], [b for _, b in stats])
        out[m] = dict(e, lr=keys[i][1], second=keys[i][0], val=list(stats[i]),
                      added_best=max(stats[j][0] for j, (sec, lr) in enumerate(keys)
                                     if (lr, sec) in e['cells']))
    return out


def edge_final_specs(cfg: dict, chosen: dict, edge: dict, seeds: int):
    """Fresh seeds at the edge check's choice where it moved."""
    return [spec(cfg, 'edge_final', m, e['lr'], e['second'], FIRST_SEED['final'] + s,
                 cfg['width'])
            for m, e in edge.items() if (e['lr'], e['second']) != (chosen[m]['lr'],
                                                                    chosen[m]['second'])
            for s in range(seeds)]


# ----------------------------------------------------------------------------- analysis
def cell(runs, key):
    return report.mean_std(r[key] for r in runs)


def choose(runs, cfg):
    """Per method: the (lr, second) with the best mean val accuracy over the
    tuning seeds (a tie goes to the smaller std), and the grid of means."""
    by = report.group_by([r for r in runs if r['spec']['phase'] == 'tune'],
                         'method', 'second', 'lr')
    out = {}
    for m, g in cfg['grids'].items():
        keys = [(sec, lr) for sec in g['second'] for lr in g['lr']]
        stats = [cell(by[(m, sec, lr)], 'val_accuracy') for sec, lr in keys]
        best = keys[report.best_index([a for a, _ in stats], [b for _, b in stats])]
        out[m] = dict(second=best[0], lr=best[1],
                      val_grid=[[list(cell(by[(m, sec, lr)], 'val_accuracy')) for lr in g['lr']]
                                for sec in g['second']],
                      test_grid=[[list(cell(by[(m, sec, lr)], 'test_accuracy'))
                                  for lr in g['lr']] for sec in g['second']])
    return out


def log_vertex(lrs, means):
    """The lr at the top of a parabola in log2(lr) through the best grid point
    and its two neighbours: a finer estimate of the optimum than the grid's
    argmax. Returns (lr, where): where is 'interior', or 'low edge' / 'high
    edge' when the best point is at the end of the grid (the vertex is then the
    edge value, and the true optimum may lie beyond it)."""
    i = int(np.argmax(means))
    if i == 0:
        return lrs[0], 'low edge'
    if i == len(lrs) - 1:
        return lrs[-1], 'high edge'
    x = np.log2(lrs[i - 1:i + 2])
    a, b, _ = np.polyfit(x, means[i - 1:i + 2], 2)
    v = x[1] if a >= 0 else float(np.clip(-b / (2 * a), x[0], x[2]))
    return float(2 ** v), 'interior'


def transfer(runs, cfg, chosen):
    """Per method and width: the test accuracy at the lr tuned at the base
    width (all transfer seeds); val/test mean +- std at each lr of the grid
    and the best lr on val (the seeds every lr has)."""
    runs = [r for r in runs if r['spec']['phase'] == 'transfer']
    by_all = report.group_by(runs, 'method', 'width', 'lr')
    grid_seeds = range(FIRST_SEED['transfer'], FIRST_SEED['transfer'] + cfg['transfer_grid_seeds'])
    by = report.group_by([r for r in runs if r['spec']['seed'] in grid_seeds],
                         'method', 'width', 'lr')
    out = {}
    for m in cfg['grids']:
        lrs = cfg['grids'][m]['lr']
        per_width = {}
        for w in cfg['widths']:
            val = [cell(by[(m, w, lr)], 'val_accuracy') for lr in lrs]
            test = [cell(by[(m, w, lr)], 'test_accuracy') for lr in lrs]
            i_best = report.best_index([a for a, _ in val], [b for _, b in val])
            i_tuned = lrs.index(chosen[m]['lr'])
            vertex, where = log_vertex(lrs, np.array([a for a, _ in val]))
            per_width[w] = dict(
                val=val, test=test, best_lr=lrs[i_best], vertex_lr=vertex, vertex_where=where,
                tuned_test=[r['test_accuracy'] for r in by_all[(m, w, chosen[m]['lr'])]],
                best_test=test[i_best][0],
                spread=max(a for a, _ in val) - min(a for a, _ in val),
                regret=test[i_best][0] - test[i_tuned][0])
        best = [per_width[w]['best_lr'] for w in cfg['widths']]
        vert = [per_width[w]['vertex_lr'] for w in cfg['widths']]
        out[m] = dict(per_width=per_width, shift_grid=max(best) / min(best),
                      shift_vertex=max(vert) / min(vert),
                      edges=[w for w in cfg['widths']
                             if per_width[w]['vertex_where'] != 'interior'])
    return out


def sphere_check(runs):
    """The largest relative distance of a Hyperball matrix from its sphere at
    the end of any Hyperball run, and the largest the controller logged."""
    hb = [r for r in runs if r['spec']['method'] in ('hyperball', ABLATION)]
    end = max(r['sphere']['max_rel_dev'] for r in hb)
    logged = max((v for r in hb for _, v in r['curves'].get('sphere_max_rel_dev', [])),
                 default=float('nan'))
    return dict(runs=len(hb), max_rel_dev_end=end, max_rel_dev_logged=logged,
                matrices=next(r['sphere']['names'] for r in hb
                              if r['spec']['method'] == 'hyperball'))


# ----------------------------------------------------------------------------- figures
COLORS = {'adamw_wd': 'tab:blue', 'hyperball': 'tab:red', 'fixnorm_wn': 'tab:green'}


def figure_methods(runs, cfg, chosen, path):
    plt = report.plt()
    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    final = report.group_by([r for r in runs if r['spec']['phase'] == 'final'], 'method')
    rng = np.random.RandomState(0)
    for i, m in enumerate(METHODS):
        acc = [r['test_accuracy'] for r in final[(m,)]]
        mu, sd = report.mean_std(acc)
        ax[0].errorbar([i], [mu], yerr=[sd], fmt='s', color=COLORS[m], capsize=6, ms=8)
        ax[0].scatter(i + rng.uniform(-0.12, 0.12, len(acc)), acc, color=COLORS[m],
                      alpha=0.6, s=18, zorder=3)
    if (ABLATION,) in final:
        acc = [r['test_accuracy'] for r in final[(ABLATION,)]]
        mu, sd = report.mean_std(acc)
        i = len(METHODS)
        ax[0].errorbar([i], [mu], yerr=[sd], fmt='s', mfc='none', color=COLORS['hyperball'],
                       capsize=6, ms=8)
        ax[0].scatter(i + rng.uniform(-0.12, 0.12, len(acc)), acc, facecolors='none',
                      edgecolors=COLORS['hyperball'], alpha=0.8, s=18, zorder=3)
    labels = [METHODS[m].replace('(', '\n(').replace(' + ', '\n+ ') for m in METHODS] + (
        ['Hyperball,\nhead.fc to AdamW\n(ablation)'] if (ABLATION,) in final else [])
    ax[0].set_xticks(range(len(labels)), labels, fontsize=8)
    ax[0].set(ylabel='test accuracy (%)', xlim=(-0.5, len(labels) - 0.5),
              title='chosen settings, fresh seeds (dots)')
    ax[0].grid(alpha=0.3)
    for m, label in METHODS.items():
        g, c = cfg['grids'][m], chosen[m]
        row = g['second'].index(c['second'])
        mean = np.array([v[0] for v in c['val_grid'][row]])
        std = np.array([v[1] for v in c['val_grid'][row]])
        rel = np.array(g['lr']) / c['lr']
        ax[1].errorbar(rel, mean, yerr=std, marker='o', capsize=3, color=COLORS[m],
                       label=f"{label} ({LR_NAME[m]}; {SECOND_NAME[m]} = {c['second']:g})")
        for key, a in (('linear_norm', ax[2]), ('val_accuracy', ax[3])):
            x, mu, sd = report.mean_curve(final[(m,)], key)
            a.plot(x, mu, marker='.', ms=3, color=COLORS[m], label=label)
            a.fill_between(x, mu - sd, mu + sd, color=COLORS[m], alpha=0.25)
    ax[1].set(xscale='log', xlabel="learning rate / the chosen one (x2 steps)",
              ylabel=f"val accuracy (%), {cfg['transfer_grid_seeds']} seeds", title=f"lr sensitivity at width {cfg['width']} "
              f"({cfg['tune_seeds']} tuning seeds)")
    ax[1].set_xscale('log', base=2)
    ticks = sorted({x for m in METHODS
                    for x in np.array(cfg['grids'][m]['lr']) / chosen[m]['lr']})
    ax[1].set_xticks(ticks, [f'{x:g}' if x >= 1 else f'1/{1 / x:g}' for x in ticks])
    ax[1].minorticks_off()
    ax[2].set(xlabel='iteration', ylabel='global norm', yscale='log',
              title='applied weights of the attention + MLP projections')
    ax[3].set(xlabel='iteration', ylabel='val accuracy (%)', title='val accuracy (final runs)')
    lo = min(report.mean_curve(final[(m,)], 'val_accuracy')[1][-1] for m in METHODS)
    ax[3].set_ylim(max(lo - 15, 0), 100)
    report.save_figure(fig, path, curves=ax[1:])


def figure_transfer(cfg, chosen, tr, runs, path):
    plt = report.plt()
    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    widths = cfg['widths']
    for m, label in METHODS.items():
        pw = tr[m]['per_width']
        mu = [np.mean(pw[w]['tuned_test']) for w in widths]
        sd = [report.mean_std(pw[w]['tuned_test'])[1] for w in widths]
        ax[0].errorbar(widths, mu, yerr=sd, marker='o', capsize=3, color=COLORS[m],
                       label=f"{label} ({LR_NAME[m]} = {chosen[m]['lr']:g})")
        for w in widths:
            ax[0].scatter([w] * len(pw[w]['tuned_test']), pw[w]['tuned_test'],
                          color=COLORS[m], alpha=0.4, s=10)
    abl = report.group_by([r for r in runs if r['spec']['phase'] == 'transfer'
                           and r['spec']['method'] == ABLATION], 'width')
    if abl:
        ax[0].errorbar(widths, [np.mean([r['test_accuracy'] for r in abl[(w,)]]) for w in widths],
                       yerr=[report.mean_std(r['test_accuracy'] for r in abl[(w,)])[1]
                             for w in widths], marker='o', mfc='none', ls='--', capsize=3,
                       color=COLORS['hyperball'], label=f'{ABLATION_LABEL} (ablation)')
    ax[0].set(xscale='log', xlabel='width', ylabel='test accuracy (%)',
              title=f"fixed lr (tuned at width {cfg['width']}), {cfg['transfer_seeds']} seeds")
    ax[0].set_xscale('log', base=2)
    ax[0].set_xticks(widths, [str(w) for w in widths])
    cmap = plt.get_cmap('viridis')
    # one y range for the three panels, from the best cell of the worst width down;
    # points below it (diverged runs) are marked at the bottom edge
    bottom = max(min(max(v[0] for v in tr[m]['per_width'][w]['val'])
                     for m in METHODS for w in widths) - 12, 0)
    for a, (m, label) in zip(ax[1:], METHODS.items()):
        lrs = np.array(cfg['grids'][m]['lr'])
        for k, w in enumerate(widths):
            p = tr[m]['per_width'][w]
            color = cmap(k / max(len(widths) - 1, 1))
            a.errorbar(lrs, [v[0] for v in p['val']], yerr=[v[1] for v in p['val']],
                       marker='o', ms=4, capsize=2, color=color, label=f'width {w}')
            for lr, (mu, _) in zip(lrs, p['val']):
                if mu < bottom:
                    a.annotate(f'{mu:.0f}% (w{w})', (lr, bottom), xytext=(0, 4),
                               textcoords='offset points', ha='center', fontsize=7,
                               color=color)
            a.axvline(p['vertex_lr'], color=color, ls=':', lw=1)
        a.axvline(chosen[m]['lr'], color='k', lw=0.8, alpha=0.5)
        a.set_xscale('log', base=2)
        a.set_xticks(lrs, [f'{x:g}' for x in lrs], fontsize=8)
        a.minorticks_off()
        spread = '/'.join(f"{tr[m]['per_width'][w]['spread']:.1f}" for w in widths)
        a.set(xlabel=f"{LR_NAME[m]} (dotted: interpolated best per width; grey: tuned)",
              ylabel=f"val accuracy (%), {cfg['transfer_grid_seeds']} seeds",
              title=f"{label}: best {LR_NAME[m]} moves {tr[m]['shift_vertex']:.1f}x\n"
                    f"(spread by width: {spread} points)")
        a.title.set_fontsize(9)
        a.set_ylim(bottom, 100)
    report.save_figure(fig, path, curves=ax)


# ----------------------------------------------------------------------------- tables
def fmt(x):
    return f'{x:g}'


def tables(cfg, chosen, runs, tr, sphere, seeds, edge):
    final = report.group_by([r for r in runs if r['spec']['phase'] == 'final'], 'method')
    parts = []
    # the main table
    rows = []
    for m, label in METHODS.items():
        c, fr = chosen[m], final[(m,)]
        row = cfg['grids'][m]['second'].index(c['second'])
        tune_val = c['val_grid'][row][cfg['grids'][m]['lr'].index(c['lr'])]
        rows.append([label, f"{LR_NAME[m]} = {fmt(c['lr'])}, {SECOND_NAME[m]} = "
                     f"{fmt(c['second'])}", f'{tune_val[0]:.2f} ± {tune_val[1]:.2f}',
                     report.pm(r['test_accuracy'] for r in fr),
                     ', '.join(f"{r['test_accuracy']:.1f}" for r in fr),
                     f"{np.mean([r['cpu_seconds'] for r in fr]):.1f}"])
    parts.append(f'Each method at the setting chosen on val ({cfg["tune_seeds"]} tuning seeds), '
                 f'then {seeds} fresh seeds ({FIRST_SEED["final"]}-'
                 f'{FIRST_SEED["final"] + seeds - 1}) on test; width {cfg["width"]}, depth '
                 f'{cfg["depth"]}, {cfg["epochs"]} epochs:')
    parts.append(report.md_table(['method', 'chosen on val', 'val acc, tuning seeds (%)',
                                  f'test acc, {seeds} fresh seeds (%)', 'per seed',
                                  'CPU s / run'], rows))
    diffs = []
    for a, b in (('hyperball', 'adamw_wd'), ('fixnorm_wn', 'adamw_wd'),
                 ('hyperball', 'fixnorm_wn')):
        xa = [r['test_accuracy'] for r in final[(a,)]]
        xb = [r['test_accuracy'] for r in final[(b,)]]
        se = math.sqrt(np.var(xa, ddof=1) / len(xa) + np.var(xb, ddof=1) / len(xb)) \
            if len(xa) > 1 and len(xb) > 1 else float('nan')
        diffs.append(f'{METHODS[a]} - {METHODS[b]}: {np.mean(xa) - np.mean(xb):+.2f} '
                     f'(standard error {se:.2f})')
    parts.append('Differences of the means (test): ' + '; '.join(diffs) + '.')
    # the tuning grids
    for m, label in METHODS.items():
        g, c = cfg['grids'][m], chosen[m]
        rows = []
        for i, sec in enumerate(g['second']):
            row = [fmt(sec)]
            for j, lr in enumerate(g['lr']):
                v = c['val_grid'][i][j]
                text = f'{v[0]:.2f} ± {v[1]:.2f}'
                row.append(f'**{text}**' if (sec, lr) == (c['second'], c['lr']) else text)
            rows.append(row)
        parts.append(f'Tuning grid of {label}: val accuracy (%), mean ± std over '
                     f'{cfg["tune_seeds"]} seeds; rows {SECOND_NAME[m]}, columns '
                     f'{LR_NAME[m]}; bold: chosen.')
        parts.append(report.md_table([f'{SECOND_NAME[m]} \\ {LR_NAME[m]}']
                                     + [fmt(lr) for lr in g['lr']], rows))
    # the edge check
    if edge:
        moved = report.group_by([r for r in runs if r['spec']['phase'] == 'edge_final'],
                                'method')
        rows = []
        for m, label in METHODS.items():
            c = chosen[m]
            row = c['val_grid'][cfg['grids'][m]['second'].index(c['second'])]
            val = row[cfg['grids'][m]['lr'].index(c['lr'])]
            here = f"{LR_NAME[m]} = {fmt(c['lr'])}, {SECOND_NAME[m]} = {fmt(c['second'])}: " \
                f'{val[0]:.2f}'
            if m not in edge:
                rows.append([label, here, 'none (inside the grid)', '', ''])
                continue
            e = edge[m]
            added = ', '.join([f"{LR_NAME[m]} {fmt(v)}" for v in e['added_lr']]
                              + [f"{SECOND_NAME[m]} {fmt(v)}" for v in e['added_second']])
            best = f"{LR_NAME[m]} = {fmt(e['lr'])}, {SECOND_NAME[m]} = {fmt(e['second'])}: " \
                f"{e['val'][0]:.2f}"
            test = (report.pm(r['test_accuracy'] for r in moved[(m,)]) if (m,) in moved
                    else 'unchanged')
            rows.append([label, here, f"{added} ({len(e['cells'])} cells; best "
                         f"{e['added_best']:.2f})", best, test])
        parts.append('Edge check, outside the equal-effort comparison: where the chosen '
                     'setting lies on an edge of its grid, one more row / column past that '
                     f"edge, {cfg['tune_seeds']} seeds a cell, and fresh seeds where the "
                     'choice moves (val accuracy %, mean):')
        parts.append(report.md_table(['method', 'chosen on the grid', 'added past the edge',
                                      'best on the extended grid',
                                      f'its test acc, {seeds} fresh seeds'], rows))
    # transfer
    widths = cfg['widths']
    rows = []
    for m, label in METHODS.items():
        pw = tr[m]['per_width']
        rows.append([f"{label} ({LR_NAME[m]} = {fmt(chosen[m]['lr'])})"]
                    + [report.pm(pw[w]['tuned_test']) for w in widths])
    parts.append(f'Width sweep at the setting tuned at width {cfg["width"]} (heads = width / '
                 f'{HEAD_DIM}), test accuracy (%), mean ± std over {cfg["transfer_seeds"]} '
                 f'fresh seeds ({FIRST_SEED["transfer"]}-'
                 f'{FIRST_SEED["transfer"] + cfg["transfer_seeds"] - 1}):')
    parts.append(report.md_table(['method'] + [f'width {w}' for w in widths], rows))
    rows = []
    for m, label in METHODS.items():
        pw = tr[m]['per_width']
        best = ', '.join(fmt(pw[w]['best_lr']) for w in widths)
        vert = ', '.join(f"{pw[w]['vertex_lr']:.3g}"
                         + ('' if pw[w]['vertex_where'] == 'interior'
                            else (' (≤)' if pw[w]['vertex_where'] == 'low edge' else ' (≥)'))
                         for w in widths)
        regret = ', '.join(f"{pw[w]['regret']:.2f}" for w in widths)
        spread = ', '.join(f"{pw[w]['spread']:.1f}" for w in widths)
        rows.append([label, LR_NAME[m], best, vert, f"{tr[m]['shift_grid']:.1f}x",
                     f"{tr[m]['shift_vertex']:.1f}x", spread, regret])
    parts.append(f'Where the best learning rate sits at each width (widths '
                 f'{", ".join(map(str, widths))}; on val, mean over '
                 f'{cfg["transfer_grid_seeds"]} seeds at each lr; grid factor 2; "interpolated": top of a '
                 'parabola in log lr through the best grid point and its neighbours, (≤)/(≥) '
                 'where the best point is the edge of the grid); "spread": best minus worst '
                 'mean val accuracy over the grid\'s learning rates (points; how peaked the '
                 'curve is); "cost of the fixed lr": test accuracy at the per-width best lr '
                 'minus at the tuned one (points):')
    parts.append(report.md_table(['method', 'tuned', 'best on the grid, per width',
                                  'interpolated, per width', 'moves (grid)',
                                  'moves (interpolated)', 'spread over the lr grid, per width',
                                  'cost of the fixed lr, per width'],
                                 rows))
    abl_final = final.get((ABLATION,))
    if abl_final:
        abl = report.group_by([r for r in runs if r['spec']['phase'] == 'transfer'
                               and r['spec']['method'] == ABLATION], 'width')
        c = chosen['hyperball']
        rows = [[f"{METHODS['hyperball']} (head.fc on its sphere, as tuned)",
                 report.pm(r['test_accuracy'] for r in final[('hyperball',)])]
                + [report.pm(tr['hyperball']['per_width'][w]['tuned_test']) for w in widths],
                [ABLATION_LABEL, report.pm(r['test_accuracy'] for r in abl_final)]
                + [report.pm(r['test_accuracy'] for r in abl[(w,)]) for w in widths]]
        parts.append(f"Ablation, outside the equal-effort comparison: Hyperball at the setting "
                     f"tuned for it (eta = {fmt(c['lr'])}, lr = {fmt(c['second'])}), with "
                     "head.fc left to AdamW (no weight decay, its norm free) instead of kept on "
                     f"its sphere; test accuracy (%), {len(abl_final)} fresh seeds at width "
                     f"{cfg['width']}, {cfg['transfer_seeds']} across width:")
        parts.append(report.md_table(['variant', f"width {cfg['width']}, final seeds"]
                                     + [f'width {w}' for w in widths], rows))
    parts.append(f"Hyperball's matrices ({len(sphere['matrices'])} a model: "
                 f"{', '.join(sphere['matrices'][:5])}, ...) after training, over all "
                 f"{sphere['runs']} Hyperball runs: largest relative distance from their "
                 f"sphere of radius R {sphere['max_rel_dev_end']:.1e} (largest logged during "
                 f"training {sphere['max_rel_dev_logged']:.1e}).")
    return parts


# ----------------------------------------------------------------------------- main
def train_phase(args, specs, prov):
    if not specs:
        return []
    known = digits.load_cache(args.cache)
    prov['reused'] += sum(digits.spec_key(s) in known for s in specs)
    prov['runs'] += len(specs)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    runs = digits.train_many(specs, workers=args.workers, fn=digits.train_once_or_diverged,
                             cache=args.cache)
    prov['wall_s'] += time.perf_counter() - t0
    prov['cpu_s'] += report.cpu_seconds(runs)
    prov['load'] += [round(load0, 2), round(os.getloadavg()[0], 2)]
    return runs


def options(p):
    p.add_argument('--cache', default=None,
                   help='JSON-lines file of finished runs, appended as they end and reused '
                        '(default for a full run: work_dirs/vit_methods_runs.jsonl; none '
                        'with --smoke)')


def main(argv=None) -> dict:
    args = report.parse_args(__doc__.splitlines()[0], argv, extra=options, seeds=5)
    if args.cache is None and not args.smoke:
        args.cache = os.path.join(report.REPO, 'work_dirs', f'{NAME}_runs.jsonl')
    if args.cache:
        os.makedirs(os.path.dirname(os.path.abspath(args.cache)), exist_ok=True)
    cfg = report.settings(args, SMOKE, FULL)
    if args.replot:
        import json
        with open(os.path.join(args.out, 'results', f'{NAME}.json')) as f:
            raw = json.load(f)
        runs, prov = raw['runs'], raw['provenance']
        for r in runs:  # JSON turned the widths of the keys into strings; specs are intact
            r['spec']['width'] = int(r['spec']['width'])
        chosen = choose(runs, cfg)
        edge = edge_choice(runs, cfg, chosen)
    else:
        prov = dict(argv=args.argv, workers=args.workers, wall_s=0.0, cpu_s=0.0,
                    machine=report.machine(), date=time.strftime('%Y-%m-%d'), load=[],
                    runs=0, reused=0)
        runs = train_phase(args, tune_specs(cfg), prov)
        chosen = choose(runs, cfg)
        runs += train_phase(args, later_specs(cfg, chosen, args.seeds)
                            + ablation_specs(cfg, chosen, args.seeds)
                            + edge_specs(cfg, chosen), prov)
        edge = edge_choice(runs, cfg, chosen)
        runs += train_phase(args, edge_final_specs(cfg, chosen, edge, args.seeds), prov)
    seeds = len([r for r in runs if r['spec']['phase'] == 'final'
                 and r['spec']['method'] == 'adamw_wd'])
    tr = transfer(runs, cfg, chosen)
    sphere = sphere_check(runs)
    fig_methods, fig_transfer = 'figures/vit_methods.png', 'figures/vit_transfer.png'
    figure_methods(runs, cfg, chosen, os.path.join(args.out, fig_methods))
    figure_transfer(cfg, chosen, tr, runs, os.path.join(args.out, fig_transfer))
    parts = tables(cfg, chosen, runs, tr, sphere, seeds, edge)
    parts.insert(2, f'![ViT: three methods](../{fig_methods})')
    parts.append(f'![ViT: lr transfer across width](../{fig_transfer})')
    reused = (f" {prov['reused']} of the {prov['runs']} runs were taken from the cache of an "
              "earlier invocation; the wall time is this invocation's, the CPU time all "
              "runs'." if prov.get('reused') else '')
    parts.append(report.provenance(__file__, prov) + reused
                 + f" Load average (1 min) at the start and end of each phase: {prov['load']}.")
    md = '\n\n'.join(parts)
    for r in runs:  # small raw results: grid runs keep only the curves the page uses
        keep = None if r['spec']['phase'] in ('final', 'edge_final') \
            else ('val_accuracy', 'sphere_max_rel_dev')
        r['curves'] = {k: [[x, float(f'{v:.6g}')] for x, v in c]
                       for k, c in r['curves'].items() if keep is None or k in keep}
    chosen_out = {m: {k: v for k, v in c.items()} for m, c in chosen.items()}
    raw = dict(config=copy.deepcopy(cfg), seeds=seeds, provenance=prov, chosen=chosen_out,
               transfer={m: dict(t, per_width={str(w): v for w, v in t['per_width'].items()})
                         for m, t in tr.items()},
               edge=edge, sphere=sphere, runs=runs)
    report.write_outputs(args, NAME, md, raw)
    return raw


if __name__ == '__main__':
    main()
