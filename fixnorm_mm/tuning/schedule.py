"""A schedule's time axis, rescaled: one function for a budget of FixNorm-tune
and for the config shrinkers of :mod:`fixnorm_mm.testing`.

Algo 2 trains for T_r = 0.2 T_max in its first round. That is a shorter
*schedule*, not a full one stopped early: warm-up, step milestones, the cosine
or poly decay all end proportionally earlier, so that the lr a short trial
prefers means something for the long one (Sec. 2.4's second prior compares
complete trainings of different lengths).

:func:`rescale_scheduler` does the arithmetic for one parameter scheduler:
every position on its time axis (``begin``, ``end``, and ``begin`` plus
``milestones``, ``T_max``, ``step_size``, ``total_steps``, ``periods``, which
mmengine counts from ``begin``) is moved by one time map (times the factor,
or piecewise when a warm-up keeps its length) and rounded to the unit it is
counted in (an iteration or an epoch), and an exponential scheduler's
``gamma`` is raised to ``1 / stretch`` so that it decays as much in total.
Its two users want different forms:

* :func:`scale_schedule` (FixNorm-tune) turns a config and a fraction into
  ``--cfg-options`` (flat keys, list items by index) that rewrite
  ``train_cfg`` and every ``param_scheduler`` consistently, in the
  schedulers' own units. Epoch positions of a scheduler with
  ``convert_to_iter_based=True`` keep their fraction where mmengine converts
  it exactly (``begin``, ``end``, ``T_max``), so a 4-epoch warm-up becomes a
  0.8-epoch warm-up at budget 0.2 (the default warm-up rule, below), and an
  iteration warm-up keeps at least two iterations. Hooks whose own intervals
  depend on the length (checkpoint interval, EMA start) are left as they are.
* :func:`fixnorm_mm.testing.common.rescaled_schedulers` (the shrinkers) wants
  a copy of the scheduler list moved to iterations and at least two
  iterations long each.

The warm-up of a budget (``scale_schedule(..., warmup=...)``). The paper
trains round 0 "for 1/5 total epochs" with its general setup, "linear warmup
at first 4 epochs" (Sec. 3, 3.1); it does not say whether a 24-epoch trial
warms up for 4 epochs or for 0.8. Both are offered:

* ``'scaled'`` (default): the warm-up shrinks with everything else (4 -> 0.8
  epochs; COCO's 500 iterations -> 100), the trial a miniature of the full
  training.
* ``'absolute'``: a warm-up keeps its length, and the rest of the schedule is
  compressed into what is left: 4 epochs of warm-up, then the cosine from
  epoch 4 to 24 (the general setup read literally).

Why ``'scaled'`` is the default (``experiments/warmup_round0.py``,
docs/tuning.md): with the paper's proportion of warm-up (1/30 of T_max) the
rule does not change the lr round 0 picks on the paper's grid; where the
warm-up is a large part of T_max, ``'absolute'`` turns the short trial into
mostly warm-up, its accuracy collapses and stops being concave in lr (Algo 2's
first prior), while ``'scaled'`` keeps round 0's pick above the full
training's best lr (the second prior).

A warm-up is a ``LinearLR`` / ``ConstantLR`` / ``QuadraticWarmupLR`` (mmengine's
and mmdet's warm-ups) that begins at 0 and ends before the training does. With
``'absolute'`` the time axis of the schedulers counted in the warm-up's unit
is mapped piecewise: positions up to the warm-up's end W stay, positions
beyond it move linearly so that the old end L lands on the new end r L
(x -> W + (x - W) (r L - W) / (L - W)). Schedulers counted in another unit
than the warm-up (mmdet's epoch steps after an iteration warm-up) are scaled
by r as with ``'scaled'``: without the dataset, W is not known in their unit.
"""
import copy
import math
from typing import Any, Dict, List, Optional, Tuple

#: mmengine's "until the end of training" for a scheduler's ``end``.
INF = int(1e9)
#: Scheduler arguments that are positions on the time axis ...
POSITIONS = ('begin', 'end')
#: ... lengths counted from the scheduler's ``begin`` (mmengine counts a
#: scheduler's own steps from its ``begin``) ...
LENGTHS = ('T_max', 'step_size', 'total_steps')
#: ... lists of positions counted from ``begin`` ...
POSITION_LISTS = ('milestones',)
#: ... and lists of consecutive lengths.
LENGTH_LISTS = ('periods',)
#: How a budget treats the warm-up (module docstring).
WARMUP_RULES = ('scaled', 'absolute')
#: What :func:`scale_schedule` does unless told otherwise (module docstring,
#: docs/tuning.md: the measurement behind it).
DEFAULT_WARMUP = 'scaled'
#: Scheduler types that are a warm-up when they begin at 0 and end before the
#: training does (mmengine's LR warm-ups and mmdet's quadratic one).
WARMUP_TYPES = ('LinearLR', 'ConstantLR', 'QuadraticWarmupLR')


