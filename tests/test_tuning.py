"""FixNorm-tune (Algo 2), BO+WD, schedule shrinking and the sweep tool.

The algorithm is checked on synthetic objectives against what Algo 2
prescribes; the tool runs real trainings of configs/toy through
tools/train.py, in parallel, is killed mid-sweep and resumed, and two of its
trainings are SIGKILLed (ToyKillHook) and retried. tests/test_sweep_faults.py
covers every other fault on a synthetic trainer.
"""
import glob
import json
import math
import os
import os.path as osp
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from mmengine.config import Config

from fixnorm_mm.tuning import (PAPER_LR_RANGES, BOWDTune, FixNormTune, SweepConfigError,
                               TrainingLauncher, TrialFailed, TrialOutcome, TrialStore,
                               default_storage, find_key, load_result, lr_probes, read_metric,
                               rescale_scheduler, run_fixnorm_tune, scale_schedule, trial_key)
from fixnorm_mm.tuning.launcher import format_option, training_divergence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(ROOT, 'tools', 'fixnorm_tune.py')
TOY = osp.join(ROOT, 'configs', 'toy', 'toy_fixnorm.py')


# ----------------------------------------------------------- lr sampling rule
def test_lr_probes_reproduce_sec_3_1():
    # round 1 of both experiments: uniformly sampled from [0.2, 3.2], K = 5
    assert lr_probes(0.2, 3.2, 5, first_round=True) == [0.8, 1.4, 2.0, 2.6, 3.2]
    # round 2 after ResNet50-D's 2.6 finds 1.4; after MobileNetV2's 0.8 finds 0.5
    assert lr_probes(0.2, 2.6, 5, first_round=False) == [0.2, 0.8, 1.4, 2.0, 2.6]
    assert lr_probes(0.2, 0.8, 5, first_round=False) == [0.2, 0.35, 0.5, 0.65, 0.8]
    # the alternative rule also contains 1.4 and 0.5 ...
    assert lr_probes(0.2, 2.6, 5, False, 'interior') == [0.6, 1.0, 1.4, 1.8, 2.2]
    assert lr_probes(0.2, 0.8, 5, False, 'interior') == [0.3, 0.4, 0.5, 0.6, 0.7]
    # a range collapsed onto lr_min is probed once, not K times
    assert lr_probes(0.2, 0.2, 5, first_round=False) == [0.2]
    with pytest.raises(ValueError, match='K must be'):
        lr_probes(0.2, 3.2, 0, True)


def test_log_probes_are_algo2s_rule_in_log_lr():
    """Adam-family configs (docs/tuning.md): the same positions as the linear
    rule, evenly spaced in log(lr); the linear rule is unchanged by default."""
    round0 = lr_probes(1e-5, 1e-2, 5, first_round=True, scale='log')
    assert round0 == pytest.approx([10 ** (-5 + 0.6 * i) for i in range(1, 6)], rel=1e-9)
    assert round0[-1] == 1e-2 and round0[0] > 1e-5  # (lr_min, lr_max], as the linear rule
    later = lr_probes(1e-5, round0[2], 5, first_round=False, scale='log')  # after 6.3e-4
    assert later[0] == 1e-5 and later[-1] == round0[2]
    ratios = [b / a for a, b in zip(later, later[1:])]
    assert ratios == pytest.approx([ratios[0]] * 4, rel=1e-9)  # geometric, both ends included
    interior = lr_probes(1e-4, 1e-1, 2, first_round=False, later_rounds='interior', scale='log')
    assert interior == pytest.approx([1e-3, 1e-2])
    assert lr_probes(0.2, 3.2, 5, True) == lr_probes(0.2, 3.2, 5, True, scale='linear')
    with pytest.raises(ValueError, match='a log-scale lr range must start above 0'):
        lr_probes(0, 1, 5, True, scale='log')
    with pytest.raises(ValueError, match=r"lr_scale must be one of \('linear', 'log'\)"):
        FixNormTune(lr_scale='geometric')
    # Algo 2 on a synthetic objective peaked in log(lr): log-spaced rounds, the alpha
    # round unchanged, the same cost
    calls = []

    def objective(lr, alpha, budget):
        calls.append((lr, alpha, budget))
        peak = 1e-3 if budget < 1 else 3e-4
        return 80 - math.log10(lr / peak) ** 2 - 0.1 * math.log2(alpha / 2) ** 2
    tuner = FixNormTune((1e-5, 1e-2), lr_scale='log')
    result = tuner.run(objective)
    assert result.lr_probes[0] == round0 and result.lr_probes[1][0] == 1e-5
    assert result.lr_probes[1][-1] == round0[2]  # 6.3e-4, the round-0 best, is the bound
    assert result.best_alpha == 2.0 and result.total_cost == pytest.approx(11.0)
    assert tuner.known_points(1) == [(1e-5, 0.5, 1.0)]


def test_a_trial_the_objective_stops_early_costs_what_it_ran_and_cannot_win():
    from fixnorm_mm.tuning import TrialPruned

    def objective(lr, alpha, budget):
        if lr == 2.0:  # the best, stopped after a tenth of T_max
            raise TrialPruned(0.1 * budget, 99.0, 1)
        return 70 + 10 * budget - (lr - 2.0) ** 2
    result = FixNormTune(budgets=(0.2, 1.0), alphas=(0.5,)).run(objective)
    stopped = [t for t in result.trials if t.pruned]
    assert [(t.lr, t.budget) for t in stopped] == [(2.0, pytest.approx(0.02))]
    assert result.best_lr != 2.0 and result.best_metric < 99
    assert result.total_cost == pytest.approx(4 * 0.2 + 0.02 + 5 * 1.0)


def _reachable(lr_range, rule):
    first = lr_probes(*lr_range, 5, True)
    out = set(first)
    for best in first:
        out |= set(lr_probes(lr_range[0], best, 5, False, rule))
    return out


