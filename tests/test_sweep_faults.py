"""What a sweep does with each way a trial can end (docs/scale.md, faults table).

How a trial ended is read from its exit status, its signal and the error line
of its log (classify_exit, on logs as the tools write them); the sweeps run
real trial subprocesses of ``benchmarks/synthetic_train.py`` (the train
tool's command line, checkpoints, a metric; it sleeps instead of training
and starts in a fraction of a second), so that a killed trial dies of a real
SIGKILL and the storage, the launcher and the scheduler are the sweep's own.
tests/test_tuning.py kills real toy trainings (ToyKillHook) in the tool.
"""
import json
import os
import os.path as osp
import signal
import sqlite3
import sys
import threading

import pytest

from fixnorm_mm.tuning import (FixNormTune, SweepConfigError, SweepInterrupted,
                               TrainingLauncher, TrialStore, classify_exit, default_storage,
                               run_fixnorm_tune)
from fixnorm_mm.tuning.launcher import attempt_log
from fixnorm_mm.tuning.store import StorageError

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOY = osp.join(ROOT, 'configs', 'toy', 'toy_fixnorm.py')
BENCH = osp.join(ROOT, 'benchmarks')

TRACEBACK = '''Traceback (most recent call last):
  File "/x/fixnorm_mm/tools/train.py", line 120, in main
    runner.train()
  File "/x/mmengine/runner/loops.py", line 289, in run_iter
    self.runner.optim_wrapper.update_params(outputs['loss'])
  File "/x/fixnorm_mm/norm_control/fixnorm.py", line 88, in step
    raise FloatingPointError(msg)
FloatingPointError: FixNorm: the norm of the fixed set is not finite after optimizer step 3
'''
SAVE_TRACEBACK = '''Traceback (most recent call last):
  File "/x/mmengine/runner/loops.py", line 289, in run_iter
    self.runner.call_hook('after_train_iter', batch_idx=self._iter)
  File "/x/fixnorm_mm/engine/checkpoint_hook.py", line 70, in _save_checkpoint_with_step
    runner.save_checkpoint(
  File "/x/mmengine/runner/runner.py", line 2100, in save_checkpoint
    save_checkpoint(checkpoint, filepath)
  File "/x/torch/serialization.py", line 650, in save
    with _open_zipfile_writer(f) as opened_zipfile:
RuntimeError: PytorchStreamWriter failed writing file data/3: file write failed
'''


# ------------------------------------------------------- why a trial ended
def test_exit_status_signal_and_error_line_say_why_a_trial_ended(tmp_path):
    # SIGKILL (the OOM killer) and SIGTERM: interrupted, the log's last line is not the reason
    kind, reason, info = classify_exit(-9, '12/02 03:50:18 - mmengine - INFO - Iter(train) [20/40]')
    assert (kind, reason, info) == ('interrupted', 'killed by SIGKILL',
                                    dict(returncode=-9, signal='SIGKILL'))
    assert classify_exit(-15, '')[:2] == ('interrupted', 'killed by SIGTERM')
    # a shell's (srun's) 128 + 9
    assert classify_exit(137, 'srun: error: node3: task 0: Killed')[:2] == (
        'interrupted', 'killed by SIGKILL')
    assert classify_exit(1, 'slurmstepd: error: Detected 1 oom_kill event in StepId=1.0')[0] == \
        'interrupted'
    # killed while a checkpoint was being written: its temporary file is left
    (tmp_path / '.iter_20.pth.tmp').write_bytes(b'PK\x03\x04')
    assert classify_exit(-9, '', str(tmp_path))[1] == 'killed by SIGKILL while saving a checkpoint'
    # a Python error: a result; the exception line, even with lines after it
    log = TRACEBACK + '12/02 03:50:19 - mmengine - WARNING - a line printed at exit\n'
    kind, reason, info = classify_exit(1, log)
    assert (kind, info) == ('failed', dict(returncode=1))
    assert reason == ('exit code 1: FloatingPointError: FixNorm: the norm of the fixed set is not '
                      'finite after optimizer step 3')
    # torchrun: the child's error, not the agent's ChildFailedError; a child's signal
    torchrun = ('[rank0]: ' + TRACEBACK.replace('\n', '\n[rank0]: ') + '\nTraceback (most recent '
                'call last):\n  File "/x/torch/distributed/run.py", line 9, in main\n    run()\n'
                'torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n'
                '  exitcode  : 1 (pid: 12)\n')
    assert classify_exit(1, torchrun)[1].startswith('exit code 1: FloatingPointError: FixNorm')
    killed_child = ('torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n'
                    '  exitcode  : -9 (pid: 12)\n  error_file: <N/A>\n'
                    '  traceback : Signal 9 (SIGKILL) received by PID 12\n')
    assert classify_exit(1, killed_child)[:2] == ('interrupted', 'killed by SIGKILL')
    # an I/O error inside the checkpoint save, out of memory: interrupted, run again
    assert classify_exit(1, SAVE_TRACEBACK)[:2] == (
        'interrupted', 'died while saving a checkpoint: RuntimeError: PytorchStreamWriter '
        'failed writing file data/3: file write failed')
    oom = 'Traceback (most recent call last):\n  File "x", line 1, in f\n' \
          'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n'
    assert classify_exit(1, oom)[1].startswith('out of memory: torch.OutOfMemoryError')
    # a crash of the process itself is a result (it would crash again)
    assert classify_exit(-11, '')[:2] == ('failed', 'crashed with SIGSEGV')
    assert classify_exit(2, 'usage: train.py [-h]\n')[1] == \
        'exit code 2 with no Python error in the log'
    # only the last attempt of a trial counts
    path = tmp_path / 'trial.log'
    path.write_text('# 2026-01-01 00:00:00 started: python -m x\n' + TRACEBACK
                    + '# 2026-01-01 00:01:00 resumed: python -m x --resume\nIter [30/40]\n')
    assert attempt_log(str(path)) == 'Iter [30/40]'
    assert classify_exit(-9, attempt_log(str(path)))[1] == 'killed by SIGKILL'


