"""The bench's statistics: can a difference between two credit methods be told from noise?

* :func:`paired_difference` - every method is scored on the same held-out items, so the difference of two methods is
  taken item by item (and seed by seed) and its 95 % CI comes from a crossed bootstrap (:func:`mean_interval`):
  each replicate resamples whole seeds and, independently, items. Not rliable's stratified bootstrap: it resamples
  seeds within each item, which averages a seed's training noise (shared by all of that seed's items) away.
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


def _interval(scores: dict[str, object], func, reps: int, seed: int) -> dict[str, Interval]:
    """rliable's stratified bootstrap over runs (within each task) of ``func``; point estimates and 95 % CIs.

    rliable 1.2 draws its resampling indices with the global ``np.random.choice`` (``update_indices``), not with the
    ``random_state`` it hands to arch, so that alone left the CIs different in every process. The global generator is
    seeded for the call and restored after it, so the CIs repeat and the caller's global stream is untouched."""
    from rliable import library as rly

    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # rliable 1.2 passes arch a RandomState, which arch 7 calls deprecated
            warnings.filterwarnings("ignore", category=FutureWarning, module="arch")
            point, ci = rly.get_interval_estimates(scores, func, task_bootstrap=False, reps=reps,
                                                   random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)
    return {k: Interval(float(np.ravel(point[k])[0]), float(np.ravel(ci[k][0])[0]), float(np.ravel(ci[k][1])[0]))
            for k in scores}


def mean_interval(x: np.ndarray, reps: int = REPS, seed: int = 0) -> Interval:
    """Mean of a ``(seeds, items)`` matrix with its 95 % percentile CI from a crossed bootstrap: every replicate draws
    ``seeds`` rows and, independently, ``items`` columns with replacement and averages the drawn sub-matrix.

    Seeds and items are crossed random factors: a seed's training noise moves all of its items together, an item's
    difficulty moves all seeds together, so each is resampled whole. (rliable's stratified bootstrap resamples seeds
    independently within each item; with 128 items that averages the seed noise away: on the 2026-11-30 study's
    three dyad seeds, whose CCPO - GRPO differences were -0.28, -0.03 and -0.15, it gave [-0.21, -0.11], the crossed
    bootstrap [-0.28, -0.03].) The crossed bootstrap counts the seed x item interaction in both factors, so it errs
    on the wide side. With one seed it resamples items only; with a handful of seeds the CI is coarse (only so many
    distinct seed draws exist), which is the truth of the design.
    rliable has no crossed design, hence numpy here: the replicates' means are ``w_s . x . w_i / (S I)`` with the
    draws' counts ``w``."""
    x = np.atleast_2d(np.asarray(x, float))
    S, n = x.shape
    rng = np.random.default_rng(seed)
    ws = np.stack([np.bincount(rng.integers(S, size=S), minlength=S) for _ in range(reps)]).astype(float)
    wi = np.stack([np.bincount(rng.integers(n, size=n), minlength=n) for _ in range(reps)]).astype(float)
    means = np.einsum("rs,si,ri->r", ws, x, wi) / (S * n)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Interval(float(x.mean()), float(lo), float(hi))


def paired_difference(a: np.ndarray, b: np.ndarray, reps: int = REPS, seed: int = 0) -> Interval:
    """Mean of ``a - b`` over seeds and items with its paired, crossed bootstrap 95 % CI (:func:`mean_interval`).

    ``a`` and ``b``: ``(seeds, items)`` scores on the same items (row ``s`` of each is one training seed; ``b`` may
    have one row, e.g. the untrained team, which is then compared with every seed of ``a``)."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired scores need the same items: {a.shape[1]} vs {b.shape[1]}")
    return mean_interval(a - b, reps, seed)  # broadcasts a one-row reference over a's seeds


def iqm(scores: np.ndarray, reps: int = REPS, seed: int = 0) -> Interval:
    """Interquartile mean of a ``(runs, tasks)`` score matrix with rliable's stratified bootstrap CI over runs."""
    from rliable import metrics

    return _interval({"x": np.asarray(scores, float)}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps, seed)["x"]


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = REPS, seed: int = 0) -> Interval:
    """P(a run of X beats a run of Y on a task), averaged over tasks (rliable), with its stratified bootstrap CI.
    ``x`` and ``y``: ``(runs, tasks)``; 0.5 means no difference."""
    from rliable import metrics

    return _interval({"p": (np.asarray(x, float), np.asarray(y, float))},
                     lambda a, b: np.array([metrics.probability_of_improvement(a, b)]), reps, seed)["p"]


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
