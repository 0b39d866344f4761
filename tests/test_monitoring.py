"""What a user watches: MCBRHook's fixnorm/* scalars in the text log,
scalars.json and TensorBoard (each of its own iteration), the startup table's
warning, the toy configs' log level, --amp on a CPU, the sweep figure."""
import glob
import importlib.util
import json
import os.path as osp
import re
import uuid
from argparse import Namespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.registry import HOOKS, MODELS
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement

import fixnorm_mm  # noqa: F401
from fixnorm_mm import MCBRHook, mcbr
from fixnorm_mm.layers import FixNormLinear
from fixnorm_mm.testing.toy import ToyNet, runner_cfg

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def naive_mcbr(x, weight, labels):
    """Eq. 9 term by term: mean over samples and j != y of cos(x, W_j - W_y)."""
    x, w = x.double(), weight.reshape(weight.shape[0], -1).double()
    total = 0.0
    for xi, yi in zip(x, labels.tolist()):
        total += sum(torch.cosine_similarity(xi, w[j] - w[yi], dim=0).item()
                     for j in range(w.shape[0]) if j != yi)
    return total / (len(labels) * (w.shape[0] - 1))


class Truth(Hook):
    """What iteration t really had: its lr (the step's), the batch and the
    weight the head classified it with, and the state after the step."""
    priority = 'LOWEST'

    def __init__(self):
        self.at = {}

    def before_train(self, runner):
        runner.model.head.register_forward_hook(self._forward)

    def _forward(self, module, inputs, output):
        if module.training:
            self.x, self.w = inputs[0].detach().clone(), module.weight.detach().clone()

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lr = runner.optim_wrapper.optimizer.param_groups[0]['lr']

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        labels = torch.cat([d.gt_label for d in data_batch['data_samples']])
        ctrl = runner.optim_wrapper.norm_control
        self.at[runner.iter + 1] = dict(
            lr=self.lr, mcbr=naive_mcbr(self.x, self.w, labels),
            g=float(runner.model.head.g.detach()), norm=float(ctrl.fixer.norms()['default']))


def scalars_json(work_dir):
    path = glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json'))[0]
    return [json.loads(line) for line in open(path)]


def text_log(work_dir):
    return open(glob.glob(osp.join(str(work_dir), '*', '*.log'))[0]).read()


KEYS = ('mcbr', 'g', 'g_capped', 'norm_default', 'default_effective_lr')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'tool_{name}',
                                                  osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('max_iters', [3, 6])
