"""Wall-clock of a FixNorm-tune sweep with 1, 2 and 5 parallel slots, and of
two workers sharing one storage, in units of T_max.

FixNorm-tune's cost is 11 T_max of training with the paper's setup (lr
[0.2, 3.2], K = 5, T = [0.2, 1] T_max, 6 alphas): what one slot takes. With
more slots, rounds run side by side; Algo 2's dependencies (a round's range
comes from the previous round's best, the alpha round from lr_best) leave a
critical path of T_0 + T_1 + T_1 = 2.2 T_max, which 5 slots can reach.

Every trial is a real trial of the sweep (``run_fixnorm_tune``: the
launcher's subprocess, the Optuna storage, the scheduler), but its training
is ``benchmarks/synthetic_train.py``: it sleeps ``budget x T_max`` (counted
from its process start, so its interpreter start-up is part of the trial, as
a real training's is) and reports a metric with the paper's two priors. What
is measured is therefore the sweep: how it schedules trials, and what it adds
per trial (claims in the storage, process starts).

For each number of slots the table gives the makespan (first call to the
result, including the storage's creation), the same from the first trial's
start to the last one's end, and two references: the round-by-round schedule
(each round in ceil(K/slots) waves of its budget) and the lower bound
max(critical path, cost / slots). "two workers" runs two sweep processes with
one slot each against one SQLite storage (what ``fixnorm-tune`` on two
machines with a shared RDB does); its speed-up is against one worker with one
slot.

    python benchmarks/sweep_wallclock.py [--t-max 5] [--slots 1 2 5] [--workers 2]
"""
import argparse
import json
import math
import multiprocessing
import os
import os.path as osp
import shutil
import sys
import tempfile
import threading
import time

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
CONFIG = osp.join(ROOT, 'configs', 'toy', 'toy_fixnorm.py')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--t-max', type=float, default=5.0,
                   help='seconds of a full-budget synthetic training (T_max)')
    p.add_argument('--slots', type=int, nargs='+', default=[1, 2, 5])
    p.add_argument('--workers', type=int, default=2,
                   help='also run this many one-slot workers on one storage (0: skip)')
    p.add_argument('--lr-range', type=float, nargs=2, default=[0.2, 3.2])
    p.add_argument('--k', type=int, default=5)
    p.add_argument('--budgets', type=float, nargs='+', default=[0.2, 1.0])
    p.add_argument('--alphas', type=float, nargs='+', default=[0.5, 1, 2, 4, 8, 16])
    p.add_argument('--poll', type=float, default=0.5,
                   help='seconds between looks at a trial another worker runs')
    p.add_argument('--work-dir', help='default: a temporary directory, removed afterwards')
    return p.parse_args(argv)


def _environment(t_max: float) -> None:
    os.environ['SYNTH_TRAIN'] = json.dumps(dict(seconds=t_max, max_iters=320,
                                                alpha_key='model.alpha'))
    path = os.environ.get('PYTHONPATH', '')
    if HERE not in path.split(os.pathsep):  # the trials run `python -m synthetic_train`
        os.environ['PYTHONPATH'] = os.pathsep.join(p for p in (HERE, ROOT, path) if p)


def _tuner(args):
    from fixnorm_mm.tuning import FixNormTune
    return FixNormTune(tuple(args.lr_range), args.k, args.budgets, args.alphas)


def one_sweep(args, work_dir: str, slots: int, events=None):
    """Run the sweep with ``slots`` slots; returns (result, wall seconds)."""
    from fixnorm_mm.tuning import TrainingLauncher, default_storage, run_fixnorm_tune
    launcher = TrainingLauncher(CONFIG, parallel=slots, train_module='synthetic_train')
    if events is not None:
        run, lock = launcher.run, threading.Lock()

        def timed(work, options, resume=False):
            start = time.time()
            try:
                return run(work, options, resume)
            finally:
                with lock:
                    events.append((start, time.time()))
        launcher.run = timed
    t0 = time.time()
    result = run_fixnorm_tune(_tuner(args), launcher, work_dir, default_storage(work_dir),
                              poll_interval=args.poll, log=lambda msg: None)
    return result, time.time() - t0


def _worker(args, work_dir, queue):
    try:
        result, _ = one_sweep(args, work_dir, 1)
        queue.put((result.best_lr, result.best_alpha, result.best_metric,
                   sum(1 for t in result.trials if not t.info.get('cached'))))
    except BaseException as e:  # reported by the parent
        queue.put(('error', repr(e)))


