"""The credit gym's games: team tasks whose true contributions are known by construction.

Each game is a :class:`~ccpo_envs.topology.Topology` (registered as a PettingZoo env in :mod:`ccpo_envs.registry`)
and a task generator. Every agent sees a short private view (``Task.metadata["views"]``) and answers with one
symbol; a removed agent's part of the answer is a uniform guess (:mod:`ccpo_envs.gym.aggregators`), so each
episode's true contribution of every agent is exact (:mod:`ccpo_envs.truth`): by enumeration of the coalitions for
the independent games, analytic for the signalling game.

==================  =========================  ===============================================================
env                 agents                     what is known
==================  =========================  ===============================================================
``splitkey_v0``     ``holder_0, holder_1``     each holds one half of a two-symbol key; without either the
                                               team guesses that half (chance ``1/k``)
``redundant_v0``    ``holder_0, holder_1``     both hold the same symbol; either alone suffices (leave-one-out
                                               0 for each while both answer right, Shapley 1/2)
``freerider_v0``    ``worker_0, rider_0``      the team answer is the worker's; the rider's message is read by
                                               no one: its true contribution is 0 in every episode
``signal_v0``       ``sender_0 -> receiver_0`` a Lewis game: the sender sees the target among ``k``, the
                                               receiver picks from the options; without the message, chance
``noisyvote_v0``    ``voter_0..voter_{n-1}``   voters see a clue that is right with their own reliability
                                               (may answer ``pass``); plurality; who is pivotal is known
==================  =========================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ccpo_envs.gym.aggregators import pick_of, plurality_or_guess, slots
from ccpo_envs.gym.symbols import SymbolVerifier, alphabet
from ccpo_envs.task import Task
from ccpo_envs.topology import Topology
from ccpo_envs.truth import Contribution, from_coalitions

#: Splits draw from disjoint seed streams.
SPLIT_IDS = {"train": 0, "eval": 1, "test": 2}


def gym_render(question: str, visible: Mapping[str, str], labels: Mapping[str, str]) -> str:
    """A gym observation: the agent's view, then ``; <label> : <message>`` for each message it reads (one line)."""
    parts = [question] + [f"{labels.get(a, a)} : {' '.join(m.split()[:8])}" for a, m in visible.items()]
    return " ; ".join(parts)


def _no_prompts(agents: Sequence[str]) -> dict[str, str | None]:
    """No system message for any role (the view says all a tiny model needs)."""
    return {a.rpartition("_")[0]: None for a in agents}


@dataclass(frozen=True)
class Draw:
    """One task's content: ``question`` (public, holds no secret), the team ``answer``, each agent's ``views`` and
    ``gold_of`` (what its own answer should be)."""

    question: str
    answer: str
    views: dict[str, str]
    gold_of: dict[str, str]


def _two_holders(name: str, parts: list[list[str]], symbols: int) -> Topology:
    agents = ("holder_0", "holder_1")
    return Topology(name=name, stages=(agents,), sees={}, aggregator=slots(parts, alphabet(symbols)),
                    removable=agents, render=gym_render, prompts=_no_prompts(agents))


def splitkey(symbols: int = 5) -> Topology:
    """Two holders, one half of the key each; the key is right only with both halves (``symbols``: ``k``)."""
    return _two_holders("splitkey", [["holder_0"], ["holder_1"]], symbols)


def splitkey_task(rng: np.random.Generator, symbols: int = 5) -> Draw:
    a, b = rng.choice(list(alphabet(symbols)), size=2)
    return Draw("split key", f"{a} {b}", {"holder_0": f"part 0 : {a}", "holder_1": f"part 1 : {b}"},
                {"holder_0": a, "holder_1": b})


def redundant(symbols: int = 5) -> Topology:
    """Two holders of the same symbol; the team is right when either present holder says it."""
    return _two_holders("redundant", [["holder_0", "holder_1"]], symbols)


def redundant_task(rng: np.random.Generator, symbols: int = 5) -> Draw:
    x = str(rng.choice(list(alphabet(symbols))))
    return Draw("redundant fact", x, {"holder_0": f"fact : {x}", "holder_1": f"fact : {x}"},
                {"holder_0": x, "holder_1": x})


def freerider(symbols: int = 5) -> Topology:
    """A worker whose answer is the team's, beside a rider who answers its own fact and counts for nothing."""
    agents = ("worker_0", "rider_0")
    return Topology(name="freerider", stages=(agents,), sees={}, aggregator=slots([["worker_0"]], alphabet(symbols)),
                    removable=agents, render=gym_render, prompts=_no_prompts(agents))


def freerider_task(rng: np.random.Generator, symbols: int = 5) -> Draw:
    x, y = rng.choice(list(alphabet(symbols)), size=2)
    return Draw("free rider", str(x), {"worker_0": f"fact : {x}", "rider_0": f"fact : {y}"},
                {"worker_0": str(x), "rider_0": str(y)})


def signal_truth(symbols: int) -> Any:
    """The signalling game's analytic truth: without the sender the receiver picks blind, and without the receiver
    the team guesses; either way chance ``1/k`` (the target is uniform among the shuffled options, so any blind
    pick is right with probability ``1/k``). ``v(∅) = v({sender}) = v({receiver}) = 1/k``, ``v(N) = R_joint``."""
    chance = 1.0 / symbols

    def truth(task: Task, answers: Mapping[str, str | None], reward_joint: float) -> Contribution:
        return from_coalitions(("sender_0", "receiver_0"), [chance, chance, chance, reward_joint], "analytic")

    return truth


