"""A trial that reports each evaluation to its tuner and stops when pruned.

:class:`TrialReportHook` runs after every evaluation of a Runner training
(priority LOWEST: the metric is logged first), hands the metric and the step
to a ``report(value, step, last)`` function that returns whether to stop, and
stops the training at once when told to:

* ``on_prune='exit'`` (a sweep's trial process): writes
  ``<work_dir>/pruned.json`` (step, length of training, fraction of T_max,
  metric) and exits with :data:`EXIT_PRUNED`; every rank of a distributed
  trial exits (rank 0 decides, the others are told). The sweep's launcher
  reads the file and records the trial as PRUNED, not as a failure or a kill.
* ``on_prune='raise'`` (a training in the tuner's process, e.g. a benchmark):
  raises :class:`~fixnorm_mm.tuning.trial.TrialPruned`.

The step is counted in the unit of the training loop: epochs for an
epoch-based loop, iterations otherwise; the fraction of T_max is step / the
loop's length. The last evaluation is reported but never pruned: the
training has run to its end anyway.

``python -m fixnorm_mm.tuning.pruning`` is ``fixnorm-train`` (same command
line, :mod:`fixnorm_mm.tools.train`) with this hook reporting to an Optuna
trial, described by the JSON in the environment variable
:data:`REPORT_ENV` (``storage``, ``study_name``, ``trial_number``, ``pruner``:
:meth:`~fixnorm_mm.tuning.asha_wd.ASHAWDTune.pruner_spec`, ``metric``). It is
what an ASHA+WD sweep's trial runs (:class:`TrainingLauncher` with
``report=...``).
"""
import json
import os
import os.path as osp
import sys
from typing import Callable, Dict, Optional

from mmengine.hooks import Hook

from .launcher import KNOWN_METRICS
from .trial import TrialPruned

#: Exit status of a trial process that its tuner pruned (neither 0, nor a
#: Python error's 1, nor argparse's 2, nor 128 + a signal).
EXIT_PRUNED = 77
#: Written into the trial's work_dir before it exits pruned.
PRUNED_FILE = 'pruned.json'
#: The JSON that tells ``python -m fixnorm_mm.tuning.pruning`` where to report.
REPORT_ENV = 'FIXNORM_TUNE_REPORT'


def training_position(runner) -> tuple:
    """``(step, length)`` of a training in the unit of its loop: epochs done
    and ``max_epochs`` for an epoch-based loop, else iterations."""
    from mmengine.runner import EpochBasedTrainLoop
    if isinstance(runner.train_loop, EpochBasedTrainLoop):
        return runner.epoch, runner.max_epochs
    return runner.iter, runner.max_iters


def optuna_reporter(storage: str, study_name: str, trial_number: int,
                    pruner: Dict) -> Callable[[float, int, bool], bool]:
    """``report(value, step, last) -> prune?`` for trial ``trial_number`` of an
    Optuna study in ``storage``, judged by the pruner of ``pruner`` (the
    sweep's: :func:`~fixnorm_mm.tuning.asha_wd.build_pruner`). The storage is
    opened at the first report."""
    state: Dict = {}

    def report(value: float, step: int, last: bool) -> bool:
        if 'trial' not in state:
            import optuna
            from optuna.storages import RDBStorage

            from .asha_wd import build_pruner
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            kwargs = dict(connect_args=dict(timeout=120)) if storage.startswith('sqlite') else {}
            # the sweep has created and checked the storage already
            rdb = RDBStorage(storage, engine_kwargs=kwargs, skip_compatibility_check=True,
                             skip_table_creation=True)
            study = optuna.load_study(study_name=study_name, storage=rdb,
                                      pruner=build_pruner(pruner))
            trial_id = rdb.get_trial_id_from_study_id_trial_number(
                rdb.get_study_id_from_name(study_name), trial_number)
            state['trial'] = optuna.trial.Trial(study, trial_id)
        trial = state['trial']
        trial.report(value, step)
        return not last and trial.should_prune()
    return report


class TrialReportHook(Hook):
    """Reports ``metric`` after every evaluation; stops the training when
    ``report`` says so (module docstring).

    Args:
        report: ``report(value, step, last) -> bool``.
        metric: the metric to report; None: the first of :data:`KNOWN_METRICS`
            the evaluation gives (an evaluation without it is not reported:
            the sweep then says the metric is missing, as for any trial).
        on_prune: ``'exit'`` or ``'raise'``.
    """
    priority = 'LOWEST'

    def __init__(self, report: Callable[[float, int, bool], bool],
                 metric: Optional[str] = None, on_prune: str = 'raise') -> None:
        if on_prune not in ('exit', 'raise'):
            raise ValueError(f"TrialReportHook: on_prune must be 'exit' or 'raise', "
                             f'got {on_prune!r}')
        self.report, self.metric, self.on_prune = report, metric, on_prune
        self.reported: list = []  # (step, value) of every evaluation

    def after_val_epoch(self, runner, metrics: Optional[Dict] = None) -> None:
        from mmengine.dist import broadcast_object_list, get_world_size, is_main_process
        metrics = metrics or {}
        names = [self.metric] if self.metric else [k for k in KNOWN_METRICS if k in metrics]
        if not names or names[0] not in metrics:
            return
        value = float(metrics[names[0]])
        step, length = training_position(runner)
        self.reported.append((step, value))
        decision = [False]
        if is_main_process():
            decision[0] = bool(self.report(value, step, step >= length))
        if get_world_size() > 1:
            broadcast_object_list(decision)
        if not decision[0]:
            return
        fraction = step / length
        runner.logger.info(f'pruned by the tuner at {step} of {length} '
                           f'({fraction:.3g} T_max): {names[0]} {value:.6g}')
        if self.on_prune == 'raise':
            raise TrialPruned(fraction, value, step, metric_name=names[0])
        if is_main_process():
            path = osp.join(runner.work_dir, PRUNED_FILE)
            with open(path + '.tmp', 'w') as f:
                json.dump(dict(step=step, length=length, budget=fraction, metric=value,
                               metric_name=names[0]), f)
            os.replace(path + '.tmp', path)
        sys.exit(EXIT_PRUNED)


def read_pruned(work_dir: str) -> Optional[Dict]:
    """What a pruned trial wrote before it exited (None if it was not pruned)."""
    try:
        with open(osp.join(work_dir, PRUNED_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv=None) -> None:
    """``fixnorm-train`` with a :class:`TrialReportHook` reporting to the
    Optuna trial that :data:`REPORT_ENV` names."""
    from fixnorm_mm.tools.train import main as train
    if REPORT_ENV not in os.environ:
        raise SystemExit(f'{__name__}: the environment variable {REPORT_ENV} (JSON: storage, '
                         'study_name, trial_number, pruner, metric) is not set; this module '
                         'runs the trials of an ASHA+WD sweep (fixnorm-tune --method asha-wd)')
    spec = json.loads(os.environ[REPORT_ENV])
    report = optuna_reporter(spec['storage'], spec['study_name'], spec['trial_number'],
                             spec['pruner'])
    train(argv, hooks=[TrialReportHook(report, spec.get('metric'), on_prune='exit')])


if __name__ == '__main__':
    main()
