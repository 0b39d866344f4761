"""Experiment 3 (paper Sec. 2.4, Fig. 4): with FixNorm (Algo 1 @ FixNorm-FC)
lr and alpha control different effects, so the best lr should not depend on
alpha. This is what lets Algo 2 tune lr first (at alpha_0) and alpha after.

Grid: lr x alpha (the paper's alpha candidates), every cell over seeds. The
best lr of each alpha row is chosen on val (mean over seeds); the page
reports the rows' best lrs and what tuning lr at one alpha and then alpha
(Algo 2's order) costs against the best cell of the whole grid.

    python experiments/lr_alpha.py [--smoke]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits  # noqa: E402
import report  # noqa: E402

NAME = 'lr_alpha'
# 20 epochs, shorter than the 30 of the other experiments, as the paper's
# Fig. 4 uses 50-epoch runs against 120 for its main results.
FULL = dict(lrs=[0.1, 0.2, 0.4, 0.8, 1.6], alphas=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0], epochs=20)
SMOKE = dict(lrs=[0.1, 0.4], alphas=[1.0, 4.0], epochs=1, **digits.SMOKE_SCALE)


def specs(cfg: dict, seeds: int):
    extra = {k: cfg[k] for k in digits.SCALE_KEYS if k in cfg}
    return [dict(method='algo1_fc', fc_type='fixnorm_fc', lr=lr, alpha=a, seed=s,
                 epochs=cfg['epochs'], **extra)
            for a in cfg['alphas'] for lr in cfg['lrs'] for s in range(seeds)]


def grids(results, lrs, alphas):
    """(alpha, lr) arrays of val/test accuracy: mean and std over seeds."""
    by = report.group_by(results, 'alpha', 'lr')
    out = {}
    for key in ('val_accuracy', 'test_accuracy'):
        stats = [[report.mean_std(r[key] for r in by[(a, lr)]) for lr in lrs] for a in alphas]
        out[key] = (np.array([[m for m, _ in row] for row in stats]),
                    np.array([[s for _, s in row] for row in stats]))
    return out


def decoupling(val: np.ndarray, val_std: np.ndarray, test: np.ndarray, lrs, alphas) -> dict:
    """Best lr per alpha row (on val mean, ties to the smaller std) and the
    price of tuning them separately.

    ``separate[i]``: tune lr at alpha_i, then alpha at that lr (Algo 2's order,
    starting from alpha_i); its test accuracy vs the best cell of the grid.
    """
    def best(m, s):
        return report.best_index(list(m), list(s))

    best_lr = [lrs[best(val[i], val_std[i])] for i in range(len(alphas))]
    best_alpha = [alphas[best(val[:, j], val_std[:, j])] for j in range(len(lrs))]
    flat = best(val.ravel(), val_std.ravel())
    joint = np.unravel_index(flat, val.shape)
    separate = []
    for i in range(len(alphas)):
        j = best(val[i], val_std[i])
        k = best(val[:, j], val_std[:, j])
        separate.append(dict(start_alpha=alphas[i], lr=lrs[j], alpha=alphas[k],
                             test=float(test[k, j])))
    return dict(best_lr_per_alpha=dict(zip(alphas, best_lr)),
                best_alpha_per_lr=dict(zip(lrs, best_alpha)),
                joint=dict(lr=lrs[joint[1]], alpha=alphas[joint[0]],
                           test=float(test[joint])),
                separate=separate,
                distinct_best_lrs=sorted(set(best_lr)))


def figure(g, lrs, alphas, path):
    plt = report.plt()
    from matplotlib.patches import Rectangle
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, key, title in ((axes[0], 'test_accuracy', 'test accuracy (%)'),
                           (axes[1], 'val_accuracy', 'val accuracy (%)')):
        mean, std = g[key]
        im = ax.imshow(mean, cmap='viridis', aspect='auto', origin='lower')
        for i in range(len(alphas)):
            for j in range(len(lrs)):
                ax.text(j, i, f'{mean[i, j]:.1f}\n±{std[i, j]:.1f}', ha='center',
                        va='center', fontsize=7,
                        color='w' if mean[i, j] < mean.mean() else 'k')
        best = [report.best_index(list(m), list(s))  # best lr of each row, on val
                for m, s in zip(*g['val_accuracy'])]
        for i, j in enumerate(best):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec='red', lw=2))
        ax.set_xticks(range(len(lrs)), [f'{x:g}' for x in lrs])
        ax.set_yticks(range(len(alphas)), [f'{x:g}' for x in alphas])
        ax.set(xlabel='lr', ylabel='α',
               title=f'FixNorm: {title}, mean ± std\n(red: best lr of each α row, on val)')
        fig.colorbar(im, ax=ax)
    report.save_figure(fig, path)


def main(argv=None) -> dict:
    args = report.parse_args(__doc__.splitlines()[0], argv)
    cfg = report.settings(args, SMOKE, FULL)
    results, prov = report.train_or_load(args, NAME, specs(cfg, args.seeds))
    lrs, alphas = cfg['lrs'], cfg['alphas']
    g = grids(results, lrs, alphas)
    d = decoupling(*g['val_accuracy'], g['test_accuracy'][0], lrs, alphas)

    by = report.group_by(results, 'alpha', 'lr')
    rows = [[f'{a:g}'] + [report.pm(r['test_accuracy'] for r in by[(a, lr)]) for lr in lrs]
            + [f"{d['best_lr_per_alpha'][a]:g}"] for a in alphas]
    table = report.md_table(['α \\ lr'] + [f'{lr:g}' for lr in lrs] + ['best lr (val)'], rows)
    sep = report.md_table(
        ['lr tuned at α =', 'lr found', 'then α found', 'test acc (%)', 'vs best cell'],
        [[f"{s['start_alpha']:g}", f"{s['lr']:g}", f"{s['alpha']:g}", f"{s['test']:.2f}",
          f"{s['test'] - d['joint']['test']:+.2f}"] for s in d['separate']])
    fig_rel = f'figures/{NAME}.png'
    figure(g, lrs, alphas, os.path.join(args.out, fig_rel))
    md = '\n\n'.join([
        f'Test accuracy (%) of FixNorm over lr x α, mean ± std over {args.seeds} seeds, '
        f'{cfg["epochs"]} epochs; last column: the lr with the best mean val accuracy '
        'in that row:', table,
        'Distinct best lrs over the α rows: '
        f"{', '.join(f'{x:g}' for x in d['distinct_best_lrs'])}. "
        f"Best cell on val: lr = {d['joint']['lr']:g}, α = {d['joint']['alpha']:g} "
        f"(test {d['joint']['test']:.2f}).",
        'Tuning separately, as Algo 2 does (lr at a fixed α, then α at that lr):', sep,
        f'![lr x alpha heat map](../{fig_rel})',
        report.provenance(__file__, prov)])
    for r in results:
        r.pop('curves', None)  # 90 runs: the grid needs only the accuracies
    raw = dict(config=cfg, seeds=args.seeds, provenance=prov, decoupling=d,
               grid={k: dict(mean=v[0].tolist(), std=v[1].tolist()) for k, v in g.items()},
               runs=results)
    report.write_outputs(args, NAME, md, raw)
    return raw


if __name__ == '__main__':
    main()
