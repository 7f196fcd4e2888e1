"""Topologies: who sees whose message, how answers aggregate, and what "agent k removed" means.

A :class:`Topology` is data. From it, :func:`turn_plan` derives every turn of an episode: the joint turns, then
one counterfactual turn for each agent that (transitively) saw a removed agent's message and must answer again
without it. Agents that never see each other (voting) need no counterfactual turns: ``R_¬k`` is the aggregate of
the recorded answers without agent k's.

An agent may speak in several stages (a debate's rounds): each of its turns writes one *slot* ``(agent, stage)``,
and an agent at stage ``s`` reads, of every agent it ``sees``, that agent's latest message from a stage before ``s``.
Removing agent ``k`` re-runs exactly the slots that read ``k`` (directly or through a re-run slot); ``k``'s own turns
are not played in its absence, and slots that never read ``k`` are reused from the joint episode.

The same engine runs the dyad (``thinker_0 -> reasoner_0``), voting (``voter_0..voter_{N-1}``), the multi-round debate
and any topology you define, e.g. a three-agent chain (see ``tests/test_topology_plugin.py``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ccpo_envs.aggregate import Aggregator, answer_of, plurality
from ccpo_envs.prompts import DEBATER_PROMPT


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
        stages: agents grouped into stages; agents of one stage act simultaneously, stages run in order. An agent
            may act in several stages (at most once per stage): one policy, all of its turns trained with its credit.
        sees: ``agent -> agents whose messages it reads`` (at each of its turns, each seen agent's latest message
            from an earlier stage); each seen agent must speak before the reader's last stage.
        aggregator: answers -> team outcome (see :mod:`ccpo_envs.aggregate`).
        removable: agents for which a counterfactual "agent removed" outcome is computed.
        labels: heading under which an agent's message is shown to others (default: the agent id).
        render: ``(question, visible messages, labels) -> observation text``.
        prompts: system prompt per agent id or role kind (``debater`` for ``debater_0``); an agent with none gets
            the answering prompt (box the final answer). See :func:`ccpo_envs.prompts.team_role_prompts`.
        truth: ``(task, answers, reward_joint) -> Contribution``: each agent's true contribution where the task
            defines its removed worlds analytically (:mod:`ccpo_envs.truth`). An independent team needs none: its
            truth is exact by enumeration of the coalitions.
    """

    name: str
    stages: tuple[tuple[str, ...], ...]
    sees: Mapping[str, tuple[str, ...]]
    aggregator: Aggregator
    removable: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    render: Callable[[str, Mapping[str, str], Mapping[str, str]], str] = default_render
    prompts: Mapping[str, str | None] = field(default_factory=dict)
    truth: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if not self.stages or any(not st or len(set(st)) != len(st) for st in self.stages):
            raise ValueError(f"{self.name}: every stage must list at least one agent, each at most once per stage; "
                             f"got {self.stages}")
        first = {a: i for i, st in reversed(list(enumerate(self.stages))) for a in st}
        last = {a: i for i, st in enumerate(self.stages) for a in st}
        for a, seen in self.sees.items():
            if a not in first:
                raise ValueError(f"{self.name}: sees names unknown agent {a!r}")
            for b in seen:
                if b not in first or first[b] >= last[a]:
                    raise ValueError(f"{self.name}: {a!r} can only see agents of earlier stages, not {b!r}")
        bad = [k for k in self.removable if k not in first]
        if bad:
            raise ValueError(f"{self.name}: removable names unknown agents {bad}")

    # the layout is read for every turn of every episode: computed once per topology (cached_property writes the
    # instance's __dict__, which a frozen dataclass allows; the fields it derives from never change)
    @functools.cached_property
    def agents(self) -> tuple[str, ...]:
        """Each agent once, in order of first appearance."""
        return tuple(dict.fromkeys(a for st in self.stages for a in st))

    @functools.cached_property
    def slots(self) -> tuple[tuple[str, int], ...]:
        """Every ``(agent, stage)`` that writes a message, in speaking order."""
        return tuple((a, s) for s, st in enumerate(self.stages) for a in st)

    @functools.cached_property
    def _stages(self) -> dict[str, tuple[int, ...]]:
        return {a: tuple(s for s, st in enumerate(self.stages) if a in st) for a in self.agents}

    def stages_of(self, agent: str) -> tuple[int, ...]:
        """The stages in which ``agent`` speaks."""
        return self._stages.get(agent, ())

    def read_slot(self, agent: str, before: int) -> int | None:
        """The stage of ``agent``'s latest message before stage ``before`` (what a reader at ``before`` sees)."""
        return next((s for s in reversed(self.stages_of(agent)) if s < before), None)

    @property
    def independent(self) -> bool:
        """No agent reads another: any coalition's outcome follows from the joint episode's answers alone (the
        vote), so exact Shapley values need no extra generation."""
        return not any(self.sees.values())


@dataclass(frozen=True)
class Turn:
    """One generation in an episode: ``agent`` speaks in the world where ``removed`` is absent (``None``: joint).

    ``stage`` orders the episode's turns (turns of one stage act together); ``slot`` is the topology stage whose
    message this turn writes (equal to ``stage`` for joint turns; a counterfactual re-run of that message otherwise).
    """

    agent: str
    removed: str | None
    stage: int
    slot: int


def downstream_slots(topo: Topology, k: str) -> tuple[tuple[str, int], ...]:
    """Slots ``(agent, stage)`` of other agents whose view depends on ``k``'s messages, directly or through other
    such slots, in speaking order: what the world without ``k`` must re-run."""
    hit: list[tuple[str, int]] = []
    for a, s in topo.slots:
        if a == k:
            continue
        for b in topo.sees.get(a, ()):
            r = topo.read_slot(b, s)
            if r is not None and (b == k or (b, r) in hit):
                hit.append((a, s))
                break
    return tuple(hit)


def downstream(topo: Topology, k: str) -> tuple[str, ...]:
    """Agents with at least one turn that depends on ``k``'s messages, in order of first appearance."""
    return tuple(dict.fromkeys(a for a, _ in downstream_slots(topo, k)))


def turn_plan(topo: Topology) -> tuple[Turn, ...]:
    """All turns of one episode: joint turns stage by stage, then each removable agent's counterfactual re-runs
    (one re-run stage per topology stage that has re-run slots)."""
    turns = [Turn(a, None, s, s) for a, s in topo.slots]
    n = len(topo.stages)
    for k in topo.removable:
        slots = downstream_slots(topo, k)
        for s in sorted({s for _, s in slots}):
            turns += [Turn(a, k, n, s) for a, t in slots if t == s]
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


def debate(n: int = 3, rounds: int = 2, tie_rule: str = "expected") -> Topology:
    """SPEC's multi-round debate: ``debater_0..debater_{n-1}`` answer in round 1; in each later round every debater
    reads the other debaters' previous-round answers and answers again; the team answer is the plurality of the
    final round (the vote's tie rules). Removing debater ``k`` re-runs the rounds after the first without ``k``
    (round-1 answers are reused: they read no one)."""
    if n < 1 or rounds < 1:
        raise ValueError(f"debate needs n >= 1 debaters and rounds >= 1, got n={n}, rounds={rounds}")
    debaters = tuple(f"debater_{i}" for i in range(n))
    sees = {d: tuple(o for o in debaters if o != d) for d in debaters} if rounds > 1 and n > 1 else {}
    return Topology(name="debate", stages=(debaters,) * rounds, sees=sees, aggregator=plurality(tie_rule),
                    removable=debaters, labels={d: f"Answer of {d}" for d in debaters},
                    prompts={"debater": DEBATER_PROMPT})