def test_only_the_inclusive_rule_reaches_every_lr_the_paper_reports():
    # Table 2 and 5 (ImageNet, [0.2, 3.2]) and Tables 3-4 (Cityscapes, COCO,
    # [0.005, 0.1]): the lrs FixNorm-tune found with N = 2, K = 5
    imagenet = {0.5, 0.35, 0.8, 0.65, 1.4, 1.1}
    finetune = {0.0335, 0.043, 0.0145}
    assert imagenet <= _reachable(PAPER_LR_RANGES['imagenet'], 'inclusive')
    assert finetune <= _reachable(PAPER_LR_RANGES['coco'], 'inclusive')
    assert imagenet - _reachable(PAPER_LR_RANGES['imagenet'], 'interior') == {0.35, 0.65}


# ------------------------------------------------------- Algo 2, synthetic
def synthetic(lr_short, lr_long, alpha_best, log=None):
    """Concave in lr with a peak that moves down for longer training (the two
    priors of Sec. 2.4), separable in alpha; longer training scores higher."""
    def objective(lr, alpha, budget):
        if log is not None:
            log.append((lr, alpha, budget))
        peak = lr_short if budget < 1 else lr_long
        return 70 + 10 * budget - (lr - peak) ** 2 - 0.1 * math.log2(alpha / alpha_best) ** 2
    return objective


@pytest.mark.parametrize('lr_short,lr_long,alpha_best,round2,best_lr', [
    (2.6, 1.4, 0.5, [0.2, 0.8, 1.4, 2.0, 2.6], 1.4),     # ResNet50-D in Sec. 3.1
    (0.8, 0.5, 16.0, [0.2, 0.35, 0.5, 0.65, 0.8], 0.5),  # MobileNetV2 in Sec. 3.1
])
def test_algo2_probes_chooses_and_costs_what_it_prescribes(lr_short, lr_long, alpha_best,
                                                           round2, best_lr):
    calls = []
    tuner = FixNormTune()  # the paper's setup: [0.2, 3.2], K=5, T=[0.2, 1], 6 alphas
    result = tuner.run(synthetic(lr_short, lr_long, alpha_best, calls))
    round1 = [0.8, 1.4, 2.0, 2.6, 3.2]
    alphas = [1.0, 2.0, 4.0, 8.0, 16.0]
    assert calls == ([(lr, 0.5, 0.2) for lr in round1] + [(lr, 0.5, 1.0) for lr in round2]
                     + [(best_lr, a, 1.0) for a in alphas])
    assert result.lr_probes == [round1, round2]
    assert result.best_lr == best_lr and result.best_alpha == alpha_best
    assert result.best_metric == pytest.approx(80.0)
    assert result.total_cost == pytest.approx(11.0) == tuner.expected_cost
    assert [t.round for t in result.trials] == [0] * 5 + [1] * 5 + ['alpha'] * 5
    # progress counts full-budget trials only, at their cumulative cost
    cost, best = result.progress()[5]
    assert cost == pytest.approx(2.0) and best == pytest.approx(80 - (0.2 - lr_long) ** 2
                                                                 - 0.1 * math.log2(0.5 / alpha_best) ** 2)
    assert result.progress()[4][1] == -math.inf


def test_algo2_keeps_an_earlier_rounds_lr_that_the_later_round_does_not_beat():
    # line 6: lr_best only moves when the round's best beats acc_best; the upper
    # bound (line 5) moves anyway, and the alpha round uses T_{N-1}
    calls = []

    def objective(lr, alpha, budget):
        calls.append((lr, alpha, budget))
        return (90 if budget < 1 else 50) - abs(lr - 2.0) + (alpha == 2.0)
    result = FixNormTune(budgets=(0.2, 1.0), alphas=(0.5, 2.0)).run(objective)
    assert result.lr_probes[1] == [0.2, 0.65, 1.1, 1.55, 2.0]
    assert result.best_lr == 2.0 and result.best_metric == 90  # from round 0
    assert calls[-1] == (2.0, 2.0, 1.0)
    assert result.best_alpha == 0.5  # 51 < 90: alpha_best stays alpha_0


def test_failed_trials_are_recorded_never_win_and_the_search_goes_on():
    def objective(lr, alpha, budget):
        if lr == 3.2:
            raise TrialFailed('exit code 1: FloatingPointError: norm is nan', log='/x/trial.log')
        if lr == 2.0:
            return float('nan')
        return TrialOutcome(100 - (lr - 2.6) ** 2 - (budget < 1), dict(work_dir=f'/w/{lr}'))
    result = FixNormTune().run(objective)
    failed = [t for t in result.trials if t.failed]
    assert [(t.lr, t.budget) for t in failed] == [(2.0, 0.2), (3.2, 0.2), (2.0, 1.0)]
    assert failed[1].info == dict(error='exit code 1: FloatingPointError: norm is nan',
                                  log='/x/trial.log')
    assert 'non-finite metric nan' in failed[0].info['error']
    assert result.best_lr == 2.6 and result.total_cost == pytest.approx(11.0)
    assert result.trials[0].info == dict(work_dir='/w/0.8')


def test_every_lr_trial_failing_is_an_error_and_bugs_are_not_swallowed():
    def dead(lr, alpha, budget):
        raise TrialFailed('crash')
    with pytest.raises(RuntimeError, match='every lr trial failed'):
        FixNormTune(K=2, budgets=(1.0,)).run(dead)

    def buggy(lr, alpha, budget):
        raise KeyError('a bug in the objective')
    with pytest.raises(KeyError):
        FixNormTune(K=2).run(buggy)


def test_parallel_map_gives_the_same_search():
    objective = synthetic(2.6, 1.4, 4.0)
    with ThreadPoolExecutor(3) as pool:
        par = FixNormTune().run(objective, map=pool.map)
    seq = FixNormTune().run(objective)
    assert [(t.lr, t.alpha, t.budget, t.metric) for t in par.trials] == \
        [(t.lr, t.alpha, t.budget, t.metric) for t in seq.trials]