def schedule_length(cfg) -> Tuple[str, int]:
    """``('max_iters' | 'max_epochs', value)`` of ``cfg.train_cfg``."""
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_iters', 'max_epochs'):
        if key in train_cfg:
            return key, int(train_cfg[key])
    raise ValueError('scale_schedule: train_cfg has neither max_iters nor max_epochs; '
                     f'got train_cfg={dict(train_cfg)!r}')


def check_warmup_rule(warmup: str, key: str = 'warmup') -> str:
    if warmup not in WARMUP_RULES:
        raise ValueError(f'{key} must be one of {WARMUP_RULES} (docs/tuning.md), got {warmup!r}')
    return warmup


def _finite_end(sched: dict) -> Optional[float]:
    end = sched.get('end')
    if end is None or not (math.isfinite(end) and end < INF):
        return None
    return float(end)


def is_warmup(sched: dict, length: Optional[float] = None) -> bool:
    """``sched`` is a warm-up: a :data:`WARMUP_TYPES` scheduler from 0 to a
    finite end before ``length`` (the training's end in its unit, if known)."""
    end = _finite_end(sched)
    return (str(sched.get('type', '')) in WARMUP_TYPES and sched.get('begin', 0) == 0
            and end is not None and end > 0 and (length is None or end < length))


def warmup_axes(schedulers: List[dict], loop_by_epoch: bool,
                loop_length: float) -> Dict[bool, Tuple[float, Optional[float]]]:
    """``{by_epoch: (W, L)}`` for each unit that has a warm-up: its end W and
    the training's end L in that unit (``None`` when the schedulers do not
    say: a unit other than the loop's, with no other scheduler ending at the
    training's end)."""
    axes: Dict[bool, Tuple[float, Optional[float]]] = {}
    for unit in (True, False):
        mine = [s for s in schedulers if bool(s.get('by_epoch', True)) == unit]
        if unit == loop_by_epoch:
            length: Optional[float] = float(loop_length)
        else:
            ends = [e for s in mine if not is_warmup(s)
                    for e in [_finite_end(s)] if e is not None]
            length = max(ends) if ends else None
        ends = [float(s['end']) for s in mine if is_warmup(s, length)]
        if ends:
            axes[unit] = (max(ends), length)
    return axes


def scale_schedule(cfg, fraction: float, warmup: str = DEFAULT_WARMUP) -> Dict[str, Any]:
    """``--cfg-options`` that shrink ``cfg``'s schedule to ``fraction`` of T_max.

    Args:
        cfg: an mmengine ``Config`` (or dict) with ``train_cfg`` and, optionally,
            ``param_scheduler`` (one dict or a list).
        fraction: the budget, in (0, 1] (values above 1 lengthen the schedule).
        warmup: ``'scaled'`` (default): the warm-up shrinks with the rest;
            ``'absolute'``: a warm-up keeps its length and what follows it is
            compressed (module docstring). A warm-up is kept at least two
            iterations (or epochs) long either way: mmengine's LinearLR and
            ConstantLR never step within one, and would hold the lr at their
            start factor for the whole trial.

    Returns:
        A flat dict such as ``{'train_cfg.max_iters': 18000,
        'param_scheduler.1.milestones': [12000, 16000]}``, to give to
        ``cfg.merge_from_dict`` or ``tools/train.py --cfg-options``. Empty at
        fraction 1.
    """
    fraction = float(fraction)
    if not (math.isfinite(fraction) and fraction > 0):
        raise ValueError(f'scale_schedule: fraction must be > 0, got {fraction!r}')
    check_warmup_rule(warmup, 'scale_schedule: warmup')
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
    axes = warmup_axes([s for _, s in items], key == 'max_epochs', old) \
        if warmup == 'absolute' else {}
    for prefix, sched in items:
        keep_until, length = axes.get(bool(sched.get('by_epoch', True)), (0.0, None))
        # a warm-up of one iteration would never step: mmengine's LinearLR and
        # ConstantLR leave the lr at their start factor for good
        min_length = 2 if str(sched.get('type', '')) in WARMUP_TYPES else 1
        try:
            changed = rescale_scheduler(sched, ratio, min_length=min_length,
                                        keep_until=keep_until, length=length)
        except ValueError as err:
            raise ValueError(f"scale_schedule(warmup='absolute'): {prefix} "
                             f"({sched.get('type')}): {err}") from None
        for name, value in changed.items():
            out[f'{prefix}.{name}'] = value
    return out


