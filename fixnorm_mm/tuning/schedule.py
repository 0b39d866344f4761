"""A budget of ``fraction * T_max``: the whole schedule, shrunk.

Algo 2 trains for T_r = 0.2 T_max in its first round. That is a shorter
*schedule*, not a full one stopped early: warm-up, step milestones, the cosine
or poly decay all end proportionally earlier, so that the lr a short trial
prefers means something for the long one (Sec. 2.4's second prior compares
complete trainings of different lengths).

:func:`scale_schedule` turns a config and a fraction into ``--cfg-options``
(flat keys, list items by index) that rewrite ``train_cfg`` and every
``param_scheduler`` consistently: every position on the schedule's time axis
(``begin``, ``end``, ``milestones``, ``T_max``, ``step_size``,
``total_steps``, ``periods``, ``dynamic_intervals``) is multiplied by the
realised ratio new_length / old_length and rounded to the unit it is counted
in (an iteration or an epoch). Epoch positions of a scheduler with
``convert_to_iter_based=True`` keep their fraction where mmengine converts
it exactly (``begin``, ``end``, ``T_max``), so a 4-epoch warm-up becomes a
0.8-epoch warm-up at budget 0.2. Hooks whose own intervals depend on the
length (checkpoint interval, EMA start) are left as they are.
"""
import math
from typing import Any, Dict, Tuple

#: mmengine's "until the end of training" for a scheduler's ``end``.
INF = int(1e9)
#: Scheduler arguments that are positions or lengths on the time axis.
_POSITIONS = ('begin', 'end', 'T_max', 'step_size', 'total_steps')


def schedule_length(cfg) -> Tuple[str, int]:
    """``('max_iters' | 'max_epochs', value)`` of ``cfg.train_cfg``."""
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_iters', 'max_epochs'):
        if key in train_cfg:
            return key, int(train_cfg[key])
    raise ValueError('scale_schedule: train_cfg has neither max_iters nor max_epochs; '
                     f'got train_cfg={dict(train_cfg)!r}')


def scale_schedule(cfg, fraction: float) -> Dict[str, Any]:
    """``--cfg-options`` that shrink ``cfg``'s schedule to ``fraction`` of T_max.

    Args:
        cfg: an mmengine ``Config`` (or dict) with ``train_cfg`` and, optionally,
            ``param_scheduler`` (one dict or a list).
        fraction: the budget, in (0, 1] (values above 1 lengthen the schedule).

    Returns:
        A flat dict such as ``{'train_cfg.max_iters': 18000,
        'param_scheduler.1.milestones': [12000, 16000]}``, to give to
        ``cfg.merge_from_dict`` or ``tools/train.py --cfg-options``. Empty at
        fraction 1.
    """
    fraction = float(fraction)
    if not (math.isfinite(fraction) and fraction > 0):
        raise ValueError(f'scale_schedule: fraction must be > 0, got {fraction!r}')
    key, old = schedule_length(cfg)
    new = max(1, round(old * fraction))
    if new == old:
        return {}
    ratio = new / old
    out: Dict[str, Any] = {f'train_cfg.{key}': new}
    train_cfg = cfg['train_cfg']
    # the last evaluation is what the trial reports; it only happens if it
    # is not scheduled to begin after the shortened run ends
    if int(train_cfg.get('val_begin', 1)) > new:
        out['train_cfg.val_begin'] = new
    if train_cfg.get('dynamic_intervals'):
        out['train_cfg.dynamic_intervals'] = [
            (max(1, round(m * ratio)), interval) for m, interval in train_cfg['dynamic_intervals']]

    schedulers = cfg.get('param_scheduler')
    if schedulers is None:
        return out
    if isinstance(schedulers, dict):
        items = [('param_scheduler', schedulers)]
    else:
        items = [(f'param_scheduler.{i}', s) for i, s in enumerate(schedulers)]
    for prefix, sched in items:
        for name, value in _scale_scheduler(sched, ratio).items():
            out[f'{prefix}.{name}'] = value
    return out


def _scale_scheduler(sched: dict, ratio: float) -> Dict[str, Any]:
    # mmengine converts begin/end/T_max of an epoch-based scheduler with
    # convert_to_iter_based=True into iterations (x epoch_length), so they may
    # stay fractional; everything else must be whole units.
    fractional = bool(sched.get('by_epoch', True) and sched.get('convert_to_iter_based', False))
    out: Dict[str, Any] = {}
    for name in _POSITIONS:
        value = sched.get(name)
        if value is None or (name == 'end' and value >= INF):
            continue
        scaled = value * ratio
        if not (fractional and name in ('begin', 'end', 'T_max')):
            scaled = round(scaled)
            if name != 'begin':
                scaled = max(1, scaled)
        else:
            scaled = float(f'{scaled:.12g}')
        out[name] = scaled
    begin = out.get('begin', sched.get('begin', 0))
    if 'end' in out and out['end'] <= begin:  # rounding must not empty the scheduler
        out['end'] = begin + 1
    for name in ('milestones', 'periods'):
        if sched.get(name) is not None:
            out[name] = [max(1, round(m * ratio)) for m in sched[name]]
    return out