def test_every_log_line_carries_the_fixnorm_scalars_of_its_own_iteration(tmp_path, max_iters):
    """MCBRHook(interval=3), LoggerHook(interval=3), the lr changing every
    iteration: the line of iteration t (the last one included, and the only
    one when the run is one interval long) has MCBR of t's batch, g and the
    norm after t's step, and effective_lr = lr_t / norm^2, in the text log,
    scalars.json and TensorBoard alike."""
    cfg = runner_cfg(
        tmp_path, max_iters=max_iters,
        optim_wrapper=dict(type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
                           optimizer=dict(type='SGD', lr=1e-3, momentum=0.9),
                           norm_control=dict(type='FixNorm')),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                              end=max_iters)],
        custom_hooks=[dict(type='MCBRHook', interval=3)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=3), checkpoint=None),
        log_processor=dict(by_epoch=False),
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend'),
                                                        dict(type='TensorboardVisBackend')]))
    runner = Runner.from_cfg(cfg)
    truth = Truth()
    runner.register_hook(truth)
    runner.train()

    lines = scalars_json(tmp_path)
    assert [d['step'] for d in lines] == list(range(3, max_iters + 1, 3))
    lrs = [truth.at[d['step']]['lr'] for d in lines]
    assert len(set(lrs)) == len(lrs)  # the lr differs from one logged line to the next
    log = text_log(tmp_path)
    for d in lines:
        want = truth.at[d['step']]
        assert all(f'fixnorm/{k}' in d for k in KEYS), d
        assert d['lr'] == pytest.approx(want['lr'], rel=1e-12)
        assert d['fixnorm/mcbr'] == pytest.approx(want['mcbr'], abs=1e-5)
        assert d['fixnorm/g'] == pytest.approx(want['g'], rel=1e-6)
        assert d['fixnorm/norm_default'] == pytest.approx(want['norm'], rel=1e-6)
        eff = want['lr'] / want['norm'] ** 2
        assert d['fixnorm/default_effective_lr'] == pytest.approx(eff, rel=1e-5)
        # text log: the effective lr (about 1e-5 here) in scientific notation, beside lr
        line = next(s for s in log.splitlines() if f'Iter(train) [{d["step"]}/' in s)
        assert f'fixnorm/default_effective_lr: {eff:.4e}' in line, line
        assert f'fixnorm/mcbr: {want["mcbr"]:.4f}' in line
    assert 'fixnorm/default_effective_lr: 0.0000' not in log

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(osp.dirname(glob.glob(
        osp.join(str(tmp_path), '*', 'vis_data', 'events.out.tfevents.*'))[0]))
    acc.Reload()
    assert {f'fixnorm/{k}' for k in KEYS} <= set(acc.Tags()['scalars'])
    for k in KEYS:
        events = acc.Scalars(f'fixnorm/{k}')
        assert [e.step for e in events] == [d['step'] for d in lines]
        assert [e.value for e in events] == pytest.approx([d[f'fixnorm/{k}'] for d in lines],
                                                         rel=1e-6)

    # read back and drawn by fixnorm_mm.monitoring (tools/plot_scalars.py)
    from fixnorm_mm.monitoring import read_scalars
    read = read_scalars(str(tmp_path))
    assert [s for s, _ in read['fixnorm/mcbr']] == [d['step'] for d in lines]
    assert [v for _, v in read['fixnorm/mcbr']] == pytest.approx(
        [d['fixnorm/mcbr'] for d in lines], rel=1e-6)
    tool = load_tool('plot_scalars')
    tool.main([str(tmp_path), '--labels', 'toy', '--out', str(tmp_path / 'curves.png')])
    assert osp.getsize(tmp_path / 'curves.png') > 0


def test_epoch_based_logging_gets_the_logged_iterations_values(tmp_path):
    """In an epoch-based loop LoggerHook counts iterations within the epoch
    (8 a epoch here: logged at 3, 6, 11, 14); MCBRHook(interval=50) still
    gives each of those lines the values of its own iteration."""
    cfg = runner_cfg(
        tmp_path, train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=100),
        custom_hooks=[dict(type='MCBRHook', interval=50)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=3), checkpoint=None))
    runner = Runner.from_cfg(cfg)
    truth = Truth()
    runner.register_hook(truth)
    runner.train()
    lines = scalars_json(tmp_path)
    assert [d['step'] for d in lines] == [3, 6, 11, 14]
    for d in lines:
        assert d['fixnorm/g'] == pytest.approx(truth.at[d['step']]['g'], rel=1e-6)
        assert d['fixnorm/mcbr'] == pytest.approx(truth.at[d['step']]['mcbr'], abs=1e-5)


def test_hook_order_and_missing_layer_are_told(tmp_path):
    """No FixNorm layer and no layer= : a warning naming the key; a priority
    that puts MCBRHook after LoggerHook: a warning (its values would lag)."""
    cfg = runner_cfg(tmp_path, max_iters=1, model=dict(type='ToyNet', fc_type='fc'),
                     custom_hooks=[dict(type='MCBRHook', interval=1, priority='LOWEST')])
    Runner.from_cfg(cfg).train()
    log = text_log(tmp_path)
    assert re.search(r"WARNING - MCBRHook: no layer given .*layer='head.fc'", log)
    assert re.search(r'WARNING - MCBRHook runs after LoggerHook .*previous logged iteration',
                     log)


