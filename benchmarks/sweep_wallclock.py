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


class Profiler:
    """Where a sweep's wall-clock goes: timestamps of every step of every trial
    (the storage claim, the process start, the training, the metric read-back,
    the storage write of the result), taken by wrapping the sweep's own
    functions for the duration of one sweep (``with Profiler() as prof``).
    Claims are made for a round's trials together (``claim_many``); each
    trial then runs in one scheduler thread, from its heartbeat's start to
    its result, so a step is attributed to the trial of the thread that
    takes it."""

    def __init__(self) -> None:
        self.trials: list = []      # one dict of timestamps per trial
        self.storage_open = None    # (start, end) of TrialStore.__init__
        self._by_id: dict = {}      # storage trial id -> its record
        self._current = threading.local()
        self._lock = threading.Lock()
        self._patches: list = []

    def _patch(self, owner, name, wrapper) -> None:
        original = getattr(owner, name)
        self._patches.append((owner, name, original))
        setattr(owner, name, wrapper(original))

    def _mark(self, key, value=None) -> None:
        rec = getattr(self._current, 'trial', None)
        if rec is not None:
            rec.setdefault(key, value if value is not None else time.time())

    def __enter__(self) -> 'Profiler':
        from fixnorm_mm.tuning import launcher as launcher_module
        from fixnorm_mm.tuning import store as store_module
        prof = self

        def store_init(original):
            def init(self, *a, **k):
                start = time.time()
                original(self, *a, **k)
                prof.storage_open = (start, time.time())
            return init

        def claim_many(original):
            def wrapped(self, items):
                start = time.time()
                results = original(self, items)
                end = time.time()
                with prof._lock:
                    for (key, params, _), (status, what, *_) in zip(items, results):
                        if status == 'mine':
                            rec = dict(key=key, budget=params.get('budget'), claim_start=start,
                                       claim_end=end)
                            prof.trials.append(rec)
                            prof._by_id[what] = rec
                return results
            return wrapped

        def heartbeat(original):  # the trial's thread, right after its claim
            def wrapped(self, trial_id):
                prof._current.trial = prof._by_id.get(trial_id)
                return original(self, trial_id)
            return wrapped

        def finish(original):
            def wrapped(self, *a, **k):
                prof._mark('finish_start')
                try:
                    return original(self, *a, **k)
                finally:
                    prof._mark('finish_end')
            return wrapped

        def popen(original):
            def wrapped(*a, **k):
                prof._mark('spawn_start')
                proc = original(*a, **k)
                prof._mark('spawn_end')
                wait = proc.wait

                def timed_wait(*wa, **wk):
                    rc = wait(*wa, **wk)
                    prof._mark('exit')
                    return rc
                proc.wait = timed_wait
                return proc
            return wrapped

        def readback(original):
            def wrapped(*a, **k):
                out = original(*a, **k)
                rec = getattr(prof._current, 'trial', None)
                if rec is not None:
                    rec['readback_end'] = time.time()
                return out
            return wrapped

        self._patch(store_module.TrialStore, '__init__', store_init)
        if hasattr(store_module.TrialStore, 'claim_many'):
            self._patch(store_module.TrialStore, 'claim_many', claim_many)
        else:  # a sweep that claims one trial at a time (before issue 22)
            self._patch(store_module.TrialStore, 'claim', lambda original: (
                lambda store, key, params, attrs: claim_many(
                    lambda st, items: [original(st, *items[0])])(store, [(key, params, attrs)])[0]))
        self._patch(store_module.TrialStore, 'heartbeat', heartbeat)
        self._patch(store_module.TrialStore, 'finish', finish)
        self._patch(launcher_module, 'popen_dying_with_parent', popen)
        self._patch(launcher_module, 'training_divergence', readback)
        self._patch(launcher_module, 'read_metric', readback)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)

    def breakdown(self, t0: float, t_end: float, t_max: float) -> dict:
        """Seconds of the makespan on the critical chain, by step: walking back
        from the last result, each trial waited for the result that freed its
        slot or released its round (the latest result before its claim)."""
        done = [r for r in self.trials if 'finish_end' in r and 'exit' in r]
        out = dict.fromkeys(('storage open', 'storage claims', 'process start-up', 'training',
                             'trial overrun', 'metric read-back', 'storage result write',
                             'idle / scheduling'), 0.0)
        rec = max(done, key=lambda r: r['finish_end'])
        out['idle / scheduling'] += t_end - rec['finish_end']
        while rec is not None:
            out['storage result write'] += rec['finish_end'] - rec['finish_start']
            out['metric read-back'] += rec['finish_start'] - rec['exit']
            work = rec['exit'] - rec['spawn_end']
            out['training'] += min(work, rec['budget'] * t_max)
            out['trial overrun'] += max(0.0, work - rec['budget'] * t_max)
            out['process start-up'] += rec['spawn_end'] - rec['spawn_start']
            out['storage claims'] += rec['claim_end'] - rec['claim_start']
            out['idle / scheduling'] += rec['spawn_start'] - rec['claim_end']  # log, heartbeat
            before = [r for r in done if r['finish_end'] <= rec['claim_start']]
            prev = max(before, key=lambda r: r['finish_end']) if before else None
            start = prev['finish_end'] if prev else self.storage_open[1]
            out['idle / scheduling'] += rec['claim_start'] - start
            rec = prev
        out['storage open'] = self.storage_open[1] - t0
        return out


def one_sweep(args, work_dir: str, slots: int, events=None, profiler=None):
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
    if profiler is not None:
        with profiler:
            result = run_fixnorm_tune(_tuner(args), launcher, work_dir,
                                      default_storage(work_dir), poll_interval=args.poll,
                                      log=lambda msg: None)
    else:
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
    with tempfile.TemporaryDirectory() as tmp:  # ... Optuna's storage modules too
        from fixnorm_mm.tuning import TrialStore, default_storage
        TrialStore(default_storage(tmp), 'warm-up')
    tuner = _tuner(args)
    base = args.work_dir or tempfile.mkdtemp(prefix='sweep_wallclock_')
    rows, answers, workers, breakdowns = [], {}, {}, {}
    try:
        for slots in args.slots:
            work = osp.join(base, f'slots{slots}')
            shutil.rmtree(work, ignore_errors=True)
            events, prof = [], Profiler()
            t0 = time.time()
            result, wall = one_sweep(args, work, slots, events, prof)
            breakdowns[slots] = prof.breakdown(t0, t0 + wall, args.t_max)
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
    if breakdowns:
        print('\nWhere the makespan goes, along the critical chain (each trial waited for '
              'the result before its claim), seconds:\n')
        names = list(next(iter(breakdowns.values())))
        print('| slots | ' + ' | '.join(names) + ' | makespan | above the floor (T_max) |')
        print('|---' * (len(names) + 3) + '|')
        for slots, b in breakdowns.items():
            total = sum(b.values())
            over = total - b['training']
            print(f'| {slots} | ' + ' | '.join(f'{v:.2f}' for v in b.values())
                  + f' | {total:.2f} | {over / t:.3f} |')
    if speedup is not None:
        print(f'\nspeed-up of {args.workers} workers on one storage over 1 worker: '
              f'{speedup:.2f}x')
    distinct = sorted(set(answers.values()))
    print(f'answers (best lr, alpha, metric): {distinct}')
    return dict(rows=rows, speedup=speedup, answers=answers, workers=workers,
                breakdowns=breakdowns)


if __name__ == '__main__':
    main(sys.argv[1:])
