"""PettingZoo environments over a :class:`~ccpo_envs.topology.Topology`: text in, text out.

* :class:`TeamAECEnv` - one agent acts per step (native API of sequential topologies, e.g. the dyad).
* :class:`TeamParallelEnv` - all agents of a stage act in one step (native API of the vote).
Each is available in the other API through PettingZoo's own conversions
(``turn_based_aec_to_parallel`` and ``parallel_to_aec``).

**Observation representation (chosen on purpose).** Every observation is a ``Dict`` with

* ``"observation"``: ``int64[3] = [active, counterfactual, turn]`` - 1 if this agent acts now, 1 if the pending
  turn is a counterfactual re-run ("agent k removed"), and that turn's index in the episode;
* ``"text"``: the prompt text (question plus the messages this agent sees), a ``spaces.Text`` over the whole Basic
  Multilingual Plane plus tab/newline/CR, so real prompts fit; other characters become U+FFFD.

Why not a plain ``Text`` space: since PettingZoo 1.25 the AEC ``api_test`` compares ``obs.dtype`` with the space's
dtype, and ``str`` has no ``dtype``. It checks only the ``"observation"`` key of a Dict, so a numeric
``"observation"`` beside the text passes PettingZoo's own tests unpatched - and the turn flags are what an agent
in the turn-based parallel form needs to know anyway.

**Actions** are any ``str`` (the agent's message); empty, huge or random-unicode strings are accepted and simply
score 0 if wrong. A non-``str`` action raises ``TypeError`` and changes nothing. The action space is a
``Text`` space used for sampling only.

**Rewards.** Every agent receives the team reward ``R_joint`` when the episode ends (the shared reward PettingZoo
users expect); per-agent credit is the algorithms' business, from the counterfactual outcomes in ``infos``.

**Infos at the end of an episode** (the same dict for every agent: ``EpisodeOutcome.to_info()``, the typed record of
:mod:`ccpo_envs.outcome` that drivers read back with ``EpisodeOutcome.from_info``):

==========================  ==========================================================================
key                         meaning
==========================  ==========================================================================
``task_id``                 ``source/split/seed/index`` of the task
``question``, ``gold``      the task
``team_answer``             the team's answer (dyad: the reasoner's; vote: the plurality)
``reward_joint``            ``R_joint`` in [0, 1]
``reward_removed``          ``{k: R_¬k}`` for every removable agent (dyad: ``{"thinker_0": R_solo}``)
``team_answer_removed``     ``{k: team answer without k}``
``answers``                 ``{agent: extracted answer or None}`` in the joint episode (from its last turn)
``correct``                 ``{agent: bool}``: that agent's own answer is correct
``answers_removed``         ``{k: {agent: answer}}`` in the world without ``k``
``tie``, ``votes``          vote only: tied plurality, group sizes
``messages``                ``{agent: text}`` of the joint episode (an agent's last message)
``messages_by_stage``       ``{agent: [text of each of its joint turns]}`` (several for a debater)
``score_by_stage``          ``{agent: [verifier score of each of its joint turns' answers]}`` (per-turn
                            credit rules: MARTI's margin shaping, AT-GRPO)
``messages_removed``        ``{k: {agent: last text}}`` of the counterfactual re-runs
``truncation``              the env's truncation rule (``episode``, ``turn`` or ``off``)
``truncated``               ``{agent: bool}``: one of its joint messages was cut at the generation limit
``truncated_removed``       ``{k: {agent: bool}}`` for the counterfactual re-runs
``skipped``                 agents whose joint turn was not played (their world had ended)
``reward_coalitions``       independent topologies (the vote) of at most 10 agents: ``v(S)`` of every
                            coalition, by bitmask over ``possible_agents`` (``v(∅) = 0``), from the
                            recorded answers (exact Shapley values need no extra generation)
==========================  ==========================================================================

**Truncation** (``truncation=`` at construction; SPEC "Truncation"). The rollout tells the env that a message was
cut at the generation limit by passing it as :class:`~ccpo_envs.episode.TruncatedMessage` (a ``str``). Under
``episode`` (default; the reference code's one finish flag per episode) a truncated message ends the world it
belongs to: that world's later stages are skipped (a truncated thinker: the joint reasoner never runs) and its
outcome is 0 (``reward_joint = 0``; ``R_¬k = 0`` for a counterfactual world with a truncated message). Agents of
the same stage still act. Under ``turn`` and ``off`` every turn runs and scores as usual; the algorithms decide.

During an episode ``infos[agent]`` holds ``task_id``, ``turn`` and ``removed`` (the world of its pending turn).

**reset options** (unknown keys are ignored): ``task`` - a :class:`~ccpo_envs.task.Task` to play;
``index`` - play ``source[index]``. Otherwise a task index is drawn from the env's RNG (seeded by ``reset(seed)``).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.wrappers import BaseWrapper

from ccpo_envs.episode import TRUNCATION_RULES, Episode
from ccpo_envs.sources import TaskSource, task_verifier
from ccpo_envs.task import Task
from ccpo_envs.topology import Topology, turn_plan

#: Characters allowed in observation text: tab, newline, CR and the Basic Multilingual Plane minus surrogates.
CHARSET = "\t\n\r" + "".join(chr(c) for c in range(0x20, 0x10000) if not 0xD800 <= c < 0xE000)
_CHARSET_SET = frozenset(CHARSET)
REPLACEMENT = "\ufffd"


def sanitize(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` with characters outside :data:`CHARSET` replaced by U+FFFD."""
    text = text[:max_chars]
    if all(c in _CHARSET_SET for c in text):
        return text
    return "".join(c if c in _CHARSET_SET else REPLACEMENT for c in text)