def test_argument_checks_name_the_offending_value():
    with pytest.raises(ValueError, match=r'T_i <= T_\(i\+1\)'):
        FixNormTune(budgets=(1.0, 0.2))
    with pytest.raises(ValueError, match='alphas'):
        FixNormTune(alphas=(1.0, -1.0))
    with pytest.raises(ValueError, match='lr_range'):
        FixNormTune(lr_range=(3.2, 0.2))
    assert FixNormTune.for_task('coco').lr_range == (0.005, 0.1)
    assert FixNormTune(K=4, budgets=(0.1, 0.5, 1.0), alphas=(1, 2)).expected_cost == 7.4


# ------------------------------------------------------------------ BO+WD
def test_bo_wd_same_interface_resumes_from_its_storage_and_records_failures(tmp_path):
    calls = []

    def objective(lr, wd, budget):
        calls.append((lr, wd, budget))
        if lr > 2.5:
            raise TrialFailed('diverged: training loss is nan', log='/t.log')
        return 80 - (math.log(lr) - math.log(1.0)) ** 2 - (math.log10(wd) + 4) ** 2
    storage = default_storage(str(tmp_path))
    tuner = BOWDTune(n_trials=4, sampler='gp', n_startup_trials=3, seed=1)
    result = tuner.run(objective, study=tuner.create_study(storage, 'bo-wd'))
    assert len(calls) == 4 and len(result.trials) == 4
    assert all(0.2 <= lr <= 3.2 and 1e-5 <= wd <= 5e-4 and b == 1.0 for lr, wd, b in calls)
    assert result.total_cost == pytest.approx(4.0)
    # a second run on the same storage only adds what is missing
    more = BOWDTune(n_trials=6, sampler='gp', n_startup_trials=3, seed=1)
    result = more.run(objective, study=more.create_study(storage, 'bo-wd'))
    assert len(calls) == 6 and len(result.trials) == 6
    assert [t.lr for t in result.trials] == [c[0] for c in calls]  # nothing was re-run
    ok = [t for t in result.trials if not t.failed]
    assert result.best_metric == max(t.metric for t in ok)
    for t in result.trials:
        if t.failed:
            assert t.info['error'] == 'diverged: training loss is nan'


# -------------------------------------------------- shared storage, claims
def _memoized(store, run):
    return store.memoize(run, lambda lr, a, b: trial_key(lr=lr, alpha=a, budget=b),
                         lambda lr, a, b: (dict(lr=lr, alpha=a, budget=b), {}),
                         log=lambda msg: None)


def test_two_workers_on_one_storage_run_every_trial_once(tmp_path):
    # two "nodes" replay Algo 2 against the same storage at the same time
    storage, ran, lock = default_storage(str(tmp_path)), [], threading.Lock()
    objective = synthetic(2.6, 1.4, 4.0)

    def worker(name):
        def run(lr, alpha, budget, state):
            with lock:
                ran.append((name, lr, alpha, budget))
            time.sleep(0.05)
            return TrialOutcome(objective(lr, alpha, budget), {})
        store = TrialStore(storage, 'fixnorm-tune', poll_interval=0.05)
        with ThreadPoolExecutor(2) as pool:
            return FixNormTune().run(_memoized(store, run), map=pool.map)

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(worker, ['a', 'b'])
    points = [r[1:] for r in ran]
    assert len(points) == len(set(points)) == 15  # each trial trained once, by one worker
    assert (a.best_lr, a.best_alpha, a.lr_probes) == (b.best_lr, b.best_alpha, b.lr_probes)
    assert (a.best_lr, a.best_alpha) == (1.4, 4.0)
    assert sum(t.info.get('cached', False) for t in a.trials + b.trials) == 15


def test_a_dead_worker_on_another_host_is_found_by_its_heartbeat(tmp_path):
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial
    store = TrialStore(default_storage(str(tmp_path)), 'fixnorm-tune', heartbeat_interval=1,
                       grace_period=1, poll_interval=0.2)
    key = trial_key(lr=0.8, alpha=1.0, budget=0.2)
    # a trial that a worker on node-7 claimed before it died: RUNNING, heartbeat stopped
    dead = store.storage.create_new_trial(store.study._study_id, template_trial=create_trial(
        state=TrialState.RUNNING, params=dict(lr=0.8), distributions=dict(
            lr=FloatDistribution(0.8, 0.8)), user_attrs=dict(key=key, host='node-7', pid=1)))
    store.storage.record_heartbeat(dead)
    states = []

    def run(lr, alpha, budget, state):
        states.append(state)
        return TrialOutcome(70.0, dict(work_dir='/w'))
    start = time.time()
    assert _memoized(store, run)(0.8, 1.0, 0.2).metric == 70.0
    assert states == [dict(resume=True)] and time.time() - start >= 1
    first, second = store.trials()
    assert first.state == TrialState.FAIL and 'error' not in first.user_attrs
    assert second.state == TrialState.COMPLETE and second.user_attrs['work_dir'] == '/w'
    # and now it is finished: asking again does not run it
    assert _memoized(store, run)(0.8, 1.0, 0.2).info['cached'] and len(states) == 1


# --------------------------------------------------------- budget schedules
def lr_curve(cfg, steps=None):
    """lr at every iteration of ``cfg``'s real mmengine schedulers (iteration based)."""
    from mmengine.registry import PARAM_SCHEDULERS
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    scheds = cfg['param_scheduler']
    scheds = [scheds] if isinstance(scheds, dict) else scheds
    epoch_len = cfg.get('epoch_length', 1)
    built = []
    for s in scheds:
        s = dict(s)
        if s.pop('convert_to_iter_based', False):
            cls = PARAM_SCHEDULERS.get(s.pop('type'))
            built.append(cls.build_iter_from_epoch(opt, epoch_length=epoch_len, **s))
        else:
            built.append(PARAM_SCHEDULERS.build(dict(s, optimizer=opt)))
    n = steps or cfg['train_cfg'].get('max_iters') or cfg['train_cfg']['max_epochs'] * epoch_len
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]['lr'])
        opt.step()
        for b in built:
            b.step()
    return out


def _first_peak(curve):
    return next(i for i, v in enumerate(curve) if v > max(curve) - 1e-9)


