"""FixNorm-tune vs BO+WD vs ASHA+WD as distributions: what each costs to get
near the best result, over sampler seeds and training seeds, on a task whose
lr/alpha landscape is not flat.

Task: the digits testbed of docs/results.md (scikit-learn's real 8x8 digits,
400 train / 397 val / 1000 test images; a 20k-parameter BN ResNet,
``experiments/digits.py``), T_max = 20 epochs (160 iterations of batch 50,
linear warm-up then cosine), trained in this process through the mmengine
``Runner`` with the same config as ``experiments/`` (no subprocess per trial).
A budget fraction shrinks the whole schedule with
``fixnorm_mm.tuning.scale_schedule``, as the real sweep does. The tuners
maximise **val** accuracy; the test accuracy of what they pick is reported
beside it.

* **FixNorm-tune** (Algo 2, ``fixnorm_mm.tuning.FixNormTune``), the paper's
  ImageNet setup: lr (0.2, 3.2], K = 5, T = [0.2, 1] T_max, alpha in
  {0.5, 1, 2, 4, 8, 16} (11 T_max); Algo 1 on every conv + FixNorm-FC.
* **BO+WD** (``fixnorm_mm.tuning.BOWDTune``, Optuna's GP sampler): lr
  [0.2, 3.2] and weight decay [1e-5, 5e-4] (log scale), 25 full trainings;
  plain FC, weight decay on every conv and FC weight.
* **ASHA+WD** (``fixnorm_mm.tuning.ASHAWDTune``): what users run today, Optuna's
  TPE sampler over the same lr and weight-decay ranges with Optuna's
  successive-halving pruner (Optuna's defaults: reduction factor 4, 10 random
  start-up trials); every trial is the full schedule, evaluated after every
  epoch (rungs at epochs 1, 4, 16), and stopped when the pruner says so; it
  costs the epochs it ran. Trials until they have cost 25 T_max (BO+WD's
  budget). Same training as BO+WD. ``--asha-min-resource`` moves the first
  rung (e.g. to epoch 5, after the warm-up).
* **FixNorm-tune with early stopping** (``fixnorm-tune-es``, the variant that
  answers an early-stopping baseline): Algo 2 as above, but the trials of an
  lr round run one after the other, evaluated every epoch, and a trial more
  than ``ES_MARGIN`` = 2 points below the best the round's earlier trials
  reached at the same epoch, in the second half of its length
  (``ES_FROM``), stops there (it cannot win the round; it costs what it
  ran). The alpha round is unchanged.

All search the same lr range (``--lr-range``; default per landscape).

Landscapes (``--landscape``):

* ``digits`` (default): T_max = 20 epochs (160 iterations), warm-up 40
  iterations; lr range [0.2, 3.2] (the paper's), or [0.05, 3.2] ("wide").
* ``narrow``: the same task trained for T_max = 5 epochs (40 iterations),
  warm-up 5 iterations, lr range [0.05, 3.2]. The short schedule punishes a
  low lr (it does not converge) and a high one (it does not settle): the good
  lr band is narrow (FixNorm: within 1 point of the best only around 0.4;
  weight decay only around 0.1).

Each tuner runs once per training seed (mmengine ``randomness.seed``:
initialisation and data order of every trial), BO+WD and ASHA+WD also once
per sampler seed. A landscape grid (lr x alpha for FixNorm, lr x wd for WD, full budget,
every training seed) shows whether tuning matters here.

For each run: the cost (T_max) after which a full-budget trial reached the
best-known val accuracy of its training seed minus 0.5 and minus 1 point
(best-known = the best full-budget val accuracy that any training reached
with that seed: the grid, every tuner, every lr range run so far with the
same work dir), the final best val accuracy and the test
accuracy of that setting, and the best val accuracy after 11 T_max.

Every finished training is kept in ``<work-dir>/trials.sqlite`` and every BO
study in ``<work-dir>/bo-wd_*.db`` (Optuna storage); the early-stopping
methods' trainings are kept as their curve of val accuracies (as far as they
ran: a stopped training really stops) and ASHA+WD's studies are replayed in
memory from them (TPE with a
seed is deterministic given the values): running the command again trains
nothing and only reprints.

    python benchmarks/tune_benchmark.py --workers 2 --train-seeds 0 1 2 3 4 \\
        --out docs/results/tune_benchmark        # ~25 CPU-min
    python benchmarks/tune_benchmark.py --workers 2 --train-seeds 0 1 2 3 4 \\
        --lr-range 0.05 3.2 --out docs/results/tune_benchmark_wide   # ~15 more
    python benchmarks/tune_benchmark.py --workers 2 --landscape narrow \\
        --out docs/results/tune_benchmark_narrow
    python benchmarks/tune_benchmark.py --workers 2 --methods asha-wd \\
        --asha-min-resource 5 --out docs/results/tune_benchmark_asha_rung5
    python benchmarks/tune_benchmark.py --smoke --work-dir /tmp/x   # seconds
"""
import argparse
import json
import math
import os
import os.path as osp
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'experiments'))

