"""Trials in an Optuna storage: what makes a sweep resumable and shareable.

Every training is one Optuna trial (params ``lr``, ``alpha`` or
``weight_decay``, ``budget``; user attributes ``key``, ``work_dir``, ``log``,
``host``, ``pid``, and how it ended: ``error`` or ``interrupted``,
``returncode``, ``signal``). The storage is an SQLite file by default, or an
RDB URL that workers on several nodes share.

FixNorm-tune (Algo 2) is deterministic given the metrics, so a restarted or a
second worker simply replays it through :meth:`TrialStore.memoize`: a trial
whose key (lr, alpha, budget) has finished is answered from the storage, one
that another live worker is running is left to it (:class:`TrialBusy`: the
sweep's scheduler takes another trial meanwhile), and only the rest is run.

How a trial ends, and what that means for the next run:

* COMPLETE (a metric): finished, never re-run.
* FAIL with ``error`` (:class:`~fixnorm_mm.tuning.trial.TrialFailed`: a
  Python error, a crash, NaN): finished, a result; re-run only with
  ``retry_failed``.
* FAIL with ``interrupted`` (:class:`~fixnorm_mm.tuning.trial.TrialInterrupted`:
  killed by a signal, the OOM killer or a scheduler, out of memory, died
  while saving a checkpoint, stopped by the sweep): not a result; run again at
  once up to ``retries`` times, and on every rerun, resuming from the newest
  complete checkpoint.
* FAIL with neither: its worker died (see below), it lost a claim race, or
  the sweep stopped on a mistake every trial would hit
  (:class:`~fixnorm_mm.tuning.trial.SweepConfigError`); run again.

Claims: a worker creates a RUNNING trial for the key, then reads back the
key's trials; if one with a lower number is running, or one has finished
meanwhile, the worker fails its own claim (without ``error``) and leaves the
key to the other. Storages serialise writes, so exactly one claim survives.
A worker that dies leaves its trial RUNNING: on its own host it is
recognised at once (its process is gone), elsewhere when its heartbeat is
older than ``grace_period`` seconds.

Only public Optuna API is used (``BaseStorage`` methods, ``study.get_trials``,
``optuna.storages.fail_stale_trials``).
"""
import os
import socket
import sqlite3
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .trial import TrialFailed, TrialInterrupted, TrialOutcome

_HOST = socket.gethostname()


def _proc_start_time(pid: int) -> Optional[str]:
    """Start time of a process (field 22 of /proc/PID/stat): tells a live worker
    from a new process that reused its pid. None off Linux."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _process_alive(pid: int, start: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or _proc_start_time(pid) in (None, start)


class StorageError(ValueError):
    """A sweep storage that exists but cannot be used (empty, not SQLite, corrupt)."""


class TrialBusy(Exception):
    """Another live worker runs this trial (:meth:`TrialStore.memoize` with
    ``wait=False``): take another one and look again later."""

    def __init__(self, key: str) -> None:
        super().__init__(f'{key} is being run by another worker')
        self.key = key


def sqlite_path(storage: str) -> Optional[str]:
    """The file of an ``sqlite:///`` URL (None for other URLs and ``:memory:``)."""
    if not storage.startswith('sqlite'):
        return None
    from sqlalchemy.engine import make_url
    database = make_url(storage).database
    return None if not database or database == ':memory:' else database


