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
            position in that split), so a task can be traced back to ``(source, split, seed, index)``.
    """

    question: str
    answer: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        m = self.metadata
        return f"{m.get('source', '?')}/{m.get('split', '?')}/{m.get('seed', '?')}/{m.get('index', '?')}"
