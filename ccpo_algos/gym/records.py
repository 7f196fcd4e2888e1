"""Per-step credit records of a gym run: for every episode and agent, the truth beside what the rule credited.

A :class:`StepRecord` is small arrays (numpy): the read-outs of :mod:`ccpo_algos.gym.truth_metrics` and of the
bench's reports are computed from them, never from the run's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ccpo_algos.rollout import RolloutBatch
from ccpo_envs.outcome import EpisodeOutcome


@dataclass
class StepRecord:
    """One step of one run (``E`` episodes, ``A`` agents).

    Attributes:
        step: the training step.
        team_reward: ``(E,)`` ``R_joint``.
        truth_loo, truth_shapley: ``(E, A)`` each agent's true contribution (leave-one-out, Shapley).
        credit: ``(E, A)`` the rule's per-agent reward.
        advantage: ``(E, A)`` the advantage each agent's turn was trained with.
        trained: ``(A,)`` bool, the agents updated at this step.
        group_ids: ``(E,)`` prompt groups.
    """

    step: int
    team_reward: np.ndarray
    truth_loo: np.ndarray
    truth_shapley: np.ndarray
    credit: np.ndarray
    advantage: np.ndarray
    trained: np.ndarray
    group_ids: np.ndarray


def _last_turn(x: torch.Tensor) -> np.ndarray:
    """``(E, A)`` from a credit or advantage tensor (per-turn rules: the agent's last turn)."""
    x = x.detach().to("cpu", torch.float64)
    return (x[..., -1] if x.dim() == 3 else x).numpy()


def step_record(step: int, rb: RolloutBatch, rewards: torch.Tensor, advantages: torch.Tensor,
                trained: Sequence[str]) -> StepRecord:
    """The record of one step from its rollout, the rule's rewards and the advantages."""
    outs = [EpisodeOutcome.from_info(i) for i in rb.infos]
    if any(o.contribution is None for o in outs):
        raise ValueError("the env reports no true contribution (infos['contribution']); credit records need a "
                         "credit-gym env (ccpo_envs.gym)")
    loo = np.array([[o.contribution.loo[a] for a in rb.agents] for o in outs])
    shap = np.array([[o.contribution.shapley[a] for a in rb.agents] for o in outs])
    return StepRecord(step, np.array([o.reward_joint for o in outs], dtype=np.float64), loo, shap,
                      _last_turn(rewards), _last_turn(advantages), np.array([a in trained for a in rb.agents]),
                      rb.group_ids.numpy().copy())
