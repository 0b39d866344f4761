"""A sweep: a tuner, trainings that a launcher runs, trials kept in a storage.

:func:`run_fixnorm_tune` and :func:`run_bo_wd` are what ``tools/fixnorm_tune.py``
does; they are here so that tests and scripts can call them. Trial work_dirs
are ``<work_dir>/trials/<method>/<key>``; the sweep's storage
(``<work_dir>/study.db`` unless an RDB URL is given) holds one Optuna study per
method.
"""
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from .bo_wd import BOWDTune
from .fixnorm_tune import FixNormTune
from .launcher import TrainingLauncher
from .schedule import DEFAULT_WARMUP
from .store import TrialStore, trial_key
from .trial import Trial, TuneResult


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
                     log: Callable[[str], None] = print, **store_kwargs) -> TuneResult:
    """Algo 2 over real trainings; a rerun answers finished trials from ``storage``."""
    alpha_key = launcher.key('alpha', alpha_key)
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

    objective = store.memoize(run, key, describe, log=lambda msg: None)
    log(f'[fixnorm-tune] lr range {tuner.lr_range}, K={tuner.K}, budgets {tuner.budgets}, '
        f'alphas {tuner.alphas}: {tuner.expected_cost:g} T_max; warm-up of shortened trials '
        f'{getattr(launcher, "warmup", DEFAULT_WARMUP)}; {launcher.parallel} trial(s) '
        f'at once; storage {storage}')
    with ThreadPoolExecutor(max_workers=launcher.parallel) as pool:
        return tuner.run(objective, map=pool.map, callback=_print_trial(log))


def run_bo_wd(tuner: BOWDTune, launcher: TrainingLauncher, work_dir: str, storage: str,
              study_name: str = 'bo-wd', lr_key: str = 'optim_wrapper.optimizer.lr',
              wd_key: str = 'optim_wrapper.optimizer.weight_decay',
              log: Callable[[str], None] = print, **store_kwargs) -> TuneResult:
    """BO+WD over real trainings until ``tuner.n_trials`` trials have finished."""
    wrapper = str(launcher.cfg.get('optim_wrapper', {}).get('type', ''))
    if wrapper.startswith('FixNorm'):
        raise ValueError(f'BO+WD tunes weight-decay training, but optim_wrapper.type is '
                         f'{wrapper!r}: give the weight-decay baseline config')
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
        return launcher.run(trial_dir(lr, wd), options)

    done = len(tuner.finished(store.study))
    log(f'[bo-wd] lr range {tuner.lr_range}, wd range {tuner.wd_range}, {tuner.n_trials} '
        f'trials of {tuner.budget:g} T_max ({done} finished before), sampler {tuner.sampler}; '
        f'{launcher.parallel} trial(s) at once; storage {storage}')
    return tuner.run(objective, study=store.study, n_jobs=launcher.parallel,
                     before_trial=before_trial, callback=_print_trial(log))