def workers_sweep(args, work_dir: str, n: int):
    """``n`` one-slot sweep processes on one storage; (answers, wall seconds)."""
    ctx = multiprocessing.get_context('fork')  # the workers share the imports
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(args, work_dir, queue)) for _ in range(n)]
    t0 = time.time()
    for p in procs:
        p.start()
    answers = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return answers, time.time() - t0


def trainings_per_trial(work_dir: str) -> dict:
    """How often each trial's training was started (from the trial logs)."""
    out = {}
    for d in sorted(os.listdir(osp.join(work_dir, 'trials', 'fixnorm-tune'))):
        with open(osp.join(work_dir, 'trials', 'fixnorm-tune', d, 'trial.log')) as f:
            out[d] = sum(1 for line in f if line.startswith('# ') and ' started: ' in line)
    return out


def references(tuner, slots: int):
    """(round-by-round makespan, lower bound) in T_max for ``slots`` slots."""
    rounds = [(tuner.K, b) for b in tuner.budgets] + [(len(tuner.alphas) - 1,
                                                       tuner.budgets[-1])]
    by_rounds = sum(math.ceil(k / slots) * b for k, b in rounds)
    critical = sum(tuner.budgets) + tuner.budgets[-1]
    return by_rounds, max(critical, tuner.expected_cost / slots)


def main(argv=None):
    args = parse_args(argv)
    _environment(args.t_max)
    import fixnorm_mm.tuning  # noqa: F401  (before timing: the imports take seconds)
    tuner = _tuner(args)
    base = args.work_dir or tempfile.mkdtemp(prefix='sweep_wallclock_')
    rows, answers, workers = [], {}, {}
    try:
        for slots in args.slots:
            work = osp.join(base, f'slots{slots}')
            shutil.rmtree(work, ignore_errors=True)
            events = []
            result, wall = one_sweep(args, work, slots, events)
            span = max(e for _, e in events) - min(s for s, _ in events)
            by_rounds, bound = references(tuner, slots)
            rows.append((f'{slots} slot(s)', wall, span, by_rounds, bound))
            answers[f'{slots} slot(s)'] = (result.best_lr, result.best_alpha,
                                           result.best_metric)
            assert all(v == 1 for v in trainings_per_trial(work).values())
        speedup = None
        if args.workers:
            work = osp.join(base, f'workers{args.workers}')
            shutil.rmtree(work, ignore_errors=True)
            got, wall = workers_sweep(args, work, args.workers)
            errors = [g for g in got if g[0] == 'error']
            if errors:
                raise RuntimeError(f'a worker failed: {errors}')
            runs = trainings_per_trial(work)
            by_rounds, bound = references(tuner, args.workers)
            rows.append((f'{args.workers} workers x 1 slot', wall, None, by_rounds, bound))
            answers.update({f'worker {i}': g[:3] for i, g in enumerate(got)})
            workers = dict(trials_run=[g[3] for g in got], trainings=runs)
            one = next((r[1] for r in rows if r[0] == '1 slot(s)'), None)
            speedup = one / wall if one else None
            print(f'{args.workers} workers on one storage: each trial trained '
                  f'{sorted(set(runs.values()))} time(s) ({len(runs)} trials), trials run per '
                  f'worker {[g[3] for g in got]}, answers {sorted(set(g[:3] for g in got))}')
    finally:
        if not args.work_dir:
            shutil.rmtree(base, ignore_errors=True)
    t = args.t_max
    print(f'\nFixNorm-tune, lr {tuple(args.lr_range)}, K={tuner.K}, budgets {tuner.budgets}, '
          f'{len(tuner.alphas)} alphas: {tuner.expected_cost:g} T_max of training; '
          f'T_max = {t:g} s (synthetic trainer)\n')
    print('| run | makespan (T_max) | first trial start to last end (T_max) | '
          'round by round (T_max) | lower bound (T_max) |')
    print('|---|---|---|---|---|')
    for name, wall, span, by_rounds, bound in rows:
        print(f'| {name} | {wall / t:.2f} | {"-" if span is None else f"{span / t:.2f}"} | '
              f'{by_rounds:g} | {bound:g} |')
    if speedup is not None:
        print(f'\nspeed-up of {args.workers} workers on one storage over 1 worker: '
              f'{speedup:.2f}x')
    distinct = sorted(set(answers.values()))
    print(f'answers (best lr, alpha, metric): {distinct}')
    return dict(rows=rows, speedup=speedup, answers=answers, workers=workers)


if __name__ == '__main__':
    main(sys.argv[1:])