def test_scalars_json_is_read_and_smoothed_like_tensorboard(tmp_path):
    from fixnorm_mm.monitoring import read_scalars, smooth
    run = tmp_path / '20260101_000000' / 'vis_data'
    run.mkdir(parents=True)
    (run / 'scalars.json').write_text(
        '{"lr": 0.1, "fixnorm/mcbr": -0.5, "iter": 2, "step": 2}\n'
        '{"accuracy": 90.0, "step": 2}\n'
        '{"lr": 0.05, "fixnorm/mcbr": -0.6, "iter": 4, "step": 4}\n')
    assert read_scalars(str(tmp_path)) == {'lr': [(2, 0.1), (4, 0.05)],
                                           'fixnorm/mcbr': [(2, -0.5), (4, -0.6)],
                                           'accuracy': [(2, 90.0)]}
    # TensorBoard's debiased EMA: 1, then (0.5 * 0.5 + 0.5 * 3) / (1 - 0.5^2)
    assert smooth([1.0, 3.0], 0.5) == pytest.approx([1.0, 1.75 / 0.75])
    with pytest.raises(FileNotFoundError, match='TensorboardVisBackend'):
        read_scalars(str(tmp_path / 'nothing'))


# ----------------------------------------------------------------- ignore_index (issue 17.1)
def test_mcbr_hook_default_counts_every_class_including_255():
    """Eq. 9 averages over all samples: on a 1000-class head, label 255 is a
    class like any other and the default must not drop it."""
    torch.manual_seed(0)
    layer = FixNormLinear(16, 1000, alpha=1.0)
    x = torch.randn(8, 16)
    y = torch.tensor([255, 3, 255, 999, 0, 255, 17, 500])
    hook = MCBRHook(interval=1, layer='fc')
    hook.layer, hook.layer_name, hook._captured = layer, 'fc', x
    batch = dict(data_samples=[BaseDataElement(gt_label=y[i:i + 1]) for i in range(8)])
    got = hook.mcbr_scalar(batch)['mcbr']
    assert float(got) == pytest.approx(naive_mcbr(x, layer.weight.detach(), y), abs=1e-5)
    dropped = float(mcbr(x, layer.weight, y, ignore_index=255))
    assert abs(float(got) - dropped) > 1e-3
    # the config fragment every FixNorm config inherits says the same
    base = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'fixnorm.py'))
    assert HOOKS.build(base.custom_hooks[0]).ignore_index is None


def test_a_label_outside_the_classes_names_ignore_index():
    """A segmentation config that forgot ignore_index=255: a clear error,
    not an index error inside Eq. 9."""
    layer = torch.nn.Linear(4, 10)
    hook = MCBRHook(interval=1, layer='decode_head.conv_seg')
    hook.layer, hook.layer_name, hook._captured = layer, 'decode_head.conv_seg', torch.randn(2, 4)
    batch = dict(data_samples=[BaseDataElement(gt_label=torch.tensor([c])) for c in (1, 255)])
    with pytest.raises(ValueError, match=r"label 255 is not a class .*ignore_index=255"):
        hook.mcbr_scalar(batch)


def test_samples_without_labels_warn_once(tmp_path):
    log_file = str(tmp_path / 'x.log')
    MMLogger.get_instance(f'mcbr_{uuid.uuid4().hex[:8]}', log_file=log_file)
    hook = MCBRHook(interval=1, layer='head.fc')
    hook.layer, hook.layer_name = torch.nn.Linear(4, 3), 'head.fc'
    batch = dict(data_samples=[BaseDataElement(gt_instances=torch.zeros(1))])
    for _ in range(2):
        hook._captured = torch.randn(1, 4)
        assert hook.mcbr_scalar(batch) == {}
    for h in MMLogger.get_current_instance().handlers:
        h.flush()
    text = open(log_file).read()
    assert text.count('MCBR of head.fc is not logged') == 1
    assert 'gt_instances' in text and 'gt_label' in text and 'WARNING' in text


# ----------------------------------------------------------------- the startup table
@MODELS.register_module(force=True)
class FrozenStemToyNet(ToyNet):
    """ToyNet whose first BatchNorm stays in eval mode while training, as
    mmdet's ``norm_eval=True`` keeps RetinaNet's backbone BN."""

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone[1].eval()
        return self