# ------------------------------------------------------------- scheduling
def test_an_idle_slot_starts_the_next_rounds_independent_trial():
    # paper setup on 2 slots: round 0's fifth trial leaves a slot idle, which
    # starts round 1's lr_min trial (in every later round under the inclusive
    # rule); the search is the same as one evaluated round by round
    import time

    from fixnorm_mm.tuning import TrialScheduler

    def objective(lr, alpha, budget):
        time.sleep(0.3 if (lr, budget) == (3.2, 0.2) else 0.01)  # round 0's last is long
        return 70 + 10 * budget - (lr - (2.6 if budget < 1 else 1.4)) ** 2 - alpha / 100
    tuner = FixNormTune()
    assert tuner.known_points(0) == [] and tuner.known_points(2) == []
    assert tuner.known_points(1) == [(0.2, 0.5, 1.0)]
    assert FixNormTune(later_rounds='interior').known_points(1) == []
    with TrialScheduler(2, poll_interval=0.01) as scheduler:
        result = tuner.run(objective, map=scheduler.map, prefetch=scheduler.prefetch)
    round0 = [(lr, 0.5, 0.2) for lr in (0.8, 1.4, 2.0, 2.6, 3.2)]
    assert scheduler.started[:6] == round0 + [(0.2, 0.5, 1.0)]
    assert len(scheduler.started) == 15  # nothing ran twice
    plain = tuner.run(objective)
    assert [(t.lr, t.alpha, t.budget, t.metric) for t in result.trials] == \
        [(t.lr, t.alpha, t.budget, t.metric) for t in plain.trials]


# ------------------------------------------------------------ real sweeps
SETUP = dict(lr_range=(0.2, 3.2), K=3, budgets=(0.5, 1.0), alphas=(1.0, 4.0))
# synthetic_train's metric: round 0 {1.2, 2.2, 3.2} at 0.5 T_max, peak 2.6 -> 2.2 wins
# (74.44); round 1 {0.2, 1.2, 2.2} at T_max, peak 1.4 -> 1.2 (79.56); alpha 4 at 1.2: 79.96


def synthetic(monkeypatch, seconds=0.3, **spec):
    monkeypatch.setenv('SYNTH_TRAIN', json.dumps(dict(seconds=seconds, max_iters=320,
                                                      alpha_key='model.alpha', **spec)))
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([BENCH, ROOT,
                                                      os.environ.get('PYTHONPATH', '')]))


def sweep(work_dir, parallel=2, metric=None, log=None, **kwargs):
    launcher = TrainingLauncher(TOY, metric=metric, parallel=parallel,
                                train_module='synthetic_train')
    return run_fixnorm_tune(FixNormTune(**SETUP), launcher, str(work_dir),
                            default_storage(str(work_dir)), poll_interval=0.2,
                            log=(log.append if log is not None else (lambda msg: None)),
                            **kwargs)


