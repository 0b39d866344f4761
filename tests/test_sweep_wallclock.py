"""Smoke test of benchmarks/sweep_wallclock.py (the numbers are in docs/tuning.md;
no timing is asserted here): it runs, its references are Algo 2's, its runs
agree with each other, and its breakdown adds up to the makespan."""
import importlib.util
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _bench():
    spec = importlib.util.spec_from_file_location(
        'sweep_wallclock', osp.join(ROOT, 'benchmarks', 'sweep_wallclock.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_references_are_the_paper_setups_critical_path_and_waves():
    bench = _bench()
    tuner = bench._tuner(bench.parse_args([]))  # lr [0.2, 3.2], K=5, T=[0.2, 1], 6 alphas
    assert tuner.expected_cost == 11
    assert bench.references(tuner, 1) == (11, 11)
    by_rounds, bound = bench.references(tuner, 2)  # waves of 3, 3 and 3
    assert by_rounds == pytest.approx(6.6) and bound == 5.5
    assert bench.references(tuner, 5) == (pytest.approx(2.2), pytest.approx(2.2))


def test_benchmark_runs_slots_and_two_workers(monkeypatch, tmp_path):
    bench = _bench()
    # the benchmark sets both (restored after the test)
    monkeypatch.setenv('PYTHONPATH', '')
    monkeypatch.setenv('SYNTH_TRAIN', '{}')
    out = bench.main(['--t-max', '0.4', '--slots', '2', '--workers', '2', '--k', '2',
                      '--budgets', '0.5', '1', '--alphas', '1', '2', '--poll', '0.2',
                      '--work-dir', str(tmp_path)])
    (name, wall, span, by_rounds, bound), workers_row = out['rows']
    assert name == '2 slot(s)' and wall >= span > 0 and (by_rounds, bound) == (2.5, 2.5)
    assert workers_row[0] == '2 workers x 1 slot'
    # every run found the same setting; the two workers trained each trial once
    assert len(set(out['answers'].values())) == 1
    assert set(out['workers']['trainings'].values()) == {1}
    assert len(out['workers']['trainings']) == 5 == sum(out['workers']['trials_run'])
    assert min(out['workers']['trials_run']) >= 1
    # the breakdown walks the critical chain: its parts add up to the makespan, the
    # training on it is the schedule's (2 slots: round 0's wave, round 1's two waves
    # of 1 T_max... here K=2: 0.5 + 1 + 1 T_max) and every step took time
    parts = out['breakdowns'][2]
    assert sum(parts.values()) == pytest.approx(wall, abs=0.05)
    assert parts['training'] == pytest.approx(2.5 * 0.4, abs=0.05)
    assert parts['storage open'] > 0 and parts['storage claims'] > 0
    assert parts['process start-up'] > 0 and parts['storage result write'] > 0
