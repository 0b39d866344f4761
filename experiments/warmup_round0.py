"""Does the warm-up rule of a FixNorm-tune budget change the lr that round 0
picks? (issue 17, item 4; docs/tuning.md "The warm-up of a budget")

The paper trains round 0 "for 1/5 total epochs" with its general setup,
"linear warmup at first 4 epochs"; whether a 24-epoch trial warms up for 4
epochs (``warmup='absolute'``) or 0.8 (``'scaled'``) it does not say. This
runs round 0 of Algo 2 (budget 0.2 T_max, K = 5, alpha_0 = 0.5) on the digits
task of docs/results.md with both rules and reports which lr wins:

* FixNorm (Algo 1 @ FixNorm-FC) on ``DigitsResNet``, T_max = 30 epochs of 8
  iterations; the budget's schedule is ``scale_schedule(cfg, 0.2, warmup=rule)``,
  the function the sweep tool applies to every trial;
* warm-up W = 8 iterations (1/30 of T_max, the paper's 4 of 120 epochs) and
  W = 40 (docs/results.md's runs); at budget 0.2 (48 iterations) the rules
  give 8 vs 2 and 40 vs 8 iterations of warm-up;
* lr ranges: the paper's [0.2, 3.2] (probes 0.8 ... 3.2) and the same range
  divided by 4, [0.05, 0.8] (probes 0.2 ... 0.8), which brackets the task's
  full-length optimum (0.1-0.4, docs/results.md);
* every trial for 3 seeds; the winner of each seed is what FixNormTune.run
  picks from that seed's 5 trials (a tie goes to the smaller lr), and the
  winner over seeds is the best mean val accuracy.

    python experiments/warmup_round0.py --workers 1     # 120 runs, ~2 CPU-min (5 min wall)
"""
import inspect
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits  # noqa: E402
import report  # noqa: E402

NAME = 'warmup_round0'
FULL = dict(warmups=[8, 40], ranges=[(0.2, 3.2), (0.05, 0.8)], epochs=30, budget=0.2)
# smoke: 10 epochs of 2 iterations, W = 5; at budget 0.4 (8 iterations) 5 vs 2 of warm-up
SMOKE = dict(warmups=[5], ranges=[(0.2, 3.2)], epochs=10, budget=0.4, **digits.SMOKE_SCALE)
RULES = ('absolute', 'scaled')
ALPHA_0 = 0.5  # the paper's first alpha candidate, used through the lr rounds
K = 5


def budget_options(spec: dict, budget: float, rule: str) -> dict:
    from mmengine.config import Config

    from fixnorm_mm.tuning import scale_schedule
    known = inspect.signature(digits.run_config).parameters
    kwargs = {k: v for k, v in spec.items() if k in known}
    return scale_schedule(Config(digits.run_config(**kwargs)), budget, warmup=rule)


def specs(cfg: dict, seeds: int):
    from fixnorm_mm.tuning import lr_probes
    extra = {k: cfg[k] for k in digits.SCALE_KEYS if k in cfg}
    out = []
    for w in cfg['warmups']:
        for lo, hi in cfg['ranges']:
            for lr in lr_probes(lo, hi, K, first_round=True):
                for rule in RULES:
                    for s in range(seeds):
                        spec = dict(method='algo1_fc', fc_type='fixnorm_fc', lr=lr,
                                    alpha=ALPHA_0, seed=s, epochs=cfg['epochs'],
                                    warmup_iters=w, **extra)
                        spec['cfg_options'] = budget_options(spec, cfg['budget'], rule)
                        spec.update(rule=rule, lr_range=[lo, hi])
                        out.append(spec)
    return out