def shrunk(cfg, fraction):
    cfg = Config(cfg.to_dict() if isinstance(cfg, Config) else cfg)
    cfg.merge_from_dict(scale_schedule(cfg, fraction))
    return cfg


def test_scale_schedule_shrinks_warmup_and_cosine_of_the_toy_config():
    cfg = Config.fromfile(TOY)
    opts = scale_schedule(cfg, 0.2)
    assert opts == {'train_cfg.max_iters': 64, 'param_scheduler.0.begin': 0,
                    'param_scheduler.0.end': 6, 'param_scheduler.1.begin': 6,
                    'param_scheduler.1.end': 64, 'param_scheduler.1.T_max': 58}
    assert scale_schedule(cfg, 1.0) == {}
    full, short = lr_curve(cfg.to_dict()), lr_curve(shrunk(cfg, 0.2).to_dict())
    assert len(short) == 64
    # the same curve, compressed: peak after the warm-up, ~0 at the end
    # (mmengine's LinearLR reaches its end factor at iteration end - 1)
    assert max(short) == pytest.approx(1.0) and _first_peak(short) == 5
    for p in (0.3, 0.5, 0.8):
        assert short[round(p * 64)] == pytest.approx(full[round(p * 320)], abs=0.03)


def test_scale_schedule_moves_milestones_and_poly_ends():
    multistep = dict(  # RetinaNet of App. D.3 (mmdet's 90k schedule)
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=90000, val_interval=10000),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
            dict(type='MultiStepLR', begin=0, end=90000, by_epoch=False,
                 milestones=[60000, 80000], gamma=0.1)])
    assert scale_schedule(multistep, 0.2) == {
        'train_cfg.max_iters': 18000, 'param_scheduler.0.begin': 0,
        'param_scheduler.0.end': 100, 'param_scheduler.1.begin': 0,
        'param_scheduler.1.end': 18000, 'param_scheduler.1.milestones': [12000, 16000]}
    short = lr_curve(shrunk(multistep, 0.2).to_dict())
    assert short[11999] == pytest.approx(1.0) and short[12000] == pytest.approx(0.1)
    assert short[16000] == pytest.approx(0.01) and short[5] < 0.1 < short[60]
    poly = dict(  # mmseg's 40k poly schedule (App. D.2), a dict, not a list
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000,
                       val_begin=30000),
        param_scheduler=dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=40000,
                             by_epoch=False))
    opts = scale_schedule(poly, 0.2)
    assert opts == {'train_cfg.max_iters': 8000, 'train_cfg.val_begin': 8000,
                    'param_scheduler.begin': 0, 'param_scheduler.end': 8000}
    full, short = lr_curve(poly), lr_curve(shrunk(poly, 0.2).to_dict())
    for p in (0.25, 0.5, 0.9):
        assert short[round(p * 8000)] == pytest.approx(full[round(p * 40000)], rel=1e-3)


def test_scale_schedule_keeps_fractional_epochs_where_mmengine_converts_them():
    # the ImageNet schedule of Sec. 3: 4 warm-up epochs, cosine to epoch 120
    cfg = dict(train_cfg=dict(by_epoch=True, max_epochs=120, val_interval=1),
               param_scheduler=[
                   dict(type='LinearLR', start_factor=0.25, by_epoch=True, begin=0, end=4,
                        convert_to_iter_based=True),
                   dict(type='CosineAnnealingLR', T_max=116, by_epoch=True, begin=4, end=120,
                        convert_to_iter_based=True),
                   dict(type='MultiStepLR', by_epoch=True, milestones=[30, 90], gamma=1.0)],
               epoch_length=50)
    opts = scale_schedule(cfg, 0.2)
    assert opts['train_cfg.max_epochs'] == 24
    assert opts['param_scheduler.0.end'] == 0.8 and opts['param_scheduler.1.begin'] == 0.8
    assert opts['param_scheduler.1.T_max'] == pytest.approx(23.2)
    assert opts['param_scheduler.2.milestones'] == [6, 18]  # whole epochs: mmengine needs ints
    short = lr_curve(shrunk(cfg, 0.2).to_dict())
    assert len(short) == 24 * 50 and _first_peak(short) == 39  # 0.8 epochs of 50 iters
    with pytest.raises(ValueError, match='neither max_iters nor max_epochs'):
        scale_schedule(dict(train_cfg=dict(val_interval=1)), 0.5)


def test_one_rescaler_for_budgets_and_shrinkers():
    """FixNorm-tune's budgets (scale_schedule: flat options, the schedulers' own
    units) and the test shrinkers (rescaled_schedulers: a copy in iterations)
    share rescale_scheduler: the same positions, the same total decay."""
    from fixnorm_mm.testing.common import rescaled_schedulers
    warmup = dict(type='LinearLR', start_factor=0.25, by_epoch=True, begin=0, end=4,
                  convert_to_iter_based=True)
    decay = dict(type='ExponentialLR', gamma=0.97 ** (1 / 2.4), by_epoch=True, begin=0, end=350)
    cfg = dict(train_cfg=dict(by_epoch=True, max_epochs=350), param_scheduler=[warmup, decay])
    opts = scale_schedule(cfg, 0.2)
    assert opts['param_scheduler.0.end'] == 0.8  # mmengine converts it to iterations exactly
    assert opts['param_scheduler.1.end'] == 70
    # 70 epochs of the new gamma decay as much as 350 of the old one
    assert opts['param_scheduler.1.gamma'] ** 70 == pytest.approx(decay['gamma'] ** 350, rel=1e-9)
    # the same schedulers moved to iterations (10 an epoch), as a shrinker does
    w, e = rescaled_schedulers([warmup, decay], 0.2, iters_per_epoch=10)
    assert (w['begin'], w['end'], w['by_epoch']) == (0, 8, False)
    assert 'convert_to_iter_based' not in w and warmup['end'] == 4  # a copy
    assert (e['begin'], e['end'], e['by_epoch']) == (0, 700, False)
    assert e['gamma'] ** 700 == pytest.approx(decay['gamma'] ** 350, rel=1e-9)
    # a scheduler keeps at least one unit (budgets) or two iterations (shrinkers)
    tiny = dict(type='LinearLR', by_epoch=False, begin=0, end=3)
    assert rescale_scheduler(tiny, 0.1) == {'begin': 0, 'end': 1}
    assert rescale_scheduler(tiny, 0.1, iters_per_epoch=1, min_length=2) == {
        'begin': 0, 'end': 2, 'by_epoch': False}
    assert rescaled_schedulers(tiny, 0.1)[0]['end'] == 2
    # lists and lengths: whole units, at least 1; an end "until the end" stays
    steps = dict(type='MultiStepLR', by_epoch=False, begin=0, end=90000,
                 milestones=[60000, 80000])
    assert rescale_scheduler(steps, 0.2) == {'begin': 0, 'end': 18000,
                                             'milestones': [12000, 16000]}
    restart = dict(type='CosineRestartLR', by_epoch=False, periods=[3, 700], step_size=2)
    assert rescale_scheduler(restart, 0.1) == {'step_size': 1, 'periods': [1, 70]}
    assert rescale_scheduler(dict(type='ConstantLR', by_epoch=False, begin=10, end=int(1e9)),
                             0.5) == {'begin': 5}


