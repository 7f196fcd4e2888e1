"""Topologies: who sees whose message, how answers aggregate, and what "agent k removed" means.

A :class:`Topology` is data. From it, :func:`turn_plan` derives every turn of an episode: the joint turns, then
one counterfactual turn for each agent that (transitively) saw a removed agent's message and must answer again
without it. Agents that never see each other (voting) need no counterfactual turns: ``R_¬k`` is the aggregate of
the recorded answers without agent k's.

The same engine runs the dyad (``thinker_0 -> reasoner_0``), voting (``voter_0..voter_{N-1}``) and any topology
you define, e.g. a three-agent chain (see ``tests/test_topology_plugin.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ccpo_envs.aggregate import Aggregator, answer_of, plurality


def default_render(question: str, visible: Mapping[str, str], labels: Mapping[str, str]) -> str:
    """Observation text: the bare question, or ``Question:\\n{q}`` followed by each visible message under its label.

    For the dyad this is SPEC's ``Question:\\n{question}\\n\\nInstruction:\\n{plan}``.
    """
    if not visible:
        return question
    parts = [f"Question:\n{question}"]
    parts += [f"{labels.get(a, a)}:\n{msg}" for a, msg in visible.items()]
    return "\n\n".join(parts)


def strip_final_boxed(text: str) -> str:
    """Remove a trailing ``\\boxed{...}`` from a message (the released recipe's safety net against a thinker that
    gives the answer away; ``two_model_trainer.py`` l.114-121, same regular expression)."""
    return re.sub(r"\\boxed\{[^{}]*\}\s*$", "", text).rstrip()


def released_render(question: str, visible: Mapping[str, str], labels: Mapping[str, str]) -> str:
    """The released recipe's solver turn: ``Problem:\\n{q}\\n\\nThinker's thought:\\n{t}`` with a trailing boxed
    answer stripped from each message; the bare question when nothing is visible (the solo run)."""
    if not visible:
        return question
    return "\n\n".join([f"Problem:\n{question}"] +
                        [f"{labels.get(a, a)}:\n{strip_final_boxed(msg)}" for a, msg in visible.items()])


TEMPLATES = ("v1", "v2")


@dataclass(frozen=True)
class Topology:
    """A communication structure for a team of text agents.

    Attributes:
        name: short name (``dyad``, ``vote``, ...).
        stages: agents grouped into stages; agents of one stage act simultaneously, stages run in order.
        sees: ``agent -> agents whose messages it reads``; each must be in an earlier stage.
        aggregator: answers -> team outcome (see :mod:`ccpo_envs.aggregate`).
        removable: agents for which a counterfactual "agent removed" outcome is computed.
        labels: heading under which an agent's message is shown to others (default: the agent id).
        render: ``(question, visible messages, labels) -> observation text``.
    """

    name: str
    stages: tuple[tuple[str, ...], ...]
    sees: Mapping[str, tuple[str, ...]]
    aggregator: Aggregator
    removable: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    render: Callable[[str, Mapping[str, str], Mapping[str, str]], str] = default_render

    def __post_init__(self) -> None:
        order = [a for st in self.stages for a in st]
        if len(set(order)) != len(order) or not order:
            raise ValueError(f"{self.name}: stages must list each agent exactly once, got {self.stages}")
        stage_of = {a: i for i, st in enumerate(self.stages) for a in st}
        for a, seen in self.sees.items():
            if a not in stage_of:
                raise ValueError(f"{self.name}: sees names unknown agent {a!r}")
            for b in seen:
                if b not in stage_of or stage_of[b] >= stage_of[a]:
                    raise ValueError(f"{self.name}: {a!r} can only see agents of earlier stages, not {b!r}")
        bad = [k for k in self.removable if k not in stage_of]
        if bad:
            raise ValueError(f"{self.name}: removable names unknown agents {bad}")

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(a for st in self.stages for a in st)

    @property
    def independent(self) -> bool:
        """No agent reads another: any coalition's outcome follows from the joint episode's answers alone (the
        vote), so exact Shapley values need no extra generation."""
        return not any(self.sees.values())


@dataclass(frozen=True)
class Turn:
    """One generation in an episode: ``agent`` speaks in the world where ``removed`` is absent (``None``: joint)."""

    agent: str
    removed: str | None
    stage: int


def downstream(topo: Topology, k: str) -> tuple[str, ...]:
    """Agents whose view depends on ``k``'s message, directly or through others, in speaking order."""
    hit: set[str] = set()
    for a in topo.agents:
        if any(b == k or b in hit for b in topo.sees.get(a, ())):
            hit.add(a)
    return tuple(a for a in topo.agents if a in hit)


def turn_plan(topo: Topology) -> tuple[Turn, ...]:
    """All turns of one episode: joint turns stage by stage, then each removable agent's counterfactual re-runs."""
    stage_of = {a: i for i, st in enumerate(topo.stages) for a in st}
    turns = [Turn(a, None, stage_of[a]) for a in topo.agents]
    n = len(topo.stages)
    for k in topo.removable:
        for j, a in enumerate(downstream(topo, k)):
            turns.append(Turn(a, k, n))
            n += 1
    return tuple(turns)


def dyad(labels: Mapping[str, str] | None = None, template: str = "v1") -> Topology:
    """SPEC's Think -> Reason dyad. Removing the thinker re-runs the reasoner on the bare question (``R_solo``).

    ``template``: ``v1`` (CCPO v1: ``Question:\\n{q}\\n\\nInstruction:\\n{plan}``) or ``v2`` (the released recipe:
    ``Problem:\\n{q}\\n\\nThinker's thought:\\n{thought}``, a trailing boxed answer stripped from the thought).
    """
    if template not in TEMPLATES:
        raise ValueError(f"template={template!r}: use one of {TEMPLATES}")
    v2 = template == "v2"
    return Topology(
        name="dyad",
        stages=(("thinker_0",), ("reasoner_0",)),
        sees={"reasoner_0": ("thinker_0",)},
        aggregator=answer_of("reasoner_0"),
        removable=("thinker_0",),
        labels=dict(labels or {"thinker_0": "Thinker's thought" if v2 else "Instruction"}),
        render=released_render if v2 else default_render,
    )


def vote(n: int = 3, tie_rule: str = "expected") -> Topology:
    """SPEC's N-agent vote: independent answers, plurality; removing voter k drops its vote (no re-generation)."""
    if n < 1:
        raise ValueError(f"vote needs n >= 1 voters, got {n}")
    voters = tuple(f"voter_{i}" for i in range(n))
    return Topology(name="vote", stages=(voters,), sees={}, aggregator=plurality(tie_rule), removable=voters)


def chain(n: int = 3) -> Topology:
    """A sequential pipeline ``agent_0 -> agent_1 -> ... -> agent_{n-1}``; each sees all earlier messages."""
    if n < 2:
        raise ValueError(f"chain needs n >= 2 agents, got {n}")
    agents = [f"agent_{i}" for i in range(n)]
    return Topology(
        name="chain",
        stages=tuple((a,) for a in agents),
        sees={a: tuple(agents[:i]) for i, a in enumerate(agents) if i},
        aggregator=answer_of(agents[-1]),
        removable=tuple(agents[:-1]),
        labels={a: f"Message from {a}" for a in agents},
    )
