"""The gym's aggregators: how present agents' answers make the team answer, and what a *removed* agent leaves.

An agent that is removed leaves its part of the answer to a uniform guess among the task's ``k`` symbols, so every
"agent removed" world has an exact expected outcome (chance, where nobody else holds that part), scored in one call
of the verifier. An agent that is
present but gives no answer (garbage, ``pass``) fills its part with nothing: that part is wrong (malformed output
scores 0). Pure functions; see :mod:`ccpo_envs.aggregate` for the contract.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from ccpo_envs.aggregate import Aggregator, Correct, Outcome, Same, plurality
from ccpo_envs.gym.symbols import GUESSED


def slots(parts: Sequence[Sequence[str]], symbols: str) -> Aggregator:
    """The team answer is one symbol per part, joined by spaces; a part is right when *any* present agent assigned
    to it gives the right symbol; a part with no present agent is written :data:`GUESSED` (a uniform guess among
    ``symbols``, which :class:`~ccpo_envs.gym.symbols.SymbolVerifier` scores ``1/k``: the exact expectation).

    ``parts=[["holder_0"], ["holder_1"]]`` is the split key (both halves needed), ``[["holder_0", "holder_1"]]``
    the redundant pair (either suffices), ``[["worker_0"]]`` with another agent in no part a free rider.
    """
    parts = [tuple(p) for p in parts]

    def aggregate(answers: Mapping[str, str | None], correct: Correct, same: Same) -> Outcome:
        options: list[list[str]] = []  # per part: the candidate symbols ([GUESSED] where nobody present holds it)
        for p in parts:
            present = [a for a in p if a in answers]
            options.append([GUESSED] if not present else
                           list(dict.fromkeys(x for a in present if (x := answers[a]) is not None)))
        team = " ".join(o[0] if o else "-" for o in options)
        if not all(options):  # a present part with no answer is wrong
            return Outcome(team, 0.0)
        best, reward = team, -1.0
        for combo in itertools.product(*options):  # any candidate: the best combination of the parts' candidates
            r = correct(" ".join(combo))
            if r > reward:
                best, reward = " ".join(combo), r
        return Outcome(best, reward)

    aggregate.__name__ = "slots"
    return aggregate


def plurality_or_guess(symbols: str, tie_rule: str = "expected") -> Aggregator:
    """The vote's plurality (``tie_rule`` as :func:`ccpo_envs.aggregate.plurality`); when no vote is cast (everyone
    present abstains, or nobody is present) the team guesses: reward ``1/len(symbols)``."""
    vote = plurality(tie_rule)

    def aggregate(answers: Mapping[str, str | None], correct: Correct, same: Same) -> Outcome:
        if all(x is None for x in answers.values()):
            return Outcome(None, 1.0 / len(symbols))
        return vote(answers, correct, same)

    aggregate.__name__ = f"plurality_or_guess_{tie_rule}"
    return aggregate


def pick_of(agent: str, symbols: str) -> Aggregator:
    """The team answer is ``agent``'s pick (a receiver's); without ``agent`` the team guesses (``1/len(symbols)``);
    an unparseable pick scores 0."""

    def aggregate(answers: Mapping[str, str | None], correct: Correct, same: Same) -> Outcome:
        if agent not in answers:
            return Outcome(None, 1.0 / len(symbols))
        a = answers[agent]
        return Outcome(a, correct(a) if a is not None else 0.0)

    aggregate.__name__ = f"pick_of_{agent}"
    return aggregate
