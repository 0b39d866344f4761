"""What every task's config shrinker does the same way: the schedule rescaled
in time, and the runner settings of a short, deterministic CPU run."""
from typing import Any, Dict, Optional

from ..tuning.schedule import rescaled_scheduler


def set_everywhere(node: Any, values: Dict[str, Any]) -> None:
    """Set every ``key`` of ``values`` wherever it occurs in the nested dicts
    and lists of ``node`` (a model config: ``num_classes`` of every head). A
    callable value is called with the old value and gives the new one."""
    if isinstance(node, dict):
        for key, value in values.items():
            if key in node:
                node[key] = value(node[key]) if callable(value) else value
        for v in node.values():
            set_everywhere(v, values)
    elif isinstance(node, (list, tuple)):
        for v in node:
            set_everywhere(v, values)


def innermost_dataset(dataset: dict, key: str, who: str) -> dict:
    """The dataset config that holds ``key``, under wrappers (RepeatDataset,
    ClassBalancedDataset: ``dataset``; ConcatDataset: its first part)."""
    while key not in dataset:
        if 'dataset' in dataset:
            dataset = dataset['dataset']
        elif 'datasets' in dataset:
            dataset = dataset['datasets'][0]
        else:
            raise KeyError(f'{who}: no {key} in dataset config {dataset!r}')
    return dataset


def schedule_length(cfg, iters_per_epoch: int, who: str) -> float:
    """Length of the original training in iterations."""
    train_cfg = cfg.get('train_cfg') or {}
    if 'max_iters' in train_cfg:
        return float(train_cfg['max_iters'])
    if 'max_epochs' in train_cfg:
        return float(train_cfg['max_epochs'] * iters_per_epoch)
    raise KeyError(f'{who}: train_cfg has neither max_iters nor max_epochs')


def rescaled_schedulers(schedulers, factor: float, iters_per_epoch: int = 1) -> list:
    """Each parameter scheduler moved to iterations and rescaled in time by ``factor``
    (:func:`fixnorm_mm.tuning.schedule.rescale_scheduler`, the arithmetic
    FixNorm-tune's budgets use too).

    ``begin``/``end``/``milestones``/``T_max``/``step_size``/... are scaled and
    rounded, every scheduler kept at least two iterations long (mmengine's
    LinearLR reaches its end factor only at its second step, so a
    one-iteration warm-up would leave the lr at ``start_factor`` for good).
    An exponential scheduler's ``gamma`` is raised to the power
    ``1 / (unit * factor)``, so that it decays as much in total.
    """
    if schedulers is None:
        return []
    return [rescaled_scheduler(s, factor, iters_per_epoch, min_length=2)
            for s in (schedulers if isinstance(schedulers, list) else [schedulers])]


def short_cpu_run(cfg, work_dir: str, max_iters: int, old_len: float, seed: int,
                  val_interval: Optional[int] = None,
                  checkpoint_interval: Optional[int] = None,
                  iters_per_epoch: int = 1) -> None:
    """Turn ``cfg`` (in place) into ``max_iters`` iterations of a CPU run: the
    schedule (``old_len`` iterations, epochs of ``iters_per_epoch``) keeps its
    shape, every hook logs each iteration, one process."""
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                         val_interval=val_interval or max_iters)
    cfg.val_cfg = dict(type='ValLoop')
    cfg.test_cfg = dict(type='TestLoop')
    cfg.param_scheduler = rescaled_schedulers(cfg.get('param_scheduler'),
                                              max_iters / old_len, iters_per_epoch)
    cfg.work_dir = str(work_dir)
    cfg.default_hooks = cfg.get('default_hooks', {})
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1, log_metric_by_epoch=False)
    interval = max_iters if checkpoint_interval is None else checkpoint_interval
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False,
                                        interval=interval, save_last=interval > 0)
    cfg.log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
    for hook in cfg.get('custom_hooks', []) or []:
        if 'interval' in hook:
            hook['interval'] = 1
    cfg.randomness = dict(seed=seed)
    cfg.launcher = 'none'
    cfg.load_from = None
    cfg.resume = False
    cfg.env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'),
                       mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))
