"""The experiment scripts (experiments/) in their seconds-long smoke modes
(the benchmarks' are in tests/test_benchmarks.py), on the real digits
data through the real mmengine Runner, plus the pieces of analysis they rely on.

The full runs that produce docs/results.md are not part of the suite.
"""
import math
import os
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'experiments'))

import algo1_vs_wd  # noqa: E402
import digits  # noqa: E402
import final_layer  # noqa: E402
import lr_alpha  # noqa: E402
import vit_methods  # noqa: E402
import warmup_round0  # noqa: E402

from fixnorm_mm.testing.digits import SPLIT_SIZES, DigitsResNet, load_split  # noqa: E402

CONVS = ['backbone.0.weight', 'backbone.3.conv1.weight', 'backbone.3.conv2.weight',
         'backbone.4.conv1.weight', 'backbone.4.conv2.weight', 'backbone.4.downsample.0.weight']


def _values(run, key):
    return [v for _, v in run['curves'][key]]


def test_digits_split_is_real_fixed_and_stratified():
    sizes = {}
    for split in ('train', 'val', 'test'):
        x, y = load_split(split)
        assert x.shape == (len(y), 1, 8, 8) and x.dtype == torch.float32
        assert torch.bincount(y, minlength=10).min() >= 0.09 * len(y)  # stratified
        sizes[split] = len(y)
    assert sizes == SPLIT_SIZES and sum(sizes.values()) == 1797  # all of load_digits
    train, test = load_split('train')[0], load_split('test')[0]
    assert abs(float(train.mean())) < 1e-5 and abs(float(train.std()) - 1) < 1e-3
    # no image is in two splits
    flat = {tuple(v.tolist()) for v in train.flatten(1)}
    assert not any(tuple(v.tolist()) in flat for v in test.flatten(1)[:200])


def test_digits_class_fraction_split_of_the_compare_tool():
    """tools/compare_methods.py's split: a quarter of every class held out for val."""
    (xt, yt), (xv, yv) = load_split('train', 'class_fraction'), load_split('val', 'class_fraction')
    assert len(yt) + len(yv) == 1797
    per_class = torch.bincount(torch.cat([yt, yv]), minlength=10)
    assert torch.equal(torch.bincount(yv, minlength=10), (0.25 * per_class.double()).round().long())
    assert abs(float(xt.mean())) < 1e-5 and abs(float(xt.std()) - 1) < 1e-3  # train statistics
    flat = {tuple(v.tolist()) for v in xt.flatten(1)}
    assert not any(tuple(v.tolist()) in flat for v in xv.flatten(1))  # disjoint


def test_weight_decay_lands_only_where_each_method_says():
    from mmengine.optim import build_optim_wrapper
    model = DigitsResNet()
    names = {id(p): n for n, p in model.named_parameters()}

    def decayed(method):
        wrapper = build_optim_wrapper(model, digits.optim_wrapper_cfg(method, 0.1, 1e-3, 2e-3))
        return {names[id(p)]: g['weight_decay'] for g in wrapper.optimizer.param_groups
                for p in g['params'] if g['weight_decay'] > 0}

    assert decayed('wd') == {n: 1e-3 for n in CONVS + ['head.fc.weight']}
    assert decayed('algo1') == {'head.fc.weight': 2e-3}  # Algo 1 line 3: lambda_FC only
    assert decayed('algo1_fc') == {}


def test_fixnorm_training_learns_digits_through_the_runner():
    """Three epochs on 300 images: far above chance, and the fixed set
    (convs + the FixNorm-FC direction) keeps its initial global norm."""
    r = digits.train_once(dict(method='algo1_fc', fc_type='fixnorm_fc', alpha=1.0, lr=0.2,
                               seed=0, epochs=3, train_subset=300, curve_interval=2))
    assert r['fixed'] == {'default': CONVS + ['head.fc.weight']}
    assert r['val_accuracy'] > 60 and r['test_accuracy'] > 60
    assert max(_values(r, 'fc_norm')) <= math.sqrt(10) + 1e-5  # min(g, alpha sqrt(10)), Eq. 10


def test_algo1_vs_wd_smoke(tmp_path):
    raw = algo1_vs_wd.main(['--smoke', '--out', str(tmp_path)])
    runs = raw['runs']
    assert len(runs) == 2 * 2 * 2  # methods x lrs x seeds
    for r in runs:
        conv = np.array(_values(r, 'conv_norm'))  # conv[0]: ||W_0|| before the first step
        assert r['curves']['conv_norm'][0][0] == 0 and len(conv) == 3
        drift = np.abs(conv - conv[0]).max() / conv[0]
        if r['spec']['method'] == 'algo1':
            # Algo 1 fixes exactly the convs, at ||W_0|| after every step (float32
            # rounding only); the plain FC stays out (and keeps its WD)
            assert r['fixed'] == {'default': CONVS}
            assert drift < 5e-7
        else:
            assert r['fixed'] is None
            assert drift > 2e-6  # WD and the SGD steps move ||W_conv||
    for m in algo1_vs_wd.METHODS:
        assert raw['best'][m]['lr'] in algo1_vs_wd.SMOKE['lrs']
        assert len(raw['best'][m]['test']) == 2
    md = (tmp_path / 'results' / 'algo1_vs_wd.md').read_text()
    assert '±' in md and 'Produced by `python experiments/algo1_vs_wd.py --smoke' in md
    assert (tmp_path / 'figures' / 'algo1_vs_wd.png').stat().st_size > 10_000


