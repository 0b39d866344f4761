"""What a tuning method gets back from one trial, and what it keeps of it.

Both tuners (:class:`~fixnorm_mm.tuning.FixNormTune`,
:class:`~fixnorm_mm.tuning.BOWDTune`) call an *objective*
``objective(lr, x, budget_fraction)``, where ``x`` is alpha (FixNorm) or the
weight decay (BO+WD) and ``budget_fraction`` the length of the training in
units of T_max. The objective returns the metric (higher is better), or a
:class:`TrialOutcome` when it has more to say (a work_dir, a log path), and
raises :class:`TrialFailed` for a trial that crashed or diverged: the tuner
records it and goes on. A non-finite metric counts as a failure too.
:class:`TrialInterrupted` (killed, no result, run it again) and
:class:`SweepConfigError` (a mistake every trial would hit) are not failures
of the trial: tuners let them through to the sweep.

Cost is counted in units of T_max, the length of one full training: a trial
at budget 0.2 costs 0.2, whatever it ran on.
"""
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union


class TrialFailed(Exception):
    """A trial that failed deterministically: it crashed with a Python error,
    diverged (NaN), or produced a non-finite metric. That is a result: the
    same trial would fail again, so a sweep records it and does not re-run it.

    ``info`` (e.g. ``log=<path>``, ``work_dir=<path>``, ``returncode``) is
    kept in the record.
    """

    def __init__(self, reason: str, **info: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.info = info


class TrialInterrupted(Exception):
    """A trial that ended without a result for a reason outside it: its
    process was killed by a signal (the OOM killer's SIGKILL, a SIGTERM, a
    Slurm time limit), it died while saving a checkpoint, it ran out of
    memory, or the sweep stopped it. Nothing is recorded as its result; it is
    run again (resuming from its last complete checkpoint), in the same sweep
    up to ``retries`` times and on every rerun of the sweep.

    Not a :class:`TrialFailed`: a tuner that records failures must not record
    this one. ``retry_now=False``: the sweep itself is stopping, do not retry
    it in this run.
    """

    def __init__(self, reason: str, retry_now: bool = True, **info: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_now = retry_now
        self.info = info


class TrialPruned(Exception):
    """A trial that an early-stopping tuner (ASHA+WD: an Optuna pruner) stopped
    after one of its evaluations because it looked worse than the others at
    the same step. That is a result, but not a full training: it is recorded
    as PRUNED, costs ``budget`` (the fraction of T_max it ran), and its
    ``metric`` (the last evaluation) can never be the tuner's best, which is
    a full-budget result.
    """

    def __init__(self, budget: float, metric: float, step: int, **info: Any) -> None:
        super().__init__(f'pruned at step {step} ({budget:.3g} T_max): {metric:.6g}')
        self.budget, self.metric, self.step = float(budget), float(metric), int(step)
        self.info = dict(info, pruned_step=int(step))


class SweepConfigError(ValueError):
    """A mistake every trial of the sweep would hit (a ``--metric`` the runs do
    not log, an ``--lr-key``/``--alpha-key`` that is not in the config): the
    sweep stops at once, with this message, and records nothing for the trial
    that showed it, so that the corrected command trains it."""


class SweepInterrupted(RuntimeError):
    """Trials of the sweep were interrupted (:class:`TrialInterrupted`) more
    often than ``retries`` allows, so the sweep cannot finish a round of Algo 2
    in this run. Everything that finished is kept; running the same command
    again retries the interrupted trials."""


@dataclass
class TrialOutcome:
    """A metric with the trial's bookkeeping (work_dir, log, ...)."""
    metric: float
    info: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Trial:
    """One evaluated point: the hyperparameters, the budget it ran for, the result.

    ``round`` is the lr round r (0 .. N-1) or ``'alpha'`` for FixNorm-tune's
    alpha round, and the trial's index for BO+WD and ASHA+WD. A ``pruned``
    trial (ASHA+WD) was stopped early: ``budget`` is the fraction of T_max it
    ran, ``metric`` its last evaluation.
    """
    method: str
    round: Union[int, str]
    lr: float
    budget: float
    metric: float = float('nan')
    failed: bool = False
    alpha: Optional[float] = None
    weight_decay: Optional[float] = None
    info: Dict[str, Any] = field(default_factory=dict)
    pruned: bool = False

    @property
    def cost(self) -> float:
        """What the trial cost in units of T_max (its budget fraction; what a
        pruned trial ran)."""
        return self.budget

    def to_dict(self) -> dict:
        return asdict(self)


def call_objective(objective, lr: float, x: float, budget: float) -> Tuple[float, bool, dict]:
    """Run one trial: ``(metric, failed, info)``.

    Only :class:`TrialFailed` is caught: any other exception is a bug of the
    objective, and hiding it behind a row of failed trials would cost a whole
    sweep to find out; :class:`TrialInterrupted` and :class:`SweepConfigError`
    are no results either and reach the caller (the sweep) too.
    """
    try:
        out = objective(lr, x, budget)
    except TrialFailed as err:
        return float('nan'), True, dict(err.info, error=err.reason)
    info = {}
    if isinstance(out, TrialOutcome):
        out, info = out.metric, dict(out.info)
    metric = float(out)
    if not math.isfinite(metric):
        return float('nan'), True, dict(info, error=f'non-finite metric {metric}')
    return metric, False, info


@dataclass
class TuneResult:
    """Everything a tuner did, in the order it did it."""
    method: str
    trials: List[Trial]
    best_lr: Optional[float]
    best_metric: float
    best_alpha: Optional[float] = None
    best_weight_decay: Optional[float] = None
    lr_probes: List[List[float]] = field(default_factory=list)

    @property
    def total_cost(self) -> float:
        """Sum of the budgets of all trials run, in units of T_max."""
        return sum(t.cost for t in self.trials)

    def progress(self, full_budget: float = 1.0) -> List[Tuple[float, float]]:
        """``(cumulative cost, best metric so far)`` after each trial.

        Only trials that ran for the full budget count as "reached": a short
        or pruned trial's metric is not a result one could deploy at T_max.
        """
        out, cost, best = [], 0.0, float('-inf')
        for t in self.trials:
            cost += t.cost
            if not t.failed and not t.pruned and t.budget >= full_budget - 1e-12:
                best = max(best, t.metric)
            out.append((cost, best))
        return out

    def cost_to_reach(self, target: float, full_budget: float = 1.0) -> float:
        """Cost (T_max) after which a full-budget trial reached ``target``; inf if never."""
        for cost, best in self.progress(full_budget):
            if best >= target:
                return cost
        return float('inf')

    def to_dict(self) -> dict:
        return dict(method=self.method, best_lr=self.best_lr, best_alpha=self.best_alpha,
                    best_weight_decay=self.best_weight_decay, best_metric=self.best_metric,
                    total_cost=self.total_cost, lr_probes=self.lr_probes,
                    trials=[t.to_dict() for t in self.trials])


def check_range(name: str, value: Sequence[float], positive: bool = True) -> Tuple[float, float]:
    if len(value) != 2:
        raise ValueError(f'{name} must be (min, max), got {value!r}')
    lo, hi = float(value[0]), float(value[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi or (positive and lo < 0):
        raise ValueError(f'{name} must be finite with 0 <= min < max, got {value!r}')
    return lo, hi