def round0_pick(runs, lo, hi, seed=None):
    """What FixNormTune.run picks in round 0 from these trials (one seed), or
    the lr with the best mean val accuracy over seeds (seed=None)."""
    from fixnorm_mm.tuning import FixNormTune
    by_lr = {lr: rs for (lr,), rs in report.group_by(runs, 'lr').items()}
    if seed is None:
        means = {lr: report.mean_std(r['val_accuracy'] for r in rs) for lr, rs in by_lr.items()}
        lrs = sorted(means)
        return lrs[report.best_index([means[x][0] for x in lrs], [means[x][1] for x in lrs])]
    val = {lr: next(r['val_accuracy'] for r in rs if r['spec']['seed'] == seed)
           for lr, rs in by_lr.items()}
    tuner = FixNormTune((lo, hi), K=K, budgets=[runs[0]['spec']['budget_fraction']],
                        alphas=[ALPHA_0])
    return tuner.run(lambda lr, alpha, budget: val[lr]).best_lr


def main(argv=None):
    args = report.parse_args(__doc__.split('\n\n')[0], argv)
    cfg = report.settings(args, SMOKE, FULL)
    runs, prov = report.train_or_load(args, NAME, specs(cfg, args.seeds))
    for r in runs:
        r['spec']['budget_fraction'] = cfg['budget']
    per_epoch = (cfg.get('train_subset') or digits.SPLIT_SIZES['train']) // 50  # batch 50
    md = [f'Round 0 of FixNorm-tune on the digits task: budget {cfg["budget"]} T_max '
          f'({cfg["epochs"]} epochs of {per_epoch} iterations -> '
          f'{round(cfg["epochs"] * cfg["budget"])}), '
          f'K = {K}, alpha_0 = {ALPHA_0}; val accuracy (%), mean ± std over '
          f'{args.seeds} seeds; bold: the lr with the best mean.', '']
    picks = []
    for w in cfg['warmups']:
        for lo, hi in cfg['ranges']:
            sel = [r for r in runs if r['spec']['warmup_iters'] == w
                   and tuple(r['spec']['lr_range']) == (lo, hi)]
            by = report.group_by(sel, 'rule', 'lr')
            lrs = sorted({r['spec']['lr'] for r in sel})
            rows, pick = [], {}
            for rule in RULES:
                mine = [r for r in sel if r['spec']['rule'] == rule]
                pick[rule] = (round0_pick(mine, lo, hi),
                              [round0_pick([r for r in mine], lo, hi, seed=s)
                               for s in range(args.seeds)])
                warm = mine[0]['spec']['cfg_options'].get('param_scheduler.0.end', w)
                cells = []
                for lr in lrs:
                    text = report.pm(r['val_accuracy'] for r in by[(rule, lr)])
                    cells.append(f'**{text}**' if lr == pick[rule][0] else text)
                rows.append([f'{rule} ({warm} it.)'] + cells
                            + [f'{pick[rule][0]:g}', ', '.join(f'{x:g}' for x in pick[rule][1])])
            md += [f'Warm-up {w} iterations of T_max = {cfg["epochs"] * per_epoch}, lr range '
                   f'[{lo:g}, {hi:g}]:', '',
                   report.md_table(['warm-up at the budget'] + [f'lr {x:g}' for x in lrs]
                                   + ['round-0 pick (mean)', 'pick per seed'], rows), '']
            picks.append(dict(warmup_iters=w, lr_range=[lo, hi],
                              **{rule: dict(mean=pick[rule][0], per_seed=pick[rule][1])
                                 for rule in RULES}))
    changed = [p for p in picks if p['absolute']['mean'] != p['scaled']['mean']]
    md.append(f'The rule changes the round-0 pick (best mean) in {len(changed)} of '
              f'{len(picks)} settings; per seed in '
              f'{sum(a != b for p in picks for a, b in zip(p["absolute"]["per_seed"], p["scaled"]["per_seed"]))}'
              f' of {len(picks) * args.seeds} rounds.')
    md += ['', report.provenance(__file__, prov)]
    for r in runs:  # the trials' final accuracies are the result; curves are not needed
        r.pop('curves', None)
    raw = dict(settings=cfg, picks=picks, runs=runs, provenance=prov)
    report.write_outputs(args, NAME, '\n'.join(md), raw)
    return raw


if __name__ == '__main__':
    main()
