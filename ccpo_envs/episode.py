"""The episode engine shared by the AEC and Parallel environments: turns, views, counterfactual outcomes.

Pure Python over text; the PettingZoo classes in :mod:`ccpo_envs.env` only adapt it to each API.
"""

from __future__ import annotations

import dataclasses

from ccpo_envs.aggregate import Outcome
from ccpo_envs.outcome import EpisodeOutcome
from ccpo_envs.task import Task
from ccpo_envs.topology import Topology, Turn, downstream, downstream_slots, turn_plan
from ccpo_envs.truth import from_coalitions
from ccpo_envs.verify import Verifier, safe_equivalent, safe_extract, safe_score_answer

#: How a truncated turn (a message cut at the generation limit) counts. ``episode`` (default; the reference code's
#: one finish flag per episode): the world it belongs to ends - its later stages are skipped and its outcome is 0.
#: ``turn``: the episode goes on and scores as usual (algorithms zero only that agent's reward). ``off``: as ``turn``
#: (algorithms keep the reward too; for debugging).
TRUNCATION_RULES = ("episode", "turn", "off")
#: A message's key: (world - ``None`` for the joint episode, else the removed agent -, agent, slot stage).
Key = tuple[str | None, str, int]
#: Coalition outcomes (2^A aggregations per episode) are recorded for independent teams up to this size.
MAX_COALITION_AGENTS = 10


class TruncatedMessage(str):
    """An action string that was cut at the generation limit (finish reason ``length``).

    Pass it instead of a plain ``str`` so the env applies its ``truncation`` rule: ``env.step(TruncatedMessage(t))``.
    """


