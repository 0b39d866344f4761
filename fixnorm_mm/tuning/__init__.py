"""Hyperparameter search for FixNorm: FixNorm-tune (Algo 2) and the BO+WD baseline.

* :class:`FixNormTune` — Algo 2 as a plain object: ``FixNormTune(lr_range, K,
  budgets, alphas).run(objective)`` with ``objective(lr, alpha, budget_fraction)
  -> metric``; cost bookkeeping in units of T_max.
* :class:`BOWDTune` — Bayesian optimisation of lr and weight decay (Optuna), on
  the same objective interface.
* :class:`ASHAWDTune` — the early-stopping baseline: TPE over lr and weight
  decay with Optuna's successive-halving (ASHA) or Hyperband pruner; trials
  report every evaluation and stop when pruned (:mod:`.pruning`).
* :func:`search_space` — lr scale and ranges for a config's optimizer (log
  scale and [1e-5, 1e-2] for the Adam family).
* :func:`scale_schedule` — the ``--cfg-options`` of a budget: the whole schedule
  (length, warm-up, milestones, cosine/poly ends) shrunk, the warm-up with it
  (``warmup='scaled'``, default) or kept at its length (``'absolute'``);
  :func:`rescale_scheduler` does the arithmetic for one scheduler.
* :class:`TrainingLauncher`, :class:`TrialStore`, :class:`TrialScheduler`,
  :func:`run_fixnorm_tune`, :func:`run_bo_wd` — real trainings as trials,
  parallel, resumable, shared through an Optuna storage by several workers
  (``fixnorm-tune``). How a trial ended decides what a rerun does:
  :class:`TrialFailed` (a result, kept), :class:`TrialInterrupted` (killed:
  run again), :class:`SweepConfigError` (a mistake every trial would hit:
  the sweep stops, nothing kept).
* :func:`write_report` — tables and Fig. 5-like plots.

Optuna and matplotlib are imported only where they are used.
"""
from .asha_wd import PRUNERS, ASHAWDTune
from .bo_wd import PAPER_WD_RANGE, BOWDTune
from .fixnorm_tune import (LR_SCALES, PAPER_ALPHAS, PAPER_BUDGETS, PAPER_LR_RANGES, FixNormTune,
                           lr_probes)
from .launcher import KNOWN_METRICS, TrainingLauncher, classify_exit, find_key, read_metric
from .report import load_result, plot, summary, write_report
from .schedule import DEFAULT_WARMUP, WARMUP_RULES, rescale_scheduler, scale_schedule
from .scheduler import TrialScheduler
from .search_space import ADAM_LR_RANGE, ADAMW_WD_RANGE, SearchSpace, search_space
from .store import TrialBusy, TrialStore, default_storage, trial_key
from .sweep import run_asha_wd, run_bo_wd, run_fixnorm_tune
from .trial import (SweepConfigError, SweepInterrupted, Trial, TrialFailed, TrialInterrupted,
                    TrialOutcome, TrialPruned, TuneResult)

__all__ = ['FixNormTune', 'BOWDTune', 'ASHAWDTune', 'PRUNERS', 'lr_probes', 'LR_SCALES',
           'PAPER_ALPHAS', 'PAPER_BUDGETS', 'PAPER_LR_RANGES', 'PAPER_WD_RANGE',
           'ADAM_LR_RANGE', 'ADAMW_WD_RANGE', 'SearchSpace', 'search_space',
           'scale_schedule', 'rescale_scheduler',
           'WARMUP_RULES', 'DEFAULT_WARMUP',
           'TrainingLauncher', 'KNOWN_METRICS', 'read_metric', 'find_key', 'TrialStore',
           'default_storage', 'trial_key', 'run_fixnorm_tune', 'run_bo_wd', 'run_asha_wd',
           'write_report', 'plot', 'summary', 'load_result', 'Trial', 'TrialFailed',
           'TrialOutcome', 'TrialPruned', 'TuneResult', 'TrialInterrupted',
           'SweepConfigError', 'SweepInterrupted',
           'TrialScheduler', 'TrialBusy', 'classify_exit']