def test_a_budget_keeps_the_warmup_absolute_on_request_and_compresses_what_follows():
    """warmup='absolute' (docs/tuning.md): the warm-up keeps its length, the
    rest of the schedule is squeezed into what is left; 'scaled' (the default)
    shrinks everything. Checked on the lr curves of mmengine's own schedulers."""
    cfg = Config.fromfile(TOY)  # 320 iterations: 32 of warm-up, cosine over 288
    assert scale_schedule(cfg, 0.2) == scale_schedule(cfg, 0.2, warmup='scaled')
    opts = scale_schedule(cfg, 0.2, warmup='absolute')
    assert opts == {'train_cfg.max_iters': 64, 'param_scheduler.0.begin': 0,
                    'param_scheduler.0.end': 32, 'param_scheduler.1.begin': 32,
                    'param_scheduler.1.end': 64, 'param_scheduler.1.T_max': 32}
    full = lr_curve(cfg.to_dict())
    short = lr_curve(_merged(cfg, opts))
    assert len(short) == 64 and short[:32] == pytest.approx(full[:32])  # the same warm-up
    assert _first_peak(short) == 31 and short[-1] < 0.01
    for k in (8, 16, 24):  # the cosine, compressed 9x after the warm-up
        assert short[32 + k] == pytest.approx(full[32 + 9 * k], abs=1e-6)

    # ImageNet (Sec. 3): 4 of 120 epochs; at 0.2 the trial warms up 4 of 24 epochs
    imagenet = dict(train_cfg=dict(by_epoch=True, max_epochs=120, val_interval=1),
                    param_scheduler=[
                        dict(type='LinearLR', start_factor=0.25, by_epoch=True, begin=0, end=4,
                             convert_to_iter_based=True),
                        dict(type='CosineAnnealingLR', T_max=116, by_epoch=True, begin=4,
                             end=120, convert_to_iter_based=True)],
                    epoch_length=50)
    opts = scale_schedule(imagenet, 0.2, warmup='absolute')
    assert (opts['param_scheduler.0.end'], opts['param_scheduler.1.begin'],
            opts['param_scheduler.1.T_max'], opts['param_scheduler.1.end']) == (4, 4, 20, 24)
    short = lr_curve(_merged(imagenet, opts))
    assert len(short) == 24 * 50 and _first_peak(short) == 199  # 4 epochs of 50 iterations

    # COCO (mmdet's 500-iteration warm-up): the steps move with the compressed part
    coco = dict(train_cfg=dict(type='IterBasedTrainLoop', max_iters=90000, val_interval=10000),
                param_scheduler=[
                    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
                    dict(type='MultiStepLR', begin=0, end=90000, by_epoch=False,
                         milestones=[60000, 80000], gamma=0.1)])
    opts = scale_schedule(coco, 0.2, warmup='absolute')
    # x -> 500 + (x - 500) * (18000 - 500) / (90000 - 500)
    assert opts['param_scheduler.0.end'] == 500
    assert opts['param_scheduler.1.milestones'] == [12134, 16045]
    short = lr_curve(_merged(coco, opts))
    assert short[499] == pytest.approx(1.0) and short[12133] == pytest.approx(1.0)
    assert short[12134] == pytest.approx(0.1) and short[16045] == pytest.approx(0.01)


def _merged(cfg, opts):
    cfg = Config(cfg.to_dict() if isinstance(cfg, Config) else cfg)
    cfg.merge_from_dict(opts)
    return cfg.to_dict()


def test_an_absolute_warmup_across_units_and_what_it_refuses():
    # iteration schedulers in an epoch loop (experiments/digits.py): the training's
    # end in iterations is where the other iteration scheduler ends
    digits = dict(train_cfg=dict(by_epoch=True, max_epochs=30), param_scheduler=[
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=8),
        dict(type='CosineAnnealingLR', by_epoch=False, begin=8, end=240, T_max=232)])
    assert scale_schedule(digits, 0.2, warmup='absolute') == {
        'train_cfg.max_epochs': 6, 'param_scheduler.0.begin': 0, 'param_scheduler.0.end': 8,
        'param_scheduler.1.begin': 8, 'param_scheduler.1.end': 48, 'param_scheduler.1.T_max': 40}
    # mmdet's epoch schedule after an iteration warm-up: the warm-up stays, the
    # epoch steps scale as with 'scaled' (the warm-up's length in epochs is unknown)
    mmdet = dict(train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=24), param_scheduler=[
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
        dict(type='MultiStepLR', by_epoch=True, begin=0, end=24, milestones=[16, 22])])
    opts = scale_schedule(mmdet, 0.5, warmup='absolute')
    assert opts['param_scheduler.0.end'] == 500
    assert opts['param_scheduler.1.milestones'] == [8, 11]
    assert {k: v for k, v in opts.items() if k != 'param_scheduler.0.end'} == {
        k: v for k, v in scale_schedule(mmdet, 0.5).items() if k != 'param_scheduler.0.end'}
    # where the post-warm-up part goes is unknown, or the warm-up does not fit
    open_end = dict(digits, param_scheduler=[
        digits['param_scheduler'][0],
        dict(type='ExponentialLR', gamma=0.99, by_epoch=False, begin=8)])
    with pytest.raises(ValueError, match=r"param_scheduler.1 \(ExponentialLR\).*unknown"):
        scale_schedule(open_end, 0.2, warmup='absolute')
    with pytest.raises(ValueError, match=r'param_scheduler.0 \(LinearLR\).*does not fit'):
        scale_schedule(Config.fromfile(TOY), 0.1, warmup='absolute')  # 32 of 32 iterations
    with pytest.raises(ValueError, match="warmup must be one of"):
        scale_schedule(digits, 0.2, warmup='kept')
    with pytest.raises(ValueError, match="warmup must be one of"):
        TrainingLauncher(TOY, warmup='kept')
    assert TrainingLauncher(TOY, warmup='absolute').schedule_options(0.2)[
        'param_scheduler.0.end'] == 32