def answer(result):
    return (result.best_lr, result.best_alpha, result.best_metric, result.lr_probes,
            [(t.lr, t.alpha, t.budget, t.metric, t.failed) for t in result.trials])


def stored(work_dir):
    import optuna
    study = optuna.load_study(study_name='fixnorm-tune', storage=default_storage(str(work_dir)))
    return study.get_trials(deepcopy=False)


def attempts(work_dir, key):
    with open(osp.join(str(work_dir), 'trials', 'fixnorm-tune', key, 'trial.log')) as f:
        lines = [line.split(': ')[0] for line in f if line.startswith('# ')]
    return [line.split()[-1] for line in lines]


@pytest.fixture(scope='module')
def fault_free(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        synthetic(mp)
        result = sweep(tmp_path_factory.mktemp('fault_free'))
    finally:
        mp.undo()
    assert (result.best_lr, result.best_alpha) == (1.2, 4.0)
    return answer(result)


def test_a_killed_trial_is_retried_on_rerun_and_the_answer_is_the_fault_free_one(
        tmp_path, monkeypatch, fault_free):
    # lr 1.2 at T_max (round 1, the round's winner) SIGKILLs itself after 60% of
    # its time, once, having saved a checkpoint at 30%
    synthetic(monkeypatch, kill=[[1.2, 1.0, 1.0, 0.6]])
    log = []
    with pytest.raises(SweepInterrupted, match=r'lr=1.2 alpha=1 budget=1: killed by SIGKILL\). '
                       r'The other trials are kept; run the same command again'):
        sweep(tmp_path, retries=0, log=log)
    trials = {t.user_attrs['key']: t for t in stored(tmp_path)}
    killed = trials['lr1.2_alpha1_budget1']
    assert killed.state.name == 'FAIL' and 'error' not in killed.user_attrs
    assert (killed.user_attrs['interrupted'], killed.user_attrs['signal'],
            killed.user_attrs['returncode']) == ('killed by SIGKILL', 'SIGKILL', -9)
    # the rest of the round finished and is kept; round 2 (alpha) never started
    assert {k for k, t in trials.items() if t.state.name == 'COMPLETE'} == {
        'lr1.2_alpha1_budget0.5', 'lr2.2_alpha1_budget0.5', 'lr3.2_alpha1_budget0.5',
        'lr0.2_alpha1_budget1', 'lr2.2_alpha1_budget1'}
    # the rerun retries it from its checkpoint and re-runs nothing else
    log = []
    result = sweep(tmp_path, retries=0, log=log)
    assert answer(result) == fault_free
    assert attempts(tmp_path, 'lr1.2_alpha1_budget1') == ['started', 'resumed']
    assert sum('starting' in m or 'resuming' in m for m in log) == 2  # it and alpha 4
    assert sum(t.info.get('cached', False) for t in result.trials) == 5


def test_a_trial_killed_once_is_retried_within_the_sweep(tmp_path, monkeypatch, fault_free):
    synthetic(monkeypatch, kill=[[2.2, 1.0, 0.5, 0.5]])
    log = []
    result = sweep(tmp_path, log=log)  # retries=1 (default)
    assert answer(result) == fault_free
    assert '[fixnorm-tune] lr2.2_alpha1_budget0.5: killed by SIGKILL; running it again (1/1), ' \
        'from its newest complete checkpoint' in log
    assert attempts(tmp_path, 'lr2.2_alpha1_budget0.5') == ['started', 'resumed']


def test_deterministic_failures_stay_failed_and_mistakes_every_trial_hits_are_not_kept(
        tmp_path, monkeypatch, fault_free):
    # a misspelt --lr-key: refused before anything runs
    synthetic(monkeypatch)
    with pytest.raises(SweepConfigError, match=r"--lr-key 'optim_wrapper.optimizer.lrr' is not a "
                       r"key of .*optim_wrapper.optimizer has \['lr', 'momentum'"):
        sweep(tmp_path, lr_key='optim_wrapper.optimizer.lrr')
    assert not osp.exists(tmp_path / 'trials')
    # a misspelt --metric: the sweep stops when the first trial finishes, and the
    # other running trial is stopped; neither is kept as a result
    with pytest.raises(SweepConfigError, match=r"--metric 'acuracy/top1' is not a metric the runs "
                       r"log; the evaluation logged \['accuracy/top1'\]"):
        sweep(tmp_path, metric='acuracy/top1')
    trials = stored(tmp_path)
    assert trials and all(t.state.name == 'FAIL' and 'error' not in t.user_attrs
                          for t in trials)
    assert len(trials) <= 3  # the first round's trials at most, nothing after them
    # the corrected command trains (its first trial resumes its finished run)
    # and gives the fault-free answer
    assert answer(sweep(tmp_path, metric='accuracy/top1')) == fault_free
    # a diverging trial is a result: stored with its error, not run again
    synthetic(monkeypatch, fail_above=3.0)
    work = tmp_path / 'diverging'
    first = sweep(work)
    failed = [t for t in first.trials if t.failed]
    assert [(t.lr, t.budget) for t in failed] == [(3.2, 0.5)]
    assert failed[0].info['error'] == ('exit code 1: FloatingPointError: the norm of the fixed '
                                       'set is not finite (lr=3.2)')
    assert failed[0].info['returncode'] == 1
    again = sweep(work)
    assert all(t.info.get('cached') for t in again.trials)
    assert attempts(work, 'lr3.2_alpha1_budget0.5') == ['started']


def test_two_workers_on_one_storage_take_distinct_trials(tmp_path, monkeypatch, fault_free):
    # two sweeps with one slot each, started together on one storage: each trial
    # is trained once, by one of them, and both report the fault-free answer
    synthetic(monkeypatch, seconds=1.0)
    results, errors = {}, []

    def worker(name):
        try:
            results[name] = sweep(tmp_path, parallel=1)
        except BaseException as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(n,)) for n in 'ab']
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert answer(results['a']) == answer(results['b']) == fault_free
    ran = {n: [t for t in r.trials if not t.info.get('cached')] for n, r in results.items()}
    # both trained (a worker that waited for the other's trial instead of taking
    # a free one would train nothing: the other is always ahead of it)
    assert len(ran['a']) + len(ran['b']) == 7 and ran['a'] and ran['b']
    assert {(t.lr, t.alpha, t.budget) for t in ran['a']}.isdisjoint(
        (t.lr, t.alpha, t.budget) for t in ran['b'])
    for key in os.listdir(tmp_path / 'trials' / 'fixnorm-tune'):
        assert attempts(tmp_path, key) == ['started'], key


