"""Which trial a free slot runs next: the sweep's ``map`` for :meth:`FixNormTune.run`.

A round of Algo 2 is a set of independent trials; the next round's range
depends on this round's best, so rounds follow one another. Within that
order :class:`TrialScheduler` keeps every slot busy:

* a slot takes the next trial of the round that is neither finished nor
  running anywhere. A trial another worker on the same storage runs
  (:class:`~fixnorm_mm.tuning.store.TrialBusy`) is skipped and looked at again
  every ``poll_interval`` seconds, so two workers take distinct trials
  instead of one waiting for the other;
* a slot the round leaves idle (fewer trials left than slots) starts a trial
  of the next round that does not depend on this one
  (:meth:`FixNormTune.known_points`: lr_min at the next budget), which the
  next round then finds running or finished.

Outcomes: a trial's result or recorded failure is returned in the order the
round listed them. A :class:`~fixnorm_mm.tuning.trial.TrialInterrupted` that
was not retried away ends the round's other trials normally and then raises
:class:`~fixnorm_mm.tuning.trial.SweepInterrupted` (the round has no complete
result in this run). Any other exception (a
:class:`~fixnorm_mm.tuning.trial.SweepConfigError`, Ctrl-C, a bug) stops the
running trainings (``stop``) and propagates.
"""
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Dict, List, Optional, Tuple

from .store import TrialBusy
from .trial import SweepInterrupted, TrialInterrupted


class TrialScheduler:
    """Runs trials on ``slots`` threads (each trial a blocking call, e.g. a
    training subprocess).

    Args:
        slots: trials at once.
        poll_interval: seconds before a trial another worker runs is looked at again.
        stop: ``stop(why)`` stops the running trainings when the sweep stops
            (:meth:`TrainingLauncher.stop`).
        describe: ``describe(point) -> str`` for messages.
        prepare: ``prepare(points)``, told the points about to start together
            before their threads start (the store claims them in one go:
            :meth:`TrialStore.memoize`).

    Use as a context manager; ``map`` and ``prefetch`` go to :meth:`FixNormTune.run`.
    """

    def __init__(self, slots: int, poll_interval: float = 5.0,
                 stop: Optional[Callable[[str], None]] = None,
                 describe: Callable[[Any], str] = str,
                 prepare: Optional[Callable[[List[Any]], None]] = None) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f'TrialScheduler: slots (--parallel) must be an int >= 1, '
                             f'got {slots!r}')
        self.slots, self.poll_interval = slots, float(poll_interval)
        self._stop, self._describe, self._prepare = stop, describe, prepare
        self._pool = ThreadPoolExecutor(slots, thread_name_prefix='trial')
        self._running: Dict[Any, Future] = {}
        self._early: Dict[Any, Any] = {}  # results of trials started ahead of their round
        self._ahead: List[Tuple[Callable, Any]] = []
        self.started: List[Any] = []  # every point submitted, in order (tests, benchmarks)

    # ------------------------------------------------------------- interface
    def prefetch(self, fn: Callable, points: List[Any]) -> None:
        """Trials that may start when a slot would otherwise idle."""
        self._ahead = [(fn, p) for p in points]

    def map(self, fn: Callable, points) -> list:
        """``[fn(p) for p in points]``, run on the slots as described above."""
        points = list(points)
        todo = list(dict.fromkeys(points))
        got: Dict[Any, Any] = {}
        interrupted: List[Tuple[Any, TrialInterrupted]] = []
        not_before: Dict[Any, float] = {}
        try:
            while True:
                error = self._collect(todo, got, interrupted, not_before)
                if error is not None:
                    raise error
                for p in todo:
                    if p not in got and p in self._early:
                        got[p] = self._early.pop(p)
                if len(got) == len(todo):
                    break
                self._start(fn, todo, got, not_before, ahead=not interrupted)
                self._wait(todo, got, not_before)
        except BaseException as error:
            self.shutdown(f'{type(error).__name__}: {error}')
            raise
        if interrupted:
            why = '; '.join(f'{self._describe(p)}: {e.reason}' for p, e in interrupted)
            self.shutdown('a trial of this round was interrupted')
            raise SweepInterrupted(
                f'{len(interrupted)} trial(s) of this round ended without a result ({why}). '
                'The other trials are kept; run the same command again to retry the '
                'interrupted ones (they resume from their newest complete checkpoint).')
        return [got[p] for p in points]

    # -------------------------------------------------------------- internals
    def _collect(self, todo, got, interrupted, not_before) -> Optional[BaseException]:
        error = None
        for p, f in list(self._running.items()):
            if not f.done():
                continue
            del self._running[p]
            try:
                result = f.result()
            except TrialBusy:
                not_before[p] = time.monotonic() + self.poll_interval
                continue
            except TrialInterrupted as e:
                if p in todo:  # a trial started ahead of its round is retried in it
                    got[p] = e
                    interrupted.append((p, e))
                continue
            except BaseException as e:  # noqa: B036 (re-raised by map)
                error = error or e
                continue
            if p in todo:
                got[p] = result
            else:
                self._early[p] = result
        return error

    def _start(self, fn, todo, got, not_before, ahead: bool) -> None:
        now = time.monotonic()
        free = self.slots - len(self._running)
        batch = [(fn, p) for p in todo if p not in got and p not in self._running
                 and not_before.get(p, 0) <= now][:free]
        if ahead:
            for fn_ahead, p in list(self._ahead):
                if len(batch) >= free:
                    break
                self._ahead.remove((fn_ahead, p))
                if p not in todo and p not in self._running and p not in self._early:
                    batch.append((fn_ahead, p))
        if batch and self._prepare is not None:
            self._prepare([p for _, p in batch])
        for f, p in batch:
            self._submit(f, p)

    def _submit(self, fn, p) -> None:
        self.started.append(p)
        self._running[p] = self._pool.submit(fn, p)

    def _wait(self, todo, got, not_before) -> None:
        waiting = [t for p, t in not_before.items()
                   if p in todo and p not in got and p not in self._running]
        timeout = max(0.0, min(waiting) - time.monotonic()) if waiting else None
        if self._running:
            wait(list(self._running.values()), timeout=timeout, return_when=FIRST_COMPLETED)
        else:
            time.sleep(timeout if timeout is not None else self.poll_interval)

    def shutdown(self, why: Optional[str] = None) -> None:
        """Stop the running trainings (if ``why``) and wait for their threads."""
        if why and self._running and self._stop is not None:
            self._stop(why)
        self._pool.shutdown(wait=True)
        self._running.clear()

    def __enter__(self) -> 'TrialScheduler':
        return self

    def __exit__(self, *exc) -> None:
        # a trial started ahead of a round that never came is stopped (it
        # resumes from its checkpoint when the sweep runs again)
        self.shutdown('the sweep has finished' if self._running else None)
