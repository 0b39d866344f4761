"""FixNorm-tune: Algo 2 of "FixNorm: Dissecting Weight Decay for Training Deep
Neural Networks" (Zhou, Sun & Zhong), independent of how a trial is run.

With FixNorm, lr sets the effective learning rate and alpha the cross-boundary
risk, so the two are tuned separately (Sec. 2.4), with two priors on lr: the
metric is roughly concave in lr, and the best lr of a shorter training is an
upper bound of the best lr of a longer one.

Phase 1, rounds r = 0 .. N-1: probe K learning rates in the current range at
alpha_0 for T_r steps; the best one becomes the new upper bound lr_max
(line 5), and lr_best if it beats every earlier round (lines 6-8).
Phase 2: at lr_best and T_{N-1}, try alpha_1 .. alpha_{m-1} (alpha_0 was the
alpha of Phase 1) and keep the best (lines 11-16).
Cost: K * sum(T) + (m - 1) * T_{N-1}; 11 T_max with the paper's setup (Sec. 3).

The lr sampling rule (Algo 2's ``UniformSample``) is made precise so that it
reproduces every learning rate the paper reports (:func:`lr_probes`):

* round 0 samples the half-open range (lr_min, lr_max] with step
  (lr_max - lr_min) / K: [0.2, 3.2], K = 5 -> {0.8, 1.4, 2.0, 2.6, 3.2} (Sec. 3.1);
* a later round samples K evenly spaced points from lr_min to the new upper
  bound, both included (``'inclusive'``, the default): after 2.6 this gives
  {0.2, 0.8, 1.4, 2.0, 2.6} (paper: 1.4 for ResNet50-D), after 0.8
  {0.2, 0.35, 0.5, 0.65, 0.8} (paper: 0.5 for MobileNetV2). The prior makes the
  shorter training's best lr an upper bound (<=), so it is probed again at the
  longer budget.

The alternative ``'interior'`` rule, K points strictly inside (lr_min, lr_max)
with step (lr_max - lr_min) / (K + 1), also yields 1.4 and 0.5 in Sec. 3.1, but
cannot produce the 0.35 and 0.65 of Table 2 (MobileNetV2 350 epochs,
MobileNetV2x1.54*), which the paper says were tuned with the same setup; the
inclusive rule reaches every lr of Tables 2-5. docs/tuning.md has the table.

The paper tunes SGD, whose good learning rates span about one decade, so its
"uniform" sample is linear. An Adam-family optimizer's good learning rates
span several decades (1e-5 for fine-tuning to 1e-2), where a linear grid would
put all K probes in the top decade (2e-3 .. 1e-2 from [1e-5, 1e-2]).
``lr_scale='log'`` (our choice, docs/paper_departures.md) applies the same
rule to log(lr): the same positions, the same inclusive or interior later
rounds, geometric steps. :mod:`fixnorm_mm.tuning.search_space` picks the
scale from the config's optimizer.
"""
import math
from typing import Callable, Iterable, List, Optional, Sequence

from .trial import Trial, TrialPruned, TuneResult, call_objective, check_range

#: alpha candidates of the paper (Sec. 3, App. D.2, D.3).
PAPER_ALPHAS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
#: T = [0.2 T_max, T_max] (Sec. 3).
PAPER_BUDGETS = (0.2, 1.0)
#: lr ranges of the paper: ImageNet from scratch (Sec. 3), fine-tuning from
#: ImageNet weights on Cityscapes and COCO (App. D.2, D.3).
PAPER_LR_RANGES = {'imagenet': (0.2, 3.2), 'cityscapes': (0.005, 0.1), 'coco': (0.005, 0.1)}


def _clean(x: float) -> float:
    """Drop float noise (0.2 + 0.6 = 0.8000000000000002 -> 0.8): probes are
    printed, written into configs and compared with the paper's numbers."""
    return float(f'{x:.12g}')


#: How a round after the first splits (lr_min, lr_max]; see the module docstring.
LATER_ROUND_RULES = ('inclusive', 'interior')
#: Where the probes are evenly spaced: in lr (the paper, SGD) or in log(lr) (Adam).
LR_SCALES = ('linear', 'log')


def check_lr_scale(lr_scale: str, lr_range: Sequence[float], who: str = 'lr_scale') -> str:
    """``lr_scale`` if it is one of :data:`LR_SCALES` and fits ``lr_range``."""
    if lr_scale not in LR_SCALES:
        raise ValueError(f'{who} must be one of {LR_SCALES}, got {lr_scale!r}')
    if lr_scale == 'log' and not float(lr_range[0]) > 0:
        raise ValueError(f'{who}: a log-scale lr range must start above 0, got {tuple(lr_range)}')
    return lr_scale