def test_final_layer_smoke(tmp_path):
    raw = final_layer.main(['--smoke', '--out', str(tmp_path), '--alpha', '0.5'])
    by_variant = {}
    for r in raw['runs']:
        by_variant.setdefault(r['spec']['variant'], []).append(r)
    assert list(by_variant) == list(final_layer.VARIANTS)
    cap = 0.5 * math.sqrt(10)
    for label, runs in by_variant.items():
        method, fc_type, _ = final_layer.VARIANTS[label]
        for r in runs:
            mcbr = _values(r, 'mcbr')
            assert mcbr and all(-1 <= v <= 1 for v in mcbr)
            assert (r['fixed']['default'][-1] == 'head.fc.weight') == (method == 'algo1_fc')
            if fc_type == 'fixnorm_fc':
                # g starts at ||W|| ~ 1.8 > cap: the applied norm is the cap at once
                np.testing.assert_allclose(_values(r, 'fc_norm'), cap, rtol=1e-5)
            if fc_type in ('wn_fc', 'wn_fc_eq6'):
                # what MCBRHook logs as g is the norm of the weight the layer applies
                np.testing.assert_allclose(_values(r, 'g'), _values(r, 'fc_norm'), rtol=1e-5)
    assert by_variant['Algo 1'][0]['spec']['wd_fc'] > 0
    assert by_variant['Algo 1, λ_FC=0'][0]['spec']['wd_fc'] == 0
    md = (tmp_path / 'results' / 'final_layer.md').read_text()
    assert md.count('\n| Algo 1') == len(final_layer.VARIANTS)
    assert (tmp_path / 'figures' / 'final_layer.png').stat().st_size > 10_000


def test_lr_alpha_smoke(tmp_path):
    raw = lr_alpha.main(['--smoke', '--out', str(tmp_path)])
    lrs, alphas = lr_alpha.SMOKE['lrs'], lr_alpha.SMOKE['alphas']
    assert len(raw['runs']) == len(lrs) * len(alphas) * 2
    mean = np.array(raw['grid']['test_accuracy']['mean'])
    assert mean.shape == (len(alphas), len(lrs))
    for (i, a), (j, lr) in ((x, y) for x in enumerate(alphas) for y in enumerate(lrs)):
        cell = [r['test_accuracy'] for r in raw['runs']
                if r['spec']['alpha'] == a and r['spec']['lr'] == lr]
        assert len(cell) == 2 and mean[i, j] == pytest.approx(np.mean(cell))
    assert set(raw['decoupling']['best_lr_per_alpha']) == set(alphas)
    assert (tmp_path / 'figures' / 'lr_alpha.png').stat().st_size > 10_000


def test_warmup_round0_smoke(tmp_path):
    """Round 0 under both warm-up rules (docs/tuning.md): the trials' schedules
    differ only in the warm-up, and the pick is the best val accuracy."""
    raw = warmup_round0.main(['--smoke', '--seeds', '1', '--out', str(tmp_path)])
    assert len(raw['runs']) == 5 * 2
    ends = {r['spec']['rule']: r['spec']['cfg_options']['param_scheduler.0.end']
            for r in raw['runs']}
    assert ends == {'absolute': 5, 'scaled': 2}  # 5 of 20 iterations; 0.4 x 5 -> 2
    for rule in ('absolute', 'scaled'):
        mine = sorted((r['spec']['lr'], r['val_accuracy']) for r in raw['runs']
                      if r['spec']['rule'] == rule)
        best = max(mine, key=lambda t: (t[1], -t[0]))[0]  # ties: the smaller lr
        assert raw['picks'][0][rule] == dict(mean=best, per_seed=[best])
    assert (tmp_path / 'results' / 'warmup_round0.md').read_text().count('| absolute (5 it.) |') == 1