@functools.lru_cache(maxsize=16)
def _text_prototype(max_length: int) -> spaces.Text:
    return spaces.Text(max_length=max_length, min_length=0, charset=CHARSET)


def text_space(max_length: int) -> spaces.Text:
    """A ``Text`` space over :data:`CHARSET` with its own RNG. Building the character tables of a 63k-character
    charset takes ~50 ms, so each space is a shallow copy of one prototype (the tables are read-only)."""
    space = copy.copy(_text_prototype(max_length))
    space._np_random = None  # its own RNG, seeded on first use or by space.seed()
    return space


@dataclass(frozen=True)
class PendingTurn:
    """A turn a driver can generate now: its plan index, agent, world (``removed``), observation text and the bare
    task question."""

    index: int
    agent: str
    removed: str | None
    text: str
    question: str


@dataclass(frozen=True)
class PlannedTurn:
    """One turn of an episode's plan: index, agent, world (``removed``: ``None`` for the joint episode), stage, and
    whether it was skipped."""

    index: int
    agent: str
    removed: str | None
    stage: int
    skipped: bool


def check_action(agent: str, action: Any) -> str:
    if not isinstance(action, str):
        raise TypeError(f"{agent}: an action must be a str (the agent's message), got {type(action).__name__}")
    return action


class _TeamBase:
    """What both API classes share: spaces, task choice, observations, final infos."""

    def _setup(self, topology: Topology, source: TaskSource, max_message_chars: int, max_observation_chars: int,
               max_action_chars: int, render_mode: str | None, truncation: str) -> None:
        if render_mode not in (None, "human", "ansi"):
            raise ValueError(f"render_mode={render_mode!r}: use None, 'human' or 'ansi'")
        if truncation not in TRUNCATION_RULES:
            raise ValueError(f"truncation={truncation!r}: use one of {TRUNCATION_RULES}")
        self.truncation = truncation
        if len(source) < 1:
            raise ValueError("the task source is empty")
        self.topology, self.source = topology, source
        self.max_message_chars, self.max_observation_chars = max_message_chars, max_observation_chars
        self.render_mode = render_mode
        self.possible_agents = list(topology.agents)
        n_turns = len(turn_plan(topology))
        self._observation_spaces = {
            a: spaces.Dict({
                "observation": spaces.Box(0, n_turns, shape=(3,), dtype=np.int64),
                "text": text_space(max_observation_chars),
            }) for a in self.possible_agents
        }
        self._action_spaces = {a: text_space(max_action_chars) for a in self.possible_agents}
        self._np_random, _ = seeding.np_random(None)
        self.episode: Episode | None = None

    def observation_space(self, agent: str) -> spaces.Space:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._action_spaces[agent]

    @property
    def task(self) -> Task:
        assert self.episode is not None, "call reset() first"
        return self.episode.task

    def _new_episode(self, seed: int | None, options: dict | None) -> None:
        if seed is not None:
            self._np_random, _ = seeding.np_random(seed)
        options = options or {}
        task = options.get("task")
        if task is None:
            index = options.get("index")
            if index is None:
                index = int(self._np_random.integers(len(self.source)))
            task = self.source[int(index)]
        elif not isinstance(task, Task):
            raise TypeError(f"options['task'] must be a ccpo_envs.Task, got {type(task).__name__}")
        self.episode = Episode(self.topology, task, task_verifier(self.source, task), self.max_message_chars,
                               self.truncation)

    def _obs(self, agent: str, active: bool) -> dict[str, Any]:
        ep = self.episode
        i, turn = ep.turn_for(agent)
        return {
            "observation": np.array([int(active), int(turn.removed is not None), i], dtype=np.int64),
            "text": sanitize(ep.view(turn), self.max_observation_chars),
        }

    def turn_text(self, index: int) -> str:
        """Observation text of turn ``index`` of the current episode (what the acting agent will see then)."""
        return sanitize(self.episode.view(self.episode.turns[index]), self.max_observation_chars)

    # ---------------------------------------------------------------------------- the driver protocol
    # What a batched driver (ccpo's rollout) needs beyond the PettingZoo API: which turns can be generated ahead
    # of the env's own order, who acts now, and the episode's turn plan. Turns are numbered in plan order.

    def pending_turns(self, generated: Container[int] = ()) -> list[PendingTurn]:
        """Turns not in ``generated`` that can be generated now: every message they read exists and their world
        has not ended (a later turn can be ready early: the dyad's solo reasoner reads only the question)."""
        ep = self.episode
        return [PendingTurn(i, ep.turns[i].agent, ep.turns[i].removed, self.turn_text(i), ep.task.question)
                for i in range(ep.cursor, len(ep.turns))
                if i not in generated and ep.ready(i) and not ep.world_ended(ep.turns[i].removed, ep.turns[i].stage)]

    def acting_turns(self) -> dict[str, int]:
        """``{agent: turn index}`` of the turns that act in the current step (one stage)."""
        ep = self.episode
        return {t.agent: ep.cursor + j for j, t in enumerate(ep.current_stage())}

    def turn_plan(self) -> list[PlannedTurn]:
        """Every turn of the current episode in plan order, with whether the env skipped it (its world had
        ended under the ``episode`` truncation rule)."""
        ep = self.episode
        return [PlannedTurn(i, t.agent, t.removed, t.stage, i in ep.skipped) for i, t in enumerate(ep.turns)]

    def stage_texts(self) -> list[str]:
        """The joint transcript before each topology stage (a centralised critic's input): the distinct observation
        texts of that stage's joint turns, one per line (one text where the stage's agents all see the same)."""
        ep = self.episode
        return ["\n".join(dict.fromkeys(self.turn_text(i) for i, t in enumerate(ep.turns)
                                         if t.removed is None and t.stage == s))
                for s in range(len(ep.topo.stages))]

    def _running_info(self, agent: str) -> dict[str, Any]:
        i, turn = self.episode.turn_for(agent)
        return {"task_id": self.episode.task.task_id, "turn": i, "removed": turn.removed}

    def render(self) -> str | None:
        if self.render_mode is None or self.episode is None:
            return None
        ep = self.episode
        lines = [f"[{ep.task.task_id}] {ep.task.question}"]
        multi = len(ep.topo.slots) > len(ep.topo.agents)  # someone speaks twice: say which stage
        for (removed, agent, slot), msg in ep.messages.items():
            tag = (f" (stage {slot})" if multi else "") + (f" (without {removed})" if removed else "")
            lines.append(f"--- {agent}{tag}:\n{msg}")
        text = "\n".join(lines)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass


class TeamAECEnv(_TeamBase, AECEnv):
    """A team of text agents, one turn per ``step`` (see the module docstring for spaces, rewards and infos).

    Args:
        topology: who sees whom, the aggregator and the removal rule.
        source: the task source to draw tasks from.
        max_message_chars: an agent's message is cut to this length where others read it.
        max_observation_chars: observation text is cut to this length.
        max_action_chars: longest string the action space samples (longer actions are still accepted).
        render_mode: ``None``, ``"human"`` (print) or ``"ansi"`` (return the transcript).
        truncation: ``episode`` (default), ``turn`` or ``off`` (see the module docstring).
    """

    metadata = {"name": "team_aec", "render_modes": ["human", "ansi"], "is_parallelizable": False}

    def __init__(self, topology: Topology, source: TaskSource, max_message_chars: int = 8192,
                 max_observation_chars: int = 32768, max_action_chars: int = 1024, render_mode: str | None = None,
                 truncation: str = "episode"):
        super().__init__()
        self._setup(topology, source, max_message_chars, max_observation_chars, max_action_chars, render_mode,
                    truncation)
        self.metadata = {**self.metadata, "name": f"{topology.name}_aec"}

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self._new_episode(seed, options)
        self.agents = self.possible_agents[:]
        self.rewards = {a: 0.0 for a in self.agents}
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: self._running_info(a) for a in self.agents}
        self.agent_selection = self.episode.current.agent

    def observe(self, agent: str) -> dict[str, Any]:
        ep = self.episode
        return self._obs(agent, active=not ep.done and ep.current.agent == agent)

    def step(self, action: str | None) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        text = check_action(agent, action)  # validate before touching any state
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        ep = self.episode
        ep.record(text)
        if ep.done:
            info = ep.outcome().to_info()
            for a in self.agents:
                self.rewards[a] = float(info["reward_joint"])
                self.terminations[a] = True
                self.infos[a] = dict(info)
            self.agent_selection = self.agents[0]
        else:
            for a in self.agents:
                self.infos[a] = self._running_info(a)
            self.agent_selection = ep.current.agent
        self._accumulate_rewards()