def test_a_shrunk_warmup_keeps_two_iterations_so_that_it_ever_steps():
    """At budget 0.02 the toy's 32-iteration warm-up would be 0.64 -> 1 iteration;
    mmengine's LinearLR never steps within one and the trial would run at
    start_factor x lr throughout."""
    cfg = Config.fromfile(TOY)
    opts = scale_schedule(cfg, 0.02)
    assert (opts['train_cfg.max_iters'], opts['param_scheduler.0.end']) == (6, 2)
    short = lr_curve(_merged(cfg, opts))
    assert short[0] == pytest.approx(0.1) and max(short) == pytest.approx(1.0, abs=0.05)


def test_a_sweep_with_the_other_warmup_rule_does_not_reuse_shortened_trials(tmp_path,
                                                                           monkeypatch):
    """Trials are keyed by (lr, alpha, budget) in the sweep's storage; a shortened
    trial with warmup='absolute' is another training and gets its own key and
    work_dir; a full-length one is the same training under either rule."""
    ran = []

    def fake_run(self, work_dir, options, resume=False):
        ran.append((osp.basename(work_dir), options.get('param_scheduler.0.end')))
        return TrialOutcome(-abs(options['optim_wrapper.optimizer.lr'] - 1.5))

    monkeypatch.setattr(TrainingLauncher, 'run', fake_run)
    storage = default_storage(str(tmp_path))
    tuner = FixNormTune((0.2, 3.2), K=2, budgets=(0.2, 1.0), alphas=(0.5,))
    for rule in ('scaled', 'absolute'):
        run_fixnorm_tune(tuner, TrainingLauncher(TOY, warmup=rule), str(tmp_path), storage,
                         alpha_key='model.alpha', log=lambda msg: None)
    short = [(d, end) for d, end in ran if 'budget0.2' in d]
    assert short == [('lr1.7_alpha0.5_budget0.2', 6), ('lr3.2_alpha0.5_budget0.2', 6),
                     ('lr1.7_alpha0.5_budget0.2_warmup-absolute', 32),
                     ('lr3.2_alpha0.5_budget0.2_warmup-absolute', 32)]
    assert len([d for d, _ in ran if 'budget1' in d]) == 2  # run once, shared by both rules


@pytest.mark.parametrize('path,alpha_key,expected', [
    # App. D.3: 90k iterations, x0.1 at 60k and 80k, 500 warm-up iterations
    ('coco/retinanet_r50_fpn_fixnorm_90k_coco.py', 'model.bbox_head.alpha',
     {'train_cfg.max_iters': 18000, 'param_scheduler.0.end': 100,
      'param_scheduler.1.end': 18000, 'param_scheduler.1.milestones': [12000, 16000]}),
    # App. D.2: 40k iterations, poly
    ('cityscapes/baseoc_r101-d8_fixnorm-tune_4xb2-40k_cityscapes-769x769.py',
     'model.decode_head.classifier_cfg.alpha',
     {'train_cfg.max_iters': 8000, 'param_scheduler.0.end': 8000}),
])
def test_paper_sweep_configs_shrink_and_name_the_fixnorm_alpha(path, alpha_key, expected):
    path = osp.join(ROOT, 'configs', path)
    if not osp.exists(path):
        pytest.skip(f'{path} not present')
    cfg = Config.fromfile(path)
    # RetinaNet's focal loss has an alpha (0.25) too: it is not FixNorm's
    assert find_key(cfg, 'alpha') == alpha_key
    opts = scale_schedule(cfg, 0.2)
    assert {k: opts[k] for k in expected} == expected


def test_find_key_asks_when_it_cannot_tell():
    cfg = Config(dict(model=dict(head=dict(alpha=1.0), neck=dict(alpha=2.0),
                                 loss=dict(type='FocalLoss', alpha=0.25))))
    with pytest.raises(ValueError, match='--alpha-key'):
        find_key(cfg, 'alpha')
    assert find_key(Config.fromfile(TOY), 'alpha') == 'model.alpha'