def test_vit_methods_smoke(tmp_path):
    """The ViT experiment end to end, 2 iterations a run: every phase and
    method, the tables and figures; Hyperball keeps each of its matrices (the
    attention and MLP projections and head.fc, not the patch projection) at
    its initial norm R; FixNorm fixes the WN directions and FixNorm-FC."""
    raw = vit_methods.main(['--smoke', '--out', str(tmp_path)])
    cfg, runs = vit_methods.SMOKE, raw['runs']
    n_grid = {m: len(g['lr']) * len(g['second']) for m, g in cfg['grids'].items()}
    phases = {}
    for r in runs:
        phases.setdefault(r['spec']['phase'], []).append(r)
    assert len(phases['tune']) == sum(n_grid.values()) * cfg['tune_seeds']
    assert len(phases['final']) == 4 * 2  # (methods + ablation) x seeds (--smoke: at most 2)
    assert len(phases['transfer']) == (sum(len(g['lr']) for g in cfg['grids'].values()) + 1) \
        * len(cfg['widths']) * cfg['transfer_seeds']  # the ablation at one lr
    assert {r['spec']['seed'] for r in phases['final']} == {100, 101}  # fresh seeds
    # with 2 lrs every choice is on an edge: one more lr past it, for each method
    assert len(phases['edge']) == sum(len(e['cells']) for e in raw['edge'].values()) == 3
    matrices = [f'layers.0.{m}.weight' for m in ('attn.qkv', 'attn.proj', 'ffn.fc1', 'ffn.fc2')]
    for r in runs:
        method = r['spec']['method']
        assert r['diverged'] is None and 0 <= r['test_accuracy'] <= 100
        if method in ('hyperball', vit_methods.ABLATION):
            assert r['sphere']['names'] == matrices + (['head.fc.weight']
                                                       if method == 'hyperball' else [])
            assert r['sphere']['max_rel_dev'] < 1e-5
            assert max(_values(r, 'sphere_max_rel_dev')) < 1e-5
            if r['spec']['phase'] == 'final':  # (grid runs keep only a few curves)
                # the applied norm of the projections stays sqrt(sum R^2), step after step
                linear = np.array(_values(r, 'linear_norm'))
                assert len(linear) == 3
                np.testing.assert_allclose(linear, linear[0], rtol=1e-5)
        else:
            assert r['sphere'] is None
        assert r['fixed'] == ({'default': matrices + ['head.fc.weight']}
                              if method == 'fixnorm_wn' else None)
    for m, c in raw['chosen'].items():
        assert c['lr'] in cfg['grids'][m]['lr'] and c['second'] in cfg['grids'][m]['second']
        t = raw['transfer'][m]
        assert list(t['per_width']) == [str(w) for w in cfg['widths']]
        for p in t['per_width'].values():
            assert len(p['tuned_test']) == cfg['transfer_seeds'] and len(p['val']) == 2
    assert raw['sphere']['max_rel_dev_end'] < 1e-5
    md = (tmp_path / 'results' / 'vit_methods.md').read_text()
    # main, edge-check, transfer and lr-optimum tables, and the two rows of the ablation's
    assert md.count('| Hyperball(AdamW)') == 6
    assert 'Produced by `python experiments/vit_methods.py --smoke' in md
    for fig in ('vit_methods', 'vit_transfer'):
        assert (tmp_path / 'figures' / f'{fig}.png').stat().st_size > 10_000
    # --replot rebuilds the same tables from the raw results
    again = vit_methods.main(['--smoke', '--out', str(tmp_path), '--replot'])
    assert again['chosen'] == raw['chosen']
    assert (tmp_path / 'results' / 'vit_methods.md').read_text() == md


def test_decoupling_analysis_detects_a_coupled_grid():
    lrs, alphas = [0.1, 0.2, 0.4], [1.0, 4.0]
    val = np.array([[90, 95, 91],    # alpha 1: best lr 0.2
                    [90, 92, 96]])   # alpha 4: best lr 0.4 (coupled)
    test = val + 0.5
    d = lr_alpha.decoupling(val, np.zeros_like(val), test, lrs, alphas)
    assert d['best_lr_per_alpha'] == {1.0: 0.2, 4.0: 0.4}
    assert d['distinct_best_lrs'] == [0.2, 0.4]
    assert d['joint'] == dict(lr=0.4, alpha=4.0, test=96.5)
    # tuning lr at alpha=1 finds 0.2, then alpha at lr 0.2 stays 1: 95.5, 1 point short
    assert d['separate'][0] == dict(start_alpha=1.0, lr=0.2, alpha=1.0, test=95.5)
    assert d['separate'][1]['test'] == 96.5


def test_mcbr_hook_uses_the_applied_weight_of_wn_layers():
    """Per-class g changes the directions W_j - W_y, so MCBR (Eq. 9) of a
    WN-FC must be computed on g * v / ||v||, not on v."""
    from mmengine.structures import BaseDataElement

    from fixnorm_mm import MCBRHook, WNLinear, mcbr
    layer = WNLinear(6, 4)
    with torch.no_grad():
        layer.sync_gain()
        layer.g.copy_(torch.tensor([0.2, 5.0, 1.0, 3.0])[:, None])
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    hook = MCBRHook(interval=1, layer='fc')
    hook.layer, hook._captured = layer, x
    batch = dict(data_samples=[BaseDataElement(gt_label=y[i:i + 1]) for i in range(16)])
    got = hook.mcbr_scalar(batch)['mcbr']
    assert got == pytest.approx(float(mcbr(x, layer.wn_weight(), y)), abs=1e-6)
    assert abs(got - float(mcbr(x, layer.weight, y))) > 1e-3
    with torch.no_grad():
        applied_norm = float(layer.wn_weight().norm())
    assert float(hook.layer_scalars()['g']) == pytest.approx(applied_norm, rel=1e-5)
