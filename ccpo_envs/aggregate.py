"""Aggregators: the agents' extracted answers -> the team answer and the team reward. Pure functions, no torch.

An aggregator is ``f(answers, correct, same) -> Outcome`` where

* ``answers``: ``{agent: extracted answer or None}`` for the agents present in this (joint or counterfactual)
  episode, in speaking order; ``None`` means the agent gave no parseable answer;
* ``correct(answer) -> float``: the verifier's score of one answer, in [0, 1];
* ``same(a, b) -> bool``: verifier equivalence (``1/2`` and ``0.5`` are one vote).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Correct = Callable[[str], float]
Same = Callable[[str, str], bool]


@dataclass(frozen=True)
class Outcome:
    """Result of aggregating one episode.

    Attributes:
        team_answer: the team's answer (for a tie, the first tied group's answer); ``None`` if nobody answered.
        reward: team reward in [0, 1].
        tie: whether the plurality was tied.
        votes: size of each answer group, in first-seen order (vote topologies; empty otherwise).
    """

    team_answer: str | None
    reward: float
    tie: bool = False
    votes: tuple[int, ...] = ()


Aggregator = Callable[[Mapping[str, "str | None"], Correct, Same], Outcome]


def group_answers(answers: Sequence[str | None], same: Same) -> list[list[int]]:
    """Indices of ``answers`` grouped by equivalence (first-seen order); ``None`` answers join no group.

    >>> group_answers(["1/2", "0.5", None, "3"], lambda a, b: {a, b} <= {"1/2", "0.5"} or a == b)
    [[0, 1], [3]]
    """
    groups: list[list[int]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for g in groups:
            if same(answers[g[0]], a):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


#: Plurality tie rules.
TIE_RULES = ("expected", "strict")


def plurality(tie_rule: str = "expected") -> Aggregator:
    """Plurality vote over equivalence groups; unparseable answers cast no vote.

    Ties: ``expected`` - the reward is the mean correctness of the tied answers (the expectation under a uniform
    random pick among them: deterministic and unbiased); ``strict`` - a tie scores 0.
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule={tie_rule!r}: use one of {TIE_RULES}")

    def aggregate(answers: Mapping[str, str | None], correct: Correct, same: Same) -> Outcome:
        values = list(answers.values())
        groups = group_answers(values, same)
        if not groups:
            return Outcome(None, 0.0, False, ())
        top = max(len(g) for g in groups)
        tied = [g for g in groups if len(g) == top]
        votes = tuple(len(g) for g in groups)
        first = values[tied[0][0]]
        if len(tied) == 1:
            return Outcome(first, correct(first), False, votes)
        if tie_rule == "strict":
            return Outcome(first, 0.0, True, votes)
        return Outcome(first, sum(correct(values[g[0]]) for g in tied) / len(tied), True, votes)

    aggregate.__name__ = f"plurality_{tie_rule}"
    return aggregate


def answer_of(agent: str) -> Aggregator:
    """The team answer is ``agent``'s answer (a sequential pipeline's last speaker); 0 if that agent is absent."""

    def aggregate(answers: Mapping[str, str | None], correct: Correct, same: Same) -> Outcome:
        a = answers.get(agent)
        return Outcome(a, correct(a) if a is not None else 0.0)

    aggregate.__name__ = f"answer_of_{agent}"
    return aggregate