# ------------------------------------------------------------ trial runner
def test_trial_commands_for_gpus_processes_and_slurm(monkeypatch, tmp_path):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0,1,2,3')
    launcher = TrainingLauncher(TOY, gpus_per_trial=2)
    assert launcher.parallel == 2  # 4 GPUs, 2 per trial
    slots = [launcher._slots.get() for _ in range(2)]
    assert slots == [['0', '1'], ['2', '3']]
    argv, env = launcher.command(str(tmp_path), {'optim_wrapper.optimizer.lr': 0.5},
                                 resume=True, gpus=slots[1])
    # torchrun runs the installed package's module, not a file of a source tree
    assert argv[:3] == [sys.executable, '-m', 'torch.distributed.run']
    assert '--nproc_per_node=2' in argv and env['CUDA_VISIBLE_DEVICES'] == '2,3'
    i = argv.index('-m', 3)
    assert argv[i + 1:i + 3] == ['fixnorm_mm.tools.train', launcher.config]
    assert argv[i + 3:i + 7] == ['--work-dir', str(tmp_path), '--launcher', 'pytorch']
    assert argv[-3:] == ['--cfg-options', 'optim_wrapper.optimizer.lr=0.5', '--resume']
    assert int(next(a for a in argv if a.startswith('--master_port=')).split('=')[1]) > 0
    assert not any('tools/' in a or a.endswith(('.py', '.sh')) for a in argv
                   if a != launcher.config)
    with pytest.raises(ValueError, match='shows 4 GPU'):
        TrainingLauncher(TOY, gpus_per_trial=8)
    slurm = TrainingLauncher(TOY, launcher='slurm', partition='gpu', gpus_per_trial=16,
                             parallel=3, srun_args='--quotatype=auto')
    argv, env = slurm.command('/w/t1', {'model.alpha': 2.0}, resume=False, gpus=None)
    assert argv[:4] == ['srun', '-p', 'gpu', '--job-name=tune-t1']
    assert {'--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
            '--quotatype=auto'} <= set(argv)
    i = argv.index(sys.executable)
    assert argv[i:] == [sys.executable, '-u', '-m', 'fixnorm_mm.tools.train', slurm.config,
                        '--work-dir=/w/t1', '--launcher=slurm', '--cfg-options',
                        'model.alpha=2.0']
    assert slurm.parallel == 3
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    cpu = TrainingLauncher(TOY, parallel=2, cfg_options={'train_cfg.max_iters': 64})
    argv, env = cpu.command('/w', {'train_cfg.max_iters': 32}, resume=False,
                            gpus=cpu._slots.get())
    assert argv[:5] == [sys.executable, '-m', 'fixnorm_mm.tools.train', cpu.config, '--work-dir']
    assert cpu.gpus_per_trial == 0
    assert argv[-2:] == ['--cfg-options', 'train_cfg.max_iters=32']  # the trial's value wins
    # the user's overrides shape the schedule a budget shrinks
    assert cpu.schedule_options(0.5)['train_cfg.max_iters'] == 32
    assert format_option([(1, 2), (3, 4)]) == '[(1,2),(3,4)]' and format_option(1e-05) == '1e-05'


def test_metric_and_divergence_are_read_from_the_runs_own_log(tmp_path):
    old, new = tmp_path / '20240101_000000' / 'vis_data', tmp_path / '20240102_000000' / 'vis_data'
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    (old / 'scalars.json').write_text('{"coco/bbox_mAP": 0.5, "step": 10}\n')
    (new / 'scalars.json').write_text(
        '{"lr": 0.1, "loss": 2.3, "step": 10}\n{"coco/bbox_mAP": 0.31, "coco/bbox_mAP_50": 0.5,'
        ' "data_time": 0.1, "step": 20}\n{"lr": 0.1, "loss": 2.0, "step": 30}\n')
    assert read_metric(str(tmp_path)) == (0.31, 'coco/bbox_mAP')  # newest run, last eval
    assert read_metric(str(tmp_path), 'coco/bbox_mAP_50') == (0.5, 'coco/bbox_mAP_50')
    # a metric the runs do not log is a mistake of the sweep, not of the trial
    with pytest.raises(SweepConfigError, match=r"--metric 'mIoU' is not a metric the runs log; "
                       r"the evaluation logged \['coco/bbox_mAP', 'coco/bbox_mAP_50', "
                       r"'data_time'\]"):
        read_metric(str(tmp_path), 'mIoU')
    assert training_divergence(str(tmp_path)) is None
    with open(new / 'scalars.json', 'a') as f:
        f.write('{"lr": 0.1, "loss": NaN, "step": 40}\n')
    assert training_divergence(str(tmp_path)) == 'training loss is nan at iteration 40'


# ------------------------------------------------------------ the real tool
def _finished(storage):
    import optuna
    try:
        study = optuna.load_study(study_name='fixnorm-tune', storage=storage)
        trials = study.get_trials(deepcopy=False)
    except Exception:  # the tool has not created it yet, or holds the file lock
        return [], []
    done = [t for t in trials if t.state.name == 'COMPLETE'
            or (t.state.name == 'FAIL' and 'error' in t.user_attrs)]
    return done, trials


