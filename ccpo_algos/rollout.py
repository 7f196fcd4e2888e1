"""Rollout: the one place where the env's text meets the policy's tokens.

:func:`collect` plays ``G`` joint episodes per task on PettingZoo AEC envs in lockstep, generating every turn that
is *ready* (all messages it reads exist) in one batch. A counterfactual turn that reads only the question is
generated in the same batch as the first stage's turns; a counterfactual that the env scores from recorded answers
needs no generation at all.
It records, per episode and agent, the joint turn's prompt/completion tokens, behaviour log-probs and finish flag,
plus the env's final infos (team and counterfactual rewards).

A completion cut at ``max_tokens`` is handed to the env as a :class:`~ccpo_envs.TruncatedMessage`, so the env's
``truncation`` rule applies (under ``episode`` a truncated turn ends the joint episode: the later agents' joint
turns are skipped, recorded here as empty ``skipped`` completions that train nothing).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ccpo_agents.policy import Completion, Policy, Request, SamplingConfig
from ccpo_algos.credit import CreditBatch
from ccpo_envs.episode import TruncatedMessage
from ccpo_envs.outcome import EpisodeOutcome
from ccpo_envs.task import Task
from ccpo_envs.topology import Topology, downstream


def skipped_completion(role: str) -> Completion:
    """The placeholder of a turn the env skipped (its world had ended): no tokens, not finished."""
    return Completion(role, "", [], [], [], "skipped")


def action_of(c: Completion) -> str:
    """The env action for a completion: its text, flagged as truncated unless it finished normally."""
    return c.text if c.finished else TruncatedMessage(c.text)


def request_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any parts (run seed, step, episode, turn)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def team_layout(topo: Topology) -> tuple[torch.Tensor, torch.Tensor]:
    """``(stage (A,), gates (A, A))``: each agent's first stage, and ``gates[j, k]`` = agent ``j`` is not removable
    and reads removable agent ``k``'s messages, directly or through others (CCPO gates ``j`` on ``k``'s Δ
    statistics; a two-stage team: its answering agent on the first; a chain's last agent: every earlier agent)."""
    agents = list(topo.agents)
    stage = [topo.stages_of(a)[0] for a in agents]
    gates = torch.zeros(len(agents), len(agents), dtype=torch.bool)
    for k in topo.removable:
        for a in downstream(topo, k):
            if a not in topo.removable:
                gates[agents.index(a), agents.index(k)] = True
    return torch.tensor(stage), gates


