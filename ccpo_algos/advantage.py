"""Advantage: per-agent rewards -> per-turn advantages (broadcast over the turn's tokens later). Pure functions.

Every advantage function has the signature
``advantage(rewards (E, A), group_ids (E,), values (E, A) | None, stage (A,), cfg) -> (advantages (E, A),
returns (E, A) | None)`` so that algorithms are rows of one table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AdvantageConfig:
    """Advantage hyper-parameters.

    Attributes:
        scale_std: GRPO divides by the group std (off: Dr. GRPO, mean-centring only).
        eps: added to the group std.
        gamma: MAPPO discount over turns.
        lam: MAPPO GAE λ.
        normalize_batch: MAPPO normalises advantages over the batch.
    """

    scale_std: bool = True
    eps: float = 1e-6
    gamma: float = 1.0
    lam: float = 1.0
    normalize_batch: bool = True


def grpo_advantages(rewards: Tensor, group_ids: Tensor, scale_std: bool = True, eps: float = 1e-6) -> Tensor:
    """GRPO per prompt group and per agent: ``A = (r − mean_group)/(std_group + eps)``.

    ``std`` is the unbiased std over the group; a group of one gets ``A = 0``.

    Args:
        rewards: ``(E, A)`` or ``(E,)`` per-episode rewards.
        group_ids: ``(E,)`` integer id of each episode's prompt.
    Returns:
        Advantages with the shape of ``rewards``.

    >>> grpo_advantages(torch.tensor([1., 0., 5.]), torch.tensor([0, 0, 1]))
    tensor([ 0.7071, -0.7071,  0.0000], dtype=torch.float64)
    """
    squeeze = rewards.dim() == 1
    r = (rewards[:, None] if squeeze else rewards).to(torch.float64)
    _, inv = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inv.max()) + 1 if inv.numel() else 0
    count = torch.zeros(n_groups, dtype=torch.float64, device=r.device).index_add_(
        0, inv, torch.ones_like(inv, dtype=torch.float64))
    total = torch.zeros(n_groups, r.shape[1], dtype=torch.float64, device=r.device).index_add_(0, inv, r)
    mean = total / count[:, None]
    centred = r - mean[inv]
    sq = torch.zeros_like(total).index_add_(0, inv, centred**2)
    std = (sq / (count[:, None] - 1).clamp_min(1)).sqrt()
    adv = centred / (std[inv] + eps) if scale_std else centred
    adv = torch.where((count[inv] > 1)[:, None], adv, torch.zeros_like(adv))
    return adv[:, 0] if squeeze else adv


def gae_advantages(stage_rewards: Tensor, stage_values: Tensor, gamma: float = 1.0, lam: float = 1.0
                   ) -> tuple[Tensor, Tensor]:
    """GAE over the turns (stages) of each episode, the episode ending after the last stage.

    ``δ_t = r_t + γ·V_{t+1} − V_t`` (``V_T = 0``), ``A_t = Σ_l (γλ)^l δ_{t+l}``, returns ``= A + V``.

    Args:
        stage_rewards: ``(E, S)`` reward received at each stage (shared reward: ``R_joint`` at the last stage).
        stage_values: ``(E, S)`` centralised value of the state before each stage.
    Returns:
        ``(advantages (E, S), returns (E, S))``.
    """
    r, v = stage_rewards.to(torch.float64), stage_values.to(torch.float64)
    E, S = r.shape
    adv = torch.zeros_like(r)
    last = torch.zeros(E, dtype=torch.float64, device=r.device)
    for t in reversed(range(S)):
        next_v = v[:, t + 1] if t + 1 < S else torch.zeros(E, dtype=torch.float64, device=r.device)
        delta = r[:, t] + gamma * next_v - v[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    return adv, adv + v


def grpo_advantage(rewards: Tensor, group_ids: Tensor, values: Tensor | None, stage: Tensor,
                   cfg: AdvantageConfig) -> tuple[Tensor, None]:
    """Table adapter for GRPO (CCPO and shared-reward GRPO)."""
    return grpo_advantages(rewards, group_ids, cfg.scale_std, cfg.eps), None


def identity_advantage(rewards: Tensor, group_ids: Tensor, values: Tensor | None, stage: Tensor,
                       cfg: AdvantageConfig) -> tuple[Tensor, None]:
    """Table adapter for credits that are advantages already (RAE: ``R − b_k``): no group statistics."""
    return rewards.to(torch.float64), None


def grpo_mean_advantage(rewards: Tensor, group_ids: Tensor, values: Tensor | None, stage: Tensor,
                        cfg: AdvantageConfig) -> tuple[Tensor, None]:
    """Table adapter for mean-centred GRPO whatever ``cfg.scale_std`` says (``ccpo_v2``: the reference runs
    ``norm_adv_by_std_in_grpo=False``; std scaling would erase the counterfactual bonus)."""
    return grpo_advantages(rewards, group_ids, False, cfg.eps), None


def mappo_advantage(rewards: Tensor, group_ids: Tensor, values: Tensor | None, stage: Tensor,
                    cfg: AdvantageConfig) -> tuple[Tensor, Tensor]:
    """Table adapter for MAPPO: GAE over stages with the team reward at the last stage, then normalisation over
    the batch, per agent column.

    Args:
        rewards: ``(E, A)`` team reward ``R_joint`` in every column (:func:`ccpo_algos.credit.team_credit`).
        values: ``(E, A)`` critic value of the state before each agent's stage (equal within a stage).
        stage: ``(A,)`` stage index of each agent.
    """
    if values is None:
        raise ValueError("MAPPO needs critic values")
    r = rewards.to(torch.float64)
    if not torch.equal(r, r[:, :1].expand_as(r)):
        raise ValueError("MAPPO's terminal reward is the team reward: every agent column must hold R_joint "
                         "(use credit.team_credit)")
    E = rewards.shape[0]
    layout = [int(x) for x in stage.tolist()]  # (A,) stage of each agent: layout, not data (host ints)
    S = max(layout) + 1
    first_of_stage = [layout.index(s) for s in range(S)]
    stage_values = values[:, first_of_stage].to(torch.float64)
    stage_rewards = torch.zeros(E, S, dtype=torch.float64, device=r.device)
    stage_rewards[:, S - 1] = r[:, 0]
    adv_s, ret_s = gae_advantages(stage_rewards, stage_values, cfg.gamma, cfg.lam)
    adv, ret = adv_s[:, layout], ret_s[:, layout]
    if cfg.normalize_batch and E > 1:  # per agent column
        adv = (adv - adv.mean(dim=0, keepdim=True)) / (adv.std(dim=0, keepdim=True) + cfg.eps)
    return adv, ret


def stage_targets(returns: Tensor, stage: Tensor) -> Tensor:
    """The critic's regression targets: ``returns (E, A)`` read at the first agent of each stage, ``(E, S)``
    (``stage (A,)``: each agent's stage ``0..S-1``; agents of one stage share the state before it)."""
    layout = [int(x) for x in stage.tolist()]
    return returns[:, [layout.index(s) for s in range(max(layout) + 1)]]


def per_turn(fn: Callable[..., tuple[Tensor, Tensor | None]]) -> Callable[..., tuple[Tensor, None]]:
    """An advantage for per-turn rewards ``(E, A, T)`` (:mod:`ccpo_algos.turn_credit`): ``fn`` on each turn index
    separately, so GRPO's groups are (prompt, turn, agent) - AT-GRPO's grouping. Returns ``((E, A, T), None)``."""

    def advantage(rewards: Tensor, group_ids: Tensor, values: Tensor | None, stage: Tensor,
                  cfg: AdvantageConfig) -> tuple[Tensor, None]:
        if rewards.dim() != 3:
            raise ValueError(f"per-turn advantage needs (E, A, T) rewards, got shape {tuple(rewards.shape)}")
        return torch.stack([fn(rewards[:, :, t], group_ids, values, stage, cfg)[0]
                            for t in range(rewards.shape[2])], dim=2), None

    advantage.__name__ = f"per_turn_{fn.__name__}"
    return advantage
