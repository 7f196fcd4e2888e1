"""How well a credit rule's learning signal matches the truth, from a run's :class:`~ccpo_algos.gym.records.StepRecord`
list. Pure numpy; every read-out is per agent, pooled over the run's episodes.

* ``rank_corr``: Spearman correlation between the rule's credit and the true leave-one-out contribution (NaN where
  either is constant: a shared reward's credit for a free rider, say, has no rank order against a truth of 0).
* ``sign_agree``: the share of episodes whose advantage has the sign of the *ideal* advantage (the truth,
  centred in its prompt group), among episodes where both are non-zero.
* ``adv_error``: root-mean-square difference between the advantage and the ideal advantage, the truth normalised
  per prompt group as GRPO normalises a reward (``(x − mean) / (std + 1e-6)``, unbiased std; COSAC's "advantage
  error against known credit"). Rules without std scaling (MAGRPO, ``ccpo_v2``, RAE) also differ from it by their
  scale; rank correlation and sign agreement are scale-free.
* ``free_riding``: the share of all positive advantage that reaches agent-episodes whose true contribution is 0.
* ``adv_var``: the variance of the advantage (the learning signal's variance).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ccpo_algos.gym.records import StepRecord

READOUTS = ("rank_corr", "sign_agree", "adv_error", "free_riding", "adv_var")


def group_normalised(x: np.ndarray, groups: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``(x − group mean) / (group std + eps)`` per column, unbiased std; a group of one gives 0. ``x (E, A)``."""
    out = np.zeros_like(x, dtype=np.float64)
    for g in np.unique(groups):
        rows = groups == g
        if rows.sum() < 2:
            continue
        block = x[rows]
        out[rows] = (block - block.mean(0)) / (block.std(0, ddof=1) + eps)
    return out


def group_centred(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``x − group mean`` per column. ``x (E, A)``."""
    out = np.zeros_like(x, dtype=np.float64)
    for g in np.unique(groups):
        rows = groups == g
        out[rows] = x[rows] - x[rows].mean(0)
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def truth_readouts(records: Sequence[StepRecord], trained_only: bool = True) -> dict[str, np.ndarray]:
    """Each read-out of the module docstring, ``(A,)`` per agent, over ``records``. ``trained_only``: pool only the
    steps at which the agent was updated (its advantage trained something)."""
    if not records:
        raise ValueError("no step records")
    A = records[0].credit.shape[1]
    cols: dict[str, list[list[float]]] = {k: [[] for _ in range(A)] for k in ("credit", "truth", "adv", "ideal", "cent")}
    for r in records:
        ideal = group_normalised(r.truth_loo, r.group_ids)
        cent = group_centred(r.truth_loo, r.group_ids)
        for j in range(A):
            if trained_only and not r.trained[j]:
                continue
            cols["credit"][j] += r.credit[:, j].tolist()
            cols["truth"][j] += r.truth_loo[:, j].tolist()
            cols["adv"][j] += r.advantage[:, j].tolist()
            cols["ideal"][j] += ideal[:, j].tolist()
            cols["cent"][j] += cent[:, j].tolist()
    out = {k: np.full(A, np.nan) for k in READOUTS}
    for j in range(A):
        credit, truth, adv, ideal, cent = (np.asarray(cols[k][j]) for k in ("credit", "truth", "adv", "ideal", "cent"))
        if not len(adv):
            continue
        out["rank_corr"][j] = _spearman(credit, truth)
        both = (np.abs(adv) > 1e-9) & (np.abs(cent) > 1e-9)
        out["sign_agree"][j] = float((np.sign(adv[both]) == np.sign(cent[both])).mean()) if both.any() else np.nan
        out["adv_error"][j] = float(np.sqrt(np.mean((adv - ideal) ** 2)))
        out["adv_var"][j] = float(adv.var())
    pos_total = sum(np.clip(np.asarray(cols["adv"][j]), 0, None).sum() for j in range(A))
    for j in range(A):
        adv, truth = np.asarray(cols["adv"][j]), np.asarray(cols["truth"][j])
        if len(adv) and pos_total > 0:
            out["free_riding"][j] = float(np.clip(adv[np.abs(truth) < 1e-9], 0, None).sum() / pos_total)
    return out


def free_riding_index(records: Sequence[StepRecord], trained_only: bool = True) -> float:
    """The share of all positive advantage (every agent, every pooled episode) that reaches agent-episodes whose
    true contribution is 0."""
    return float(np.nansum(truth_readouts(records, trained_only)["free_riding"]))
