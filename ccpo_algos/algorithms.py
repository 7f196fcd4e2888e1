"""The algorithms, as rows of one table: a credit function and an advantage function with shared signatures.

The trainer reads ``ALGORITHMS[name]`` and never branches on the name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ccpo_algos import advantage as adv
from ccpo_algos import credit as cr
from ccpo_algos import turn_credit as tc


@dataclass(frozen=True)
class Algorithm:
    """One row of the table.

    Attributes:
        credit: ``(CreditBatch, state, CreditConfig) -> (rewards (E, A), state)``; per-turn rules return
            ``(E, A, T)`` (one reward per turn of each agent) and pair with :func:`~ccpo_algos.advantage.per_turn`.
        advantage: ``(rewards, group_ids, values, stage, AdvantageConfig) -> (advantages, returns)``.
        needs_critic: trains a centralised value function (MAPPO).
        needs_counterfactual: rollouts must play the "agent removed" episodes (the dyad's solo reasoner).
        needs_coalitions: the credit reads every coalition's outcome (``infos["reward_coalitions"]``), which only
            independent topologies record.
        needs_groups: the advantage compares sibling samples of a prompt (GRPO-style), so ``group_size >= 2``.
    """

    credit: Callable
    advantage: Callable
    needs_critic: bool
    needs_counterfactual: bool
    needs_coalitions: bool = False
    needs_groups: bool = True


ALGORITHMS: dict[str, Algorithm] = {
    "ccpo": Algorithm(cr.ccpo_credit, adv.grpo_advantage, needs_critic=False, needs_counterfactual=True),
    "grpo": Algorithm(cr.shared_credit, adv.grpo_advantage, needs_critic=False, needs_counterfactual=False),
    "mappo": Algorithm(cr.team_credit, adv.mappo_advantage, needs_critic=True, needs_counterfactual=False,
                       needs_groups=False),
    # the released recipe (bhai114/ccpo CCPO/ tree): ±1 outcomes, solo baseline, event bonus, mean-centred GRPO
    "ccpo_v2": Algorithm(cr.ccpo_v2_credit, adv.grpo_mean_advantage, needs_critic=False, needs_counterfactual=True),
    # peers (SPEC "More credit methods"); Dr. MAS's per-(prompt, agent) normalisation of the shared reward is the
    # `grpo` row already (grpo_advantages normalises per group and per agent column)
    # MAGRPO (CoMLRL magrpo.py::_compute_advantages): the joint return, minus its sibling samples' mean, no std
    "magrpo": Algorithm(cr.team_credit, adv.grpo_mean_advantage, needs_critic=False, needs_counterfactual=False),
    # SPIRAL's role-conditioned advantage estimation: R - b_role, a running baseline per role
    "rae": Algorithm(cr.rae_credit, adv.identity_advantage, needs_critic=False, needs_counterfactual=False,
                     needs_groups=False),
    # exact Shapley values over all coalitions, from the recorded answers of an independent team (the vote)
    "shapley": Algorithm(cr.exact_shapley_credit, adv.grpo_advantage, needs_critic=False, needs_counterfactual=False,
                         needs_coalitions=True),
    # multi-round topologies (the debate): each turn its own reward, GRPO groups per (prompt, turn, agent)
    "marti_margin": Algorithm(tc.marti_margin_credit, adv.per_turn(adv.grpo_advantage), False, False),
    "at_grpo": Algorithm(tc.at_grpo_credit, adv.per_turn(adv.grpo_advantage), False, False),
    # ablations
    "ccpo_no_history": Algorithm(cr.shapley_credit, adv.grpo_advantage, False, True),
    "ccpo_no_gate": Algorithm(cr.ccpo_no_gate_credit, adv.grpo_advantage, False, True),
    "difference": Algorithm(cr.difference_credit, adv.grpo_advantage, False, True),
}
