"""The benchmarks (benchmarks/) in their seconds-long smoke modes, and the
pieces of analysis they rely on. No timing is asserted: the full runs that
produce docs/results.md, docs/results/tune_benchmark.* and docs/results/gpu.*
are not part of the suite."""
import json
import math
import os
import sqlite3
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'benchmarks'))

import gpu  # noqa: E402
import overhead  # noqa: E402
import tune_benchmark  # noqa: E402


# ----------------------------------------------------------------------------- overhead.py
def test_overhead_benchmark_smoke(tmp_path):
    page = tmp_path / 'results.md'
    page.write_text(f'# page\nbefore\n{overhead.MARK_BEGIN}\nold section\n'
                    f'{overhead.MARK_END}\nafter\n')
    results = overhead.main(['--smoke', '--markdown', str(page),
                             '--out', str(tmp_path / 'overhead.txt')])
    assert [r['model'] for r in results] == ['ResNet50-D', 'MobileNetV2']
    for r in results:
        model = overhead.build_classifier(r['model'], fixnorm_fc=True)
        convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        # the fixed set: every conv (each feeds a BN in training mode) + the FixNorm-FC direction
        assert r['fixed_tensors'] == len(convs) + 1
        assert r['fixed_params'] == sum(w.numel() for w in convs) + model.head.fc.weight.numel()
        assert set(r['rescale_vs_step']) == {'default', 'foreach', 'fused'}
        for s in list(r['rescale_vs_step'].values()) + [r['iter_fixnorm_vs_wd'], r['fold']]:
            assert 0 < s['ratio'] < 100 and s['q1'] <= s['q3']
            assert s['ratio'] == pytest.approx(s['a_ms'] / s['b_ms'])
        # the fold is Algo 1 exactly: same weights as SGD + NormFixer.rescale()
        assert r['fold']['max_rel_diff'] <= 1e-6
        b = r['breakdown']
        assert r['estimate'] == pytest.approx(
            1 + (b['fixnorm_fc_extra_ms'] + r['rescale_ms'] - b['weight_decay_term_ms'])
            / r['iter_fixnorm_vs_wd']['b_ms'])
    assert 25.0e6 < results[0]['params'] < 26.0e6  # ResNet50-D: 25.58M
    scaling = results[0]['scaling']
    # smoke: MobileNetV2's fixed-set shapes, x2 longer, and each split into 4
    mb = overhead.build_classifier('MobileNetV2', fixnorm_fc=True)
    shapes = [p.numel() for p in mb.parameters() if p.dim() > 1]
    assert scaling['x1']['params'] == sum(shapes) and scaling['x1']['tensors'] == len(shapes)
    assert scaling['params x2']['params'] == 2 * sum(shapes)
    assert scaling['tensors x4']['params'] == sum(shapes)
    assert scaling['tensors x4']['tensors'] == sum(min(4, n) for n in shapes)
    text = page.read_text()
    assert text.startswith('# page\nbefore\n') and text.endswith(f'{overhead.MARK_END}\nafter\n')
    assert 'old section' not in text and '## 5. Overhead of FixNorm' in text
    assert (tmp_path / 'overhead.txt').read_text() in text
    assert json.loads((tmp_path / 'overhead.json').read_text())['models'][0]['model'] == \
        'ResNet50-D'


def test_markdown_update_refuses_a_page_without_markers(tmp_path):
    page = tmp_path / 'results.md'
    page.write_text('# no markers\n')
    with pytest.raises(ValueError, match='markers'):
        overhead.update_markdown(str(page), 'x')
    assert page.read_text() == '# no markers\n'


# ----------------------------------------------------------------------------- tune_benchmark.py
def _trial(budget, metric, failed=False):
    return dict(budget=budget, metric=metric, failed=failed)


def test_tune_costs_count_full_budget_trials_only():
    trials = [_trial(0.2, 99.0), _trial(1.0, 90.0), _trial(1.0, float('nan'), failed=True),
              _trial(1.0, 95.0)]
    # the short trial's 99 is no deployable result; the failed one costs its budget
    assert tune_benchmark.cost_to_reach(trials, 94.0) == pytest.approx(3.2)
    assert tune_benchmark.cost_to_reach(trials, 90.0) == pytest.approx(1.2)
    assert math.isinf(tune_benchmark.cost_to_reach(trials, 96.0))
    assert tune_benchmark.best_within(trials, 2.2) == 90.0
    assert tune_benchmark.best_within(trials, 0.2) == -math.inf


