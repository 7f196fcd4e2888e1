"""The env -> algorithm contract: what one finished episode reports, as a typed record.

:meth:`Episode.outcome <ccpo_envs.episode.Episode.outcome>` builds an :class:`EpisodeOutcome`; the PettingZoo envs
put its :meth:`~EpisodeOutcome.to_info` dict into every agent's final ``infos`` (the keys documented in
:mod:`ccpo_envs.env`), and a driver reads it back with :meth:`~EpisodeOutcome.from_info`, which names a missing or
mistyped key instead of failing later inside a credit rule. No torch here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ccpo_envs.truth import Contribution


@dataclass(frozen=True)
class EpisodeOutcome:
    """One finished episode (all rewards in [0, 1]).

    Attributes:
        task_id, question, gold: the task.
        team_answer: the team's answer (``None``: none).
        reward_joint: ``R_joint``.
        reward_removed: ``{k: R_¬k}`` for every removable agent.
        team_answer_removed: ``{k: team answer without k}``.
        answers: ``{agent: extracted answer of its last turn or None}``.
        correct: ``{agent: its own answer is correct}``.
        answers_removed: ``{k: {agent: answer}}`` in the world without ``k``.
        tie, votes: plurality topologies: a tied vote, group sizes.
        messages: ``{agent: last joint message}``; messages_by_stage: ``{agent: [every joint message]}``.
        score_by_stage: ``{agent: [verifier score of each joint turn's answer]}``.
        messages_removed: ``{k: {agent: last re-run message}}``.
        truncation: the env's truncation rule; truncated / truncated_removed: cut messages (joint / re-runs).
        skipped: agents with a joint turn the env did not play (its world had ended).
        reward_coalitions: ``v(S)`` of every coalition by bitmask (independent teams only), else ``None``.
        contribution: each agent's true contribution (:class:`~ccpo_envs.truth.Contribution`) where the topology
            knows it (independent teams by enumeration, tasks that define their removed worlds analytically).
    """

    task_id: str
    question: str
    gold: str
    team_answer: str | None
    reward_joint: float
    reward_removed: dict[str, float]
    team_answer_removed: dict[str, str | None]
    answers: dict[str, str | None]
    correct: dict[str, bool]
    answers_removed: dict[str, dict[str, str | None]]
    tie: bool
    votes: tuple[int, ...]
    messages: dict[str, str]
    messages_by_stage: dict[str, list[str]]
    score_by_stage: dict[str, list[float]]
    messages_removed: dict[str, dict[str, str]]
    truncation: str
    truncated: dict[str, bool]
    truncated_removed: dict[str, dict[str, bool]]
    skipped: list[str] = field(default_factory=list)
    reward_coalitions: list[float] | None = None
    contribution: Contribution | None = None

    def to_info(self) -> dict[str, Any]:
        """The PettingZoo ``infos`` dict (``reward_coalitions`` and ``contribution`` only where recorded)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in ("reward_coalitions", "contribution"):
            if d[k] is None:
                del d[k]
        if "contribution" in d:
            d["contribution"] = d["contribution"].to_info()
        return d

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> EpisodeOutcome:
        """Read a final ``infos`` dict back; ``ValueError`` naming what is missing or not a number."""
        names = {f.name for f in dataclasses.fields(cls)}
        optional = {"skipped", "reward_coalitions", "contribution"}
        missing = sorted(n for n in names - optional if n not in info)
        if missing:
            raise ValueError(f"the env's final infos lack {missing}: a team env reports EpisodeOutcome.to_info() "
                             "(ccpo_envs.outcome)")
        bad = [k for k in ("reward_joint", *(f"reward_removed[{a}]" for a in info["reward_removed"]))
               if not isinstance(info["reward_joint"] if k == "reward_joint" else info["reward_removed"][k[15:-1]],
                                 (int, float))]
        if bad:
            raise ValueError(f"the env's final infos hold non-numeric rewards {bad}")
        kw = {k: v for k, v in info.items() if k in names}
        if kw.get("contribution") is not None:
            kw["contribution"] = Contribution.from_info(kw["contribution"])
        return cls(**kw)
