"""Experiment 2 (paper Sec. 2.3, Fig. 2): what weight decay does on the final
layer, seen through its norm and the Mean Cross-Boundary Risk (Eq. 9).

Variants, all with the conv weights under Algo 1 and the same lr:

* Algo 1: plain FC with weight decay lambda_FC (Eq. 5);
* Algo 1, lambda_FC = 0: the same without it (the paper: 77.8% -> 76.4%);
* Algo 1 @ WN-FC: weight-normalised FC (core ``WNLinear``, one g per class,
  Salimans & Kingma), its direction fixed with the convs, no weight decay;
* Algo 1 @ WN-FC (Eq. 6): Eq. 6 as printed, one scalar g over the whole
  tensor norm (``FixNormLinear`` whose cap is never reached);
* Algo 1 @ FixNorm-FC: Eq. 10, g capped at alpha * sqrt(#class).

``MCBRHook`` logs MCBR on the training batch and g; the recorder adds the
norm of the weight the final layer applies (||W^FC||, ||g|| or min(g, cap)).
The paper's claim: WN-FC's g keeps growing and its MCBR rises above Algo 1's,
FixNorm-FC keeps MCBR low and closes the accuracy gap.

    python experiments/final_layer.py [--lr 0.2 --alpha 0.5] [--smoke]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits  # noqa: E402
import report  # noqa: E402

NAME = 'final_layer'
# lr: the best Algo 1 lr of algo1_vs_wd; alpha: the best alpha at that lr in lr_alpha
FULL = dict(epochs=30, lr=0.2, alpha=0.5, wd_fc=5e-4)
SMOKE = dict(epochs=1, lr=0.2, alpha=1.0, wd_fc=5e-4, **digits.SMOKE_SCALE)
VARIANTS = {  # label: (method, fc_type, wd_fc multiplier)
    'Algo 1': ('algo1', 'fc', 1.0),
    'Algo 1, λ_FC=0': ('algo1', 'fc', 0.0),
    'Algo 1 @ WN-FC (per-class g)': ('algo1_fc', 'wn_fc', 0.0),
    'Algo 1 @ WN-FC (Eq. 6, one g)': ('algo1_fc', 'wn_fc_eq6', 0.0),
    'Algo 1 @ FixNorm-FC': ('algo1_fc', 'fixnorm_fc', 0.0),
}


def specs(cfg: dict, seeds: int):
    extra = {k: cfg[k] for k in digits.SCALE_KEYS if k in cfg}
    return [dict(method=m, fc_type=fc, lr=cfg['lr'], alpha=cfg['alpha'],
                 wd_fc=cfg['wd_fc'] * mult, seed=s, epochs=cfg['epochs'],
                 variant=label, **extra)
            for label, (m, fc, mult) in VARIANTS.items() for s in range(seeds)]


def tail_mean(run: dict, key: str, frac: float = 0.1) -> float:
    """Mean of the last ``frac`` of a curve (MCBR of one batch is noisy)."""
    c = [v for _, v in run['curves'].get(key, [])]
    if not c:
        return float('nan')
    return float(np.mean(c[-max(1, int(len(c) * frac)):]))


def figure(groups, cap, path):
    plt = report.plt()
    fig, ax = plt.subplots(1, 3, figsize=(15, 3.9))
    for label, runs in groups.items():
        for a, key in zip(ax, ('val_accuracy', 'fc_norm', 'mcbr')):
            x, mu, sd = report.mean_curve(runs, key)
            if key == 'mcbr' and len(mu) >= 5:  # 5-point moving average of one-batch MCBR
                k = np.ones(5) / 5
                mu, sd = np.convolve(mu, k, 'valid'), np.convolve(sd, k, 'valid')
                x = x[2:-2]
            a.plot(x, mu, label=label)
            a.fill_between(x, mu - sd, mu + sd, alpha=0.2)
    ax[1].axhline(cap, color='k', ls=':', lw=1, label='FixNorm-FC cap α√10')
    ax[0].set(xlabel='iteration', ylabel='val accuracy (%)', title='accuracy')
    ax[1].set(xlabel='iteration', ylabel='norm', yscale='log',
              title='final layer: ||W_FC|| (FC), ||g|| (WN-FC), min(g, cap)')
    ax[2].set(xlabel='iteration', ylabel='MCBR (Eq. 9)', title='MCBR on the training batch')
    lo = min(report.mean_curve(r, 'val_accuracy')[1][-1] for r in groups.values())
    ax[0].set_ylim(max(lo - 10, 0), 100)
    report.save_figure(fig, path, curves=ax)


def main(argv=None) -> dict:
    def extra(p):
        p.add_argument('--lr', type=float, help=f"learning rate (default {FULL['lr']})")
        p.add_argument('--alpha', type=float, help=f"FixNorm-FC alpha (default {FULL['alpha']})")

    args = report.parse_args(__doc__.splitlines()[0], argv, extra)
    cfg = report.settings(args, SMOKE, FULL, overrides=('lr', 'alpha'))
    results, prov = report.train_or_load(args, NAME, specs(cfg, args.seeds))
    groups = report.group_by(results, 'variant')
    groups = {label: groups[(label,)] for label in VARIANTS}
    cap = cfg['alpha'] * np.sqrt(digits.NUM_CLASSES)

    rows, summary = [], {}
    for label, runs in groups.items():
        summary[label] = dict(
            test=[r['test_accuracy'] for r in runs], val=[r['val_accuracy'] for r in runs],
            fc_norm=[r['curves']['fc_norm'][-1][1] for r in runs],
            g=[r['curves']['g'][-1][1] if 'g' in r['curves'] else float('nan') for r in runs],
            mcbr=[tail_mean(r, 'mcbr') for r in runs])
        s = summary[label]
        g_cell = report.pm(s['g']) if 'g' in runs[0]['curves'] else '–'
        rows.append([label, report.pm(s['val']), report.pm(s['test']), report.pm(s['fc_norm']),
                     g_cell, report.pm(s['mcbr'], 3)])
    table = report.md_table(
        ['variant', 'val acc (%)', 'test acc (%)', 'final applied norm of W_FC',
         'final g (MCBRHook)', 'MCBR, last 10% of training'], rows)
    fig_rel = f'figures/{NAME}.png'
    figure(groups, cap, os.path.join(args.out, fig_rel))
    md = '\n\n'.join([
        f'lr = {cfg["lr"]:g}, α = {cfg["alpha"]:g} (cap α√10 = {cap:.3g}), λ_FC = '
        f'{cfg["wd_fc"]:g}, {cfg["epochs"]} epochs; mean ± std over {args.seeds} seeds. '
        '"Applied norm" is ||W_FC|| for the plain FC, ||g|| for per-class WN, '
        'min(g, cap) for Eq. 6 / FixNorm-FC; "g" is what MCBRHook logs.', table,
        f'![final layer mechanism](../{fig_rel})',
        report.provenance(__file__, prov)])
    raw = dict(config=cfg, seeds=args.seeds, provenance=prov, summary=summary, runs=results)
    report.write_outputs(args, NAME, md, raw)
    return raw


if __name__ == '__main__':
    main()
