"""The bench's statistics: can a difference between two credit methods be told from noise?

* :func:`paired_difference` - every method is scored on the same held-out items, so the difference of two methods is
  taken item by item (and seed by seed) and its 95 % CI comes from a bootstrap that resamples items and, within each
  item, seeds (rliable's stratified bootstrap with ``task_bootstrap=True``; items play rliable's "tasks").
* :func:`iqm` and :func:`probability_of_improvement` - across seeds and topologies, rliable's interquartile mean and
  P(X > Y) with stratified bootstrap CIs (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice").
* :func:`minimal_detectable_difference` - the smallest true difference a design of ``items x seeds`` detects with
  80 % power at a two-sided 5 % level, so a study can be sized before it runs.

Score matrices are ``(seeds, items)`` arrays of 0/1 rewards (or any per-item score).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

REPS = 2000  # bootstrap replications: the CI bounds move by < 0.005 between reruns at this size


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % CI."""

    value: float
    lo: float
    hi: float

    @property
    def contains_zero(self) -> bool:
        return self.lo <= 0.0 <= self.hi

    def __str__(self) -> str:
        return f"{self.value:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"


def _interval(scores: dict[str, object], func, reps: int, seed: int, task_bootstrap: bool) -> dict[str, Interval]:
    from rliable import library as rly

    with warnings.catch_warnings():  # rliable 1.2 passes arch a RandomState, which arch 7 calls deprecated
        warnings.filterwarnings("ignore", category=FutureWarning, module="arch")
        point, ci = rly.get_interval_estimates(scores, func, task_bootstrap=task_bootstrap, reps=reps,
                                               random_state=np.random.RandomState(seed))
    return {k: Interval(float(np.ravel(point[k])[0]), float(np.ravel(ci[k][0])[0]), float(np.ravel(ci[k][1])[0]))
            for k in scores}


def paired_difference(a: np.ndarray, b: np.ndarray, reps: int = REPS, seed: int = 0) -> Interval:
    """Mean of ``a - b`` over seeds and items with its paired bootstrap 95 % CI.

    ``a`` and ``b``: ``(seeds, items)`` scores on the same items (row ``s`` of each is one training seed; ``b`` may
    have one row, e.g. the untrained team, which is then compared with every seed of ``a``)."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired scores need the same items: {a.shape[1]} vs {b.shape[1]}")
    d = a - b  # broadcasts a one-row reference over a's seeds
    return _interval({"d": d}, lambda x: np.array([x.mean()]), reps, seed, task_bootstrap=True)["d"]


def mean_interval(scores: np.ndarray, reps: int = REPS, seed: int = 0) -> Interval:
    """Mean of a ``(seeds, items)`` score matrix with its 95 % CI (items resampled, then seeds within each item)."""
    return _interval({"x": np.atleast_2d(np.asarray(scores, float))}, lambda x: np.array([x.mean()]), reps, seed,
                     task_bootstrap=True)["x"]


def iqm(scores: np.ndarray, reps: int = REPS, seed: int = 0) -> Interval:
    """Interquartile mean of a ``(runs, tasks)`` score matrix with rliable's stratified bootstrap CI over runs."""
    from rliable import metrics

    return _interval({"x": np.asarray(scores, float)}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps, seed,
                     task_bootstrap=False)["x"]


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = REPS, seed: int = 0) -> Interval:
    """P(a run of X beats a run of Y on a task), averaged over tasks (rliable), with its stratified bootstrap CI.
    ``x`` and ``y``: ``(runs, tasks)``; 0.5 means no difference."""
    from rliable import metrics

    return _interval({"p": (np.asarray(x, float), np.asarray(y, float))},
                     lambda a, b: np.array([metrics.probability_of_improvement(a, b)]), reps, seed,
                     task_bootstrap=False)["p"]


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def minimal_detectable_difference(items: int, seeds: int, item_var: float, seed_sd: float = 0.0,
                                  alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean difference between two methods that a paired comparison detects with ``power`` at a
    two-sided level ``alpha`` (normal approximation).

    ``item_var``: variance of one item's paired difference ``a_i - b_i`` (for 0/1 scores ``P(a != b)`` minus the
    squared mean difference; ``2 p (1 - p)`` for independent methods at accuracy ``p``). ``seed_sd``: the standard
    deviation of one training seed's mean accuracy around its method's mean (training noise); the difference of two
    methods' seed means carries it twice. ``Var(mean diff) = item_var / (items * seeds) + 2 seed_sd^2 / seeds``."""
    if items < 1 or seeds < 1:
        raise ValueError("a design needs at least one item and one seed")
    se = math.sqrt(item_var / (items * seeds) + 2 * seed_sd ** 2 / seeds)
    return (_z(1 - alpha / 2) + _z(power)) * se


def item_variance(a: np.ndarray, b: np.ndarray) -> float:
    """Pooled within-seed variance of the paired item differences of two ``(seeds, items)`` matrices."""
    d = np.atleast_2d(np.asarray(a, float)) - np.atleast_2d(np.asarray(b, float))
    return float(np.mean(d.var(axis=1, ddof=1))) if d.shape[1] > 1 else 0.0