def lr_probes(lr_min: float, lr_max: float, k: int, first_round: bool,
              later_rounds: str = 'inclusive', scale: str = 'linear') -> List[float]:
    """The learning rates of one round of Algo 2 (line 2), ascending.

    First round: ``lr_min + i * (lr_max - lr_min) / K`` for i = 1..K, i.e.
    (lr_min, lr_max]: lr_min is the range's floor, not a candidate.
    Later rounds, ``'inclusive'``: ``lr_min + i * (lr_max - lr_min) / (K - 1)``
    for i = 0..K-1 (both ends: lr_max, the last round's winner, is the upper
    bound of the best lr of the longer training); ``'interior'``:
    ``lr_min + i * (lr_max - lr_min) / (K + 1)`` for i = 1..K.
    A range that has collapsed to one point (lr_min won the last round) gives
    that single lr: probing it K times would cost K trials and say nothing new.

    ``scale='log'``: the same positions in log(lr), i.e. ``lr_min * (lr_max /
    lr_min) ** (i / K)`` for round 0 and so on (Adam-family optimizers).
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f'K must be an int >= 1, got {k!r}')
    if later_rounds not in LATER_ROUND_RULES:
        raise ValueError(f'later_rounds must be one of {LATER_ROUND_RULES}, got {later_rounds!r}')
    check_lr_scale(scale, (lr_min, lr_max), 'lr_probes: scale')
    if not first_round and lr_max == lr_min:
        return [_clean(lr_min)]
    lr_min, lr_max = check_range('lr range', (lr_min, lr_max))
    if first_round:
        n, first = k, 1
    elif later_rounds == 'interior':
        n, first = k + 1, 1
    else:
        if k == 1:
            return [_clean(lr_max)]
        n, first = k - 1, 0
    if scale == 'log':
        ratio = lr_max / lr_min
        return [_clean(lr_min * ratio ** (i / n)) for i in range(first, first + k)]
    step = (lr_max - lr_min) / n
    return [_clean(lr_min + i * step) for i in range(first, first + k)]


class FixNormTune:
    """Algo 2. ``FixNormTune(lr_range, K, budgets, alphas).run(objective)``.

    Args:
        lr_range: initial [lr_min, lr_max].
        K: learning rates per lr round.
        budgets: T = [T_0, ..., T_{N-1}] as fractions of T_max (non-decreasing);
            N = len(budgets) lr rounds.
        alphas: alpha candidates; alpha_0 is used during the lr rounds.
        later_rounds: how rounds after the first sample their range,
            ``'inclusive'`` (default, reproduces all the paper's lrs) or
            ``'interior'`` (see :func:`lr_probes`).
        lr_scale: ``'linear'`` (default: the paper's probes, for SGD) or
            ``'log'`` (evenly spaced in log(lr), for Adam-family optimizers;
            :func:`~fixnorm_mm.tuning.search_space.search_space` chooses it
            from a config).

    ``objective(lr, alpha, budget_fraction)`` trains and returns the metric
    (higher is better); see :mod:`fixnorm_mm.tuning.trial`.
    """
    method = 'fixnorm-tune'

    def __init__(self, lr_range: Sequence[float] = PAPER_LR_RANGES['imagenet'], K: int = 5,
                 budgets: Sequence[float] = PAPER_BUDGETS,
                 alphas: Sequence[float] = PAPER_ALPHAS,
                 later_rounds: str = 'inclusive', lr_scale: str = 'linear') -> None:
        self.lr_range = check_range('lr_range', lr_range)
        self.lr_scale = check_lr_scale(lr_scale, self.lr_range, 'FixNormTune: lr_scale')
        if not isinstance(K, int) or isinstance(K, bool) or K < 1:
            raise ValueError(f'FixNormTune: K must be an int >= 1, got {K!r}')
        self.K = K
        budgets = [float(b) for b in budgets]
        if not budgets or any(not 0 < b <= 1 for b in budgets) \
                or any(a > b for a, b in zip(budgets, budgets[1:])):
            raise ValueError('FixNormTune: budgets must be fractions of T_max in (0, 1] with '
                             f'T_i <= T_(i+1) (Algo 2), got {list(budgets)}')
        self.budgets = budgets
        alphas = [float(a) for a in alphas]
        if not alphas or any(not (a > 0 and math.isfinite(a)) for a in alphas) \
                or len(set(alphas)) != len(alphas):
            raise ValueError(f'FixNormTune: alphas must be distinct positive numbers, got {alphas}')
        self.alphas = alphas
        if later_rounds not in LATER_ROUND_RULES:
            raise ValueError(f'FixNormTune: later_rounds must be one of {LATER_ROUND_RULES}, '
                             f'got {later_rounds!r}')
        self.later_rounds = later_rounds

    @classmethod
    def for_task(cls, task: str, **overrides) -> 'FixNormTune':
        """The paper's setup for ``'imagenet'``, ``'coco'`` or ``'cityscapes'``."""
        if task not in PAPER_LR_RANGES:
            raise ValueError(f'FixNormTune: unknown task {task!r}; '
                             f'known: {sorted(PAPER_LR_RANGES)}')
        kwargs = dict(lr_range=PAPER_LR_RANGES[task], K=5, budgets=PAPER_BUDGETS,
                      alphas=PAPER_ALPHAS)
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def expected_cost(self) -> float:
        """K * sum(T) + (m - 1) * T_{N-1}, in units of T_max (Sec. 3: 11).

        What :meth:`run` spends unless a later round's range collapses to one lr.
        """
        return _clean(self.K * sum(self.budgets)
                      + (len(self.alphas) - 1) * self.budgets[-1])

    def known_points(self, r: int) -> List[tuple]:
        """The trials ``(lr, alpha, budget)`` of lr round ``r`` that Algo 2 runs
        whatever the earlier rounds find, so a scheduler may start them on
        slots an earlier round leaves idle: under the inclusive rule (K >= 2) a
        later round's range always starts at lr_min, at alpha_0 (lr rounds
        keep alpha_0) and T_r; nothing for round 0, the last round or the
        interior rule."""
        if not 1 <= r < len(self.budgets) or self.later_rounds != 'inclusive' or self.K < 2:
            return []
        return [(_clean(self.lr_range[0]), self.alphas[0], self.budgets[r])]

    def run(self, objective: Callable, map: Callable = map,
            callback: Optional[Callable[[Trial], None]] = None,
            prefetch: Optional[Callable[[Callable, List[tuple]], None]] = None) -> TuneResult:
        """Run Algo 2.

        Args:
            objective: ``objective(lr, alpha, budget_fraction) -> metric``. It
                may stop a trial early by raising :class:`TrialPruned` (a
                benchmark's early-stopping variant): the trial costs what it
                ran and cannot win its round.
            map: evaluates one round's independent trials, ``map(fn, items)``;
                pass ``ThreadPoolExecutor(n).map`` to run them in parallel.
            callback: called with each :class:`Trial` once it is recorded.
            prefetch: told before each lr round r, as ``prefetch(fn,
                known_points(r + 1))``, which trials of the next round do not
                depend on this one (a scheduler such as
                :class:`~fixnorm_mm.tuning.scheduler.TrialScheduler` runs them
                on idle slots; ``map`` later asks for them like any other).

        Ties go to the first (smallest) lr or alpha; failed trials never win.
        """
        trials: List[Trial] = []
        probes: List[List[float]] = []

        def fn(p):
            try:
                return call_objective(objective, *p)
            except TrialPruned as e:  # stopped early by the objective: costs what it ran
                return e.metric, False, dict(e.info, pruned_budget=e.budget)

        def evaluate(points: Iterable[tuple], round_) -> List[Trial]:
            points = list(points)
            outs = list(map(fn, points))
            done = []
            for (lr, alpha, budget), (metric, failed, info) in zip(points, outs):
                ran = info.pop('pruned_budget', None)
                t = Trial(self.method, round_, lr, budget if ran is None else ran, metric,
                          failed, alpha=alpha, info=info, pruned=ran is not None)
                trials.append(t)
                done.append(t)
                if callback is not None:
                    callback(t)
            return done

        # Initialization: alpha_best = alpha_0, lr_best = NULL, acc_best = 0 (-inf here,
        # so that any metric, even a negative one, can win).
        alpha_best, lr_best, acc_best = self.alphas[0], None, float('-inf')
        lr_min, lr_max = self.lr_range
        for r, budget in enumerate(self.budgets):                       # line 1
            lrs = lr_probes(lr_min, lr_max, self.K, first_round=(r == 0),
                            later_rounds=self.later_rounds, scale=self.lr_scale)  # line 2
            probes.append(lrs)
            if prefetch is not None:
                prefetch(fn, self.known_points(r + 1))
            done = evaluate([(lr, alpha_best, budget) for lr in lrs], r)  # line 3
            best = _argmax(done)                                         # line 4
            if best is None:
                continue  # every trial failed: keep the range, the next round retries inside it
            lr_max = best.lr                                             # line 5
            if best.metric > acc_best:                                   # lines 6-8
                acc_best, lr_best = best.metric, best.lr
        if lr_best is None:
            raise RuntimeError('FixNormTune: every lr trial failed, there is no lr_best to '
                               'tune alpha at. Errors: ' + '; '.join(
                                   f"lr={t.lr}: {t.info.get('error')}" for t in trials[:5]))
        done = evaluate([(lr_best, a, self.budgets[-1]) for a in self.alphas[1:]],
                        'alpha')                                         # line 11
        best = _argmax(done)                                             # line 12
        if best is not None and best.metric > acc_best:                  # lines 13-15
            acc_best, alpha_best = best.metric, best.alpha
        return TuneResult(self.method, trials, best_lr=lr_best, best_metric=acc_best,
                          best_alpha=alpha_best, lr_probes=probes)


def _argmax(trials: List[Trial]) -> Optional[Trial]:
    ok = [t for t in trials if not t.failed and not t.pruned]
    if not ok:
        return None
    return max(ok, key=lambda t: t.metric)  # max keeps the first of equal values
