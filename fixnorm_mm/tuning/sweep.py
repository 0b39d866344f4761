"""A sweep: a tuner, trainings that a launcher runs, trials kept in a storage.

:func:`run_fixnorm_tune` and :func:`run_bo_wd` are what ``tools/fixnorm_tune.py``
does; they are here so that tests and scripts can call them. Trial work_dirs
are ``<work_dir>/trials/<method>/<key>``; the sweep's storage
(``<work_dir>/study.db`` unless an RDB URL is given) holds one Optuna study per
method.
"""
import os.path as osp
from typing import Callable, Optional

from .asha_wd import ASHAWDTune
from .bo_wd import BOWDTune
from .fixnorm_tune import FixNormTune
from .launcher import TrainingLauncher
from .schedule import DEFAULT_WARMUP
from .scheduler import TrialScheduler
from .store import TrialStore, trial_key
from .trial import SweepConfigError, Trial, TuneResult

#: The methods whose trials train with weight decay (the baseline configs).
WEIGHT_DECAY_METHODS = ('bo-wd', 'asha-wd')


def _print_trial(log: Callable[[str], None]) -> Callable[[Trial], None]:
    def callback(t: Trial) -> None:
        hp = (f'alpha={t.alpha:g}' if t.weight_decay is None
              else f'weight_decay={t.weight_decay:.3g}')
        res = ('FAILED: ' + str(t.info.get('error'))) if t.failed else f'{t.metric:.6g}'
        if t.pruned:
            res = f'pruned after {t.budget:.3g} T_max at {res}'
        where = f'round {t.round}' if t.method == 'fixnorm-tune' else f'trial {t.round}'
        log(f'[{t.method}] {where}: lr={t.lr:.6g} {hp} budget={t.budget:g} -> {res}'
            + (' (finished before)' if t.info.get('cached') else '')
            + (f"  [{t.info.get('log')}]" if t.failed and t.info.get('log') else ''))
    return callback


def _open_store(storage: str, study_name: str, method: str, then: str,
                log: Callable[[str], None], **store_kwargs) -> TrialStore:
    """The sweep's storage, with the trials of workers that died found (and
    said: ``then`` tells what becomes of them)."""
    store = TrialStore(storage, study_name, **store_kwargs)
    reaped = store.reap_dead()
    if reaped:
        log(f'[{method}] trials {reaped} were left running by a worker that died; {then}')
    return store


def _run_or_stop(launcher: TrainingLauncher, work_dir: str, options: dict, **kwargs):
    """:meth:`TrainingLauncher.run`; a mistake every trial would hit
    (:class:`SweepConfigError`) stops the other running trials too."""
    try:
        return launcher.run(work_dir, options, **kwargs)
    except SweepConfigError as err:
        launcher.stop(f'SweepConfigError: {err}')
        raise


def run_fixnorm_tune(tuner: FixNormTune, launcher: TrainingLauncher, work_dir: str,
                     storage: str, study_name: str = 'fixnorm-tune',
                     lr_key: str = 'optim_wrapper.optimizer.lr',
                     alpha_key: Optional[str] = None, retry_failed: bool = False,
                     retries: int = 1, log: Callable[[str], None] = print,
                     **store_kwargs) -> TuneResult:
    """Algo 2 over real trainings; a rerun answers finished trials from ``storage``.

    Raises :class:`SweepConfigError` before any training for an ``lr_key`` or
    ``alpha_key`` the config does not have, and after the first trial that
    shows it for a metric the runs do not log (nothing is recorded for that
    trial); :class:`SweepInterrupted` when a trial was interrupted (killed,
    out of memory, died while saving) ``retries + 1`` times in this run.
    """
    launcher.check_key(lr_key, '--lr-key')
    alpha_key = launcher.check_key(launcher.key('alpha', alpha_key), '--alpha-key')
    store = _open_store(storage, study_name, 'fixnorm-tune',
                        'they will run again (resuming from their last checkpoint)', log,
                        **store_kwargs)
    if retry_failed:
        log(f'[fixnorm-tune] {store.retry_failed()} failed trial(s) will run again')

    def key(lr, alpha, budget):
        # a shortened trial with the non-default warm-up rule is another
        # training: it must not answer for (or be answered by) the default one
        name = trial_key(lr=lr, alpha=alpha, budget=budget)
        warmup = getattr(launcher, 'warmup', DEFAULT_WARMUP)
        return name + f'_warmup-{warmup}' if warmup != DEFAULT_WARMUP and budget < 1 else name

    def trial_dir(lr, alpha, budget):
        return osp.join(work_dir, 'trials', 'fixnorm-tune', key(lr, alpha, budget))

    def run(lr, alpha, budget, state):
        log(f'[fixnorm-tune] {"resuming" if state["resume"] else "starting"} lr={lr:g} '
            f'alpha={alpha:g} budget={budget:g} in {trial_dir(lr, alpha, budget)}')
        options = dict(launcher.schedule_options(budget))
        options[lr_key] = lr
        options[alpha_key] = alpha
        return launcher.run(trial_dir(lr, alpha, budget), options, resume=state['resume'])

    def describe(lr, alpha, budget):
        d = trial_dir(lr, alpha, budget)
        return (dict(lr=lr, alpha=alpha, budget=budget),
                dict(method='fixnorm-tune', work_dir=d, log=osp.join(d, 'trial.log')))

    def store_log(msg):
        if not msg.endswith('not re-run'):  # answers from the storage: _print_trial says so
            log(f'[fixnorm-tune] {msg}')

    objective = store.memoize(run, key, describe, log=store_log, retries=retries, wait=False)
    log(f'[fixnorm-tune] lr range {tuner.lr_range}, K={tuner.K}, budgets {tuner.budgets}, '
        f'alphas {tuner.alphas}: {tuner.expected_cost:g} T_max; warm-up of shortened trials '
        f'{getattr(launcher, "warmup", DEFAULT_WARMUP)}; {launcher.parallel} trial(s) '
        f'at once; storage {storage}')
    with TrialScheduler(launcher.parallel, store.poll_interval, stop=launcher.stop,
                        describe=lambda p: f'lr={p[0]:g} alpha={p[1]:g} budget={p[2]:g}',
                        prepare=objective.prepare) as scheduler:
        return tuner.run(objective, map=scheduler.map, prefetch=scheduler.prefetch,
                         callback=_print_trial(log))


