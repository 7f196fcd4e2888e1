"""The task record shared by every source and verifier."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """One reasoning problem.

    Attributes:
        question: the problem text shown to the agents.
        answer: the gold answer as a string (a number, an expression, an option letter, a sentence).
        metadata: source-specific data. Always has ``source`` (the source name), ``split`` and ``index`` (the
            position in that split), so a task can be traced back to ``(source, split, seed, index)``. Optional,
            for teams whose agents hold different information (the credit gym, :mod:`ccpo_envs.gym`): ``views``
            ``{agent: text}`` shown to that agent instead of ``question``, and ``gold_of`` ``{agent: answer}``,
            what that agent's own answer should be (its ``correct`` flag is scored against it).
    """

    question: str
    answer: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        """``source/split/seed/index``; a part the metadata lacks is left out (a ``ListSource`` has no seed:
        ``list/train/3``), never written as a placeholder."""
        m = self.metadata
        return "/".join(str(m[k]) for k in ("source", "split", "seed", "index") if k in m) or "task"

    def view_of(self, agent: str) -> str:
        """The question as ``agent`` sees it: its private view where the task gives one, else ``question``."""
        return self.metadata.get("views", {}).get(agent, self.question)

    def gold_of(self, agent: str) -> str:
        """What ``agent``'s own answer should be: its own gold where the task gives one, else ``answer``."""
        return self.metadata.get("gold_of", {}).get(agent, self.answer)