def signal(symbols: int = 5) -> Topology:
    """A Lewis signalling game: ``sender_0`` sees the target, ``receiver_0`` reads its message and picks one of the
    ``k`` options. Removing the sender re-runs the receiver without the message (as the dyad's solo reasoner)."""
    return Topology(name="signal", stages=(("sender_0",), ("receiver_0",)), sees={"receiver_0": ("sender_0",)},
                    aggregator=pick_of("receiver_0", alphabet(symbols)), removable=("sender_0",),
                    labels={"sender_0": "message"}, render=gym_render,
                    prompts=_no_prompts(("sender_0", "receiver_0")), truth=signal_truth(symbols))


def signal_task(rng: np.random.Generator, symbols: int = 5) -> Draw:
    options = [str(s) for s in rng.permutation(list(alphabet(symbols)))]
    t = options[int(rng.integers(symbols))]
    return Draw("signalling game", t, {"sender_0": f"target : {t}", "receiver_0": "options : " + " ".join(options)},
                {"sender_0": t, "receiver_0": t})


#: Default reliabilities of the noisy vote's voters (probability that a voter's clue is the answer).
RELIABILITY = (0.9, 0.6, 0.3)


def _reliability(n: int, reliability: Sequence[float] | None) -> tuple[float, ...]:
    r = tuple(float(x) for x in (reliability if reliability is not None else
                                 (RELIABILITY if n == 3 else np.linspace(0.9, 0.3, n))))
    if len(r) != n or not all(0.0 <= x <= 1.0 for x in r):
        raise ValueError(f"reliability={list(r)}: give n={n} probabilities in [0, 1], one per voter")
    return r


def noisyvote(n: int = 3, symbols: int = 5, reliability: Sequence[float] | None = None, tie_rule: str = "expected"
              ) -> Topology:
    """``n`` voters, each with a clue that is the answer with its own reliability; plurality of the answers
    (``pass`` abstains); no vote cast: the team guesses."""
    if n < 1:
        raise ValueError(f"noisyvote needs n >= 1 voters, got {n}")
    _reliability(n, reliability)
    voters = tuple(f"voter_{j}" for j in range(n))
    return Topology(name="noisyvote", stages=(voters,), sees={},
                    aggregator=plurality_or_guess(alphabet(symbols), tie_rule), removable=voters, render=gym_render,
                    prompts=_no_prompts(voters))


def noisyvote_task(rng: np.random.Generator, n: int = 3, symbols: int = 5, reliability: Sequence[float] | None = None,
                   tie_rule: str = "expected") -> Draw:
    syms = list(alphabet(symbols))
    x = str(rng.choice(syms))
    others = [s for s in syms if s != x]
    views = {}
    for j, r in enumerate(_reliability(n, reliability)):
        clue = x if rng.random() < r else str(rng.choice(others))
        views[f"voter_{j}"] = f"clue : {clue}"
    return Draw("noisy vote", x, views, {a: x for a in views})


class GymSource:
    """A game's tasks: ``source[i]`` is a pure function of ``(game, options, split, seed, i)``.

    Args:
        game: a key of :data:`GAMES`.
        split: ``train``, ``eval`` or ``test`` (disjoint seed streams).
        seed: the task seed.
        size: how many tasks.
        **options: the game's options (``symbols``, and ``n`` / ``reliability`` for the noisy vote).
    """

    def __init__(self, game: str, split: str = "train", seed: int = 0, size: int = 1000, **options: Any):
        if game not in GAMES:
            raise ValueError(f"unknown gym game {game!r}; choose from {sorted(GAMES)}")
        if split not in SPLIT_IDS:
            raise ValueError(f"split={split!r}: use one of {sorted(SPLIT_IDS)}")
        if size < 1:
            raise ValueError(f"size={size}: a gym source needs at least one task")
        self.game, self.options = game, dict(options)
        GAMES[game][0](**options)  # bad options fail here, naming the fix
        self.name, self.split, self.seed, self._size = f"gym:{game}", split, seed, size
        self.verifier = SymbolVerifier(alphabet(int(options.get("symbols", 5))))
        self._cache: dict[int, Task] = {}  # a task is drawn once (a trainer reads each many times)

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> Task:
        if not 0 <= index < self._size:
            raise IndexError(f"index {index} out of range for {self.name} of size {self._size}")
        task = self._cache.get(index)
        if task is None:
            d = GAMES[self.game][1](np.random.default_rng([self.seed, SPLIT_IDS[self.split], index]), **self.options)
            task = self._cache[index] = Task(d.question, d.answer, {
                "source": self.name, "split": self.split, "seed": self.seed, "index": index, "views": d.views,
                "gold_of": d.gold_of})
        return task


#: ``game -> (topology builder, task generator)``; both take the game's options.
GAMES = {
    "splitkey": (splitkey, splitkey_task),
    "redundant": (redundant, redundant_task),
    "freerider": (freerider, freerider_task),
    "signal": (signal, signal_task),
    "noisyvote": (noisyvote, noisyvote_task),
}
