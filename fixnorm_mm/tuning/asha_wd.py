"""ASHA+WD: the early-stopping tuner users reach for, as the baseline FixNorm-tune
must beat: Optuna's TPE sampler over lr and weight decay (log scale), with
Optuna's successive-halving pruner (asynchronous SHA, Li et al. 2020; the
default) or its Hyperband pruner, over full trainings that report their
evaluation metric after every evaluation and stop when the pruner says so.

The objective is ``objective(lr, weight_decay, trial)`` with the Optuna
``trial``: the training reports ``trial.report(value, step)`` after each
evaluation (``step`` in the unit of its loop: iterations or epochs), asks
``trial.should_prune()``, and when told to stop raises
:class:`~fixnorm_mm.tuning.trial.TrialPruned` with the fraction of T_max it
ran. A sweep's trials do this from their own process
(:mod:`fixnorm_mm.tuning.pruning`); a benchmark may do it in-process.

Costs are counted as for the other tuners, in T_max: a trial that ran to the
end costs 1, a pruned one what it ran (its ``budget`` user attribute). Only
full trainings count towards "best" (:meth:`TuneResult.progress`): a pruned
trial's last evaluation is not a result one could deploy at T_max.

Resume: as BO+WD, the study in a storage continues until ``n_trials`` trials
have finished (completed, pruned, or failed with a recorded error) or their
cost reaches ``max_cost``. A trial that was interrupted (killed, out of
memory; or its worker died, found by :meth:`TrialStore.reap_dead`) is not a
result: the same point is enqueued again (``user_attrs['retry_of']``) and
runs first, resuming from its newest checkpoint, with the intermediate values
the interrupted attempt reported.
"""
import math
import threading
from typing import Callable, Dict, Optional, Sequence

from .bo_wd import PAPER_WD_RANGE, BOWDTune
from .trial import Trial, TrialInterrupted, TrialPruned, TuneResult, call_objective

#: Optuna's pruners this tuner offers: ``'sha'`` (SuccessiveHalvingPruner: ASHA)
#: and ``'hyperband'`` (HyperbandPruner).
PRUNERS = ('sha', 'hyperband')
#: Optuna's own default reduction factors of the two pruners.
DEFAULT_REDUCTION_FACTOR = {'sha': 4, 'hyperband': 3}


def build_pruner(spec: Dict) -> 'object':
    """The Optuna pruner of ``spec`` (:meth:`ASHAWDTune.pruner_spec`): the same
    pruner in the sweep and in every trial process that asks it."""
    import optuna
    kind = spec['type']
    rf = spec.get('reduction_factor') or DEFAULT_REDUCTION_FACTOR[kind]
    if kind == 'sha':
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.get('min_resource') or 'auto', reduction_factor=rf)
    if kind == 'hyperband':
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.get('min_resource') or 1,
            max_resource=spec.get('max_resource') or 'auto', reduction_factor=rf)
    raise ValueError(f'pruner (--pruner) must be one of {PRUNERS}, got {kind!r}')


def _check_optional_int(name: str, value, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < minimum):
        raise ValueError(f'ASHAWDTune: {name} must be an int >= {minimum}, got {value!r}')


