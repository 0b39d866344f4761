"""BO+WD: Bayesian optimisation of lr and weight decay, the baseline of Sec. 3.1.

The paper tunes weight-decay training with Bayesian optimisation (Snoek et al.
2012) over lr in [0.2, 3.2] and weight decay in [1e-5, 5e-4], every trial a
full training (its cost: 25 and 35 T_max in Fig. 5, against FixNorm-tune's 11).
Here Optuna's Gaussian-process sampler (``'gp'``, the method of Snoek et al.;
``'tpe'`` is also offered) searches both on a log scale, through the same
objective interface as :class:`~fixnorm_mm.tuning.FixNormTune`:
``objective(lr, weight_decay, budget_fraction) -> metric``, so that both can
be compared at equal cost.

Given an Optuna study in a shared storage, several processes (or nodes) can
run :meth:`BOWDTune.run` on it at once, and a run killed and started again
continues until ``n_trials`` trials have finished.
"""
import math
from typing import Callable, Optional, Sequence

from .trial import (SweepInterrupted, Trial, TrialFailed, TrialInterrupted, TuneResult,
                    call_objective, check_range)

#: Sec. 3.1.
PAPER_WD_RANGE = (1e-5, 5e-4)


class BOWDTune:
    """Args:
        lr_range, wd_range: search ranges (both searched on a log scale).
        n_trials: trials to finish (completed or failed), each at ``budget``.
        budget: fraction of T_max of every trial (the paper: full trainings).
        sampler: ``'gp'`` (Gaussian process, default) or ``'tpe'``.
        n_startup_trials: random trials before the model proposes.
        seed: sampler seed (offset by the number of trials already in the study,
            so that a resumed run does not redraw the first run's points).
    """
    method = 'bo-wd'

    def __init__(self, lr_range: Sequence[float] = (0.2, 3.2),
                 wd_range: Sequence[float] = PAPER_WD_RANGE, n_trials: int = 25,
                 budget: float = 1.0, sampler: str = 'gp', n_startup_trials: int = 5,
                 seed: int = 0) -> None:
        who = type(self).__name__
        self.lr_range = check_range('lr_range (--lr-range)', lr_range)
        self.wd_range = check_range('wd_range (--wd-range)', wd_range)
        if self.lr_range[0] <= 0 or self.wd_range[0] <= 0:
            raise ValueError(f'{who}: lr_range (--lr-range) and wd_range (--wd-range) are '
                             f'searched on a log scale and must be > 0, got {lr_range}, '
                             f'{wd_range}')
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise ValueError(f'{who}: n_trials (--n-trials) must be an int >= 1, '
                             f'got {n_trials!r}')
        if isinstance(n_startup_trials, bool) or not isinstance(n_startup_trials, int) \
                or n_startup_trials < 0:
            raise ValueError(f'{who}: n_startup_trials (--n-startup-trials) must be an int '
                             f'>= 0, got {n_startup_trials!r}')
        if not 0 < budget <= 1:
            raise ValueError(f'{who}: budget must be in (0, 1], got {budget!r}')
        if sampler not in ('gp', 'tpe'):
            raise ValueError(f"{who}: sampler (--sampler) must be 'gp' or 'tpe', "
                             f'got {sampler!r}')
        self.n_trials, self.budget = n_trials, float(budget)
        self.sampler, self.n_startup_trials, self.seed = sampler, n_startup_trials, seed

    def make_sampler(self, offset: int = 0):
        import optuna
        seed = self.seed + offset
        if self.sampler == 'gp':
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=self.n_startup_trials)
        # constant_liar: parallel workers do not all propose the same point
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials,
                                          constant_liar=True)

    def make_pruner(self):
        """The study's pruner: None (Optuna's default; BO+WD's trials report nothing)."""
        return None

    def create_study(self, storage=None, study_name: Optional[str] = None):
        """A study (new or loaded from ``storage``) with this tuner's sampler and
        pruner."""
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=storage, study_name=study_name,
                                    direction='maximize', load_if_exists=True,
                                    pruner=self.make_pruner())
        study.sampler = self.make_sampler(offset=len(study.trials))
        return study

    @staticmethod
    def finished(study) -> list:
        """Trials that count towards ``n_trials``: completed, or failed with a
        recorded error (a worker that died leaves a FAIL without one)."""
        return [t for t in study.get_trials(deepcopy=False)
                if t.state.name == 'COMPLETE'
                or (t.state.name == 'FAIL' and 'error' in t.user_attrs)]

    def run(self, objective: Callable, study=None, n_jobs: int = 1,
            before_trial: Optional[Callable] = None,
            callback: Optional[Callable[[Trial], None]] = None,
            retries: int = 1) -> TuneResult:
        """Run trials until ``n_trials`` have finished in ``study``.

        Args:
            objective: ``objective(lr, weight_decay, budget_fraction) -> metric``.
            study: an Optuna study to continue (default: a new in-memory one).
            n_jobs: trials run at once (threads; the objective may launch processes).
            before_trial: called with each Optuna trial before it runs (e.g. to
                record where its logs go).
            callback: called with each :class:`Trial` this call ran.
            retries: trials the objective may report as interrupted
                (:class:`TrialInterrupted`: no result; they do not count and a
                new trial takes their place) before the run stops with
                :class:`SweepInterrupted`.
        """
        import threading
        study = study if study is not None else self.create_study()
        lock = threading.Lock()
        interrupted: list = []

        def optuna_objective(trial):
            lr, wd = self._suggest(trial)
            trial.set_user_attr('budget', self.budget)
            if before_trial is not None:
                before_trial(trial)
            try:
                metric, failed, info = call_objective(objective, lr, wd, self.budget)
            except TrialInterrupted as err:
                # FAIL without 'error': not finished, does not count
                self._record_interrupted(trial, lr, wd, err, lock, interrupted)
                raise
            return self._record(trial, lr, wd, metric, failed, info, callback)

        return self._optimize(study, optuna_objective, n_jobs, interrupted, retries)

    # ------------------------------------------------------------ shared by ASHA+WD
    label = 'BO+WD'
    #: what the message of :class:`SweepInterrupted` adds about a rerun
    rerun_note = ''

    def _suggest(self, trial) -> tuple:
        """``(lr, weight_decay)`` of an Optuna trial, both on a log scale."""
        return (trial.suggest_float('lr', *self.lr_range, log=True),
                trial.suggest_float('weight_decay', *self.wd_range, log=True))

    def done(self, study) -> bool:
        """Whether ``study`` has finished the run: ``n_trials`` trials."""
        return len(self.finished(study)) >= self.n_trials

    def _record(self, trial, lr: float, wd: float, metric: float, failed: bool, info: dict,
                callback: Optional[Callable[[Trial], None]]) -> float:
        """The end of a trial that ran to its end: ``info`` on the Optuna
        trial, the callback, and FAIL (:class:`TrialFailed`) for a failure."""
        for k, v in info.items():
            trial.set_user_attr(k, v)
        if callback is not None:
            callback(Trial(self.method, trial.number, lr, self.budget, metric, failed,
                           weight_decay=wd, info=info))
        if failed:
            raise TrialFailed(info.get('error', 'failed'))
        return metric

    @staticmethod
    def _record_interrupted(trial, lr: float, wd: float, err: TrialInterrupted, lock,
                            interrupted: list) -> None:
        """An interrupted trial: FAIL without 'error' (no result), its reason kept."""
        for k, v in dict(err.info, interrupted=err.reason).items():
            trial.set_user_attr(k, v)
        with lock:
            interrupted.append(f'trial {trial.number} (lr={lr:.4g}, '
                               f'weight_decay={wd:.3g}): {err.reason}')

    def _optimize(self, study, optuna_objective: Callable, n_jobs: int, interrupted: list,
                  retries: int) -> TuneResult:
        """``study.optimize`` until :meth:`done`, or :class:`SweepInterrupted`
        after more than ``retries`` interrupted trials."""
        def stop_when_done(study, _trial):
            if self.done(study) or len(interrupted) > retries:
                study.stop()

        while not self.done(study):
            if len(interrupted) > retries:
                raise SweepInterrupted(
                    f'{self.label}: {len(interrupted)} trials ended without a result '
                    f'({"; ".join(interrupted)}); --retries {retries} allows {retries}. The '
                    f'finished trials are kept; run the same command again to go on'
                    f'{self.rerun_note}.')
            remaining = self.n_trials - len(self.finished(study))
            study.optimize(optuna_objective, n_trials=remaining, n_jobs=n_jobs,
                           catch=(TrialFailed, TrialInterrupted), callbacks=[stop_when_done])
        return self.result(study)

    def result(self, study) -> TuneResult:
        """The study's finished trials, in the order they were created."""
        trials = []
        for t in sorted(self.finished(study), key=lambda t: t.number):
            failed = t.state.name != 'COMPLETE'
            trials.append(Trial(self.method, t.number, t.params['lr'],
                                float(t.user_attrs.get('budget', self.budget)),
                                float('nan') if failed else float(t.value), failed,
                                weight_decay=t.params['weight_decay'],
                                info=dict(t.user_attrs)))
        ok = [t for t in trials if not t.failed]
        best = max(ok, key=lambda t: t.metric) if ok else None
        return TuneResult(self.method, trials,
                          best_lr=best.lr if best else None,
                          best_metric=best.metric if best else -math.inf,
                          best_weight_decay=best.weight_decay if best else None)
