"""A sweep: a tuner, trainings that a launcher runs, trials kept in a storage.

:func:`run_fixnorm_tune` and :func:`run_bo_wd` are what ``tools/fixnorm_tune.py``
does; they are here so that tests and scripts can call them. Trial work_dirs
are ``<work_dir>/trials/<method>/<key>``; the sweep's storage
(``<work_dir>/study.db`` unless an RDB URL is given) holds one Optuna study per
method.
"""
import os.path as osp
from typing import Callable, Optional

from .bo_wd import BOWDTune
from .fixnorm_tune import FixNormTune
from .launcher import TrainingLauncher
from .schedule import DEFAULT_WARMUP
from .scheduler import TrialScheduler
from .store import TrialStore, trial_key
from .trial import SweepConfigError, Trial, TuneResult


def _print_trial(log: Callable[[str], None]) -> Callable[[Trial], None]:
    def callback(t: Trial) -> None:
        hp = (f'alpha={t.alpha:g}' if t.weight_decay is None
              else f'weight_decay={t.weight_decay:.3g}')
        res = ('FAILED: ' + str(t.info.get('error'))) if t.failed else f'{t.metric:.6g}'
        log(f'[{t.method}] round {t.round}: lr={t.lr:.6g} {hp} budget={t.budget:g} -> {res}'
            + (' (finished before)' if t.info.get('cached') else '')
            + (f"  [{t.info.get('log')}]" if t.failed and t.info.get('log') else ''))
    return callback


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
    store = TrialStore(storage, study_name, **store_kwargs)
    reaped = store.reap_dead()
    if reaped:
        log(f'[fixnorm-tune] trials {reaped} were left running by a worker that died; '
            'they will run again (resuming from their last checkpoint)')
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
                        describe=lambda p: f'lr={p[0]:g} alpha={p[1]:g} budget={p[2]:g}'
                        ) as scheduler:
        return tuner.run(objective, map=scheduler.map, prefetch=scheduler.prefetch,
                         callback=_print_trial(log))


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
    optim_wrapper = launcher.cfg.get('optim_wrapper', {})
    wrapper = str(optim_wrapper.get('type', ''))
    control = str((optim_wrapper.get('norm_control') or {}).get('type', ''))
    if wrapper.startswith('FixNorm') or optim_wrapper.get('fixnorm') \
            or control not in ('', 'WeightDecay'):
        raise ValueError(f'BO+WD tunes weight-decay training, but the config\'s optim_wrapper '
                         f'({wrapper!r}, norm_control {control!r}) fixes the norm: give the '
                         'weight-decay baseline config')
    launcher.check_key(lr_key, '--lr-key')
    launcher.check_key(wd_key, '--wd-key')
    store = TrialStore(storage, study_name, **store_kwargs)
    reaped = store.reap_dead()
    if reaped:
        log(f'[bo-wd] trials {reaped} were left running by a worker that died; '
            'they do not count and new ones take their place')
    store.study.sampler = tuner.make_sampler(offset=len(store.study.trials))

    def trial_dir(lr, wd):
        return osp.join(work_dir, 'trials', 'bo-wd', trial_key(lr=lr, wd=wd))

    def before_trial(trial):
        d = trial_dir(trial.params['lr'], trial.params['weight_decay'])
        for k, v in dict(store.owner_attrs(), method='bo-wd', work_dir=d,
                         log=osp.join(d, 'trial.log')).items():
            trial.set_user_attr(k, v)

    def objective(lr, wd, budget):
        log(f'[bo-wd] starting lr={lr:.4g} weight_decay={wd:.3g} in {trial_dir(lr, wd)}')
        options = dict(launcher.schedule_options(budget))
        options[lr_key] = lr
        options[wd_key] = wd
        try:
            return launcher.run(trial_dir(lr, wd), options)
        except SweepConfigError as err:
            launcher.stop(f'SweepConfigError: {err}')
            raise

    done = len(tuner.finished(store.study))
    log(f'[bo-wd] lr range {tuner.lr_range}, wd range {tuner.wd_range}, {tuner.n_trials} '
        f'trials of {tuner.budget:g} T_max ({done} finished before), sampler {tuner.sampler}; '
        f'{launcher.parallel} trial(s) at once; storage {storage}')
    return tuner.run(objective, study=store.study, n_jobs=launcher.parallel,
                     before_trial=before_trial, callback=_print_trial(log), retries=retries)
