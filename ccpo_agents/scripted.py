"""Scripted policies for tests and controlled experiments (no model): oracle, constant, garbage, ignores-teammate.

They implement :class:`~ccpo_agents.policy.Policy` but produce no token ids (nothing to train).
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from ccpo_agents.policy import Completion, Request, SamplingConfig

INSTRUCTION_MARK = "\n\nInstruction:\n"


def bare_question(text: str) -> str:
    """The question inside an observation that shows one ``Instruction:`` message (SPEC's v1 layout); other text is
    returned whole. Requests from a rollout carry the bare question itself (``Request.question``)."""
    if text.startswith("Question:\n") and INSTRUCTION_MARK in text:
        return text[len("Question:\n"):text.index(INSTRUCTION_MARK)]
    return text


def question_of(r: Request) -> str:
    """The task question of a request: ``r.question`` if the rollout set it, else :func:`bare_question` of its text."""
    return r.question if r.question is not None else bare_question(r.text)


class _Scripted:
    def respond(self, role: str, text: str, k: int, question: str) -> str:
        """The reply of ``role`` to observation ``text`` (sample ``k``); ``question``: the bare task question."""
        raise NotImplementedError

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        return [[Completion(r.role, self.respond(r.role, r.text, k, question_of(r)), [], [], [], "stop")
                 for k in range(sampling.n)]
                for r in requests]


class ConstantPolicy(_Scripted):
    """Always says ``text``."""

    def __init__(self, text: str):
        self.text = text

    def respond(self, role: str, text: str, k: int, question: str) -> str:
        return self.text


class OraclePolicy(_Scripted):
    """Answers ``\\boxed{gold}`` for questions it knows (``answer_of(question) -> gold or None``), else nothing."""

    def __init__(self, answer_of: Callable[[str], str | None]):
        self.answer_of = answer_of

    def respond(self, role: str, text: str, k: int, question: str) -> str:
        gold = self.answer_of(question)
        return f"The answer is \\boxed{{{gold}}}." if gold is not None else "I do not know."


class GarbagePolicy(_Scripted):
    """Random printable noise (seeded), sometimes with braces and backslashes."""

    def __init__(self, seed: int = 0, length: int = 80):
        self.rng, self.length = random.Random(seed), length

    def respond(self, role: str, text: str, k: int, question: str) -> str:
        alphabet = "abc xyz 0123456789 {}\\boxed frac ^_$"
        return "".join(self.rng.choice(alphabet) for _ in range(self.length))


class IgnoresTeammatePolicy(_Scripted):
    """Wraps another policy but answers as if no teammate had spoken (a free-rider's teammate).

    Its answer with and without the thinker's plan is identical, so ``R_joint == R_solo`` and the thinker's
    counterfactual credit is exactly 0 (in any topology: it sees only the bare question).
    """

    def __init__(self, inner: _Scripted):
        self.inner = inner

    def respond(self, role: str, text: str, k: int, question: str) -> str:
        return self.inner.respond(role, question, k, question)


class PerRolePolicy:
    """Dispatches each request to the policy of its role (e.g. scripted thinker, vLLM reasoner)."""

    def __init__(self, policies: dict[str, object]):
        self.policies = policies

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        out: list[list[Completion] | None] = [None] * len(requests)
        by_role: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_role.setdefault(r.role, []).append(i)
        for role, idx in by_role.items():
            if role not in self.policies:
                raise KeyError(f"no policy for role {role!r}; have {sorted(self.policies)}")
            res = self.policies[role].generate([requests[i] for i in idx], sampling)
            for i, r in zip(idx, res):
                out[i] = r
        return out  # type: ignore[return-value]