def check_weight_decay_config(cfg, method: str) -> None:
    """A weight-decay baseline (BO+WD, ASHA+WD) needs a config whose optimizer
    does not fix the norm."""
    optim_wrapper = cfg.get('optim_wrapper', {})
    wrapper = str(optim_wrapper.get('type', ''))
    control = str((optim_wrapper.get('norm_control') or {}).get('type', ''))
    if wrapper.startswith('FixNorm') or optim_wrapper.get('fixnorm') \
            or control not in ('', 'WeightDecay'):
        raise SweepConfigError(f'{method} tunes weight-decay training, but the config\'s '
                               f'optim_wrapper ({wrapper!r}, norm_control {control!r}) fixes '
                               'the norm: give the weight-decay baseline config')


def evaluation_steps(cfg) -> tuple:
    """``(first, length, unit)``: the step of a training's first evaluation and
    its length, in the unit of its loop (``'epoch'`` or ``'iteration'``), from
    ``train_cfg`` (mmengine's defaults: every epoch; every 1000 iterations).
    An ASHA+WD trial reports at these steps."""
    train_cfg = cfg.get('train_cfg') or {}
    if cfg.get('val_dataloader') is None or cfg.get('val_cfg') is None:
        raise SweepConfigError('asha-wd needs a training that evaluates: the config has no '
                               'val_dataloader / val_cfg')
    if 'max_epochs' in train_cfg:
        unit, length, interval = 'epoch', int(train_cfg['max_epochs']), train_cfg.get(
            'val_interval', 1)
    elif 'max_iters' in train_cfg:
        unit, length, interval = 'iteration', int(train_cfg['max_iters']), train_cfg.get(
            'val_interval', 1000)
    else:
        raise SweepConfigError('asha-wd: train_cfg has neither max_epochs nor max_iters')
    begin = int(train_cfg.get('val_begin', 1))
    first = max(int(interval), -(-begin // int(interval)) * int(interval))
    if first >= length:
        raise SweepConfigError(
            f'asha-wd stops trials at their evaluations, but the config evaluates only at the '
            f'end of training (train_cfg.val_interval={interval}, val_begin={begin}, '
            f'max_{"epochs" if unit == "epoch" else "iters"}={length}): no trial could stop '
            'early. Evaluate more often, e.g. --cfg-options train_cfg.val_interval='
            f'{max(1, length // 4)}')
    return first, length, unit


def _optuna_trial_dirs(store: TrialStore, work_dir: str, method: str):
    """``trial_dir(lr, wd)`` of a BO+WD / ASHA+WD trial, and the ``before_trial``
    that records it (and its owner) on the Optuna trial."""
    def trial_dir(lr, wd):
        return osp.join(work_dir, 'trials', method, trial_key(lr=lr, wd=wd))

    def before_trial(trial):
        d = trial_dir(trial.params['lr'], trial.params['weight_decay'])
        for k, v in dict(store.owner_attrs(), method=method, work_dir=d,
                         log=osp.join(d, 'trial.log')).items():
            trial.set_user_attr(k, v)
    return trial_dir, before_trial


def run_bo_wd(tuner: BOWDTune, launcher: TrainingLauncher, work_dir: str, storage: str,
              study_name: str = 'bo-wd', lr_key: str = 'optim_wrapper.optimizer.lr',
              wd_key: str = 'optim_wrapper.optimizer.weight_decay', retries: int = 1,
              log: Callable[[str], None] = print, **store_kwargs) -> TuneResult:
    """BO+WD over real trainings until ``tuner.n_trials`` trials have finished.

    An interrupted trial (killed, out of memory, died while saving) does not
    count and a new one takes its place; after ``retries + 1`` of them in this
    run, :class:`SweepInterrupted`. Key and metric mistakes:
    :class:`SweepConfigError`, as for :func:`run_fixnorm_tune`.
    """
    check_weight_decay_config(launcher.cfg, 'BO+WD')
    launcher.check_key(lr_key, '--lr-key')
    launcher.check_key(wd_key, '--wd-key')
    store = _open_store(storage, study_name, 'bo-wd',
                        'they do not count and new ones take their place', log, **store_kwargs)
    store.study.sampler = tuner.make_sampler(offset=len(store.study.trials))

    trial_dir, before_trial = _optuna_trial_dirs(store, work_dir, 'bo-wd')

    def objective(lr, wd, budget):
        log(f'[bo-wd] starting lr={lr:.4g} weight_decay={wd:.3g} in {trial_dir(lr, wd)}')
        options = dict(launcher.schedule_options(budget), **{lr_key: lr, wd_key: wd})
        return _run_or_stop(launcher, trial_dir(lr, wd), options)

    done = len(tuner.finished(store.study))
    log(f'[bo-wd] lr range {tuner.lr_range}, wd range {tuner.wd_range}, {tuner.n_trials} '
        f'trials of {tuner.budget:g} T_max ({done} finished before), sampler {tuner.sampler}; '
        f'{launcher.parallel} trial(s) at once; storage {storage}')
    return tuner.run(objective, study=store.study, n_jobs=launcher.parallel,
                     before_trial=before_trial, callback=_print_trial(log), retries=retries)


def run_asha_wd(tuner: ASHAWDTune, launcher: TrainingLauncher, work_dir: str, storage: str,
                study_name: str = 'asha-wd', lr_key: str = 'optim_wrapper.optimizer.lr',
                wd_key: str = 'optim_wrapper.optimizer.weight_decay', retries: int = 1,
                log: Callable[[str], None] = print, **store_kwargs) -> TuneResult:
    """ASHA+WD over real trainings (TPE and Optuna's pruner; :mod:`.asha_wd`).

    Every trial is a full training (``python -m fixnorm_mm.tuning.pruning``)
    that reports its metric to the storage after each evaluation and exits at
    once when the pruner stops it (PRUNED, costing the fraction of T_max it
    ran). The pruner's first rung is the config's first evaluation and
    Hyperband's last its length (:func:`evaluation_steps`), unless the tuner
    says otherwise. Kills, failures and mistakes are handled as for BO+WD, but
    an interrupted trial's point runs again, resuming from its newest
    checkpoint (in this run up to ``retries`` times, and on every rerun).
    """
    import copy
    check_weight_decay_config(launcher.cfg, 'ASHA+WD')
    launcher.check_key(lr_key, '--lr-key')
    launcher.check_key(wd_key, '--wd-key')
    first, length, unit = evaluation_steps(launcher.cfg)
    tuner = copy.copy(tuner)
    if tuner.min_resource is None:
        tuner.min_resource = first
    if tuner.max_resource is None:
        tuner.max_resource = length
    store = _open_store(storage, study_name, 'asha-wd', 'their points run again',
                        log, pruner=tuner.make_pruner(), **store_kwargs)
    retried = tuner.enqueue_retries(store.study)
    if retried:
        log(f'[asha-wd] interrupted trials {retried} run again first, resuming from their '
            'newest checkpoint')
    store.study.sampler = tuner.make_sampler(offset=len(store.study.trials))

    trial_dir, before_trial = _optuna_trial_dirs(store, work_dir, 'asha-wd')

    def objective(lr, wd, trial):
        retry_of = trial.user_attrs.get('retry_of')
        log(f'[asha-wd] {"resuming" if retry_of is not None else "starting"} trial '
            f'{trial.number} lr={lr:.4g} weight_decay={wd:.3g} in {trial_dir(lr, wd)}')
        report = dict(storage=storage, study_name=study_name, trial_number=trial.number,
                      pruner=tuner.pruner_spec())
        return _run_or_stop(launcher, trial_dir(lr, wd), {lr_key: lr, wd_key: wd},
                            resume=retry_of is not None, report=report)

    log(f'[asha-wd] lr range {tuner.lr_range}, wd range {tuner.wd_range}, TPE + '
        f'{tuner.pruner} pruner {tuner.pruner_spec()} (steps: {unit}s, first evaluation at '
        f'{first}, training {length}); {tuner.n_trials} trials'
        + (f' or {tuner.max_cost:g} T_max' if tuner.max_cost else '')
        + f' ({len(tuner.finished(store.study))} finished before); {launcher.parallel} '
        f'trial(s) at once; storage {storage}')
    return tuner.run(objective, study=store.study, n_jobs=launcher.parallel,
                     before_trial=before_trial, callback=_print_trial(log), retries=retries)