def check_sqlite_storage(path: str, wait: float = 5.0) -> None:
    """A clear error for an SQLite storage file that exists but cannot be a
    sweep's: empty (0 bytes) or not an intact SQLite database. SQLite would
    treat an empty file as a new database and the sweep would silently train
    every trial again. A file another worker is creating this instant is
    empty for milliseconds: wait up to ``wait`` seconds for it."""
    if not os.path.exists(path):
        return
    deadline = time.time() + wait
    while os.path.getsize(path) == 0 and time.time() < deadline:
        time.sleep(0.1)
    size = os.path.getsize(path)
    if size == 0:
        raise StorageError(
            f'the sweep storage {path} is an empty file (0 bytes). A storage that a sweep has '
            'opened is never empty: it was truncated or replaced, and using it would train '
            'every trial again. Restore it, or delete it to start the sweep from scratch.')
    with open(path, 'rb') as f:
        header = f.read(16)
    problem = None
    if header != b'SQLite format 3\x00':
        problem = f'not an SQLite database (it starts with {header[:16]!r})'
    else:
        try:
            # read-write (creating nothing): a WAL-mode file may need its -shm file
            con = sqlite3.connect(f'file:{path}?mode=rw', uri=True, timeout=120)
            try:
                rows = con.execute('PRAGMA quick_check').fetchall()
            finally:
                con.close()
            if rows != [('ok',)]:
                problem = f'corrupt (PRAGMA quick_check: {"; ".join(r[0] for r in rows[:3])})'
        except sqlite3.DatabaseError as e:
            problem = f'corrupt ({type(e).__name__}: {e})'
    if problem:
        raise StorageError(f'the sweep storage {path} ({size} bytes) is {problem}. Restore it, '
                         'or delete it to start the sweep from scratch.')


#: File systems on which SQLite's write-ahead log is unsafe (it needs shared
#: memory between the processes that open the file: one host, a local disk).
NETWORK_FILESYSTEMS = ('nfs', 'nfs4', 'cifs', 'smb', 'smb3', 'smbfs', 'lustre', 'gpfs',
                       'beegfs', 'ceph', 'glusterfs', 'fuse.glusterfs', 'fuse.sshfs', '9p',
                       'afs', 'ocfs2', 'panfs', 'fuse.s3fs', 'fuse.gcsfuse', 'wekafs')


def local_filesystem(path: str, mounts: Optional[str] = None) -> bool:
    """Whether ``path`` lies on a local file system (Linux: the text of
    /proc/self/mounts, or ``mounts``); False where that cannot be told."""
    if mounts is None:
        try:
            with open('/proc/self/mounts') as f:
                mounts = f.read()
        except OSError:
            return False
    mounts = [line.split()[1:3] for line in mounts.splitlines() if len(line.split()) > 2]
    path = os.path.realpath(path)
    best, kind = '', None
    for point, fstype in mounts:
        point = point.replace('\\040', ' ')
        inside = path == point or path.startswith(point.rstrip('/') + '/')
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind is not None and kind not in NETWORK_FILESYSTEMS


def _sqlite_write_ahead(engine, path: str) -> None:
    """Journal an SQLite storage on a local disk in WAL mode with
    ``synchronous=NORMAL``: a commit is an append to the log, with no fsync
    (the log is synced at checkpoints), where the default rollback journal
    costs two fsyncs per commit, and a sweep commits a few times per trial,
    one trial after the other, on its critical path (docs/tuning.md). A
    killed process loses nothing it committed; a power cut may lose the last
    commits, never the file. The mode stays with the file (its ``-wal`` and
    ``-shm`` files live beside it while it is open)."""
    from sqlalchemy import event

    def on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute('PRAGMA synchronous=NORMAL')
        cursor.close()
    event.listen(engine, 'connect', on_connect)
    engine.dispose()  # connections made before the listener get it too
    with engine.connect() as connection:
        connection.exec_driver_sql('PRAGMA journal_mode=WAL')


def default_storage(work_dir: str) -> str:
    """The SQLite file of a sweep: ``sqlite:///<work_dir>/study.db``."""
    return 'sqlite:///' + os.path.abspath(os.path.join(work_dir, 'study.db'))


def trial_key(**params: float) -> str:
    """``lr0.8_alpha0.5_budget0.2``: the identity of a FixNorm-tune trial."""
    return '_'.join(f'{k}{v:.10g}' for k, v in params.items())