def test_tune_quartiles_of_costs_with_runs_that_never_reached():
    inf = math.inf
    assert tune_benchmark.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
    assert tune_benchmark.quartiles([1.0, 2.0, 3.0, inf, inf]) == (2.0, 3.0, inf)
    assert tune_benchmark.quartiles([1.0, 2.0, inf, inf]) == (1.75, inf, inf)
    assert tune_benchmark.fmt_dist([1.0, inf, inf]) == 'never [never, never], reached 1/3'


def test_tune_trial_config_shrinks_the_whole_schedule(tmp_path):
    task = tune_benchmark.TASK
    cfg = tune_benchmark.trial_config('fixnorm', 0.4, 0.5, 0.2, 3, task, str(tmp_path))
    assert cfg.train_cfg.max_epochs == 4 and cfg.train_cfg.val_interval == 20
    warmup, cosine = cfg.param_scheduler
    assert (warmup.begin, warmup.end) == (0, 8)  # 40 of 160 iterations -> 8 of 32
    assert (cosine.begin, cosine.end, cosine.T_max) == (8, 32, 24)
    assert cfg.model.fc_type == 'fixnorm_fc' and cfg.model.alpha == 0.5
    assert cfg.optim_wrapper.optimizer.lr == 0.4
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.0 and cfg.randomness.seed == 3
    assert cfg.custom_hooks == []
    wd = tune_benchmark.trial_config('wd', 1.6, 2e-4, 1.0, 0, task, str(tmp_path))
    assert wd.train_cfg.max_epochs == 20 and wd.param_scheduler[1].end == 160
    assert wd.model.fc_type == 'fc' and wd.optim_wrapper.optimizer.weight_decay == 2e-4


def test_tune_benchmark_smoke_and_rerun_from_cache(tmp_path):
    work, out = str(tmp_path / 'work'), str(tmp_path / 'out')
    args = ['--smoke', '--workers', '1', '--work-dir', work, '--out', out]
    res = tune_benchmark.main(args)
    kinds = sorted(j['kind'] for j in res['jobs'])
    assert kinds == ['asha-wd', 'bo-wd', 'fixnorm-tune', 'fixnorm-tune-es'] + ['grid'] * 4
    fn = next(j for j in res['jobs'] if j['kind'] == 'fixnorm-tune')['result']
    # Algo 2 with K=2, T=[0.5, 1], alphas {0.5, 1}: 2 + 2 lr trials, 1 alpha trial
    assert len(fn['trials']) == 5 and fn['total_cost'] == pytest.approx(2 * 1.5 + 1.0)
    bo = next(j for j in res['jobs'] if j['kind'] == 'bo-wd')['result']
    assert len(bo['trials']) == 2 and all(t['budget'] == 1.0 for t in bo['trials'])
    # the early-stopping tuners: a stopped trial costs the epochs it ran
    # (1 of the smoke task's 2), a full one 1 T_max; ASHA+WD runs until its
    # trials have cost its budget; FixNorm-tune-es runs Algo 2's trials
    asha = next(j for j in res['jobs'] if j['kind'] == 'asha-wd')['result']
    for t in asha['trials']:
        assert t['budget'] == (0.5 if t['pruned'] else 1.0)
    assert sum(t['budget'] for t in asha['trials'][:-1]) < 2.0 <= asha['total_cost']
    es = next(j for j in res['jobs'] if j['kind'] == 'fixnorm-tune-es')['result']
    assert [(t['lr'], t['alpha']) for t in es['trials']] == \
        [(t['lr'], t['alpha']) for t in fn['trials']][:len(es['trials'])]
    assert es['total_cost'] <= fn['total_cost']
    full = [t['metric'] for j in res['jobs'] if j['kind'] != 'grid'
            for t in j['result']['trials'] if t['budget'] == 1.0 and not t['failed']]
    full += [j['result']['val'] for j in res['jobs'] if j['kind'] == 'grid']
    assert res['analysis']['best_known'][0] == max(full)
    for run in res['analysis']['runs']:
        assert run['final_val'] <= run['best_known']
        assert run['cost_to_best-1'] <= run['cost_to_best-0.5']
        assert 0 <= run['final_test'] <= 100
    for ext in ('.md', '.json', '.png'):
        assert os.path.exists(out + ext)
    with sqlite3.connect(os.path.join(work, 'trials.sqlite')) as c:
        n = c.execute("SELECT count(*) FROM trials WHERE key NOT LIKE '%-curve|%'").fetchone()[0]
        n_all = c.execute('SELECT count(*) FROM trials').fetchone()[0]
    # every distinct training once: a FixNorm-tune trial that is also a grid
    # point (lr 0.2, alpha 0.5, full budget) is trained once and shared
    distinct = {('fixnorm', t['lr'], t['alpha'], t['budget']) for t in fn['trials']}
    distinct |= {('wd', t['lr'], t['weight_decay'], 1.0) for t in bo['trials']}
    distinct |= {(j['family'], j['lr'], j['x'], 1.0) for j in res['jobs'] if j['kind'] == 'grid'}
    assert n == len(distinct) and n <= 4 + 5 + 2
    assert n_all > n  # the early-stopping tuners' curves
    again = tune_benchmark.main(args)  # everything cached: nothing trains again
    with sqlite3.connect(os.path.join(work, 'trials.sqlite')) as c:
        assert c.execute('SELECT count(*) FROM trials').fetchone()[0] == n_all
    def numbers(analysis):
        return [{k: v for k, v in r.items() if k != 'cpu_seconds'} for r in analysis['runs']]
    assert numbers(again['analysis']) == numbers(res['analysis'])
    assert again['analysis']['best_known'] == res['analysis']['best_known']


