"""Per-turn credit for multi-round topologies (a debate's rounds): rules that reward an agent's turns differently.

Each function has the table's signature ``credit(batch, state, cfg)`` and returns ``(E, A, T)``: the reward of agent
``a``'s ``t``-th joint turn (0 where it has fewer than ``T`` turns). The trainer computes the advantage of each turn
index separately, so GRPO's groups are (prompt, turn, agent) - AT-GRPO's grouping - and trains every turn with
its own advantage. Both read ``CreditBatch.turn_reward``: the verifier's score of each turn's own answer.

Truncation as every row: under ``episode`` a truncated turn zeroes every agent's rewards of that episode, under
``turn`` only the truncated agent's (all of its turns).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ccpo_algos.credit import CreditBatch, CreditConfig, EmaState, finished_mask

#: MARTI's default shaping weight (``MultiAgentRewardAllocation(alpha=0.5)``).
MARTI_ALPHA = 0.5
#: Weight of the team reward in AT-GRPO's mixed reward ``α·R_team + r_local`` (our default: equal weights).
AT_GRPO_ALPHA = 1.0


def _turn_scores(batch: CreditBatch) -> Tensor:
    if batch.turn_reward is None:
        raise ValueError("this credit rule needs each turn's own score (infos['score_by_stage']); the env did not "
                         "record it")
    return batch.turn_reward.to(torch.float64)  # (E, A, T), NaN where an agent has no such turn


def _mask_turns(r: Tensor, batch: CreditBatch, cfg: CreditConfig) -> Tensor:
    keep = finished_mask(batch.finished, cfg.truncation).to(r.dtype)  # (E, A)
    return torch.nan_to_num(r, nan=0.0) * keep[:, :, None]


def marti_margin_credit(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig) -> tuple[Tensor, None]:
    """MARTI's margin shaping (MAPoRL-style reward allocation; ``marti/verifiers/auto_reward_alloc.py``,
    ``MultiAgentRewardAllocation._reward_shaping``, debate branch, ``name="margin"``, l.65-103).

    ``r_{a,t}`` = the verifier's score of agent ``a``'s own answer at its turn ``t``. The first turn keeps it; for
    ``t >= 1``: ``r'_{a,t} = r_{a,t} + α·(r_{a,t} − Q_t)`` with ``Q_t`` the mean of *every* agent's scores at turns
    before ``t`` (``np.mean(raw_rewards[:, :t])``), ``α = 0.5``. For two rounds ``Q`` is SPEC's "mean of the previous
    round's rewards"; with more, the reference code averages all earlier rounds and so does this. On a topology
    where each agent speaks once it is each agent's own score. Stateless. Returns ``(E, A, T)``."""
    r = _turn_scores(batch)
    out = r.clone()
    for t in range(1, r.shape[2]):
        q = torch.nanmean(r[:, :, :t].flatten(1), dim=1)  # (E,) every agent's earlier scores
        out[:, :, t] = r[:, :, t] + MARTI_ALPHA * (r[:, :, t] - q[:, None])
    return _mask_turns(out, batch, cfg), None


def at_grpo_credit(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig) -> tuple[Tensor, None]:
    """AT-GRPO's reward (PettingLLMs, arXiv 2510.11062; ``multi_agents_ppo_trainer.py::_assign_consistent_uids``
    groups by ``(env // samples, turn, agent)``): each turn gets ``α·R_joint + r_{a,t}``, the team reward plus the
    turn's own answer score, ``α = 1``; the per-(prompt, turn, agent) GRPO groups come from the trainer's per-turn
    advantage. PettingLLMs' tree sampling (branching every turn) is not reproduced: each of the ``G`` episodes is
    an independent sample. Stateless. Returns ``(E, A, T)``."""
    r = _turn_scores(batch)
    team = batch.team_reward.to(torch.float64)[:, None, None]
    return _mask_turns(AT_GRPO_ALPHA * team + r, batch, cfg), None
