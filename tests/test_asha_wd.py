"""ASHA+WD, the early-stopping baseline (TPE + Optuna's pruner), and the search
spaces of Adam-family configs.

The tuner is checked in-process on synthetic learning curves (what a pruned
trial costs, what counts as best, stopping, an interrupted point run again);
the tool runs real toy trainings of configs/toy/toy_wd_adamw.py whose
processes report to the storage and exit when pruned, one of them failing
and one killed mid-training, and a killed sweep is resumed.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from fixnorm_mm.tuning import (ADAM_LR_RANGE, ADAMW_WD_RANGE, PAPER_LR_RANGES, PAPER_WD_RANGE,
                               ASHAWDTune, SweepConfigError, SweepInterrupted, TrialInterrupted,
                               TrialOutcome, TrialPruned, TrialStore, default_storage,
                               load_result, search_space)
from fixnorm_mm.tuning.launcher import format_option
from fixnorm_mm.tuning.sweep import evaluation_steps

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(ROOT, 'tools', 'fixnorm_tune.py')
TOY = osp.join(ROOT, 'configs', 'toy', 'toy_fixnorm.py')
TOY_WD = osp.join(ROOT, 'configs', 'toy', 'toy_wd.py')
TOY_ADAMW = osp.join(ROOT, 'configs', 'toy', 'toy_fixnorm_adamw.py')
TOY_WD_ADAMW = osp.join(ROOT, 'configs', 'toy', 'toy_wd_adamw.py')


# ------------------------------------------------------------ search spaces
def test_the_search_space_follows_the_optimizer_and_given_values_win():
    sgd = search_space(Config.fromfile(TOY))
    assert (sgd.optimizer, sgd.lr_scale, sgd.lr_range, sgd.wd_range) == (
        'SGD', 'linear', PAPER_LR_RANGES['imagenet'], PAPER_WD_RANGE)
    assert search_space(Config.fromfile(TOY), task='coco').lr_range == (0.005, 0.1)
    adamw = search_space(Config.fromfile(TOY_ADAMW), task='coco')  # the task is SGD's
    assert (adamw.optimizer, adamw.lr_scale, adamw.lr_range, adamw.wd_range) == (
        'AdamW', 'log', ADAM_LR_RANGE, ADAMW_WD_RANGE)
    assert 'lr (1e-05, 0.01), log probes (AdamW is of the Adam family' in \
        adamw.describe('fixnorm-tune')
    # Adam with coupled (L2) decay: log lr, the paper's decay range
    adam = dict(optim_wrapper=dict(optimizer=dict(type='Adam', lr=1e-3)))
    a = search_space(adam)
    assert (a.lr_scale, a.lr_range, a.wd_range) == ('log', ADAM_LR_RANGE, PAPER_WD_RANGE)
    for name in ('NAdam', 'RAdam', 'mmengine.AdamW', 'Lion', 'Lamb'):
        assert search_space(dict(optim_wrapper=dict(optimizer=dict(type=name)))).lr_scale == 'log'
    # given values win; a bad one names its option
    given = search_space(Config.fromfile(TOY_WD_ADAMW), lr_range=(0.1, 1.0), lr_scale='linear',
                         wd_range=(1e-3, 1e-2))
    assert (given.lr_scale, given.lr_range, given.wd_range, given.why) == (
        'linear', (0.1, 1.0), (1e-3, 1e-2), {})
    with pytest.raises(ValueError, match=r'--lr-scale: a log-scale lr range must start above 0'):
        search_space(Config.fromfile(TOY), lr_range=(0, 1), lr_scale='log')
    with pytest.raises(ValueError, match=r"--lr-scale must be 'auto' or one of"):
        search_space(Config.fromfile(TOY), lr_scale='exp')


# ------------------------------------------------------- ASHA+WD in-process
def curves(calls, kill=()):
    """``objective(lr, wd, trial)``: a 4-evaluation training whose val
    accuracy is 90 - 10 |log10(lr / 1e-2)| - |log10(wd / 1e-3)| times
    step / 4; stops when pruned, raises TrialInterrupted once at ``kill``."""
    import math

    def objective(lr, wd, trial):
        calls.append((trial.number, lr, wd, trial.user_attrs.get('retry_of')))
        final = 90 - 10 * abs(math.log10(lr / 1e-2)) - abs(math.log10(wd / 1e-3))
        reported = next(t for t in trial.study.get_trials(deepcopy=False)
                        if t.number == trial.number).intermediate_values
        for step in range(1, 5):
            if step in reported:
                continue  # reported by the interrupted attempt: resume after it
            if (trial.number, step) in kill:
                raise TrialInterrupted('killed by SIGKILL', signal='SIGKILL')
            value = final * step / 4
            trial.report(value, step)
            if step < 4 and trial.should_prune():
                raise TrialPruned(step / 4, value, step)
        return TrialOutcome(final, dict(work_dir=f'/w/{trial.number}'))
    return objective


def test_asha_wd_prunes_counts_what_a_trial_ran_and_only_full_trainings_win():
    calls = []
    tuner = ASHAWDTune(lr_range=(1e-4, 1.0), wd_range=(1e-5, 1e-1), n_trials=30,
                       min_resource=1, max_resource=4, reduction_factor=2, seed=0)
    result = tuner.run(curves(calls))
    assert len(result.trials) == 30 == len(calls)
    pruned = [t for t in result.trials if t.pruned]
    full = [t for t in result.trials if not t.pruned]
    assert pruned and full and not any(t.failed for t in result.trials)
    for t in pruned:  # cost: the evaluations it reached, of 4; the metric: its last one
        assert t.budget == t.info['pruned_step'] / 4 < 1 and t.cost == t.budget
        assert t.metric == pytest.approx(t.info['metric'])
    assert all(t.budget == 1 for t in full)
    assert result.total_cost == pytest.approx(sum(t.budget for t in result.trials))
    assert result.total_cost < 30
    # the best is the best full training, even where a pruned trial's number is higher
    assert result.best_metric == max(t.metric for t in full)
    assert result.progress()[-1] == (pytest.approx(result.total_cost), result.best_metric)
    # a cost limit stops it: the trials finished when the limit was reached
    capped = ASHAWDTune(lr_range=(1e-4, 1.0), wd_range=(1e-5, 1e-1), n_trials=100,
                        max_cost=3.0, min_resource=1, max_resource=4, seed=0).run(curves([]))
    assert 3.0 <= capped.total_cost < 4.0 + 1e-9
    # Optuna's Hyperband pruner on the same objective: brackets, the same bookkeeping
    hyperband = ASHAWDTune(lr_range=(1e-4, 1.0), wd_range=(1e-5, 1e-1), n_trials=30,
                           pruner='hyperband', min_resource=1, max_resource=4, seed=0)
    assert hyperband.pruner_spec() == dict(type='hyperband', min_resource=1, max_resource=4,
                                           reduction_factor=3)
    result = hyperband.run(curves([]))
    assert any(t.pruned for t in result.trials) and not all(t.pruned for t in result.trials)
    assert result.total_cost == pytest.approx(sum(t.budget for t in result.trials))
    with pytest.raises(ValueError, match=r'pruner \(--pruner\) must be one of'):
        ASHAWDTune(pruner='median')
    with pytest.raises(ValueError, match=r'reduction_factor \(--reduction-factor\) must be an '
                                         r'int >= 2'):
        ASHAWDTune(reduction_factor=1)
    with pytest.raises(ValueError, match='no trial could be stopped early'):
        ASHAWDTune(min_resource=4, max_resource=4)


def test_an_interrupted_point_runs_again_with_what_it_reported_and_a_dead_workers_too(
        tmp_path):
    from optuna.trial import TrialState
    calls = []
    storage = default_storage(str(tmp_path))
    # the first rung at the third evaluation: nothing is pruned before trial 1 is killed
    tuner = ASHAWDTune(lr_range=(1e-4, 1.0), wd_range=(1e-5, 1e-1), n_trials=4,
                       min_resource=3, max_resource=4, seed=0)
    study = tuner.create_study(storage, 'asha-wd')
    # trial 1 is killed after its second evaluation; --retries 0 stops the sweep
    with pytest.raises(SweepInterrupted, match=r'ASHA\+WD: 1 trials ended without a result'):
        tuner.run(curves(calls, kill={(1, 3)}), study=study, retries=0)
    killed = study.trials[1]
    assert killed.state == TrialState.FAIL and killed.user_attrs['interrupted'] == \
        'killed by SIGKILL' and 'error' not in killed.user_attrs
    retry = study.trials[2]
    assert retry.state == TrialState.WAITING and retry.user_attrs == dict(retry_of=1)
    # the rerun takes it first, with the same point and what the killed attempt reported
    calls.clear()
    result = tuner.run(curves(calls), study=tuner.create_study(storage, 'asha-wd'))
    assert calls[0] == (2, killed.params['lr'], killed.params['weight_decay'], 1)
    retried = study.trials[2]
    assert set(killed.intermediate_values) == {1, 2}
    # resumed after step 2: it reported from step 3 on (and then finished or was pruned)
    assert retried.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert {1, 2, 3} <= set(retried.intermediate_values)
    assert all(retried.intermediate_values[s] == v for s, v in killed.intermediate_values.items())
    assert [t.round for t in result.trials] == [0, 2, 3, 4]  # the killed attempt is no result
    # a worker that died leaves its trial RUNNING: reaped, then its point is enqueued again
    store = TrialStore(storage, 'asha-wd')
    dead = store.storage.create_new_trial(store.study_id)
    store.storage.set_trial_param(dead, 'lr', 0.05, study.trials[0].distributions['lr'])
    store.storage.set_trial_param(dead, 'weight_decay', 1e-3,
                                  study.trials[0].distributions['weight_decay'])
    store.storage.set_trial_user_attr(dead, 'host', store.owner_attrs()['host'])
    store.storage.set_trial_user_attr(dead, 'pid', 2 ** 22 + 12345)  # no such process
    assert store.reap_dead() == [5]
    assert tuner.enqueue_retries(store.study) == [5] and tuner.enqueue_retries(store.study) == []
    assert [t.user_attrs for t in store.trials(states=(TrialState.WAITING,))] == [
        dict(retry_of=5)]
    calls.clear()
    tuner.n_trials = 5
    tuner.run(curves(calls), study=tuner.create_study(storage, 'asha-wd'))
    assert calls == [(6, 0.05, 1e-3, 5)]  # the next trial is that point


def test_asha_wd_needs_a_config_that_evaluates_before_the_end():
    cfg = Config.fromfile(TOY_WD)  # 320 iterations, one evaluation at 320
    with pytest.raises(SweepConfigError, match=r'evaluates only at the end of training '
                       r'\(train_cfg.val_interval=320, val_begin=1, max_iters=320\).*'
                       r'--cfg-options train_cfg.val_interval=80'):
        evaluation_steps(cfg)
    cfg.merge_from_dict({'train_cfg.val_interval': 80})
    assert evaluation_steps(cfg) == (80, 320, 'iteration')
    epochs = dict(train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=12, val_begin=3),
                  val_dataloader=dict(), val_cfg=dict())
    assert evaluation_steps(epochs) == (3, 12, 'epoch')


@pytest.mark.parametrize('argv,message', [
    (['--sampler', 'gp'], r'--sampler gp: asha-wd samples with TPE'),
    (['--reduction-factor', '1'], r'reduction_factor \(--reduction-factor\) must be an int'),
    (['--max-cost', '0'], r'max_cost \(--max-cost\) must be a number > 0'),
])
def test_the_tool_names_a_bad_asha_option(tmp_path, capsys, argv, message):
    import re

    from fixnorm_mm.tools.tune import main
    assert main([TOY_WD, '--method', 'asha-wd', '--work-dir', str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('fixnorm-tune: error: ') and re.search(message, err), err


def test_the_tool_refuses_asha_on_a_fixnorm_config_and_a_single_evaluation(tmp_path, capsys):
    from fixnorm_mm.tools.tune import main
    assert main([TOY, '--method', 'asha-wd', '--work-dir', str(tmp_path)]) == 2
    assert 'ASHA+WD tunes weight-decay training' in capsys.readouterr().err
    assert main([TOY_WD, '--method', 'asha-wd', '--work-dir', str(tmp_path)]) == 2
    assert 'evaluates only at the end of training' in capsys.readouterr().err


def test_help_lists_the_early_stopping_method(capsys):
    from fixnorm_mm.tools.tune import parse_args
    with pytest.raises(SystemExit):
        parse_args(['--help'])
    out = capsys.readouterr().out
    assert out.startswith('usage: fixnorm-tune') and '{fixnorm-tune,bo-wd,asha-wd}' in out
    assert '--pruner {sha,hyperband}' in out and '--lr-scale {auto,linear,log}' in out


# ------------------------------------------------------- the tool, real trainings
def _toy_options(max_iters=32, val_interval=8):
    """The toy schedule shrunk to ``max_iters`` (one pass over its 1024 images
    at 32), an evaluation every ``val_interval`` iterations on 256 images."""
    from fixnorm_mm.tuning import scale_schedule
    opts = scale_schedule(Config.fromfile(TOY_WD_ADAMW), max_iters / 320)
    opts.update({'train_cfg.val_interval': val_interval,
                 'val_dataloader.dataset.num_samples': 256,
                 'default_hooks.checkpoint.interval': val_interval,
                 'default_hooks.logger.interval': 4})
    return [f'{k}={format_option(v)}' for k, v in opts.items()]


def test_asha_tool_prunes_real_trainings_keeps_failures_and_resumes_kills(tmp_path):
    """Three points enqueued before the sweep, one slot, 32 iterations evaluated
    at 16 and 32 (the pruner's one rung at 16): lr 0.05 turns NaN from its
    first iteration (ToyNaNHook; weight-decay training goes on with a NaN
    loss: a failure; as the first trial at its rung it is not pruned), lr 1e-2
    is SIGKILLed once before iteration 20 (after its checkpoint at 16), lr 1e-5
    learns nothing and is pruned at its first evaluation. --retries 0: the
    kill stops the sweep (exit 3); the same command resumes the killed point
    from its checkpoint and finishes."""
    import optuna
    config = tmp_path / 'toy_asha.py'
    config.write_text(
        f"_base_ = {TOY_WD_ADAMW!r}\n"
        "custom_hooks = [dict(type='ToyNaNHook', lr_above=0.03),\n"
        "                dict(type='ToyKillHook', at_iter=20, lr=0.01)]\n")
    work_dir = tmp_path / 'sweep'
    work_dir.mkdir()
    storage = default_storage(str(work_dir))
    tuner = ASHAWDTune(lr_range=(1e-5, 0.1), wd_range=ADAMW_WD_RANGE)
    study = tuner.create_study(storage, 'asha-wd')
    for lr in (0.05, 0.01, 1e-5):
        study.enqueue_trial(dict(lr=lr, weight_decay=0.05))
    cmd = [sys.executable, TOOL, str(config), '--method', 'asha-wd', '--work-dir',
           str(work_dir), '--lr-range', '1e-5', '0.1', '--n-trials', '3', '--parallel', '1',
           '--retries', '0', '--cfg-options'] + _toy_options(val_interval=16)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 3, first.stdout[-3000:] + first.stderr[-3000:]
    assert 'killed by SIGKILL' in first.stderr and 'run the same command again' in first.stderr
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    trials = optuna.load_study(study_name='asha-wd', storage=storage).get_trials()
    nan, killed, bad, retry = trials
    # a failure: recorded with its error, run once
    assert nan.state.name == 'FAIL' and nan.user_attrs['error'].startswith(
        'diverged: training loss is nan')
    # a kill: no result, its point enqueued again; the retry resumed from iter_16
    assert killed.state.name == 'FAIL' and 'error' not in killed.user_attrs
    assert (killed.user_attrs['interrupted'], killed.user_attrs['signal']) == (
        'killed by SIGKILL', 'SIGKILL')
    assert retry.params == killed.params and retry.user_attrs['retry_of'] == killed.number
    assert retry.state.name == 'COMPLETE' and retry.user_attrs['budget'] == 1.0
    assert set(killed.intermediate_values) == {16}
    assert set(retry.intermediate_values) == {16, 32}
    log = open(retry.user_attrs['log']).read()
    headers = [line.split(': ')[0].split()[-1] for line in log.splitlines()
               if line.startswith('# ')]
    assert headers == ['started', 'resumed'] and 'iter_16.pth' in log.rsplit('\n# ', 1)[1]
    # pruned at its first evaluation: the process stopped there, with its own status
    assert bad.state.name == 'PRUNED' and set(bad.intermediate_values) == {16}
    assert (bad.user_attrs['budget'], bad.user_attrs['pruned_step'],
            bad.user_attrs['returncode']) == (0.5, 16, 77)
    bad_dir = bad.user_attrs['work_dir']
    assert json.load(open(osp.join(bad_dir, 'pruned.json')))['step'] == 16
    assert sorted(f for f in os.listdir(bad_dir) if f.endswith('.pth')) == ['iter_16.pth']
    assert 'Iter(train) [20/32]' not in open(osp.join(bad_dir, 'trial.log')).read()
    # nothing that finished ran twice; the report counts what each trial ran
    assert open(nan.user_attrs['log']).read().count(' started: ') == 1
    result = load_result(str(work_dir / 'asha-wd_result.json'))
    assert [(t.round, t.budget, t.failed, t.pruned) for t in result.trials] == [
        (0, 1.0, True, False), (2, 0.5, False, True), (3, 1.0, False, False)]
    assert result.total_cost == 2.5 and result.best_lr == 0.01
    table = (work_dir / 'asha-wd_trials.md').read_text()
    assert '1 failed, 1 pruned), total cost 2.5 T_max' in table
    assert 'pruned at step 16: ' in table and (work_dir / 'asha-wd.png').stat().st_size > 0


def test_fixnorm_tune_probes_an_adamw_config_on_a_log_scale(tmp_path):
    """The real fixnorm-tune path on toy_fixnorm_adamw.py: the lr range and the
    log-spaced probes come from the optimizer (AdamW), and the sweep finishes.
    One round of K = 2 (two trainings side by side): the geometric middle of
    (1e-5, 1e-2] and its top, where a linear grid would probe 5e-3 and 1e-2.
    (Later rounds' log rule: tests/test_tuning.py::test_log_probes_are_algo2s_rule_in_log_lr.)"""
    work_dir = tmp_path / 'sweep'
    cmd = [sys.executable, TOOL, TOY_ADAMW, '--work-dir', str(work_dir), '--k', '2',
           '--budgets', '1', '--alphas', '1', '--parallel', '2',
           '--cfg-options'] + _toy_options(max_iters=16, val_interval=16)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert ('search space of toy_fixnorm_adamw.py: lr (1e-05, 0.01), log probes (AdamW is of '
            'the Adam family') in out.stdout
    result = load_result(str(work_dir / 'fixnorm-tune_result.json'))
    assert result.lr_probes == [pytest.approx([10 ** -3.5, 1e-2], rel=1e-9)]
    assert [(t.round, t.budget) for t in result.trials] == [(0, 1.0)] * 2
    assert result.total_cost == 2 and not any(t.failed for t in result.trials)
    assert result.best_lr in result.lr_probes[0] and result.best_alpha == 1.0
    assert 0 < result.best_metric <= 100
