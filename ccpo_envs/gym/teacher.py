"""A scripted teacher for the credit gym: the demonstrations the tiny models are warm-started on.

The *skilled* answer to a gym observation is the word after its last ``" : "`` (the agent's part, fact, clue,
target, or the message it reads); where several words follow (a blind receiver's options) it is a uniform pick among
them. The teacher gives the skilled answer with probability ``accuracy`` and otherwise a uniform *other* symbol, so
a model fitted to its demonstrations answers right about ``accuracy`` of the time and keeps room to improve.
"""

from __future__ import annotations

import numpy as np

#: Teacher accuracy per game, chosen so that the untrained team of fitted models succeeds about half the time
#: (split key: 0.7² ≈ 0.5; redundant, either of two: 1 − 0.7² ≈ 0.5; measured: ``benchmarks/gym_warmstart.py``).
WARM_ACCURACY = {"splitkey": 0.7, "redundant": 0.3, "freerider": 0.5, "signal": 0.7, "noisyvote": 0.7}


def warm_accuracy(env: str) -> float:
    """The teacher accuracy of gym env ``env`` (``splitkey_v0`` -> ``WARM_ACCURACY["splitkey"]``)."""
    game = env.rsplit("_v", 1)[0]
    if game not in WARM_ACCURACY:
        raise ValueError(f"{env!r} is not a credit-gym env; choose from {sorted(g + '_v0' for g in WARM_ACCURACY)}")
    return WARM_ACCURACY[game]


def skilled_answer(text: str, rng: np.random.Generator) -> str:
    """The answer an agent that has learned its job gives to observation ``text``."""
    tail = text.rsplit(" : ", 1)[-1].split()
    if not tail:
        return ""
    return tail[0] if len(tail) == 1 else str(tail[int(rng.integers(len(tail)))])


def teacher_answer(text: str, symbols: str, accuracy: float, rng: np.random.Generator) -> str:
    """The skilled answer with probability ``accuracy``, else a uniform symbol other than it."""
    skilled = skilled_answer(text, rng)
    if rng.random() < accuracy:
        return skilled
    others = [s for s in symbols if s != skilled]
    return str(others[int(rng.integers(len(others)))])
