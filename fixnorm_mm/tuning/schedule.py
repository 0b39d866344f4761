"""A schedule's time axis, rescaled: one function for a budget of FixNorm-tune
and for the config shrinkers of :mod:`fixnorm_mm.testing`.

Algo 2 trains for T_r = 0.2 T_max in its first round. That is a shorter
*schedule*, not a full one stopped early: warm-up, step milestones, the cosine
or poly decay all end proportionally earlier, so that the lr a short trial
prefers means something for the long one (Sec. 2.4's second prior compares
complete trainings of different lengths).

:func:`rescale_scheduler` does the arithmetic for one parameter scheduler:
every position on its time axis (``begin``, ``end``, ``milestones``,
``T_max``, ``step_size``, ``total_steps``, ``periods``) is multiplied by the
factor and rounded to the unit it is counted in (an iteration or an epoch),
and an exponential scheduler's ``gamma`` is raised to ``1 / factor`` so that
it decays as much in total. Its two users want different forms:

* :func:`scale_schedule` (FixNorm-tune) turns a config and a fraction into
  ``--cfg-options`` (flat keys, list items by index) that rewrite
  ``train_cfg`` and every ``param_scheduler`` consistently, in the
  schedulers' own units. Epoch positions of a scheduler with
  ``convert_to_iter_based=True`` keep their fraction where mmengine converts
  it exactly (``begin``, ``end``, ``T_max``), so a 4-epoch warm-up becomes a
  0.8-epoch warm-up at budget 0.2. Hooks whose own intervals depend on the
  length (checkpoint interval, EMA start) are left as they are.
* :func:`fixnorm_mm.testing.common.rescaled_schedulers` (the shrinkers) wants
  a copy of the scheduler list moved to iterations and at least two
  iterations long each.
"""
import copy
import math
from typing import Any, Dict, Optional, Tuple

#: mmengine's "until the end of training" for a scheduler's ``end``.
INF = int(1e9)
#: Scheduler arguments that are positions or lengths on the time axis ...
POSITIONS = ('begin', 'end', 'T_max', 'step_size', 'total_steps')
#: ... and lists of them.
POSITION_LISTS = ('milestones', 'periods')


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
        for name, value in rescale_scheduler(sched, ratio).items():
            out[f'{prefix}.{name}'] = value
    return out


def rescale_scheduler(sched: dict, factor: float, iters_per_epoch: Optional[int] = None,
                      min_length: int = 1) -> Dict[str, Any]:
    """The arguments of one parameter scheduler that change when its time
    axis is stretched by ``factor``.

    Every position in :data:`POSITIONS` and :data:`POSITION_LISTS` is
    multiplied by ``factor`` and rounded to whole units (lengths and list
    entries to at least 1); an ``end`` at mmengine's "until the end" (``INF``)
    stays. ``end`` is kept at least ``min_length`` units after ``begin``.
    An ``Exponential*`` scheduler's ``gamma`` becomes ``gamma ** (1 / f)``,
    where f is the stretch of one step, so that it decays as much in total.

    Args:
        sched: one scheduler config (not modified).
        factor: new length / old length of the schedule.
        iters_per_epoch: ``None``: positions stay in the scheduler's unit;
            epoch positions of a ``convert_to_iter_based`` scheduler may stay
            fractional (``begin``, ``end``, ``T_max``: mmengine converts them
            exactly). A number: the result counts iterations, an epoch being
            this many, and says ``by_epoch=False`` (the caller drops
            ``convert_to_iter_based``, see :func:`rescaled_scheduler`).
        min_length: the fewest whole units from ``begin`` to ``end`` (the
            shrinkers use 2: mmengine's LinearLR reaches its end factor only
            at its second step, so a one-iteration warm-up would leave the lr
            at ``start_factor`` for good).

    Returns:
        The rescaled arguments only, e.g. ``{'begin': 0, 'end': 6, 'T_max': 58}``.
    """
    by_epoch = sched.get('by_epoch', True)
    unit = iters_per_epoch if (iters_per_epoch is not None and by_epoch) else 1
    # mmengine converts begin/end/T_max of an epoch-based scheduler with
    # convert_to_iter_based=True into iterations (x epoch_length), so they may
    # stay fractional; everything else must be whole units.
    fractional = (iters_per_epoch is None and bool(by_epoch)
                  and bool(sched.get('convert_to_iter_based', False)))

    def stretched(value):
        # the one map from an old position (or length) to the new one: an
        # option that treats part of the axis differently (a warm-up kept at
        # its absolute length, say) belongs here and in ``unit * factor`` below
        return value * unit * factor

    out: Dict[str, Any] = {}
    for name in POSITIONS:
        value = sched.get(name)
        if value is None or (name == 'end' and not (math.isfinite(value) and value < INF)):
            continue
        scaled = stretched(value)
        if fractional and name in ('begin', 'end', 'T_max'):
            scaled = float(f'{scaled:.12g}')
        else:
            scaled = round(scaled)
            if name != 'begin':
                scaled = max(1, scaled)
        out[name] = scaled
    begin = out.get('begin', sched.get('begin', 0))
    if 'end' in out:  # rounding must not empty (or over-shorten) the scheduler
        short = out['end'] <= begin if fractional else out['end'] < begin + min_length
        if short:
            out['end'] = begin + min_length
    for name in POSITION_LISTS:
        if sched.get(name) is not None:
            out[name] = [max(1, round(stretched(m))) for m in sched[name]]
    if str(sched.get('type', '')).startswith('Exponential') and 'gamma' in sched:
        out['gamma'] = float(sched['gamma']) ** (1.0 / (unit * factor))
    if iters_per_epoch is not None:
        out['by_epoch'] = False
    return out


def rescaled_scheduler(sched: dict, factor: float, iters_per_epoch: int,
                       min_length: int = 1) -> dict:
    """A copy of ``sched`` on an iteration axis stretched by ``factor``
    (:func:`rescale_scheduler` with ``iters_per_epoch``), ``begin`` explicit."""
    out = copy.deepcopy(dict(sched))
    out.pop('convert_to_iter_based', None)  # iteration-based now
    out.setdefault('begin', 0)
    out.update(rescale_scheduler(out, factor, iters_per_epoch, min_length))
    return out