@dataclass
class RolloutBatch:
    """``E = B·G`` finished episodes.

    Attributes:
        agents: agent ids in speaking order (``A``).
        tasks: the task of each episode.
        group_ids: ``(E,)`` prompt index of each episode (GRPO groups).
        turns: per episode, ``{agent: Completion}`` of its last joint turn (the one that gives its answer).
        infos: per episode, the env's final infos.
        stage_texts: per episode, the joint transcript before each stage (critic input).
        cf_turns: per episode, the counterfactual re-run completions (not trained).
        earlier: per episode, ``{agent: [Completion]}`` of its joint turns before the last (a debater's earlier
            rounds; empty for an agent that speaks once). Every joint turn is trained with the agent's credit.
    """

    agents: list[str]
    tasks: list[Task]
    group_ids: torch.Tensor
    turns: list[dict[str, Completion]]
    infos: list[dict[str, Any]]
    stage_texts: list[list[str]]
    cf_turns: list[list[Completion]] = field(default_factory=list)
    earlier: list[dict[str, list[Completion]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.turns)

    def agent_turns(self, e: int, agent: str) -> list[Completion]:
        """Every joint turn of ``agent`` in episode ``e``, in speaking order."""
        return (self.earlier[e].get(agent, []) if self.earlier else []) + [self.turns[e][agent]]

    def role_turns(self, agent: str) -> tuple[list[Completion], list[int], list[int]]:
        """``(turns, episode, index)``: every joint turn of ``agent`` over the batch, the episode of each and its
        index among the agent's turns in that episode (where its advantage is read: ``adv[episode]`` or, for
        per-turn rules, ``adv[episode, index]``)."""
        rows = [(c, e, t) for e in range(len(self)) for t, c in enumerate(self.agent_turns(e, agent))]
        return [c for c, _, _ in rows], [e for _, e, _ in rows], [t for _, _, t in rows]

    def credit_batch(self, gate_source: torch.Tensor, group_offset: int = 0) -> CreditBatch:
        """The credit inputs of this batch; ``group_offset`` makes group ids unique across data-parallel ranks."""
        E, A = len(self), len(self.agents)
        outs = [EpisodeOutcome.from_info(i) for i in self.infos]  # the typed contract; names a missing key
        team = torch.tensor([float(o.reward_joint) for o in outs])  # (E,)
        removed = torch.full((E, A), float("nan"))  # (E, A)
        for e, o in enumerate(outs):
            for k, r in o.reward_removed.items():
                removed[e, self.agents.index(k)] = float(r)
        finished = torch.tensor([[all(c.finished for c in self.agent_turns(e, a)) for a in self.agents]
                                 for e in range(E)])
        coalitions = None
        if outs and all(o.reward_coalitions is not None for o in outs):  # bitmask order = self.agents
            coalitions = torch.tensor([o.reward_coalitions for o in outs], dtype=torch.float32)
        per_turn = None
        if outs:
            T = max(len(s) for o in outs for s in o.score_by_stage.values())
            per_turn = torch.full((E, A, T), float("nan"))  # (E, A, T)
            for e, o in enumerate(outs):
                for j, a in enumerate(self.agents):
                    scores = o.score_by_stage[a]
                    per_turn[e, j, :len(scores)] = torch.tensor(scores, dtype=torch.float32)
        return CreditBatch(team, removed, finished, gate_source, self.group_ids + group_offset, coalitions, per_turn)

    def tokens_generated(self) -> int:
        return sum(len(c.completion_ids) for e in range(len(self)) for a in self.agents
                   for c in self.agent_turns(e, a)) + sum(len(c.completion_ids) for cf in self.cf_turns for c in cf)


@dataclass
class RunRollout:
    """One run's share of a many-runs rollout: its envs (one per episode), this step's tasks and its seed."""

    envs: Sequence[Any]
    tasks: Sequence[Task]
    seed: int | None = None


def collect(envs: Sequence[Any], tasks: Sequence[Task], group_size: int, policy: Policy, sampling: SamplingConfig,
            seed: int | None = None) -> RolloutBatch:
    """Play ``group_size`` episodes of each task on ``envs`` (AEC envs, at least ``len(tasks)·group_size``), through
    the PettingZoo API plus the team envs' driver protocol (:class:`ccpo_envs.TeamAECEnv`'s ``pending_turns``,
    ``acting_turns``, ``turn_plan``, ``stage_texts``).

    Args:
        envs: PettingZoo AEC envs built by ``ccpo_envs.make(..., api="aec")`` (one per episode).
        tasks: the ``B`` tasks of this step.
        group_size: ``G`` samples per task.
        policy: generates the turns (``sampling.n`` is forced to 1: each episode is its own sample).
        sampling: temperature, top_p, max_tokens.
        seed: base of the per-request sampling seeds (``None``: the engine's own RNG).
    """
    return collect_runs([RunRollout(envs, tasks, seed)], group_size, policy, sampling)[0]


def collect_runs(runs: Sequence[RunRollout], group_size: int, policy: Policy, sampling: SamplingConfig
                 ) -> list[RolloutBatch]:
    """:func:`collect` for several runs at once: every turn that is ready in any run's episodes goes into one
    ``policy.generate`` call (each request names its run, :attr:`~ccpo_agents.policy.Request.run`), so a many-runs
    backend serves all runs with one forward pass. A run's requests, seeds and episodes are exactly those of the
    same run collected alone."""
    sampling = SamplingConfig(sampling.temperature, sampling.top_p, sampling.max_tokens, 1)
    plays = [_Play(r.envs, r.tasks, group_size, r.seed) for r in runs]
    while not all(p.finished for p in plays):
        reqs = [(p, e, i, dataclasses.replace(req, run=k)) for k, p in enumerate(plays) for e, i, req in p.requests()]
        if not reqs:
            raise RuntimeError("rollout stalled: no turn is ready; the topology's `sees` is inconsistent")
        outs = policy.generate([r for *_, r in reqs], sampling)
        for (p, e, i, _), out in zip(reqs, outs):
            p.pending[e][i] = out[0]
        for p in plays:
            p.advance_all()
    return [p.batch() for p in plays]


class _Play:
    """One run's episodes in lockstep: the requests that are ready, and stepping each env as far as they allow."""

    def __init__(self, envs: Sequence[Any], tasks: Sequence[Task], group_size: int, seed: int | None):
        E = len(tasks) * group_size
        if len(envs) < E:
            raise ValueError(f"collect needs {E} envs for {len(tasks)} tasks x {group_size}, got {len(envs)}")
        # the driver protocol of ccpo_envs' team envs (pending_turns, acting_turns, turn_plan, stage_texts)
        self.envs, self.tasks, self.group_size, self.seed, self.E = envs, tasks, group_size, seed, E
        self.raw = [envs[e].unwrapped for e in range(E)]
        self.agents = list(self.raw[0].possible_agents)
        for e in range(E):
            envs[e].reset(options={"task": tasks[e // group_size]})
        self.pending: list[dict[int, Completion]] = [{} for _ in range(E)]
        self.finals: list[dict[str, Any] | None] = [None] * E

    @property
    def finished(self) -> bool:
        return all(f is not None for f in self.finals)

    def requests(self) -> list[tuple[int, int, Request]]:
        out = []
        for e in range(self.E):
            if self.finals[e] is not None:
                continue
            for p in self.raw[e].pending_turns(self.pending[e]):
                s = None if self.seed is None else request_seed(self.seed, e, p.index)
                out.append((e, p.index, Request(p.agent, p.text, s, p.removed, p.question)))
        return out

    def advance_all(self) -> None:
        for e in range(self.E):
            self.advance(e)

    def advance(self, e: int) -> None:
        """Step env ``e`` as far as the generated turns allow. The env decides who acts (``agent_selection``): an
        AEC-native env selects the current turn's agent; a Parallel-native env seen through ``parallel_to_aec``
        cycles through every agent, and an agent outside the current stage sends ``""`` (ignored)."""
        env = self.envs[e]
        while self.finals[e] is None:
            if env.agents and all(env.terminations[a] or env.truncations[a] for a in env.agents):
                self.finals[e] = dict(env.infos[env.agents[0]])
                while env.agents:  # PettingZoo: dead agents step None until removed
                    env.step(None)
                return
            acting = self.raw[e].acting_turns()
            agent = env.agent_selection
            if agent not in acting:
                env.step("")
            elif acting[agent] in self.pending[e]:
                env.step(action_of(self.pending[e][acting[agent]]))
            else:
                return  # its turn is not generated yet

    def batch(self) -> RolloutBatch:
        turns, earlier, cf, stage_texts = [], [], [], []
        for e in range(self.E):
            plan = self.raw[e].turn_plan()
            joint = {a: [skipped_completion(a) if t.skipped else self.pending[e][t.index]
                         for t in plan if t.removed is None and t.agent == a] for a in self.agents}
            turns.append({a: c[-1] for a, c in joint.items()})
            earlier.append({a: c[:-1] for a, c in joint.items()})
            cf.append([self.pending[e][t.index] for t in plan if t.removed is not None and not t.skipped])
            stage_texts.append(self.raw[e].stage_texts())
        group_ids = torch.arange(len(self.tasks)).repeat_interleave(self.group_size)
        return RolloutBatch(self.agents, [self.tasks[e // self.group_size] for e in range(self.E)], group_ids, turns,
                            [f for f in self.finals if f is not None], stage_texts, cf, earlier)
