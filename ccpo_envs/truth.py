"""Each agent's *true* contribution to an episode's team outcome: the ground truth a credit rule is checked against.

Two values per agent, both from the coalition values ``v(S)`` (the team outcome when only the agents of ``S`` act):

* leave-one-out ``v(N) − v(N ∖ k)``: what difference rewards and CCPO's Δ estimate;
* the Shapley value ``φ_k = Σ_{S ⊆ N∖k} |S|!(n−|S|−1)!/n! · (v(S ∪ k) − v(S))``: sums to ``v(N) − v(∅)``.

``method`` says where ``v`` came from: ``enumeration`` (an independent team: every coalition's outcome follows from
the recorded answers, exactly) or ``analytic`` (the task defines the removed worlds, e.g. "without the message the
receiver is at chance"). Pure Python, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Where a :class:`Contribution`'s coalition values came from.
METHODS = ("enumeration", "analytic")


@dataclass(frozen=True)
class Contribution:
    """One episode's true contribution of every agent.

    Attributes:
        method: one of :data:`METHODS`.
        loo: ``{agent: v(N) − v(N ∖ agent)}``.
        shapley: ``{agent: φ_agent}``.
    """

    method: str
    loo: dict[str, float]
    shapley: dict[str, float]

    def to_info(self) -> dict[str, Any]:
        return {"method": self.method, "loo": dict(self.loo), "shapley": dict(self.shapley)}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Contribution:
        if info.get("method") not in METHODS or not isinstance(info.get("loo"), dict):
            raise ValueError(f"a contribution record needs method in {METHODS} and loo/shapley dicts, got {info!r}")
        return cls(info["method"], {k: float(v) for k, v in info["loo"].items()},
                   {k: float(v) for k, v in info["shapley"].items()})


def from_coalitions(agents: Sequence[str], v: Sequence[float], method: str = "enumeration") -> Contribution:
    """Leave-one-out and Shapley values from ``v`` indexed by bitmask over ``agents`` (bit ``j``: ``agents[j]``).

    >>> c = from_coalitions(["a", "b"], [0.0, 1.0, 1.0, 1.0])   # either alone suffices: redundant
    >>> c.loo, c.shapley
    ({'a': 0.0, 'b': 0.0}, {'a': 0.5, 'b': 0.5})
    """
    n = len(agents)
    if len(v) != 1 << n:
        raise ValueError(f"{n} agents need {1 << n} coalition values, got {len(v)}")
    full = (1 << n) - 1
    loo = {a: float(v[full]) - float(v[full ^ (1 << j)]) for j, a in enumerate(agents)}
    shapley = {}
    for j, a in enumerate(agents):
        phi = 0.0
        for mask in range(1 << n):
            if mask >> j & 1:
                continue
            s = mask.bit_count()
            phi += math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) * (v[mask | 1 << j] - v[mask])
        shapley[a] = phi
    return Contribution(method, loo, shapley)