#: the task: experiments/digits.py's run_config keyword arguments
TASK = dict(epochs=20, width=16, batch_size=50, warmup_iters=40)
SMOKE_TASK = dict(epochs=2, width=4, batch_size=50, warmup_iters=1, train_subset=100,
                  eval_subset=100)
#: the narrow landscape: the same task trained for 5 epochs (docstring)
NARROW_TASK = dict(epochs=5, width=16, batch_size=50, warmup_iters=5)
LANDSCAPES = {'digits': dict(task=TASK, lr_range=(0.2, 3.2)),
              'narrow': dict(task=NARROW_TASK, lr_range=(0.05, 3.2))}
LR_RANGE = (0.2, 3.2)  # the paper's ImageNet range, for all methods
WD_RANGE = (1e-5, 5e-4)
K, BUDGETS, ALPHAS = 5, (0.2, 1.0), (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
GRID = dict(lrs=(0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2), alphas=(0.5, 1.0, 2.0, 4.0, 16.0),
            wds=(1e-5, 5e-5, 2e-4, 5e-4))
SMOKE = dict(K=2, budgets=(0.5, 1.0), alphas=(0.5, 1.0),
             grid=dict(lrs=(0.2, 0.8), alphas=(0.5,), wds=(1e-4,)))
MARGINS = (0.5, 1.0)
EQUAL_COST = 11.0  # FixNorm-tune's cost with the paper's setup
METHODS = ('fixnorm-tune', 'bo-wd', 'asha-wd', 'fixnorm-tune-es')
#: ASHA+WD: evaluation every epoch, Optuna's pruner defaults, BO+WD's budget
ASHA = dict(max_cost=25.0, max_trials=400, pruner='sha', eval_interval=1)


# ----------------------------------------------------------------------------- trials
class TrialCache:
    """Finished trainings, keyed by everything that defines them (sqlite: the
    worker processes share it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        with self._connect() as c:
            c.execute('CREATE TABLE IF NOT EXISTS trials (key TEXT PRIMARY KEY, result TEXT)')

    def _connect(self):
        return sqlite3.connect(self.path, timeout=300)

    def get(self, key: str) -> Optional[dict]:
        with self._connect() as c:
            row = c.execute('SELECT result FROM trials WHERE key = ?', (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, result: dict) -> None:
        with self._connect() as c:
            c.execute('INSERT OR REPLACE INTO trials VALUES (?, ?)', (key, json.dumps(result)))


def trial_key(family: str, lr: float, x: float, budget: float, seed: int, task: dict) -> str:
    task_text = ','.join(f'{k}={task[k]}' for k in sorted(task))
    return f'{family}|lr={lr:.12g}|x={x:.12g}|budget={budget:.12g}|seed={seed}|{task_text}'


def trial_config(family: str, lr: float, x: float, budget: float, seed: int, task: dict,
                 work_dir: str, val_interval: Optional[int] = None):
    """The Runner config of one trial: experiments/digits.py's, its schedule
    shrunk to ``budget`` by scale_schedule, validated once at the end (or
    every ``val_interval`` epochs)."""
    from mmengine.config import Config

    import digits
    from fixnorm_mm.tuning import scale_schedule
    if family == 'fixnorm':   # Algo 1 on every conv + FixNorm-FC (one global group)
        spec = dict(method='algo1_fc', fc_type='fixnorm_fc', alpha=x)
    elif family == 'wd':      # weight decay x on every conv and FC weight
        spec = dict(method='wd', fc_type='fc', wd=x)
    else:
        raise ValueError(f'unknown family {family!r}')
    cfg = Config(digits.run_config(lr=lr, seed=seed, val_interval=val_interval or task['epochs'],
                                   work_dir=work_dir, **spec, **task))
    cfg.custom_hooks = []  # no MCBR curves: only the final metric counts here
    cfg.log_level = 'ERROR'
    cfg.merge_from_dict(scale_schedule(cfg, budget))
    return cfg


def train_trial(family: str, lr: float, x: float, budget: float, seed: int,
                task: dict) -> dict:
    """One training: val and test accuracy (%), or the error of a diverged run."""
    import torch
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    import digits

    class LastVal(Hook):
        metrics: dict = {}

        def after_val_epoch(self, runner, metrics=None):
            self.metrics = dict(metrics or {})

    torch.set_num_threads(1)
    c0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix='fixnorm_tune_bench_') as tmp:
        runner = Runner.from_cfg(trial_config(family, lr, x, budget, seed, task, tmp))
        last = LastVal()
        runner.register_hook(last)
        try:
            runner.train()
            val = float(last.metrics['accuracy'])
            test = float(runner.test()['accuracy'])
            out = dict(failed=False, val=val, test=test)
        except FloatingPointError as e:  # FixNorm's divergence check
            out = dict(failed=True, error=str(e).split(':')[0][:200])
        finally:
            digits._close_runner(runner)
    if not out['failed'] and not math.isfinite(out['val']):
        out = dict(failed=True, error='non-finite val accuracy')
    out['cpu_seconds'] = time.process_time() - c0
    return out


def make_objective(family: str, seed: int, task: dict, cache: TrialCache):
    """``objective(lr, x, budget)`` for the tuners, answered from the cache
    when the training was done before."""
    from fixnorm_mm.tuning import TrialFailed, TrialOutcome

    def objective(lr: float, x: float, budget: float):
        key = trial_key(family, lr, x, budget, seed, task)
        r = cache.get(key)
        if r is None:
            r = train_trial(family, lr, x, budget, seed, task)
            cache.put(key, r)
        if r['failed']:
            raise TrialFailed(r['error'])
        return TrialOutcome(r['val'], dict(test=r['test'], cpu_seconds=r['cpu_seconds']))
    return objective


def train_curve(family: str, lr: float, x: float, budget: float, seed: int, task: dict,
                report) -> dict:
    """One training evaluated every ``ASHA['eval_interval']`` epochs; each
    evaluation goes to ``report(value, epoch, last) -> stop?``
    (:class:`fixnorm_mm.tuning.pruning.TrialReportHook`), and a stopped
    training stops there. Returns its curve ``[[epoch, val], ...]``, whether
    it ran to the end, and then its test accuracy."""
    import torch
    from mmengine.runner import Runner

    import digits
    from fixnorm_mm.tuning import TrialPruned
    from fixnorm_mm.tuning.pruning import TrialReportHook

    torch.set_num_threads(1)
    c0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix='fixnorm_tune_bench_') as tmp:
        runner = Runner.from_cfg(trial_config(family, lr, x, budget, seed, task, tmp,
                                              val_interval=ASHA['eval_interval']))
        hook = TrialReportHook(report, metric='accuracy', on_prune='raise')
        runner.register_hook(hook)
        out = dict(complete=False, test=None, failed=False)
        try:
            runner.train()
            out.update(complete=True, test=float(runner.test()['accuracy']))
        except TrialPruned:
            pass
        except FloatingPointError as e:  # FixNorm's divergence check
            out.update(failed=True, error=str(e).split(':')[0][:200])
        finally:
            digits._close_runner(runner)
    out.update(curve=[[s, v] for s, v in hook.reported], cpu_seconds=time.process_time() - c0)
    return out


def curve_objective(family: str, seed: int, task: dict, cache: TrialCache, make_report):
    """``objective(lr, x, budget, *context)`` of a tuner that stops trainings
    early: the training's curve, replayed from the cache as far as it is known
    (the training is deterministic, so an evaluation it reached once is what
    it reaches again), trained (again, from the start) when it is to go
    further than it ever went. ``make_report(lr, x, budget, *context)`` gives
    the ``report(value, step, last) -> stop?`` of that trial; a stopped trial
    raises TrialPruned with the fraction of T_max it ran."""
    from fixnorm_mm.tuning import TrialFailed, TrialOutcome, TrialPruned
    epochs = task['epochs']

    def objective(lr: float, x: float, budget: float, *context):
        key = trial_key(f'{family}-curve', lr, x, budget, seed, task)
        report = make_report(lr, x, budget, *context)
        r = cache.get(key)
        last_step, replayed = max(1, round(epochs * budget)), 0
        for step, value in (r['curve'] if r else []):
            if report(value, step, step >= last_step):
                raise TrialPruned(step / epochs, value, step, test=None)
            replayed = step
        if r is None or not (r['complete'] or r.get('failed')):
            def report_new(value, step, last):  # the replayed part is reported already
                return step > replayed and report(value, step, last)
            r2 = train_curve(family, lr, x, budget, seed, task, report_new)
            if r is None or len(r2['curve']) > len(r['curve']) or r2.get('failed'):
                cache.put(key, r2)
            r = r2
            if not (r['complete'] or r['failed']):
                step, value = r['curve'][-1]
                raise TrialPruned(step / epochs, value, step, test=None)
        if r.get('failed'):
            raise TrialFailed(r['error'])
        val = r['curve'][-1][1]
        if not math.isfinite(val):
            raise TrialFailed('non-finite val accuracy')
        return TrialOutcome(val, dict(test=r['test'], cpu_seconds=r['cpu_seconds']))
    return objective


def asha_objective(seed: int, task: dict, cache: TrialCache):
    """ASHA+WD's ``objective(lr, wd, trial)``: every evaluation goes to the
    Optuna trial, which says when to stop (its pruner)."""
    def make_report(lr, wd, budget, trial):
        def report(value, step, last):
            trial.report(value, step)
            return not last and trial.should_prune()
        return report
    objective = curve_objective('wd', seed, task, cache, make_report)
    return lambda lr, wd, trial: objective(lr, wd, 1.0, trial)


#: the early-stopping variant of FixNorm-tune: a trial of an lr round stops at an
#: evaluation where it is this many points below the best trial of its round
#: at the same evaluation ("clearly worse": ~3 seed std of a final val accuracy) ...
ES_MARGIN = 2.0
#: ... from this fraction of its own length on: before, under warm-up and a high
#: lr, learning curves of different lrs cross (a high lr is behind early and
#: ahead at the end), and a margin says nothing
ES_FROM = 0.5


def fixnorm_es_objective(seed: int, task: dict, cache: TrialCache, alpha0: float):
    """FixNorm-tune with early stopping inside its lr rounds
    (``fixnorm-tune-es``): the round's trials run one after the other, each
    evaluated every epoch, and one that is more than ``ES_MARGIN`` points
    below the best the round's earlier trials reached at the same epoch, at
    ``ES_FROM`` of its length or later, stops there (it cannot win the round;
    it costs what it ran). The alpha round (alpha != alpha_0) is Algo 2's,
    without stopping."""
    best_at: Dict[tuple, float] = {}
    epochs = task['epochs']

    def make_report(lr, alpha, budget):
        lr_round = alpha == alpha0
        length = max(1, round(epochs * budget))

        def report(value, step, last):
            best = best_at.get((budget, step))
            if lr_round:
                best_at[(budget, step)] = max(value, -math.inf if best is None else best)
            return (lr_round and not last and best is not None and step >= ES_FROM * length
                    and value < best - ES_MARGIN)
        return report
    return curve_objective('fixnorm', seed, task, cache, make_report)


# ----------------------------------------------------------------------------- jobs
def run_job(job: dict, work_dir: str, task: dict, setup: dict) -> dict:
    """One unit of work in a worker process: a grid point, a FixNorm-tune
    run or a BO+WD run."""
    import logging

    import torch
    torch.set_num_threads(1)
    logging.getLogger('mmengine').setLevel(logging.ERROR)
    from fixnorm_mm.tuning import ASHAWDTune, BOWDTune, FixNormTune, TrialFailed
    cache = TrialCache(osp.join(work_dir, 'trials.sqlite'))
    c0, t0 = time.process_time(), time.perf_counter()
    kind, seed = job['kind'], job['train_seed']
    if kind == 'grid':
        objective = make_objective(job['family'], seed, task, cache)
        try:
            out = objective(job['lr'], job['x'], 1.0)
            res = dict(val=out.metric, test=out.info['test'], failed=False)
        except TrialFailed as e:
            res = dict(val=float('nan'), test=float('nan'), failed=True, error=e.reason)
    elif kind == 'fixnorm-tune':
        tuner = FixNormTune(lr_range=setup['lr_range'], K=setup['K'],
                            budgets=setup['budgets'], alphas=setup['alphas'])
        res = tuner.run(make_objective('fixnorm', seed, task, cache)).to_dict()
    elif kind == 'bo-wd':
        tuner = BOWDTune(lr_range=setup['lr_range'], wd_range=WD_RANGE,
                         n_trials=setup['bo_trials'], sampler='gp', seed=job['bo_seed'])
        tag = '' if tuple(setup['lr_range']) == LR_RANGE else \
            'lr{:g}-{:g}_'.format(*setup['lr_range'])
        if setup['landscape'] != 'digits':
            tag = f"{setup['landscape']}_{tag}"
        name = f"bo-wd_{tag}bo{job['bo_seed']}_train{seed}"
        study = tuner.create_study(storage=f"sqlite:///{osp.join(work_dir, name + '.db')}",
                                   study_name=name)
        res = tuner.run(make_objective('wd', seed, task, cache), study=study).to_dict()
    elif kind == 'fixnorm-tune-es':
        tuner = FixNormTune(lr_range=setup['lr_range'], K=setup['K'],
                            budgets=setup['budgets'], alphas=setup['alphas'])
        res = tuner.run(fixnorm_es_objective(seed, task, cache, setup['alphas'][0])).to_dict()
        res['method'] = kind
    elif kind == 'asha-wd':
        asha = setup['asha']
        tuner = ASHAWDTune(lr_range=setup['lr_range'], wd_range=WD_RANGE,
                           n_trials=asha['max_trials'], max_cost=asha['max_cost'],
                           pruner=asha['pruner'],
                           min_resource=asha.get('min_resource') or asha['eval_interval'],
                           max_resource=task['epochs'], seed=job['sampler_seed'])
        res = tuner.run(asha_objective(seed, task, cache), study=tuner.create_study()).to_dict()
    else:
        raise ValueError(kind)
    return dict(job, result=res, cpu_seconds=time.process_time() - c0,
                wall_seconds=time.perf_counter() - t0)


def jobs_of(args, setup: dict) -> List[dict]:
    jobs = []
    for s in args.train_seeds:     # the long ones first: they balance the workers
        if 'bo-wd' in args.methods:
            for b in args.bo_seeds:
                jobs.append(dict(kind='bo-wd', bo_seed=b, train_seed=s))
        if 'asha-wd' in args.methods:
            for b in args.asha_seeds:
                jobs.append(dict(kind='asha-wd', sampler_seed=b, train_seed=s))
    for method in ('fixnorm-tune', 'fixnorm-tune-es'):
        if method in args.methods:
            jobs += [dict(kind=method, train_seed=s) for s in args.train_seeds]
    g = setup['grid']
    for s in args.train_seeds:
        for lr in g['lrs']:
            jobs += [dict(kind='grid', family='fixnorm', lr=lr, x=a, train_seed=s)
                     for a in g['alphas']]
            jobs += [dict(kind='grid', family='wd', lr=lr, x=w, train_seed=s)
                     for w in g['wds']]
    return jobs


def run_jobs(jobs: List[dict], args, task: dict, setup: dict) -> List[dict]:
    done: List[Optional[dict]] = [None] * len(jobs)
    t0 = time.perf_counter()

    def report(i, r):
        done[i] = r
        n = sum(d is not None for d in done)
        label = ' '.join(f'{k}={v}' for k, v in r.items()
                         if k not in ('result', 'cpu_seconds', 'wall_seconds'))
        print(f'[{n}/{len(jobs)}] {label}: {r["cpu_seconds"]:.0f} s CPU '
              f'({time.perf_counter() - t0:.0f} s so far)', flush=True)

    if args.workers <= 1:
        for i, j in enumerate(jobs):
            report(i, run_job(j, args.work_dir, task, setup))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context('spawn')) as pool:
            futures = {pool.submit(run_job, j, args.work_dir, task, setup): i
                       for i, j in enumerate(jobs)}
            for f in as_completed(futures):
                report(futures[f], f.result())
    return done  # type: ignore[return-value]


# ----------------------------------------------------------------------------- analysis
def progress(trials: Sequence[dict]) -> List[tuple]:
    """(cost so far, best full-budget val so far) after each trial."""
    out, cost, best = [], 0.0, -math.inf
    for t in trials:
        cost += t['budget']
        if not t['failed'] and not t.get('pruned') and t['budget'] >= 1.0 - 1e-12:
            best = max(best, t['metric'])
        out.append((cost, best))
    return out


def cost_to_reach(trials, target: float) -> float:
    for cost, best in progress(trials):
        if best >= target - 1e-9:
            return cost
    return math.inf


def best_within(trials, budget: float) -> float:
    best = -math.inf
    for cost, b in progress(trials):
        if cost > budget + 1e-9:
            break
        best = b
    return best


def cached_full_budget(cache_path: str, task: dict) -> Dict[tuple, List[float]]:
    """(family, train seed) -> val accuracy of every full-budget training of
    this task in the cache: what any invocation (any lr range) has trained."""
    task_text = trial_key('', 0, 0, 0, 0, task).split('|', 5)[5]
    out: Dict[tuple, List[float]] = {}
    with sqlite3.connect(cache_path) as c:
        for key, result in c.execute('SELECT key, result FROM trials'):
            family, _, _, budget, seed, rest = key.split('|', 5)
            r = json.loads(result)
            if family.endswith('-curve'):  # evaluated every epoch: full if it ran to the end
                if not r['complete'] or not math.isfinite(r['curve'][-1][1]):
                    continue
                family, r = family[:-len('-curve')], dict(failed=False, val=r['curve'][-1][1])
            if rest != task_text or float(budget.split('=')[1]) < 1.0 - 1e-12 or r['failed']:
                continue
            out.setdefault((family, int(seed.split('=')[1])), []).append(r['val'])
    return out


def analyse(results: List[dict], known: Optional[Dict[tuple, List[float]]] = None) -> dict:
    """Per-seed best-known metrics, per-run numbers, per-method distributions.

    The best-known val accuracy of a training seed is the best of every
    full-budget training with that seed: those of ``results`` and, when given,
    ``known`` ((family, seed) -> val accuracies, e.g. the whole trial cache)."""
    full = {}  # train seed -> every full-budget val accuracy (any method, the grid)
    family_full = {}
    for (fam, s), vals in (known or {}).items():
        full.setdefault(s, []).extend(vals)
        family_full.setdefault((fam, s), []).extend(vals)
    for r in results:
        s = r['train_seed']
        fam = r.get('family') or ('fixnorm' if r['kind'].startswith('fixnorm') else 'wd')
        if r['kind'] == 'grid':
            vals = [] if r['result']['failed'] else [r['result']['val']]
        else:
            vals = [t['metric'] for t in r['result']['trials']
                    if not t['failed'] and not t.get('pruned') and t['budget'] >= 1.0 - 1e-12]
        full.setdefault(s, []).extend(vals)
        family_full.setdefault((fam, s), []).extend(vals)
    best_known = {s: max(v) for s, v in full.items()}
    family_best = {k: max(v) for k, v in family_full.items() if v}
    runs = []
    for r in results:
        if r['kind'] == 'grid':
            continue
        s, trials = r['train_seed'], r['result']['trials']
        fam = 'fixnorm' if r['kind'].startswith('fixnorm') else 'wd'
        ok = [t for t in trials
              if not t['failed'] and not t.get('pruned') and t['budget'] >= 1.0 - 1e-12]
        best = max(ok, key=lambda t: t['metric']) if ok else None
        row = dict(method=r['kind'], bo_seed=r.get('bo_seed', r.get('sampler_seed')),
                   train_seed=s, trials=len(trials),
                   pruned=sum(bool(t.get('pruned')) for t in trials),
                   best_known=best_known[s], family_best=family_best[(fam, s)],
                   final_val=best['metric'] if best else -math.inf,
                   final_test=best['info'].get('test') if best else float('nan'),
                   best_lr=best['lr'] if best else None,
                   best_x=(best['alpha'] if fam == 'fixnorm' else best['weight_decay'])
                   if best else None,
                   total_cost=sum(t['budget'] for t in trials),
                   failed=sum(t['failed'] for t in trials),
                   at_equal_cost=best_within(trials, EQUAL_COST),
                   cpu_seconds=r['cpu_seconds'])
        for m in MARGINS:
            row[f'cost_to_best-{m:g}'] = cost_to_reach(trials, best_known[s] - m)
            row[f'cost_to_family_best-{m:g}'] = cost_to_reach(trials, family_best[(fam, s)] - m)
        runs.append(row)
    return dict(best_known=best_known,
                family_best={f'{f}/seed{s}': v for (f, s), v in family_best.items()},
                runs=runs)


def quantile(xs: List[float], q: float) -> float:
    """Linear-interpolation quantile ('inclusive') that allows inf (a run that
    never reached the target): inf as soon as an inf neighbour has weight."""
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo, frac = int(math.floor(pos)), pos - math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    if frac == 0 or xs[lo] == xs[hi]:
        return xs[lo]
    if math.isinf(xs[hi]):
        return math.inf
    return xs[lo] + frac * (xs[hi] - xs[lo])


def quartiles(xs: List[float]) -> tuple:
    return quantile(xs, 0.25), quantile(xs, 0.5), quantile(xs, 0.75)


def fmt_cost(c: float) -> str:
    return 'never' if math.isinf(c) else f'{c:g}'


def fmt_dist(xs: List[float], cost: bool = True) -> str:
    """median [q1, q3] (min-max), n reached, of a list that may hold inf."""
    f = fmt_cost if cost else (lambda v: f'{v:.2f}')
    q1, med, q3 = quartiles(xs)
    text = f'{f(med)} [{f(q1)}, {f(q3)}]'
    if cost:
        text += f', reached {sum(math.isfinite(x) for x in xs)}/{len(xs)}'
    else:
        text += f' ({f(min(xs))}-{f(max(xs))})'
    return text


def mean_std(xs: List[float]) -> str:
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return 'diverged'
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f'{statistics.mean(xs):.2f} ± {sd:.2f}'


def landscape_tables(results: List[dict], setup: dict) -> str:
    grid: Dict[tuple, List[dict]] = {}
    for r in results:
        if r['kind'] == 'grid':
            grid.setdefault((r['family'], r['lr'], r['x']), []).append(r['result'])
    g = setup['grid']
    out = []
    for fam, xs, xname in (('fixnorm', g['alphas'], 'α'), ('wd', g['wds'], 'wd')):
        title = ('FixNorm (Algo 1 + FixNorm-FC), lr x α' if fam == 'fixnorm'
                 else 'weight decay (plain FC), lr x wd')
        out.append(f'{title}: val / test accuracy (%), mean ± std over the training seeds '
                   '(failed: diverged)\n')
        out.append(f'| {xname} \\ lr | ' + ' | '.join(f'{lr:g}' for lr in g['lrs']) + ' |')
        out.append('| --- ' * (len(g['lrs']) + 1) + '|')
        for x in xs:
            cells = []
            for lr in g['lrs']:
                rs = grid.get((fam, lr, x), [])
                vals = [float('nan') if r['failed'] else r['val'] for r in rs]
                tests = [float('nan') if r['failed'] else r['test'] for r in rs]
                nfail = sum(r['failed'] for r in rs)
                cell = f'{mean_std(vals)} / {mean_std(tests)}'
                if nfail:
                    cell += f' ({nfail} failed)'
                cells.append(cell)
            out.append(f'| {x:g} | ' + ' | '.join(cells) + ' |')
        vals = {(lr, x): statistics.mean(
            [r['val'] for r in grid.get((fam, lr, x), []) if not r['failed']] or [0.0])
            for lr in g['lrs'] for x in xs}
        hi, lo = max(vals.values()), min(vals.values())
        out.append(f'\nSpread of the cell means (val): {lo:.2f} to {hi:.2f} '
                   f'({hi - lo:.2f} points); seed std of a cell: median '
                   f'{_median_cell_std(grid, fam):.2f} points.\n')
    return '\n'.join(out)


def _median_cell_std(grid, fam) -> float:
    stds = [statistics.stdev([r['val'] for r in rs]) for (f, _, _), rs in grid.items()
            if f == fam and len(rs) > 1 and not any(r['failed'] for r in rs)]
    return statistics.median(stds) if stds else float('nan')


def format_report(results: List[dict], analysis: dict, args, setup: dict) -> str:
    runs = analysis['runs']
    asha = setup['asha']
    lines = ['### Landscape\n', landscape_tables(results, setup), '### Tuning runs\n',
             'All three tuners search lr in [{:g}, {:g}]'.format(*setup['lr_range'])
             + ' (BO+WD: weight decay in [{:g}, {:g}], log scale; {} trials. ASHA+WD: the same '
             'space with TPE and Optuna\'s {} pruner, reduction factor {}, evaluation every '
             '{} epoch(s), first rung at epoch {}, trials until {:g} T_max).\n'.format(
                 *WD_RANGE, setup['bo_trials'],
                 'successive-halving' if asha['pruner'] == 'sha' else 'Hyperband',
                 asha.get('reduction_factor') or {'sha': 4, 'hyperband': 3}[asha['pruner']],
                 asha['eval_interval'], asha.get('min_resource') or asha['eval_interval'],
                 asha['max_cost'])]
    lines.append('Best-known val accuracy per training seed (the best full-budget training '
                 'with that seed of either method, in any run of this benchmark, lr ranges and '
                 'grid included): ' + ', '.join(
                     f'seed {s}: {v:.2f}' for s, v in sorted(analysis['best_known'].items()))
                 + '. Per method (its own trials and grid only): ' + ', '.join(
                     f'{k}: {v:.2f}' for k, v in sorted(analysis['family_best'].items())) + '.\n')
    head = ('| method | runs | cost to best-known − 0.5 (T_max) | cost to best-known − 1 | '
            'final best val (%) | its test (%) | best val after 11 T_max | total cost |')
    lines += [head, '| --- ' * 8 + '|']
    for method in METHODS:
        rs = [r for r in runs if r['method'] == method]
        if not rs:
            continue
        lines.append(
            f'| {method} | {len(rs)} | {fmt_dist([r["cost_to_best-0.5"] for r in rs])} | '
            f'{fmt_dist([r["cost_to_best-1"] for r in rs])} | '
            f'{fmt_dist([r["final_val"] for r in rs], cost=False)} | '
            f'{fmt_dist([r["final_test"] for r in rs], cost=False)} | '
            f'{fmt_dist([r["at_equal_cost"] for r in rs], cost=False)} | '
            f'{fmt_dist([r["total_cost"] for r in rs], cost=False)} |')
    lines.append('\nmedian [quartiles] (min-max) over runs; "reached k/n": runs that got there '
                 'within their budget (a run that never did counts as infinitely costly). '
                 'Against each method\'s own best-known val accuracy instead:\n')
    lines += ['| method | cost to own best − 0.5 (T_max) | cost to own best − 1 |',
              '| --- | --- | --- |']
    for method in METHODS:
        rs = [r for r in runs if r['method'] == method]
        if rs:
            lines.append(f'| {method} | {fmt_dist([r["cost_to_family_best-0.5"] for r in rs])}'
                         f' | {fmt_dist([r["cost_to_family_best-1"] for r in rs])} |')
    for method in ('asha-wd', 'fixnorm-tune-es'):
        rs = [r for r in runs if r['method'] == method]
        if rs:
            med = [statistics.median([r[k] for r in rs]) for k in ('trials', 'pruned')]
            lines.append(f'\n{method}: {med[0]:g} trials per run (median over runs), of which '
                         f'{med[1]:g} stopped early.')
    lines += ['\nEvery run:\n',
              '| method | sampler seed | train seed | best-known | to −0.5 | to −1 | final val | '
              'test | setting | after 11 T_max | trials (stopped early) | CPU s |',
              '| --- ' * 12 + '|']
    for r in sorted(runs, key=lambda r: (r['method'], r['train_seed'], r['bo_seed'] or 0)):
        setting = (f"lr {r['best_lr']:.3g}, " + (f"α {r['best_x']:g}"
                   if r['method'].startswith('fixnorm') else f"wd {r['best_x']:.2g}")
                   if r['best_lr'] is not None else '-')
        lines.append(
            f"| {r['method']} | {'-' if r['bo_seed'] is None else r['bo_seed']} | "
            f"{r['train_seed']} | {r['best_known']:.2f} | {fmt_cost(r['cost_to_best-0.5'])} | "
            f"{fmt_cost(r['cost_to_best-1'])} | {r['final_val']:.2f} | {r['final_test']:.2f} | "
            f"{setting} | {r['at_equal_cost']:.2f} | {r['trials']} ({r['pruned']}) | "
            f"{r['cpu_seconds']:.0f} |")
    return '\n'.join(lines)


def plot(results: List[dict], path: str, lr_range: Sequence[float],
         landscape: str = 'digits') -> None:
    """Best full-budget val accuracy so far against cost: every run (thin) and
    the median over runs (thick) of each method."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colors = {'fixnorm-tune': 'tab:red', 'bo-wd': 'tab:blue', 'asha-wd': 'tab:green',
              'fixnorm-tune-es': 'tab:orange'}
    lo, hi = math.inf, -math.inf
    for kind in ('bo-wd', 'asha-wd', 'fixnorm-tune-es', 'fixnorm-tune'):
        runs = [r['result']['trials'] for r in results if r['kind'] == kind]
        for trials in runs:
            pts = [(c, b) for c, b in progress(trials) if b > -math.inf]
            if pts:
                lo = min(lo, pts[0][1])
                hi = max(hi, pts[-1][1])
                ax.step([c for c, _ in pts], [b for _, b in pts], where='post',
                        color=colors[kind], alpha=0.25, lw=0.8)
        if not runs:
            continue
        end = max(sum(t['budget'] for t in trials) for trials in runs)
        grid = [i / 10 for i in range(1, int(end * 10) + 1)]
        med = [(c, quantile([best_within(trials, c) for trials in runs], 0.5)) for c in grid]
        med = [(c, m) for c, m in med if m > -math.inf]
        ax.step([c for c, _ in med], [m for _, m in med], where='post', color=colors[kind],
                lw=2.2, label=f'{kind}: median of {len(runs)} runs')
    ax.set_xlabel('cost (x T_max)')
    ax.set_ylabel('best full-budget val accuracy so far (%)')
    name = {'digits': 'digits, T_max 20 epochs',
            'narrow': 'digits, narrow landscape (T_max 5 epochs)'}.get(landscape, landscape)
    ax.set_title('{}, lr in [{:g}, {:g}]\nFixNorm-tune vs BO+WD vs ASHA+WD'.format(
        name, *lr_range), fontsize=9)
    if math.isfinite(lo):
        ax.set_ylim(max(lo, 90.0) - 0.5, hi + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'tune_benchmark'))
    p.add_argument('--workers', type=int, default=2, help='processes (one job each at a time)')
    p.add_argument('--bo-trials', type=int, default=25,
                   help='BO+WD trials per run (full trainings; the paper spent 25 and 35)')
    p.add_argument('--bo-seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    p.add_argument('--asha-seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4],
                   help='TPE seeds of ASHA+WD')
    p.add_argument('--asha-max-cost', type=float, default=ASHA['max_cost'],
                   help='T_max an ASHA+WD run may spend (default: BO+WD\'s 25)')
    p.add_argument('--asha-pruner', choices=['sha', 'hyperband'], default=ASHA['pruner'])
    p.add_argument('--asha-min-resource', type=int, default=None,
                   help='ASHA+WD\'s first rung, in epochs (default: the first evaluation, '
                        'epoch 1; e.g. 5: after the digits task\'s warm-up)')
    p.add_argument('--train-seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    p.add_argument('--landscape', choices=sorted(LANDSCAPES), default='digits',
                   help='the task (module docstring)')
    p.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS))
    p.add_argument('--lr-range', type=float, nargs=2, default=None,
                   help='lr range of all tuners (default: the landscape\'s; digits: the '
                        'paper\'s ImageNet range [0.2, 3.2])')
    p.add_argument('--out', default=None,
                   help='write <out>.md, <out>.json and the figure docs/figures/<name>.png')
    p.add_argument('--smoke', action='store_true',
                   help='tiny task and tuners, one seed each (seconds)')
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    landscape = LANDSCAPES[args.landscape]
    task = dict(SMOKE_TASK if args.smoke else landscape['task'])
    asha = dict(ASHA, max_cost=args.asha_max_cost, pruner=args.asha_pruner,
                min_resource=args.asha_min_resource)
    setup = dict(K=K, budgets=BUDGETS, alphas=ALPHAS, grid=GRID, bo_trials=args.bo_trials,
                 lr_range=tuple(args.lr_range or landscape['lr_range']),
                 landscape=args.landscape, asha=asha)
    if args.smoke:
        setup.update(SMOKE, bo_trials=min(args.bo_trials, 2),
                     asha=dict(asha, max_cost=min(asha['max_cost'], 2.0), max_trials=6))
        args.bo_seeds, args.train_seeds = args.bo_seeds[:1], args.train_seeds[:1]
        args.asha_seeds = args.asha_seeds[:1]
    os.makedirs(args.work_dir, exist_ok=True)
    t0 = time.perf_counter()
    results = run_jobs(jobs_of(args, setup), args, task, setup)
    elapsed = time.perf_counter() - t0
    # best-known: every training of this task in the cache (both lr ranges, the grid)
    analysis = analyse(results, cached_full_budget(osp.join(args.work_dir, 'trials.sqlite'), task))
    cpu = sum(r['cpu_seconds'] for r in results)
    trained_cpu = _trained_cpu(args.work_dir)
    command = 'python benchmarks/tune_benchmark.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    text = (format_report(results, analysis, args, setup)
            + f'\n\nThis invocation: {elapsed / 60:.1f} min wall, {cpu / 60:.1f} CPU-min in the '
            f'workers (0 when every training was cached); the trainings themselves took '
            f'{trained_cpu / 60:.1f} CPU-min when they ran. Command: `{command}`')
    print('\n' + text)
    out = dict(task=task, setup=dict(setup, wd_range=WD_RANGE),
               bo_seeds=args.bo_seeds, asha_seeds=args.asha_seeds,
               train_seeds=args.train_seeds, command=command,
               analysis=analysis, jobs=results)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out + '.json', 'w') as f:
            json.dump(out, f, indent=1, default=str)
        with open(args.out + '.md', 'w') as f:
            f.write(text + '\n')
        fig = osp.join(ROOT, 'docs', 'figures', osp.basename(args.out) + '.png') \
            if not args.smoke else args.out + '.png'
        plot(results, fig, setup['lr_range'], args.landscape)
        print(f'wrote {args.out}.md, {args.out}.json, {fig}')
    return out


def _trained_cpu(work_dir: str) -> float:
    with sqlite3.connect(osp.join(work_dir, 'trials.sqlite')) as c:
        rows = c.execute('SELECT result FROM trials').fetchall()
    return sum(json.loads(r[0]).get('cpu_seconds', 0.0) for r in rows)


if __name__ == '__main__':
    main()