def _start_and_wait(queue):
    from fixnorm_mm.tuning.launcher import popen_dying_with_parent
    proc = popen_dying_with_parent(['sleep', '60'])
    queue.put(proc.pid)
    proc.wait()


def _state(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0]
    except OSError:
        return None


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux')
def test_a_trial_dies_with_the_sweep_that_started_it():
    # the sweep is SIGKILLed (the OOM killer): its trainings get SIGTERM
    import multiprocessing
    import time
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    sweep_proc = ctx.Process(target=_start_and_wait, args=(queue,))
    sweep_proc.start()
    pid = queue.get(timeout=30)
    time.sleep(0.5)  # the wrapper has exec'd the trial
    assert _state(pid) in ('S', 'R')
    with open(f'/proc/{pid}/cmdline') as f:
        assert f.read().split('\0')[:2] == ['sleep', '60']  # the trial itself, same pid
    os.kill(sweep_proc.pid, signal.SIGKILL)
    sweep_proc.join()
    deadline = time.time() + 10
    while _state(pid) not in (None, 'Z') and time.time() < deadline:
        time.sleep(0.05)
    assert _state(pid) in (None, 'Z')


def test_bo_wd_replaces_an_interrupted_trial_and_stops_after_retries(tmp_path):
    import math

    from fixnorm_mm.tuning import BOWDTune, TrialInterrupted
    calls = []

    def objective(lr, wd, budget):
        calls.append(lr)
        if len(calls) == 2:
            raise TrialInterrupted('killed by SIGKILL', returncode=-9, signal='SIGKILL')
        return 80 - math.log(lr) ** 2
    tuner = BOWDTune(n_trials=3, sampler='tpe', n_startup_trials=2, seed=0)
    study = tuner.create_study(default_storage(str(tmp_path)), 'bo-wd')
    result = tuner.run(objective, study=study)
    assert len(calls) == 4 and len(result.trials) == 3  # the killed one does not count
    (killed,) = [t for t in study.get_trials() if 'interrupted' in t.user_attrs]
    assert killed.state.name == 'FAIL' and 'error' not in killed.user_attrs
    assert killed.user_attrs['signal'] == 'SIGKILL' and killed.number not in \
        [t.round for t in result.trials]

    def always_killed(lr, wd, budget):
        raise TrialInterrupted('killed by SIGTERM')
    tuner = BOWDTune(n_trials=3, sampler='tpe', n_startup_trials=2, seed=0)
    (tmp_path / 'b').mkdir()
    study = tuner.create_study(default_storage(str(tmp_path / 'b')), 'bo-wd')
    with pytest.raises(SweepInterrupted, match=r'2 trials ended without a result .*--retries 1'):
        tuner.run(always_killed, study=study, retries=1)
    assert len(study.get_trials()) == 2 and not tuner.finished(study)