def test_trainable_weights_without_fixnorm_or_weight_decay_get_a_warning(tmp_path):
    """RetinaNet-like: a conv feeding a frozen BN is left out of the fixed set
    (not scale-invariant) and, trained without weight decay, nothing bounds it:
    the log says so at WARNING, with the config keys that change it; the full
    per-tensor list goes to a file, not to the INFO log. With those keys
    applied the run trains and the warning is gone."""
    model = dict(type='FrozenStemToyNet', plain_conv=False)
    fixnorm = dict(type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
                   optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0),
                   norm_control=dict(type='FixNorm'))
    Runner.from_cfg(runner_cfg(tmp_path / 'a', max_iters=1, model=model,
                               optim_wrapper=fixnorm)).train()
    log = text_log(tmp_path / 'a')
    warning = next(s for s in log.splitlines() if 'WARNING - FixNorm:' in s)
    assert '1 trainable weight tensor (216 params) gets neither FixNorm nor weight decay' \
        in warning
    assert 'followed by BatchNorm2d in eval mode (frozen statistics): not scale-invariant: ' \
        '1 (backbone.0.weight)' in warning
    for key in ('optim_wrapper.optimizer.weight_decay', 'paramwise_cfg', 'keeps the '
                "config's weight decay on every tensor it does not control", 'norm_eval=False'):
        assert key in warning
    # the summary counts by reason; the per-tensor list is in the work dir only
    assert 'followed by BatchNorm2d in eval mode (frozen statistics): not scale-invariant: ' \
        '1 tensor, 216 params (backbone.0.weight)' in log
    assert '[default] backbone.3.weight' not in log
    tensors = open(glob.glob(str(tmp_path / 'a' / '*' / 'fixnorm_tensors.txt'))[0]).read()
    assert '[default] backbone.3.weight  (followed by BatchNorm2d)' in tensors

    # the remedy the warning names: weight decay, which FixNorm takes over on the
    # weights it fixes and leaves on the others
    remedy = dict(fixnorm, optimizer=dict(fixnorm['optimizer'], weight_decay=1e-4))
    runner = Runner.from_cfg(runner_cfg(tmp_path / 'b', max_iters=1, model=model,
                                        optim_wrapper=remedy))
    runner.train()
    assert 'WARNING - FixNorm:' not in text_log(tmp_path / 'b')
    decay = {id(p): g['weight_decay'] for g in runner.optim_wrapper.optimizer.param_groups
             for p in g['params']}
    assert decay[id(runner.model.backbone[0].weight)] == 1e-4
    assert decay[id(runner.model.backbone[3].weight)] == 0.0  # fixed: taken over


