"""FixNorm-tune (Algo 2), BO+WD or ASHA+WD over real trainings of CONFIG.

Every trial is ``python -m fixnorm_mm.tools.train CONFIG`` (under torchrun for
multi-process trials, under srun on Slurm) with ``--cfg-options`` for its lr,
alpha (or weight decay) and its schedule shrunk to the trial's budget: trials
run the installed package, from any folder. ASHA+WD's trials run the same
training with a hook that reports every evaluation to the storage and stops
the process when Optuna's pruner says so. Trials live in an Optuna storage,
so the same command, run again after a kill, re-runs nothing that finished,
and run on several nodes against one RDB URL, shares the work. Results:
``<work_dir>/<method>_trials.md|csv``, ``_result.json`` and a PNG like the
paper's Fig. 5.

    # ImageNet setup of the paper (Sec. 3): lr [0.2, 3.2], K=5, T=[0.2, 1] T_max, 6 alphas
    fixnorm-tune CONFIG
    # COCO / Cityscapes (App. D.2/D.3): lr [0.005, 0.1]
    fixnorm-tune fixnorm_mm::coco/retinanet_r50_fpn_fixnorm_90k_coco.py --task coco
    # the BO+WD baseline on the weight-decay config
    fixnorm-tune WD_CONFIG --method bo-wd --n-trials 25
    # the early-stopping baseline: TPE + Optuna's successive-halving pruner (ASHA)
    fixnorm-tune WD_CONFIG --method asha-wd --max-cost 25
    # an AdamW config: log-spaced lr probes in [1e-5, 1e-2] (chosen from the optimizer)
    fixnorm-tune ADAMW_FIXNORM_CONFIG

(``python -m fixnorm_mm.tools.tune`` and ``tools/fixnorm_tune.py`` are the same tool.)

Exit status: 0 done; 2 a mistake every trial would hit (an option, an
``--lr-key``/``--alpha-key`` not in the config, a ``--metric`` the runs do
not log): nothing is recorded for it, correct it and rerun; 3 a trial was
killed (signal, OOM killer, death while saving a checkpoint) more often than
``--retries`` allows: rerun the same command, it resumes. docs/scale.md lists
every fault and what happens.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import DictAction

from fixnorm_mm.tools.configs import resolve_config
from fixnorm_mm.tuning import (LR_SCALES, PAPER_ALPHAS, PAPER_BUDGETS, PAPER_LR_RANGES,
                               PRUNERS, ASHAWDTune, BOWDTune, FixNormTune, SweepConfigError,
                               SweepInterrupted, TrainingLauncher, TrialStore, default_storage,
                               load_result, run_asha_wd, run_bo_wd, run_fixnorm_tune,
                               search_space, summary, write_report)
from fixnorm_mm.tuning import DEFAULT_WARMUP, WARMUP_RULES  # issue 17 item 4: --warmup
from fixnorm_mm.tuning.store import StorageError

#: Exit status of a sweep stopped by a mistake in its arguments or config
#: (nothing recorded for it: correct and rerun) ...
EXIT_CONFIG = 2
#: ... and of one whose trials were interrupted (killed) more than --retries
#: allows (rerun the same command: they resume).
EXIT_INTERRUPTED = 3


#: ``--method`` choices.
METHODS = ('fixnorm-tune', 'bo-wd', 'asha-wd')


def guess_task(config: str) -> str:
    path = config.lower()
    for task in ('coco', 'cityscapes'):
        if task in path:
            return task
    return 'imagenet'


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='fixnorm-tune', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('config')
    p.add_argument('--method', choices=METHODS, default='fixnorm-tune',
                   help='fixnorm-tune: Algo 2 (FixNorm config); bo-wd: Bayesian optimisation '
                        'of lr and weight decay, full trainings; asha-wd: TPE over lr and '
                        'weight decay with early stopping by Optuna\'s successive-halving '
                        '(ASHA) or Hyperband pruner (both on the weight-decay config)')
    p.add_argument('--task', choices=sorted(PAPER_LR_RANGES),
                   help='paper defaults for the lr range of an SGD config (default: guessed '
                        'from the config path, imagenet otherwise)')
    p.add_argument('--work-dir', help='sweep directory (default: work_dirs/tune/<config>)')
    g = p.add_argument_group('search space (all methods)')
    g.add_argument('--lr-range', nargs=2, type=float, metavar=('MIN', 'MAX'),
                   help='default: the paper\'s range of --task for SGD (e.g. [0.2, 3.2]), '
                        '[1e-5, 1e-2] for Adam-family optimizers (docs/tuning.md)')
    g.add_argument('--wd-range', nargs=2, type=float, metavar=('MIN', 'MAX'),
                   help='weight decay of bo-wd / asha-wd (log scale); default: the paper\'s '
                        '[1e-5, 5e-4], [1e-4, 0.3] for AdamW')
    g = p.add_argument_group('FixNorm-tune (Algo 2)')
    g.add_argument('--lr-scale', choices=('auto',) + LR_SCALES, default='auto',
                   help='spacing of the K lr probes: linear (the paper\'s, SGD) or log '
                        '(Adam family); auto: chosen from the config\'s optimizer')
    g.add_argument('--k', type=int, default=5, help='learning rates per round (K)')
    g.add_argument('--budgets', nargs='+', type=float, default=list(PAPER_BUDGETS),
                   help='T_r of each lr round as fractions of T_max (N = their number)')
    g.add_argument('--alphas', nargs='+', type=float, default=list(PAPER_ALPHAS))
    g.add_argument('--later-rounds', choices=['inclusive', 'interior'], default='inclusive',
                   help='sampling rule of rounds after the first (docs/tuning.md)')
    # issue 17 item 4: how a budget < 1 treats the warm-up (TrainingLauncher(warmup=...))
    g.add_argument('--warmup', choices=list(WARMUP_RULES), default=DEFAULT_WARMUP,
                   help='warm-up of shortened trials: scaled with the schedule (default) or '
                        'kept at its absolute length (docs/tuning.md)')
    g = p.add_argument_group('BO+WD and ASHA+WD')
    g.add_argument('--n-trials', type=int,
                   help='trials to finish (bo-wd: 25, each a full training, the paper spent '
                        '25 and 35; asha-wd: 100, completed or pruned)')
    g.add_argument('--sampler', choices=['gp', 'tpe'],
                   help='bo-wd: gp (default) or tpe; asha-wd: tpe')
    g.add_argument('--n-startup-trials', type=int,
                   help='random trials before the model proposes (bo-wd 5, asha-wd 10: '
                        'Optuna\'s TPE default)')
    g.add_argument('--seed', type=int, default=0)
    g = p.add_argument_group('ASHA+WD (early stopping)')
    g.add_argument('--pruner', choices=PRUNERS, default='sha',
                   help='Optuna\'s SuccessiveHalvingPruner (asynchronous SHA, default) or '
                        'HyperbandPruner')
    g.add_argument('--reduction-factor', type=int,
                   help='keep the best 1/r at each rung (default: Optuna\'s, 4 for sha, 3 '
                        'for hyperband)')
    g.add_argument('--min-resource', type=int,
                   help='step of the first rung, in the training loop\'s unit (default: the '
                        'config\'s first evaluation)')
    g.add_argument('--max-cost', type=float,
                   help='also stop once the finished trials cost this many T_max (a pruned '
                        'trial costs what it ran)')
    g = p.add_argument_group('trials')
    g.add_argument('--lr-key', default='optim_wrapper.optimizer.lr')
    g.add_argument('--alpha-key', help='config key of the FixNorm layer\'s alpha (default: '
                   'the one `alpha` under `model` outside the losses, e.g. model.head.alpha)')
    g.add_argument('--wd-key', default='optim_wrapper.optimizer.weight_decay')
    g.add_argument('--metric', help='evaluation metric to maximise (default: accuracy/top1, '
                   'coco/bbox_mAP or mIoU, whichever the run logs)')
    g.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='overrides for every trial, key=value')
    g = p.add_argument_group('resources')
    g.add_argument('--gpus-per-trial', type=int,
                   help='GPUs per trial (default 1 if GPUs are visible, else 0: CPU)')
    g.add_argument('--procs-per-trial', type=int, default=1,
                   help='processes per CPU trial (> 1: torchrun with gloo)')
    g.add_argument('--parallel', type=int,
                   help='trials at once (default: visible GPUs // gpus-per-trial; 1 on CPU)')
    g.add_argument('--launcher', choices=['none', 'slurm'], default='none',
                   help='slurm: every trial is an srun job')
    g.add_argument('--partition', help='Slurm partition')
    g.add_argument('--gpus-per-node', type=int, default=8)
    g.add_argument('--cpus-per-task', type=int, default=5)
    g.add_argument('--srun-args', default='', help='extra srun options')
    g = p.add_argument_group('storage')
    g.add_argument('--storage', help='Optuna RDB URL shared by all workers (default: '
                   'sqlite:///<work_dir>/study.db)')
    g.add_argument('--study-name', help='default: the method name')
    g.add_argument('--heartbeat', type=int, default=60, help='heartbeat interval (s)')
    g.add_argument('--grace-period', type=int, default=300,
                   help='seconds without heartbeat before a trial on another node counts as dead')
    g.add_argument('--poll', type=float, default=10.0,
                   help='seconds between looks at a trial another worker runs')
    g.add_argument('--retry-failed', action='store_true',
                   help='run crashed/diverged trials again instead of keeping their failure')
    g.add_argument('--retries', type=int, default=1,
                   help='how often a trial that is killed (signal, OOM killer, death while '
                        'saving a checkpoint) is run again in this sweep, resuming from its '
                        'checkpoint; a rerun of the command retries it again (default 1)')
    g.add_argument('--compare', nargs='*', default=[],
                   help='<method>_result.json files of other sweeps to plot alongside')
    return p.parse_args(argv)


def make_tuner(args, space):
    """The tuner of ``args.method`` on ``space`` (ValueError naming the option)."""
    if args.method == 'fixnorm-tune':
        return FixNormTune(space.lr_range, args.k, args.budgets, args.alphas,
                           later_rounds=args.later_rounds, lr_scale=space.lr_scale)
    # options left out take the tuner's own defaults (bo-wd: 25 trials, 5 random
    # start-up trials; asha-wd: 100 and 10)
    given = {k: v for k, v in dict(n_trials=args.n_trials,
                                   n_startup_trials=args.n_startup_trials).items()
             if v is not None}
    if args.method == 'bo-wd':
        return BOWDTune(space.lr_range, space.wd_range, sampler=args.sampler or 'gp',
                        seed=args.seed, **given)
    if args.sampler not in (None, 'tpe'):
        raise ValueError(f'--sampler {args.sampler}: asha-wd samples with TPE (Optuna\'s '
                         'pruners work with TPE); leave --sampler out')
    return ASHAWDTune(space.lr_range, space.wd_range, max_cost=args.max_cost,
                      pruner=args.pruner, min_resource=args.min_resource,
                      reduction_factor=args.reduction_factor, seed=args.seed, **given)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.config = resolve_config(args.config)
    task = args.task or guess_task(args.config)
    work_dir = osp.abspath(args.work_dir or osp.join(
        'work_dirs', 'tune', osp.splitext(osp.basename(args.config))[0]))
    os.makedirs(work_dir, exist_ok=True)
    storage = args.storage or default_storage(work_dir)
    study = args.study_name or args.method
    prog = 'fixnorm-tune'
    try:  # the arguments: one line naming the option, before anything runs
        launcher = TrainingLauncher(
            args.config, metric=args.metric, cfg_options=args.cfg_options,
            launcher=args.launcher, gpus_per_trial=args.gpus_per_trial,
            procs_per_trial=args.procs_per_trial, parallel=args.parallel,
            partition=args.partition, gpus_per_node=args.gpus_per_node,
            cpus_per_task=args.cpus_per_task, srun_args=args.srun_args)
        store_kwargs = dict(heartbeat_interval=args.heartbeat, grace_period=args.grace_period,
                            poll_interval=args.poll)
        TrialStore.check_options(**store_kwargs)
        if args.retries < 0:
            raise ValueError(f'--retries must be >= 0, got {args.retries}')
        space = search_space(launcher.cfg, task, args.lr_range, args.lr_scale, args.wd_range)
        tuner = make_tuner(args, space)
    except ValueError as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        return EXIT_CONFIG
    print(f'[{args.method}] search space of {osp.basename(args.config)}: '
          f'{space.describe(args.method)}')
    try:
        if args.method == 'fixnorm-tune':
            result = run_fixnorm_tune(tuner, launcher, work_dir, storage, study, args.lr_key,
                                      args.alpha_key, retry_failed=args.retry_failed,
                                      retries=args.retries, **store_kwargs)
        elif args.method == 'bo-wd':
            result = run_bo_wd(tuner, launcher, work_dir, storage, study, args.lr_key,
                               args.wd_key, retries=args.retries, **store_kwargs)
        else:
            result = run_asha_wd(tuner, launcher, work_dir, storage, study, args.lr_key,
                                 args.wd_key, retries=args.retries, **store_kwargs)
    except (SweepConfigError, StorageError) as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        return EXIT_CONFIG
    except SweepInterrupted as err:
        print(f'{prog}: interrupted: {err}', file=sys.stderr)
        return EXIT_INTERRUPTED
    metric = next((t.info.get('metric_name') for t in result.trials
                   if t.info.get('metric_name')), args.metric or 'metric')
    others = [load_result(p) for p in args.compare]
    paths = write_report(work_dir, [result] + others, metric,
                         title=f'{osp.basename(args.config)} ({args.method})')
    print(summary(result, metric))
    print(f'trials: {paths[result.method]}\nplot: {paths["png"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