def test_tool_runs_parallel_trials_survives_kills_and_a_failing_trial(tmp_path):
    # the toy task with 40 iterations at T_max; a NaN is injected into every
    # training whose lr exceeds 1.0, which FixNorm's finite-norm check turns
    # into a crash (FloatingPointError), as for a real divergence; two trainings
    # of round 1 SIGKILL themselves once, as the OOM killer would: lr 0.85
    # before iteration 25, lr 0.1 in the middle of saving its iteration-20
    # checkpoint
    config = tmp_path / 'toy_fault.py'
    config.write_text(
        "_base_ = 'fixnorm_mm::toy/toy_fixnorm.py'\n"
        "custom_hooks = [dict(type='ToyNaNHook', lr_above=1.0),\n"
        "                dict(type='ToyKillHook', at_iter=25, lr=0.85, alpha=1.0, max_iters=40),\n"
        "                dict(type='ToyKillHook', at_iter=20, lr=0.1, alpha=1.0, max_iters=40,\n"
        "                     during_save=True)]\n")
    opts = scale_schedule(Config.fromfile(str(config)), 0.125)
    opts.update({'val_dataloader.dataset.num_samples': 256,
                 'default_hooks.checkpoint.interval': 10,
                 'default_hooks.logger.interval': 5})
    work_dir = tmp_path / 'sweep'
    cmd = [sys.executable, TOOL, str(config), '--work-dir', str(work_dir), '--lr-range', '0.1',
           '1.6', '--k', '2', '--budgets', '0.5', '1', '--alphas', '1', '4', '--parallel', '2',
           '--poll', '0.5', '--cfg-options'] + [f'{k}={format_option(v)}' for k, v in opts.items()]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    storage = default_storage(str(work_dir))
    with open(tmp_path / 'first.log', 'w') as out:
        first = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
        deadline = time.time() + 300
        done, trials = [], []
        while len(done) < 2:  # round 0: two trials side by side, one of them fails
            assert first.poll() is None, (tmp_path / 'first.log').read_text()[-3000:]
            assert time.time() < deadline, 'round 0 did not finish in time'
            time.sleep(1)
            done, trials = _finished(storage)
        os.killpg(first.pid, signal.SIGKILL)  # the sweep and its trainings, mid-sweep
        first.wait()
    before = {t.user_attrs['key']: t.number for t in done}
    assert set(before) == {'lr0.85_alpha1_budget0.5', 'lr1.6_alpha1_budget0.5'}
    a, b = done
    assert a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete

    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    result = load_result(str(work_dir / 'fixnorm-tune_result.json'))
    # Algo 2 on real trainings: round 0 (0.1, 1.6] -> {0.85, 1.6}; 1.6 failed, so
    # round 1 probes [0.1, 0.85] -> {0.1, 0.85}; alpha 4 at lr_best
    assert result.lr_probes == [[0.85, 1.6], [0.1, 0.85]]
    assert [(t.lr, t.alpha, t.budget) for t in result.trials] == [
        (0.85, 1.0, 0.5), (1.6, 1.0, 0.5), (0.1, 1.0, 1.0), (0.85, 1.0, 1.0),
        (result.best_lr, 4.0, 1.0)]
    assert result.total_cost == pytest.approx(4.0)
    failed = [t for t in result.trials if t.failed]
    assert [t.lr for t in failed] == [1.6]
    assert 'FloatingPointError' in failed[0].info['error']
    assert 'FloatingPointError' in open(failed[0].info['log']).read()
    ok = [t for t in result.trials if not t.failed]
    assert all(0 <= t.metric <= 100 for t in ok)
    lr1 = {t.lr: t.metric for t in result.trials if t.round == 1}
    assert result.best_lr == max(lr1, key=lr1.get)
    alpha1 = next(t.metric for t in result.trials if t.round == 1 and t.lr == result.best_lr)
    alpha4 = result.trials[-1].metric
    assert result.best_alpha == (4.0 if alpha4 > alpha1 else 1.0)
    # a budget shrinks the whole schedule: 20 of 40 iterations, warm-up and
    # cosine decay included (the lr the run itself logged)
    for t in ok:
        assert osp.exists(osp.join(t.info['work_dir'], f'iter_{round(40 * t.budget)}.pth'))
        lrs = {}
        for path in sorted(glob.glob(osp.join(t.info['work_dir'], '*', 'vis_data',
                                              'scalars.json'))):
            lrs.update({r['step']: r['lr'] for r in map(json.loads, open(path)) if 'lr' in r})
        end = round(40 * t.budget)
        assert max(lrs) == end and lrs[end] < 0.02 * t.lr
        # step 20 of a 40-iteration run: cosine from 4 to 40 at iteration 19,
        # (1 + cos(pi * 15 / 36)) / 2 = 0.63; the unshrunk 320-iteration
        # schedule would still be at 1.0
        if t.budget == 1:
            assert lrs[20] == pytest.approx(0.629 * t.lr, rel=0.01)
        else:  # 20 iterations: warm-up to 2, cosine to 20
            assert lrs[10] == pytest.approx((1 + math.cos(math.pi * 7 / 18)) / 2 * t.lr,
                                            rel=0.01)
    # nothing that finished before the kill ran again
    done, trials = _finished(storage)
    assert len(done) == 5 and len({t.user_attrs['key'] for t in done}) == 5
    for t in done:
        key = t.user_attrs['key']
        if key in before:
            assert t.number == before[key]
            log = open(t.user_attrs['log']).read()
            assert log.count(' started: ') + log.count(' resumed: ') == 1, key
    assert second.stdout.count('(finished before)') == 2
    # trials the kill interrupted were failed without an error and run again
    interrupted = [t for t in trials if t.state.name == 'FAIL' and 'error' not in t.user_attrs]
    assert all(t.user_attrs['key'] in {d.user_attrs['key'] for d in done} for t in interrupted)
    # the killed trainings were run again at once (--retries 1), from their newest
    # complete checkpoint, and their failed attempts are not results
    killed = {t.user_attrs['key']: t.user_attrs for t in trials if 'interrupted' in t.user_attrs}
    assert killed['lr0.85_alpha1_budget1']['interrupted'] == 'killed by SIGKILL'
    assert killed['lr0.1_alpha1_budget1']['interrupted'] == \
        'killed by SIGKILL while saving a checkpoint'
    assert {a['signal'] for a in killed.values()} == {'SIGKILL'}
    for key, resumed_from in (('lr0.85_alpha1_budget1', 'iter_20.pth'),
                              ('lr0.1_alpha1_budget1', 'iter_10.pth')):
        assert f'[fixnorm-tune] {key}: {killed[key]["interrupted"]}; running it again (1/1)' \
            in second.stdout
        log = open(osp.join(work_dir, 'trials', 'fixnorm-tune', key, 'trial.log')).read()
        last = log.rsplit('\n# ', 1)[1]
        assert last.split(': ')[0].endswith('resumed') and resumed_from in last, key
    # ... and gave what a training that was never killed gives
    reference = TrainingLauncher(TOY, cfg_options=opts).run(
        str(tmp_path / 'reference'), {'optim_wrapper.optimizer.lr': 0.85, 'model.alpha': 1.0})
    assert reference.metric == next(t.metric for t in result.trials
                                    if (t.lr, t.alpha, t.budget) == (0.85, 1.0, 1.0))
    for name in ('fixnorm-tune_trials.md', 'fixnorm-tune_trials.csv', 'fixnorm-tune.png'):
        assert (work_dir / name).stat().st_size > 0
    table = (work_dir / 'fixnorm-tune_trials.md').read_text()
    assert 'failed: exit code 1: FloatingPointError' in table and 'total cost 4 T_max' in table