# ----------------------------------------------------------------- configs and tools
def test_toy_config_shows_the_startup_table(tmp_path):
    """configs/toy log at INFO: a run prints what FixNorm fixes."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'toy', 'toy_fixnorm.py'))
    cfg.work_dir = str(tmp_path)
    cfg.experiment_name = f'toy_{uuid.uuid4().hex[:8]}'
    cfg.train_cfg = dict(by_epoch=False, max_iters=1, val_interval=100)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = None
    cfg.train_dataloader.dataset.num_samples = 32
    Runner.from_cfg(cfg).train()
    log = text_log(tmp_path)
    assert 'FixNorm fixed set (global norm, Algo 1)' in log
    assert 'reference norm' in log


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only refusal')
def test_amp_on_a_cpu_is_refused_by_train_py_before_mmengine(tmp_path):
    train = load_tool('train')
    args = Namespace(config=osp.join(ROOT, 'configs', 'toy', 'toy_fixnorm.py'),
                     launcher='none', method=None, cfg_options=None, work_dir=str(tmp_path),
                     amp=True, auto_scale_lr=False, resume=None)
    with pytest.raises(ValueError, match='--amp: mixed precision needs a GPU'):
        train.build_cfg(args)


# ----------------------------------------------------------------- the sweep figure
def _fixnorm_result(alpha_metrics):
    from fixnorm_mm.tuning.trial import Trial, TuneResult
    trials = [Trial('fixnorm_tune', 0, lr, 0.2, m, alpha=1.0)
              for lr, m in ((0.8, 60.0), (1.4, 70.0), (2.0, 65.0))]
    trials += [Trial('fixnorm_tune', 1, lr, 1.0, m, alpha=1.0)
               for lr, m in ((0.2, 70.0), (0.8, 80.0), (1.4, 75.0))]
    trials += [Trial('fixnorm_tune', 'alpha', 0.8, 1.0, m, alpha=a)
               for a, m in alpha_metrics]
    best = max([80.0] + [m for _, m in alpha_metrics])
    best_alpha = 1.0 if best == 80.0 else next(a for a, m in alpha_metrics if m == best)
    return TuneResult('fixnorm_tune', trials, best_lr=0.8, best_metric=best,
                      best_alpha=best_alpha, lr_probes=[[0.8, 1.4, 2.0], [0.2, 0.8, 1.4]])


def _figure(monkeypatch, tmp_path, results):
    from matplotlib.figure import Figure

    from fixnorm_mm.tuning import report
    saved = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, 'savefig', lambda fig, *a, **k: (saved.append(fig),
                                                                 real(fig, *a, **k))[1])
    report.plot(results, str(tmp_path / 'fig.png'), 'acc')
    assert osp.exists(tmp_path / 'fig.png')
    return saved[0]


def _texts(ax):
    return ' '.join([ax.get_title()] + [t.get_text() for t in ax.texts] +
                    ([t.get_text() for t in ax.get_legend().get_texts()]
                     if ax.get_legend() else []))


def test_sweep_figure_counts_the_short_trials_and_marks_the_chosen_alpha(monkeypatch, tmp_path):
    result = _fixnorm_result([(0.5, 78.0), (2.0, 82.0), (4.0, 81.0)])
    fig = _figure(monkeypatch, tmp_path, [result])
    progress, _, alpha = fig.axes[:3]
    # 3 short trials (0.6 T_max), then the first full-budget result at 1.6 T_max:
    # the panel starts at 0, ticks every trial's cost and shows the short trials' share
    assert progress.get_xlim()[0] == 0.0
    costs = [0.2, 0.4, 0.6, 1.6, 2.6, 3.6, 4.6, 5.6, 6.6]
    assert any(list(line.get_xdata()) == pytest.approx(costs) for line in progress.get_lines())
    assert 'fixnorm_tune: 0.6 T_max of short trials' in _texts(progress)
    # the chosen alpha is marked at its metric, and named
    marked = [line for line in alpha.get_lines() if 'chosen' in (line.get_label() or '')]
    assert marked and list(marked[0].get_xdata()) == [2.0] \
        and list(marked[0].get_ydata()) == [82.0]
    assert 'alpha = 2' in marked[0].get_label() and 'tie' not in marked[0].get_label()


def test_sweep_figure_explains_a_tie_between_alphas(monkeypatch, tmp_path):
    # alpha 2 ties alpha_0 = 1 (80.0): Algo 2 keeps alpha_0, it needs a strictly better metric
    result = _fixnorm_result([(0.5, 70.0), (2.0, 80.0), (4.0, 79.0)])
    assert result.best_alpha == 1.0
    fig = _figure(monkeypatch, tmp_path, [result])
    alpha = fig.axes[2]
    text = _texts(alpha)
    assert 'tie' in text and 'alpha = 1' in text and 'alpha = 2' in text
    assert 'strictly' in text



def test_monitoring_experiment_smoke(tmp_path):
    """experiments/monitoring.py (the figure of docs/monitoring.md), 1 epoch."""
    import sys
    sys.path.insert(0, osp.join(ROOT, 'experiments'))
    try:
        import monitoring
    finally:
        sys.path.remove(osp.join(ROOT, 'experiments'))
    monitoring.main(['--smoke', '--work-dir', str(tmp_path)])
    assert osp.getsize(tmp_path / 'monitoring.png') > 0
    from fixnorm_mm.monitoring import read_scalars
    for run in ('run0', 'run1'):
        tags = read_scalars(str(tmp_path / run))
        assert {'accuracy', 'fixnorm/mcbr', 'fixnorm/g', 'fixnorm/norm_default',
                'fixnorm/default_effective_lr'} <= set(tags)
