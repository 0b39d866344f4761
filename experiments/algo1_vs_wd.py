"""Experiment 1 (paper Sec. 2.2, Fig. 1): Algo 1 reaches the accuracy of
weight decay once both learning rates are grid-searched.

* WD: SGD-Nesterov with weight decay on every conv and FC weight.
* Algo 1: ``FixNormOptimWrapper`` keeps ||W^Conv|| at its initial value after
  every step; weight decay only on the final plain FC (line 3 of Algo 1,
  through ``paramwise_cfg.custom_keys``).

For each method the lr is chosen on the val split (mean over seeds); the
test accuracy at that lr is the result. The figure also shows Fig. 1 left's
quantity, ||W^Conv|| over training: it drifts under WD and is constant under
Algo 1.

    python experiments/algo1_vs_wd.py            # full run, writes docs/
    python experiments/algo1_vs_wd.py --smoke    # seconds
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits  # noqa: E402
import report  # noqa: E402

NAME = 'algo1_vs_wd'
FULL = dict(lrs=[0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2], epochs=30, wd=5e-4)
SMOKE = dict(lrs=[0.1, 0.4], epochs=1, wd=5e-4, **digits.SMOKE_SCALE)
METHODS = {'wd': 'WD (all conv + FC weights)', 'algo1': 'Algo 1 (conv fixed, WD on FC only)'}


def specs(cfg: dict, seeds: int):
    extra = {k: cfg[k] for k in digits.SCALE_KEYS if k in cfg}
    return [dict(method=m, lr=lr, seed=s, epochs=cfg['epochs'], wd=cfg['wd'],
                 wd_fc=cfg['wd'], **extra)
            for m in METHODS for lr in cfg['lrs'] for s in range(seeds)]


def summarize(results, lrs):
    """Per method: accuracy by lr, and the lr that val picks (best mean val
    accuracy; a tie goes to the smaller std over seeds)."""
    by = report.group_by(results, 'method', 'lr')
    out = {}
    for m in METHODS:
        rows = {lr: by[(m, lr)] for lr in lrs}
        stats = [report.mean_std(r['val_accuracy'] for r in rows[lr]) for lr in lrs]
        best = lrs[report.best_index([a for a, _ in stats], [b for _, b in stats])]
        out[m] = dict(rows=rows, best_lr=best,
                      best_test=[r['test_accuracy'] for r in rows[best]])
    return out


def figure(summary, lrs, path):
    plt = report.plt()
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    for m, label in METHODS.items():
        s = summary[m]
        means = [report.mean_std(r['test_accuracy'] for r in s['rows'][lr]) for lr in lrs]
        ax[0].errorbar(lrs, [a for a, _ in means], yerr=[b for _, b in means], marker='o',
                       capsize=3, label=label)
        runs = s['rows'][s['best_lr']]
        for key, a in (('val_accuracy', ax[1]), ('conv_norm', ax[2])):
            x, mu, sd = report.mean_curve(runs, key)
            a.plot(x, mu, marker='.', ms=3, label=f'{label}, lr={s["best_lr"]:g}')
            a.fill_between(x, mu - sd, mu + sd, alpha=0.25)
    # zoom on the good region; runs that diverge are marked at the bottom edge
    top = max(report.mean_std(r['test_accuracy'] for r in s['rows'][lr])[0]
              for s in summary.values() for lr in lrs)
    bottom = max(top - 5, 0)
    for m in METHODS:
        for lr in lrs:
            acc = report.mean_std(r['test_accuracy'] for r in summary[m]['rows'][lr])[0]
            if acc < bottom:
                ax[0].annotate(f'{acc:.0f}%', (lr, bottom), xytext=(0, 6),
                               textcoords='offset points', ha='center', fontsize=7)
    ax[0].set_ylim(bottom, min(top + 1.5, 100))
    ax[0].set(xscale='log', xlabel='learning rate', ylabel='test accuracy (%)',
              title='grid search of lr (mean ± std over seeds)')
    ax[1].set(xlabel='iteration', ylabel='val accuracy (%)', title='accuracy at the best lr')
    ax[2].set(xlabel='iteration', ylabel='||W_conv||_2',
              title='global conv weight norm (Fig. 1 left)')
    lo = min(min(report.mean_curve(summary[m]['rows'][summary[m]['best_lr']],
                                   'val_accuracy')[1][-3:]) for m in METHODS)
    ax[1].set_ylim(max(lo - 8, 0), 100)
    report.save_figure(fig, path, curves=ax)


def main(argv=None) -> dict:
    args = report.parse_args(__doc__.splitlines()[0], argv)
    cfg = report.settings(args, SMOKE, FULL)
    results, prov = report.train_or_load(args, NAME, specs(cfg, args.seeds))
    lrs = cfg['lrs']
    summary = summarize(results, lrs)

    rows = []
    for lr in lrs:
        row = [f'{lr:g}']
        for m in METHODS:
            runs = summary[m]['rows'][lr]
            cell = (f"{report.pm(r['val_accuracy'] for r in runs)} / "
                    f"{report.pm(r['test_accuracy'] for r in runs)}")
            row.append(f'**{cell}**' if lr == summary[m]['best_lr'] else cell)
        rows.append(row)
    table = report.md_table(['lr'] + [f'{METHODS[m]}: val / test acc (%)' for m in METHODS], rows)
    best = report.md_table(
        ['method', 'lr chosen on val', 'test accuracy (%)'],
        [[METHODS[m], f"{summary[m]['best_lr']:g}", report.pm(summary[m]['best_test'])]
         for m in METHODS])
    ties = []
    for m in METHODS:
        val = {lr: report.mean_std(r['val_accuracy'] for r in summary[m]['rows'][lr])[0]
               for lr in lrs}
        tied = [lr for lr in lrs if abs(val[lr] - val[summary[m]['best_lr']]) < 1e-9]
        if len(tied) > 1:
            ties.append(f"{METHODS[m]}: lrs {', '.join(f'{lr:g}' for lr in tied)} tie on "
                        f"mean val accuracy ({val[tied[0]]:.2f}); the smaller std picks "
                        f"{summary[m]['best_lr']:g}; their test accuracies: " + ', '.join(
                            report.pm(r['test_accuracy'] for r in summary[m]['rows'][lr])
                            for lr in tied) + '.')
    gap = (report.mean_std(summary['algo1']['best_test'])[0]
           - report.mean_std(summary['wd']['best_test'])[0])
    fig_rel = f'figures/{NAME}.png'
    figure(summary, lrs, os.path.join(args.out, fig_rel))
    md = '\n\n'.join([
        f'Accuracy by learning rate, mean ± std over {args.seeds} seeds '
        f'({cfg["epochs"]} epochs, weight decay {cfg["wd"]:g}; bold: the lr with the '
        'best mean val accuracy):', table,
        'Each method at its own best lr:', best,
        f'Algo 1 minus WD (test, at the chosen lrs): {gap:+.2f} points.' +
        ''.join(f' Tie: {t}' for t in ties),
        f'![Algo 1 vs WD](../{fig_rel})',
        report.provenance(__file__, prov)])
    raw = dict(config=cfg, seeds=args.seeds, provenance=prov, gap=gap,
               best={m: dict(lr=summary[m]['best_lr'], test=summary[m]['best_test'])
                     for m in METHODS},
               runs=results)
    report.write_outputs(args, NAME, md, raw)
    return raw


if __name__ == '__main__':
    main()