# ----------------------------------------------------------------- storage
def test_an_empty_or_corrupt_storage_is_an_error_not_a_new_sweep(tmp_path):
    empty = tmp_path / 'empty.db'
    empty.write_bytes(b'')
    with pytest.raises(StorageError, match=r'empty.db is an empty file \(0 bytes\)'):
        TrialStore(f'sqlite:///{empty}', 'fixnorm-tune')
    assert empty.stat().st_size == 0  # untouched
    garbage = tmp_path / 'garbage.db'
    garbage.write_bytes(b'not a database at all')
    with pytest.raises(StorageError, match='is not an SQLite database'):
        TrialStore(f'sqlite:///{garbage}', 'fixnorm-tune')
    good = tmp_path / 'good.db'
    TrialStore(f'sqlite:///{good}', 'fixnorm-tune')
    con = sqlite3.connect(good)
    pages = con.execute('PRAGMA page_count').fetchone()[0]
    con.close()
    data = good.read_bytes()
    cut = tmp_path / 'cut.db'
    cut.write_bytes(data[:len(data) // pages * (pages // 2)])  # a copy cut short
    with pytest.raises(StorageError, match=r'cut.db \(\d+ bytes\) is corrupt'):
        TrialStore(f'sqlite:///{cut}', 'fixnorm-tune')
    TrialStore(f'sqlite:///{good}', 'fixnorm-tune')  # an intact one opens


def test_a_storage_on_a_local_disk_is_journaled_ahead_and_one_on_nfs_is_not(tmp_path):
    from fixnorm_mm.tuning.store import local_filesystem
    mounts = ('/dev/vda / ext4 rw 0 0\nserver:/export /home nfs4 rw 0 0\n'
              'tmpfs /home/scratch tmpfs rw 0 0\n')
    assert local_filesystem('/home/scratch/sweep', mounts)
    assert not local_filesystem('/home/me/sweep', mounts)
    assert local_filesystem('/work/sweep', mounts) and not local_filesystem('/x', '')
    store = TrialStore(default_storage(str(tmp_path)), 'fixnorm-tune')
    con = sqlite3.connect(str(tmp_path / 'study.db'))
    try:
        mode = con.execute('PRAGMA journal_mode').fetchone()[0]
    finally:
        con.close()
    assert mode == ('wal' if local_filesystem(str(tmp_path)) else 'delete')
    assert store.trials() == []
    TrialStore(default_storage(str(tmp_path)), 'fixnorm-tune')  # opens again, checked


# ------------------------------------------------------------ option checks
@pytest.mark.parametrize('option,value,message', [
    ('--procs-per-trial', '0', r'procs_per_trial \(--procs-per-trial\) must be an int >= 1, '
                               'got 0'),
    ('--parallel', '0', r'parallel \(--parallel\) must be an int >= 1, got 0'),
    ('--gpus-per-trial', '-1', r'gpus_per_trial \(--gpus-per-trial\) must be an int >= 0'),
    ('--poll', '0', r'poll_interval \(--poll\) must be a number > 0, got 0.0'),
    ('--retries', '-1', '--retries must be >= 0'),
])
def test_the_tool_names_a_bad_option_before_running_anything(tmp_path, capsys, option, value,
                                                             message):
    from fixnorm_mm.tools.tune import main
    assert main([TOY, '--work-dir', str(tmp_path), option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith('fixnorm-tune: error: ') and len(err.strip().splitlines()) == 1
    import re
    assert re.search(message, err), err
    assert not osp.exists(tmp_path / 'study.db')


def test_the_library_checks_the_same_options():
    with pytest.raises(ValueError, match=r'procs_per_trial \(--procs-per-trial\)'):
        TrainingLauncher(TOY, procs_per_trial=0)
    with pytest.raises(ValueError, match=r'parallel \(--parallel\)'):
        TrainingLauncher(TOY, parallel=0)
    with pytest.raises(ValueError, match=r'parallel \(--parallel\)'):
        TrainingLauncher(TOY, parallel=1.5)
    assert TrainingLauncher(TOY, parallel=3).parallel == 3