class ASHAWDTune(BOWDTune):
    """Args:
        lr_range, wd_range: search ranges (both on a log scale).
        n_trials: trials to finish (completed, pruned or failed).
        max_cost: also stop once the finished trials cost this many T_max
            (None: no limit).
        pruner: ``'sha'`` (default) or ``'hyperband'``.
        min_resource: the step of the first rung (the first evaluation);
            None: Optuna's default (``'auto'`` for SHA, 1 for Hyperband).
        max_resource: Hyperband's last step (the training's length in the
            unit of its loop); None: Optuna's ``'auto'``.
        reduction_factor: None: Optuna's default (4 for SHA, 3 for Hyperband).
        n_startup_trials: random trials before TPE proposes (Optuna's 10).
        seed: sampler seed (offset by the trials already in the study).
    """
    method = 'asha-wd'
    label = 'ASHA+WD'
    rerun_note = ' (the interrupted ones run first, resuming)'

    def __init__(self, lr_range: Sequence[float] = (0.2, 3.2),
                 wd_range: Sequence[float] = PAPER_WD_RANGE, n_trials: int = 100,
                 max_cost: Optional[float] = None, pruner: str = 'sha',
                 min_resource: Optional[int] = None, max_resource: Optional[int] = None,
                 reduction_factor: Optional[int] = None, n_startup_trials: int = 10,
                 seed: int = 0) -> None:
        super().__init__(lr_range, wd_range, n_trials, budget=1.0, sampler='tpe',
                         n_startup_trials=n_startup_trials, seed=seed)
        if pruner not in PRUNERS:
            raise ValueError(f'ASHAWDTune: pruner (--pruner) must be one of {PRUNERS}, '
                             f'got {pruner!r}')
        _check_optional_int('min_resource (--min-resource)', min_resource, 1)
        _check_optional_int('max_resource', max_resource, 1)
        _check_optional_int('reduction_factor (--reduction-factor)', reduction_factor, 2)
        if max_cost is not None and not (isinstance(max_cost, (int, float)) and max_cost > 0):
            raise ValueError(f'ASHAWDTune: max_cost (--max-cost) must be a number > 0 (T_max), '
                             f'got {max_cost!r}')
        if min_resource is not None and max_resource is not None and min_resource >= max_resource:
            raise ValueError(f'ASHAWDTune: min_resource {min_resource} (the first evaluation) must '
                             f'come before max_resource {max_resource} (the end of training): '
                             'no trial could be stopped early')
        self.pruner, self.max_cost = pruner, max_cost
        self.min_resource, self.max_resource = min_resource, max_resource
        self.reduction_factor = reduction_factor

    def pruner_spec(self) -> Dict:
        """What :func:`build_pruner` needs (JSON: trial processes rebuild it)."""
        return dict(type=self.pruner, min_resource=self.min_resource,
                    max_resource=self.max_resource,
                    reduction_factor=self.reduction_factor or DEFAULT_REDUCTION_FACTOR[self.pruner])

    def make_pruner(self):
        return build_pruner(self.pruner_spec())

    # --------------------------------------------------------------- bookkeeping
    @staticmethod
    def finished(study) -> list:
        """Completed, pruned, or failed with a recorded error."""
        return [t for t in study.get_trials(deepcopy=False)
                if t.state.name in ('COMPLETE', 'PRUNED')
                or (t.state.name == 'FAIL' and 'error' in t.user_attrs)]

    @staticmethod
    def trial_cost(t) -> float:
        """T_max a finished trial cost: what it ran (its ``budget`` attribute)."""
        return float(t.user_attrs.get('budget', 1.0))

    def done(self, study) -> bool:
        finished = self.finished(study)
        return len(finished) >= self.n_trials or (
            self.max_cost is not None
            and sum(self.trial_cost(t) for t in finished) >= self.max_cost - 1e-9)

    @staticmethod
    def interrupted_points(study) -> list:
        """``(params, number)`` of interrupted trials (FAIL without ``error``)
        whose point no trial has taken over: none finished, running or
        waiting with it, and no retry of it (``retry_of``) that is not itself
        interrupted. They are to be run again (:meth:`enqueue_retries`)."""
        trials = study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}

        def interrupted(t):
            return t.state.name == 'FAIL' and 'error' not in t.user_attrs

        def point(t):
            return t.params.get('lr'), t.params.get('weight_decay')
        # a waiting trial's params are not set yet: a retry says whose point it takes
        covered = {point(by_number[t.user_attrs['retry_of']]) if 'retry_of' in t.user_attrs
                   and t.user_attrs['retry_of'] in by_number else point(t)
                   for t in trials if not interrupted(t)}
        out = []
        for t in trials:
            if interrupted(t) and None not in point(t) and point(t) not in covered:
                covered.add(point(t))
                out.append((dict(lr=point(t)[0], weight_decay=point(t)[1]), t.number))
        return out

    def enqueue_retries(self, study) -> list:
        """Enqueue every interrupted point again (it runs before new ones, and
        resumes); returns the numbers of the trials they retry."""
        numbers = []
        for params, number in self.interrupted_points(study):
            study.enqueue_trial(params, user_attrs=dict(retry_of=number))
            numbers.append(number)
        return numbers

    # ------------------------------------------------------------------- search
    def run(self, objective: Callable, study=None, n_jobs: int = 1,
            before_trial: Optional[Callable] = None,
            callback: Optional[Callable[[Trial], None]] = None,
            retries: int = 1) -> TuneResult:
        """Run trials until :meth:`done`.

        Args:
            objective: ``objective(lr, weight_decay, trial) -> metric`` (or a
                :class:`TrialOutcome`); reports each evaluation to the Optuna
                ``trial`` and raises :class:`TrialPruned` when it stops early.
                A retried point's trial has ``user_attrs['retry_of']`` and
                already holds the intermediate values of the attempt it retries
                (the objective may resume after them).
            study: the study to continue (default: a new in-memory one).
            n_jobs: trials at once (threads).
            before_trial, callback, retries: as :meth:`BOWDTune.run`; an
                interrupted trial's point is enqueued again.
        """
        import optuna
        study = study if study is not None else self.create_study()
        lock = threading.Lock()
        interrupted: list = []

        def optuna_objective(trial):
            lr, wd = self._suggest(trial)
            retry_of = trial.user_attrs.get('retry_of')
            if retry_of is not None:  # what the interrupted attempt reported, for the pruner
                old = next(t for t in study.get_trials(deepcopy=False) if t.number == retry_of)
                for step, value in sorted(old.intermediate_values.items()):
                    trial.report(value, step)
            if before_trial is not None:
                before_trial(trial)
            try:
                metric, failed, info = call_objective(
                    lambda a, b, _: objective(a, b, trial), lr, wd, self.budget)
            except TrialPruned as pruned:
                info = dict(pruned.info, budget=pruned.budget, metric=pruned.metric)
                for k, v in info.items():
                    trial.set_user_attr(k, v)
                if callback is not None:
                    callback(Trial(self.method, trial.number, lr, pruned.budget, pruned.metric,
                                   False, weight_decay=wd, info=info, pruned=True))
                raise optuna.TrialPruned(str(pruned)) from None
            except TrialInterrupted as err:
                # FAIL without 'error': not a result; the same point runs again
                study.enqueue_trial(dict(lr=lr, weight_decay=wd),
                                    user_attrs=dict(retry_of=trial.number))
                self._record_interrupted(trial, lr, wd, err, lock, interrupted)
                raise
            info = dict(info, budget=float(info.get('budget', self.budget)))
            return self._record(trial, lr, wd, metric, failed, info, callback)

        return self._optimize(study, optuna_objective, n_jobs, interrupted, retries)

    def result(self, study) -> TuneResult:
        """The study's finished trials in the order they were created; the best
        is the best full training."""
        trials = []
        for t in sorted(self.finished(study), key=lambda t: t.number):
            state = t.state.name
            if state == 'COMPLETE':
                metric = float(t.value)
            elif state == 'PRUNED':
                metric = float(t.user_attrs.get('metric', t.intermediate_values.get(
                    t.last_step, math.nan) if t.last_step is not None else math.nan))
            else:
                metric = math.nan
            trials.append(Trial(self.method, t.number, t.params['lr'], self.trial_cost(t),
                                metric, state == 'FAIL', weight_decay=t.params['weight_decay'],
                                info=dict(t.user_attrs), pruned=state == 'PRUNED'))
        ok = [t for t in trials if not t.failed and not t.pruned]
        best = max(ok, key=lambda t: t.metric) if ok else None
        return TuneResult(self.method, trials,
                          best_lr=best.lr if best else None,
                          best_metric=best.metric if best else -math.inf,
                          best_weight_decay=best.weight_decay if best else None)