class Episode:
    """One task played by one team: the joint turns, then the counterfactual re-runs of :func:`turn_plan`.

    Args:
        topo: the topology.
        task: the task.
        verifier: scores answers to ``task``.
        max_message_chars: an agent's message is cut to this many characters where another agent reads it.
        truncation: one of :data:`TRUNCATION_RULES`.
    """

    def __init__(self, topo: Topology, task: Task, verifier: Verifier, max_message_chars: int = 8192,
                 truncation: str = "episode"):
        if truncation not in TRUNCATION_RULES:
            raise ValueError(f"truncation={truncation!r}: use one of {TRUNCATION_RULES}")
        self.topo, self.task, self.verifier = topo, task, verifier
        self.max_message_chars = max_message_chars
        self.truncation = truncation
        self.turns: tuple[Turn, ...] = turn_plan(topo)
        self.cursor = 0
        # messages by key (world, agent, slot): world None is the joint episode, k the world without agent k
        self.messages: dict[Key, str] = {}
        self.truncated: set[Key] = set()  # message keys cut at the generation limit
        self.skipped: set[int] = set()  # turn indices not played: their world had ended (``episode`` rule)
        self._down = {k: set(downstream_slots(topo, k)) for k in topo.removable}
        self._stage = {(t.removed, t.agent, t.slot): t.stage for t in self.turns}
        self._score_cache: dict[str, float] = {}
        self._same_cache: dict[frozenset[str], bool] = {}  # the vote regroups answers once per removed voter

    # ------------------------------------------------------------------------------------------------ turns
    @property
    def done(self) -> bool:
        return self.cursor >= len(self.turns)

    @property
    def current(self) -> Turn | None:
        return None if self.done else self.turns[self.cursor]

    def current_stage(self) -> list[Turn]:
        """Turns that act together now (one for sequential topologies, all voters for a vote)."""
        if self.done:
            return []
        st = self.turns[self.cursor].stage
        return [t for t in self.turns[self.cursor:] if t.stage == st]

    def turn_for(self, agent: str) -> tuple[int, Turn]:
        """The agent's next pending turn, or its last turn if it has none left."""
        last = None
        for i, t in enumerate(self.turns):
            if t.agent != agent:
                continue
            if i >= self.cursor:
                return i, t
            last = (i, t)
        assert last is not None, f"{agent} has no turn"
        return last

    def record(self, text: str) -> None:
        """Record ``text`` as the current turn's message and advance (past turns of worlds that have ended)."""
        t = self.turns[self.cursor]
        key = (t.removed, t.agent, t.slot)
        self.messages[key] = str(text)
        if isinstance(text, TruncatedMessage):
            self.truncated.add(key)
        self.cursor += 1
        while not self.done and self.world_ended(self.turns[self.cursor].removed, self.turns[self.cursor].stage):
            self.skipped.add(self.cursor)
            self.cursor += 1

    def key(self, agent: str, slot: int, removed: str | None) -> Key:
        """The key of ``agent``'s message at ``slot`` in the world without ``removed``: its re-run if that slot
        depends on ``removed``, else the joint episode's."""
        if removed is not None and (agent, slot) in self._down.get(removed, ()):
            return (removed, agent, slot)
        return (None, agent, slot)

    def _world_keys(self, removed: str | None) -> list[Key]:
        """Keys of the messages that make up the world without ``removed`` (``None``: the joint episode)."""
        return [self.key(a, s, removed) for a, s in self.topo.slots if a != removed]

    def world_ended(self, removed: str | None, before_stage: float = float("inf")) -> bool:
        """Under the ``episode`` rule: whether a message of this world from a stage before ``before_stage`` was
        truncated (the world ended there; its later turns are skipped and it scores 0)."""
        if self.truncation != "episode":
            return False
        return any(k in self.truncated and self._stage[k] < before_stage for k in self._world_keys(removed))

    # ------------------------------------------------------------------------------------------------ views
    def _seen_keys(self, turn: Turn) -> dict[str, Key]:
        """``{agent: key}`` of the messages ``turn`` reads: of each agent it sees (but the removed one), the latest
        message from a stage before the turn's slot."""
        out = {}
        for b in self.topo.sees.get(turn.agent, ()):
            r = self.topo.read_slot(b, turn.slot)
            if b != turn.removed and r is not None:
                out[b] = self.key(b, r, turn.removed)
        return out

    def ready(self, index: int) -> bool:
        """Whether turn ``index`` can be generated now: every message it reads already exists.

        Lets a rollout generate later turns early (the dyad's solo reasoner turn is ready from the start, so it
        joins the joint reasoner turns' generation batch).
        """
        return all(k in self.messages for k in self._seen_keys(self.turns[index]).values())

    def message(self, agent: str, removed: str | None) -> str | None:
        """``agent``'s last message in the world where ``removed`` is absent (re-run message if it was re-run)."""
        return self.messages.get(self.key(agent, self.topo.stages_of(agent)[-1], removed))

    def view(self, turn: Turn) -> str:
        """Observation text for ``turn``: the question plus the messages the agent sees in that world."""
        visible = {b: self.messages[k][: self.max_message_chars]
                   for b, k in self._seen_keys(turn).items() if k in self.messages}
        return self.topo.render(self.task.view_of(turn.agent), visible, self.topo.labels)

    # ---------------------------------------------------------------------------------------------- outcome
    def _correct(self, answer: str) -> float:
        if answer not in self._score_cache:
            self._score_cache[answer] = safe_score_answer(self.verifier, answer, self.task)
        return self._score_cache[answer]

    def _same(self, a: str, b: str) -> bool:
        """Verifier equivalence, computed once per answer pair per episode (a timed-out check is remembered as
        "not shown equal", so hostile answers cost one time bound each, not one per counterfactual world)."""
        if a == b:
            return True
        key = frozenset((a, b))
        if key not in self._same_cache:
            self._same_cache[key] = safe_equivalent(self.verifier, a, b)
        return self._same_cache[key]

    def _turn_score(self, key: Key) -> float:
        """The verifier's score of the answer in one message (0 for a missing or unanswered one)."""
        answer = safe_extract(self.verifier, self.messages.get(key))
        return 0.0 if answer is None else self._correct(answer)

    def _answers(self, removed: str | None) -> dict[str, str | None]:
        return {a: safe_extract(self.verifier, self.message(a, removed))
                for a in self.topo.agents if a != removed}

    def _aggregate(self, removed: str | None, answers: dict[str, str | None]) -> Outcome:
        if self.world_ended(removed):
            return Outcome(None, 0.0)
        return self.topo.aggregator(answers, self._correct, self._same)

    def coalition_rewards(self, answers: dict[str, str | None]) -> list[float]:
        """``v(S)`` for every coalition ``S`` of the topology's agents, indexed by bitmask (bit ``j``: agent ``j`` of
        ``topo.agents`` is in ``S``; ``v(∅)`` is the aggregator's outcome with nobody present: 0 for a vote, chance for
        the credit gym's tasks), from the joint episode's answers. Only for independent topologies (no agent reads
        another). Under the ``episode`` rule a coalition with a truncated member scores 0."""
        agents = self.topo.agents
        out = [0.0] * (1 << len(agents))
        for mask in range(len(out)):
            members = [a for j, a in enumerate(agents) if mask >> j & 1]
            if self.truncation == "episode" and any((None, a, s) in self.truncated for a, s in self.topo.slots
                                                    if a in members):
                continue
            out[mask] = self.topo.aggregator({a: answers[a] for a in members}, self._correct, self._same).reward
        return out

    def _agent_correct(self, agent: str, answer: str | None) -> bool:
        """Whether ``agent``'s own answer is right: against its own gold where the task gives one (``gold_of``)."""
        if answer is None:
            return False
        gold = self.task.gold_of(agent)
        if gold == self.task.answer:
            return self._correct(answer) >= 1.0
        return safe_score_answer(self.verifier, answer, dataclasses.replace(self.task, answer=gold)) >= 1.0

    def outcome(self) -> EpisodeOutcome:
        """Everything the algorithms need (:class:`~ccpo_envs.outcome.EpisodeOutcome`; its ``to_info()`` holds the
        keys documented in :mod:`ccpo_envs.env`)."""
        assert self.done, "outcome() before the episode ended"
        answers = self._answers(None)
        joint = self._aggregate(None, answers)
        downs = {k: downstream(self.topo, k) for k in self.topo.removable}
        coalitions = (self.coalition_rewards(answers)
                      if self.topo.independent and len(self.topo.agents) <= MAX_COALITION_AGENTS else None)
        truth = None
        if self.topo.truth is not None:
            truth = self.topo.truth(self.task, answers, joint.reward)
        elif coalitions is not None:
            truth = from_coalitions(self.topo.agents, coalitions)
        removed_reward, removed_answer, removed_answers = {}, {}, {}
        for k in self.topo.removable:
            ans_k = self._answers(k)
            out_k = self._aggregate(k, ans_k)
            removed_reward[k], removed_answer[k], removed_answers[k] = out_k.reward, out_k.team_answer, ans_k
        return EpisodeOutcome(**{
            "task_id": self.task.task_id,
            "question": self.task.question,
            "gold": self.task.answer,
            "team_answer": joint.team_answer,
            "reward_joint": joint.reward,
            "reward_removed": removed_reward,
            "team_answer_removed": removed_answer,
            "answers": answers,
            "correct": {a: self._agent_correct(a, x) for a, x in answers.items()},
            "answers_removed": removed_answers,
            "tie": joint.tie,
            "votes": joint.votes,
            "messages": {a: self.message(a, None) or "" for a in self.topo.agents},
            "messages_by_stage": {a: [self.messages.get((None, a, s), "") for s in self.topo.stages_of(a)]
                                  for a in self.topo.agents},
            "score_by_stage": {a: [self._turn_score((None, a, s)) for s in self.topo.stages_of(a)]
                               for a in self.topo.agents},
            "messages_removed": {k: {a: self.message(a, k) or "" for a in down} for k, down in downs.items()},
            "truncation": self.truncation,
            "truncated": {a: any((None, a, s) in self.truncated for s in self.topo.stages_of(a))
                          for a in self.topo.agents},
            "truncated_removed": {k: {a: any((k, a, s) in self.truncated for s in self.topo.stages_of(a)) for a in down}
                                  for k, down in downs.items()},
            "skipped": [a for a in self.topo.agents if any(
                i in self.skipped for i, t in enumerate(self.turns) if t.agent == a and t.removed is None)],
            **({"reward_coalitions": coalitions} if coalitions is not None else {}),
            **({"contribution": truth} if truth is not None else {}),
        })
