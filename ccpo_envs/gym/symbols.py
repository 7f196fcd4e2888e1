"""The credit gym's answers: one symbol of a small alphabet, read from the first word of a message.

A message answers with its first word (``"c"``, ``"c because ..."``) or a boxed symbol (``\\boxed{c}``); anything
else (``"pass"``, garbage, an empty message) is no answer. Actions are a few tokens, so no credit rule can win or
lose on a token cap.
"""

from __future__ import annotations

import string

from ccpo_envs.task import Task
from ccpo_envs.verify import extract_boxed

#: The symbols the gym's tasks draw from (``alphabet(k)`` is the first ``k``).
SYMBOLS = string.ascii_lowercase
#: The word an agent says to answer nothing (a voter that abstains).
PASS = "pass"


def alphabet(k: int) -> str:
    """The first ``k`` symbols; ``ValueError`` naming the range for a bad ``k``."""
    if not 2 <= k <= len(SYMBOLS):
        raise ValueError(f"symbols={k}: use 2..{len(SYMBOLS)} (chance is 1/symbols)")
    return SYMBOLS[:k]


#: Written in a team answer for a part nobody present could give: a uniform guess among the ``k`` symbols.
GUESSED = "?"


class SymbolVerifier:
    """Exact match of one symbol, or of a space-separated key of symbols (a team answer) where a part written
    :data:`GUESSED` is a uniform guess: it matches with probability ``1/k``, so the score is the exact expected
    correctness over the guesses.

    Args:
        symbols: the alphabet answers are drawn from.
    """

    def __init__(self, symbols: str):
        self.symbols = symbols

    def extract(self, text: str) -> str | None:
        """The symbol a message answers with, or ``None``."""
        if "\\boxed{" in text[:4096]:
            text = extract_boxed(text[:4096]) or ""
        head = text[:64].split(None, 1)
        word = head[0].strip(".,;:!").lower() if head else ""
        return word if len(word) == 1 and word in self.symbols else None

    def score_answer(self, answer: str, task: Task) -> float:
        if answer == task.answer:
            return 1.0
        got, gold = answer.split(), task.answer.split()
        if len(got) != len(gold) or GUESSED not in got:
            return 0.0
        score = 1.0
        for g, t in zip(got, gold):
            if g == GUESSED:
                score /= len(self.symbols)
            elif g != t:
                return 0.0
        return score

    def equivalent(self, a: str, b: str) -> bool:
        return a == b