class TeamParallelEnv(_TeamBase, ParallelEnv):
    """A team of text agents; each ``step`` plays one stage (every voter at once, or one turn of a pipeline).

    Agents outside the current stage may send anything (their ``observation[0]`` is 0); their action is ignored.
    Arguments as :class:`TeamAECEnv`.
    """

    metadata = {"name": "team_parallel", "render_modes": ["human", "ansi"], "is_parallelizable": True}

    def __init__(self, topology: Topology, source: TaskSource, max_message_chars: int = 8192,
                 max_observation_chars: int = 32768, max_action_chars: int = 1024, render_mode: str | None = None,
                 truncation: str = "episode"):
        self._setup(topology, source, max_message_chars, max_observation_chars, max_action_chars, render_mode,
                    truncation)
        self.metadata = {**self.metadata, "name": f"{topology.name}_parallel"}
        self.agents: list[str] = []

    def _all_obs(self) -> dict[str, dict[str, Any]]:
        acting = {t.agent for t in self.episode.current_stage()}
        return {a: self._obs(a, a in acting) for a in self.agents}

    def reset(self, seed: int | None = None, options: dict | None = None):
        self._new_episode(seed, options)
        self.agents = self.possible_agents[:]
        return self._all_obs(), {a: self._running_info(a) for a in self.agents}

    def step(self, actions: dict[str, str]):
        ep = self.episode
        stage = ep.current_stage()
        missing = [t.agent for t in stage if t.agent not in actions]
        if missing:
            raise KeyError(f"step() needs actions for the acting agents {missing}")
        texts = [check_action(t.agent, actions[t.agent]) for t in stage]  # validate all before recording any
        for text in texts:
            ep.record(text)
        agents = self.agents
        if ep.done:
            info = ep.outcome().to_info()
            obs = {a: self._obs(a, False) for a in agents}
            rewards = {a: float(info["reward_joint"]) for a in agents}
            infos = {a: dict(info) for a in agents}
            self.agents = []
            return obs, rewards, {a: True for a in agents}, {a: False for a in agents}, infos
        return (self._all_obs(), {a: 0.0 for a in agents}, {a: False for a in agents},
                {a: False for a in agents}, {a: self._running_info(a) for a in agents})




class TextActionWrapper(BaseWrapper):
    """Rejects a non-``str`` action of a live agent at once with ``TypeError``, before any state changes.

    PettingZoo's ``parallel_to_aec`` buffers actions until a cycle completes, so without this the error of a bad
    action would surface only at the cycle's last agent, after the turn had moved on.
    """

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if not (self.terminations.get(agent) or self.truncations.get(agent)):
            check_action(agent, action)
        super().step(action)