class TrialStore:
    """One Optuna study in one storage.

    Args:
        storage: RDB URL (``sqlite:///path.db``, ``postgresql://...``).
        study_name: the study (one per method and sweep).
        heartbeat_interval: seconds between heartbeats of a running trial.
        grace_period: seconds without heartbeat after which a trial on another
            host counts as dead.
        poll_interval: seconds between looks at a trial another worker runs.
        sampler: Optuna sampler of the study (BO+WD); None for FixNorm-tune.
        pruner: Optuna pruner of the study (ASHA+WD).
    """

    def __init__(self, storage: str, study_name: str, heartbeat_interval: int = 60,
                 grace_period: int = 300, poll_interval: float = 5.0, sampler=None,
                 pruner=None) -> None:
        import warnings

        import optuna
        import sqlalchemy.exc
        from optuna.storages import RDBStorage
        self.check_options(heartbeat_interval, grace_period, poll_interval)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # heartbeats and fail_stale_trials are "experimental" in Optuna; they are
        # what tells a dead worker's trial from a running one, so we use them
        warnings.filterwarnings('ignore', category=optuna.exceptions.ExperimentalWarning)
        self._optuna = optuna
        engine_kwargs = {}
        path = sqlite_path(storage)
        # a file this call creates has this Optuna's schema: checking it against
        # Optuna's migration scripts would only read those scripts (~0.3 s)
        fresh = path is not None and not os.path.exists(path)
        if path is not None:
            check_sqlite_storage(path)
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            # parallel trials write concurrently; wait for the file lock instead of failing
            engine_kwargs = dict(connect_args=dict(timeout=120))
        for attempt in range(10):
            try:
                self.storage = RDBStorage(storage, engine_kwargs=engine_kwargs,
                                          heartbeat_interval=heartbeat_interval,
                                          grace_period=grace_period,
                                          skip_compatibility_check=fresh)
                self.study = optuna.create_study(storage=self.storage, study_name=study_name,
                                                 direction='maximize', load_if_exists=True,
                                                 sampler=sampler, pruner=pruner)
                break
            except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
                # workers started together race to create the schema of a new
                # database ("table ... already exists", a duplicate schema
                # version); the losers retry on the schema the winner made
                if attempt == 9:
                    raise
                time.sleep(0.2 + 0.3 * attempt)
            except sqlalchemy.exc.DatabaseError as e:
                raise StorageError(f'the sweep storage {storage} cannot be read: {e.orig}. '
                                 'Restore it, or start the sweep in a new storage.') from None
        if path is not None and local_filesystem(os.path.dirname(os.path.abspath(path))):
            _sqlite_write_ahead(self.storage.engine, path)
        self.study_id = self.storage.get_study_id_from_name(study_name)
        self.heartbeat_interval = heartbeat_interval
        self.poll_interval = poll_interval
        self._retired: set = set()
        self._last_reap = float('-inf')
        self._claim_lock = threading.Lock()

    @staticmethod
    def check_options(heartbeat_interval: int = 60, grace_period: int = 300,
                      poll_interval: float = 5.0) -> None:
        """ValueError naming the option for a value no sweep can use."""
        for name, value in (('heartbeat_interval (--heartbeat)', heartbeat_interval),
                            ('grace_period (--grace-period)', grace_period),
                            ('poll_interval (--poll)', poll_interval)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f'TrialStore: {name} must be a number > 0, got {value!r}')
        if grace_period < heartbeat_interval:
            raise ValueError(f'TrialStore: grace_period (--grace-period) must be at least '
                             f'heartbeat_interval (--heartbeat), got {grace_period!r} < '
                             f'{heartbeat_interval!r}: running trials would look dead')

    def trial_id(self, t) -> int:
        """The storage's id of a FrozenTrial (public API: by study and number)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)

    # ------------------------------------------------------------------ state
    def trials(self, states=None) -> list:
        return self.study.get_trials(deepcopy=False, states=states)

    @staticmethod
    def is_finished(t) -> bool:
        """COMPLETE, or FAIL with a recorded error (a crash/NaN, not a dead worker)."""
        name = t.state.name
        return name == 'COMPLETE' or (name == 'FAIL' and 'error' in t.user_attrs)

    def finished(self) -> list:
        return [t for t in self.trials() if self.is_finished(t)]

    def reap_dead(self) -> List[int]:
        """Fail RUNNING trials whose worker is gone: a dead process on this host
        (at once), or a stale heartbeat on any host. Returns their numbers."""
        from optuna.trial import TrialState
        reaped = []
        for t in self.trials(states=(TrialState.RUNNING,)):
            a = t.user_attrs
            if a.get('host') == _HOST and 'pid' in a and a['pid'] != os.getpid() \
                    and not _process_alive(a['pid'], a.get('pid_start')):
                if self._fail(self.trial_id(t)):
                    reaped.append(t.number)
        self._optuna.storages.fail_stale_trials(self.study)
        self._last_reap = time.monotonic()
        return reaped

    def retry_failed(self) -> int:
        """Let crashed/diverged trials run again (``--retry-failed``): they are
        ignored from now on in this process, and their keys are run anew. The
        re-run's result, being newer, is the one later replays read."""
        failed = [t.number for t in self.finished() if t.state.name == 'FAIL']
        self._retired.update(failed)
        return len(failed)

    def _fail(self, trial_id: int) -> bool:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState
        try:
            return self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False  # someone else closed it first

    # -------------------------------------------------------------- ownership
    def owner_attrs(self) -> Dict[str, Any]:
        pid = os.getpid()
        return dict(host=_HOST, pid=pid, pid_start=_proc_start_time(pid))

    def heartbeat(self, trial_id: int) -> Callable[[], None]:
        """Record heartbeats of ``trial_id``, now and every ``heartbeat_interval``
        seconds, in a thread (the trial starts meanwhile: Optuna counts a
        trial without heartbeat as alive, so the first beat has
        ``grace_period`` seconds to arrive); returns the stop function."""
        stop = threading.Event()

        def beat():
            self.storage.record_heartbeat(trial_id)
            while not stop.wait(self.heartbeat_interval):
                self.storage.record_heartbeat(trial_id)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()

        def stop_fn():
            stop.set()
            thread.join()
        return stop_fn

    # ------------------------------------------------------- FixNorm-tune path
    def _trials_by_key(self) -> Dict[str, list]:
        """The claimed trials (those with a ``key``), by key, in one read."""
        out: Dict[str, list] = {}
        for t in self.trials():
            if t.number not in self._retired and 'key' in t.user_attrs:
                out.setdefault(t.user_attrs['key'], []).append(t)
        return out

    def claim(self, key: str, params: Dict[str, float], attrs: Dict[str, Any]
              ) -> Tuple[str, Any, bool]:
        """One step of the claim protocol for ``key``.

        Returns ``('done', frozen_trial, ...)``, ``('busy', frozen_trial, ...)``
        (another live worker runs it) or ``('mine', trial_id, ...)`` (run it
        now); the last element says whether an earlier attempt at the key was
        interrupted (so the run may resume from its checkpoint).
        """
        return self.claim_many([(key, params, attrs)])[0]

    def claim_many(self, items: List[Tuple[str, Dict[str, float], Dict[str, Any]]]
                   ) -> List[Tuple[str, Any, bool]]:
        """:meth:`claim` for several keys ``(key, params, attrs)`` at once: one
        read of the storage before and one after all the claims, where one
        claim at a time costs two reads each. A round of Algo 2 claims its
        trials together (:meth:`memoize`'s ``prepare``), so the last of them
        starts that much sooner (docs/tuning.md, "Wall-clock")."""
        with self._claim_lock:  # this process's threads take turns (no SQLite lock waits)
            return self._claim_many(items)

    def _claim_many(self, items) -> List[Tuple[str, Any, bool]]:
        from optuna.distributions import FloatDistribution
        from optuna.trial import TrialState, create_trial
        trials = self._trials_by_key()
        if time.monotonic() - self._last_reap >= self.poll_interval and any(
                t.state == TrialState.RUNNING for key, _, _ in items for t in trials.get(key, ())):
            # is a busy trial's worker alive? Only asked when a trial is busy (and
            # not more often than every poll_interval): each look costs queries,
            # and the sweep's start has looked already (run_fixnorm_tune)
            if self.reap_dead():
                trials = self._trials_by_key()
        results: List[Any] = [None] * len(items)
        created = {}
        owner = self.owner_attrs()
        for i, (key, params, attrs) in enumerate(items):
            same = trials.get(key, [])
            interrupted = any(t.state == TrialState.FAIL and 'error' not in t.user_attrs
                              for t in same)
            done = [t for t in same if self.is_finished(t)]
            running = [t for t in same if t.state == TrialState.RUNNING]
            if done:
                results[i] = ('done', done[-1], interrupted)
            elif running or key in created:
                results[i] = ('busy', running[0] if running else None, interrupted)
            else:
                template = create_trial(
                    state=TrialState.RUNNING, params=params,
                    # no sampler proposes these values: a point distribution records them
                    distributions={k: FloatDistribution(v, v) for k, v in params.items()},
                    user_attrs=dict(attrs, key=key, **owner))
                created[key] = (i, self.storage.create_new_trial(self.study_id,
                                                                 template_trial=template))
                results[i] = ('mine', created[key][1], interrupted)
        if not created:
            return results
        # read back: a claim made before ours (lower number) that is running or
        # has even finished in the meantime wins; ours then does not count
        trials = self._trials_by_key()
        # the numbers of our trials, from the read-back (a query each otherwise)
        numbers = {t._trial_id: t.number for same in trials.values() for t in same}
        for key, (i, trial_id) in created.items():
            same = trials.get(key, [])
            mine = numbers.get(trial_id)
            if mine is None:
                mine = self.storage.get_trial_number_from_id(trial_id)
            done = [t for t in same if self.is_finished(t)]
            earlier = [t for t in same if t.state == TrialState.RUNNING and t.number < mine]
            if done or earlier:
                self._fail(trial_id)  # no 'error': a lost race is not a result
                results[i] = ('done', done[-1], True) if done else ('busy', earlier[0], True)
        return results

    def set_attrs(self, trial_id: int, attrs: Dict[str, Any],
                  stored: Optional[Dict[str, Any]] = None) -> None:
        """Set user attributes (one storage write each), except those that
        ``stored`` (what the claim recorded) already has with that value."""
        stored = stored or {}
        for k, v in attrs.items():
            if k not in stored or stored[k] != v:
                self.storage.set_trial_user_attr(trial_id, k, v)

    def finish(self, trial_id: int, metric: Optional[float], attrs: Dict[str, Any],
               stored: Optional[Dict[str, Any]] = None) -> None:
        """Record a result: COMPLETE with ``metric``, or FAIL (``metric=None``,
        ``attrs['error']`` says why); ``stored``: attributes the claim wrote."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState, create_trial
        state = TrialState.FAIL if metric is None else TrialState.COMPLETE
        values = None if metric is None else [float(metric)]
        try:
            self.set_attrs(trial_id, attrs, stored)
            self.storage.set_trial_state_values(trial_id, state, values)
        except UpdateFinishedTrialError:
            # our heartbeat lagged past the grace period (an overloaded host) and
            # another worker declared the trial dead: keep the result anyway, as
            # a finished copy of it
            old = self.storage.get_trial(trial_id)
            self.storage.create_new_trial(self.study_id, template_trial=create_trial(
                state=state, values=values, params=old.params, distributions=old.distributions,
                user_attrs=dict(old.user_attrs, **attrs)))

    def interrupted(self, trial_id: int, attrs: Dict[str, Any],
                    stored: Optional[Dict[str, Any]] = None) -> None:
        """Record a trial that ended without a result (FAIL without ``error``:
        it counts as not run, and is run again)."""
        try:
            self.set_attrs(trial_id, attrs, stored)
        finally:
            self._fail(trial_id)

    def memoize(self, run: Callable[..., TrialOutcome], make_key: Callable[..., str],
                describe: Callable[..., Dict[str, Any]],
                log: Callable[[str], None] = print, retries: int = 1,
                wait: bool = True) -> Callable:
        """An objective that answers finished trials from the storage.

        Args:
            run: ``run(*args, state) -> TrialOutcome`` (raises
                :class:`TrialFailed` or :class:`TrialInterrupted`);
                ``state['resume']`` is True when an earlier attempt was cut
                off, so the run may continue from its last checkpoint.
            make_key: ``make_key(*args) -> str``, the trial's identity.
            describe: ``describe(*args) -> (params, user_attrs)`` stored at the claim.
            log: told about trials answered from the storage and retried.
            retries: how often a trial that is interrupted is run again at
                once (resuming); after that :class:`TrialInterrupted` reaches
                the caller, and the next run of the sweep tries again.
            wait: a trial another live worker runs is waited for (True) or
                answered with :class:`TrialBusy` (False), so that the caller
                takes another trial meanwhile.
        """
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f'TrialStore.memoize: retries (--retries) must be an int >= 0, '
                             f'got {retries!r}')
        claimed: Dict[str, Tuple[str, Any, bool]] = {}
        claimed_lock = threading.Lock()

        def prepare(points) -> None:
            """Claim the trials of ``points`` (argument tuples) together, before
            they are run (the objective then uses these claims)."""
            items = []
            for args in points:
                key = make_key(*args)
                with claimed_lock:
                    if key in claimed:
                        continue
                items.append((key,) + tuple(describe(*args)))
            if items:
                results = self.claim_many(items)
                with claimed_lock:
                    claimed.update((item[0], r) for item, r in zip(items, results))

        def objective(*args):
            key = make_key(*args)
            params, attrs = describe(*args)
            attempts = 0
            while True:
                waited = False
                while True:
                    with claimed_lock:
                        early = claimed.pop(key, None)
                    status, what, interrupted = (early if early is not None and early[0] != 'busy'
                                                 else self.claim(key, params, attrs))
                    if status == 'done':
                        log(f'{key}: finished before, not re-run')
                        return self.outcome(what)
                    if status == 'mine':
                        break
                    if not wait:
                        raise TrialBusy(key)
                    time.sleep(self.poll_interval)
                    waited = True
                interrupted = interrupted or waited
                trial_id = what
                stop = self.heartbeat(trial_id)
                try:
                    out = run(*args, dict(resume=interrupted))
                except TrialFailed as err:
                    self.finish(trial_id, None, dict(err.info, error=err.reason), attrs)
                    raise
                except TrialInterrupted as err:
                    self.interrupted(trial_id, dict(err.info, interrupted=err.reason), attrs)
                    attempts += 1
                    if err.retry_now and attempts <= retries:
                        log(f'{key}: {err.reason}; running it again ({attempts}/{retries}), '
                            'from its newest complete checkpoint')
                        continue
                    raise
                except BaseException:
                    # an error of the runner itself, a mistake every trial would
                    # hit, or Ctrl-C: no result, leave no RUNNING trial behind
                    # (a FAIL without 'error' is run again)
                    self._fail(trial_id)
                    raise
                finally:
                    stop()
                self.finish(trial_id, out.metric, out.info, attrs)
                return out
        objective.prepare = prepare
        return objective

    @staticmethod
    def outcome(t) -> TrialOutcome:
        """The stored result of a finished trial (raises TrialFailed for a failure)."""
        info = {k: v for k, v in t.user_attrs.items()
                if k not in ('host', 'pid', 'pid_start', 'error', 'interrupted')}
        info.update(cached=True, trial_number=t.number)
        if t.state.name == 'FAIL':
            raise TrialFailed(t.user_attrs['error'], **info)
        return TrialOutcome(float(t.value), info)