# ----------------------------------------------------------------------------- gpu.py / gpu.sh
@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is here: gpu.sh would run')
def test_gpu_benchmark_skips_cleanly_without_cuda(tmp_path):
    assert gpu.main(['--out', str(tmp_path / 'gpu')]) == {}
    assert not os.listdir(tmp_path)
    done = subprocess.run(['bash', os.path.join(REPO, 'benchmarks', 'gpu.sh'),
                           '--out', str(tmp_path / 'gpu')], capture_output=True, text=True)
    assert done.returncode == 0 and 'skipped' in done.stdout
    assert not os.listdir(tmp_path)


def test_gpu_benchmark_logic_on_cpu(tmp_path):
    """The script's iteration and skipped-step sections on CPU tensors (AMP as
    bf16, mmengine's AmpOptimWrapper allowed on the CPU as tests/test_amp.py does)."""
    out = str(tmp_path / 'gpu')
    res = gpu.main(['--device', 'cpu', '--smoke', '--skip', 'rescale', 'retinanet',
                    '--out', out])
    # smoke: MobileNetV2 stands in for ResNet50-D (the same code, built faster)
    assert set(res['iterations']) == {'MobileNetV2/fp32', 'MobileNetV2/AMP bfloat16'}
    for v in res['iterations'].values():
        assert 'error' not in v, v
        assert v['check_interval_auto'] == 1  # 'auto' is every step on the CPU
        assert v['fixed_tensors'] == 53       # MobileNetV2's 52 convs + the FixNorm-FC direction
        assert v['fixnorm_vs_wd']['ratio'] > 0
    default, fused = res['skipped_steps']
    assert default['passed'] and fused['passed'], res['skipped_steps']
    assert default['weights_bit_identical'] and fused['weights_bit_identical']
    # GradScaler does not call a plain optimizer's step on overflow; a fused one
    # is stepped with found_inf, and the rescale's factor is then exactly 1
    assert not default['controller_saw_step'] and fused['controller_saw_step']
    assert os.path.exists(out + '.md') and 'Skipped fp16 steps' in open(out + '.md').read()


# ----------------------------------------------------------------------------- hyperball_overhead.py
def test_hyperball_overhead_smoke(capsys):
    import hyperball_overhead
    out = hyperball_overhead.main(['--repeats', '2', '--width', '32', '--depth', '1'])
    assert out['buffer_over_weights'] == 1.0  # one kept copy of the controlled weights
    assert out['ratio'] > 0 and out['q1'] <= out['q3']
    assert '(AdamW + Hyperball) / AdamW:' in capsys.readouterr().out