def rescale_scheduler(sched: dict, factor: float, iters_per_epoch: Optional[int] = None,
                      min_length: int = 1, keep_until: float = 0.0,
                      length: Optional[float] = None) -> Dict[str, Any]:
    """The arguments of one parameter scheduler that change when its time
    axis is stretched by ``factor``.

    Every position (``begin``, ``end``, and ``begin`` + each length or
    milestone) is moved by the time map and rounded to whole units (lengths
    and list entries to at least 1); an ``end`` at mmengine's "until the end"
    (``INF``) stays. ``end`` is kept at least ``min_length`` units after
    ``begin``. An ``Exponential*`` scheduler's ``gamma`` becomes
    ``gamma ** (1 / f)``, where f is the stretch of one step, so that it
    decays as much in total.

    The time map is x -> x * factor; with ``keep_until`` = W > 0 (a warm-up
    kept at its length) it is x -> x up to W and x -> W + (x - W) *
    (factor * L - W) / (L - W) beyond, ``length`` = L being the training's
    end, all in the scheduler's own unit.

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
        keep_until: the end of a warm-up that keeps its length (0: none).
        length: the training's end, needed when a position lies beyond
            ``keep_until``.

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
    keep_until = float(keep_until or 0.0)
    slope: Optional[float] = factor
    if keep_until > 0:
        slope = None  # unknown without the training's end; only needed beyond keep_until
        if length is not None:
            room = factor * length - keep_until
            if room <= (0 if fractional else 1 - 1e-9):
                raise ValueError(
                    f'the warm-up ({keep_until:g} units) does not fit in the shortened '
                    f'training ({factor * length:g} units); use a larger budget or '
                    "warmup='scaled'")
            slope = room / (length - keep_until)

    def moved(x: float) -> float:
        """The one map from an old position to the new one, in the new unit."""
        if x <= keep_until:
            return x * unit
        if slope is None:
            raise ValueError(
                "where the training ends in this scheduler's unit is unknown (train_cfg "
                'counts the other unit and no other scheduler of this unit ends there), so '
                "the part after the warm-up cannot be placed; use warmup='scaled'")
        return (keep_until + (x - keep_until) * slope) * unit

    def whole(x: float, at_least: int = 1) -> int:
        return max(at_least, round(x))

    begin = float(sched.get('begin', 0))
    out: Dict[str, Any] = {}
    for name in POSITIONS:
        value = sched.get(name)
        if value is None or (name == 'end' and _finite_end(sched) is None):
            continue
        scaled = moved(value)
        out[name] = float(f'{scaled:.12g}') if fractional else whole(scaled, int(name != 'begin'))
    for name in LENGTHS:
        value = sched.get(name)
        if value is None:
            continue
        scaled = moved(begin + value) - moved(begin)
        out[name] = float(f'{scaled:.12g}') if fractional and name == 'T_max' else whole(scaled)
    new_begin = out.get('begin', sched.get('begin', 0))
    if 'end' in out:  # rounding must not empty (or over-shorten) the scheduler
        short = out['end'] <= new_begin if fractional else out['end'] < new_begin + min_length
        if short:
            out['end'] = new_begin + min_length
    for name in POSITION_LISTS:
        if sched.get(name) is not None:
            out[name] = [whole(moved(begin + m) - moved(begin)) for m in sched[name]]
    for name in LENGTH_LISTS:
        if sched.get(name) is not None:
            marks = [begin]
            for period in sched[name]:
                marks.append(marks[-1] + period)
            out[name] = [whole(moved(b) - moved(a)) for a, b in zip(marks, marks[1:])]
    if str(sched.get('type', '')).startswith('Exponential') and 'gamma' in sched:
        end = _finite_end(sched)
        stretch = (moved(end) - moved(begin)) / (end - begin) if end is not None and end > begin \
            else moved(max(begin, keep_until) + 1) - moved(max(begin, keep_until))
        out['gamma'] = float(sched['gamma']) ** (1.0 / stretch)
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
