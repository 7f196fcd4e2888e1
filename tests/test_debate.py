"""The multi-round debate (SPEC "Debate topology"): agents that speak in several stages, their counterfactual
re-runs checked against a plain replay written from SPEC, both PettingZoo APIs, and rollout over any registered env."""

import re
from collections import Counter

import pytest

import ccpo_envs
from ccpo_agents.policy import SamplingConfig
from ccpo_agents.scripted import _Scripted
from ccpo_algos.rollout import collect
from ccpo_envs import ListSource, Task, TeamParallelEnv, chain, check_env, debate, turn_plan
from ccpo_envs.registry import register_env

SRC = ListSource([{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(20)])
DEBATERS = ["debater_0", "debater_1", "debater_2"]


def test_debate_turn_plan_reuses_round_one_and_skips_the_removed_debater():
    plan = [(t.agent, t.removed, t.slot) for t in turn_plan(debate(3, 2))]
    joint = [(a, None, r) for r in (0, 1) for a in DEBATERS]
    assert plan[:6] == joint
    for k in DEBATERS:  # without k: only the others' round 2 is re-run (round 1 reads no one; k never speaks)
        assert [p for p in plan[6:] if p[1] == k] == [(a, k, 1) for a in DEBATERS if a != k]
    assert len(plan) == 6 + 3 * 2
    assert [(t.agent, t.removed) for t in turn_plan(debate(2, 1))] == [("debater_0", None), ("debater_1", None)]


def _first_answer(text: str) -> str | None:
    m = re.search(r"\\boxed\{([^{}]*)\}", text)
    return m.group(1) if m else None


def script(agent: str, rnd: int, visible: dict[str, str]) -> str:
    """A deterministic debater: round 0 from a fixed table; later rounds copy the visible majority if there is a
    strict one, else keep their own round-0 answer."""
    own = {"debater_0": "4", "debater_1": "5", "debater_2": "5", "debater_3": "4"}[agent]
    if rnd == 0:
        return f"\\boxed{{{own}}}"
    votes = Counter(x for x in (_first_answer(t) for t in visible.values()) if x is not None)
    top = votes.most_common(2)
    pick = top[0][0] if top and (len(top) == 1 or top[0][1] > top[1][1]) else own
    return f"I read the others. \\boxed{{{pick}}}"


def replay_without(k: str | None, agents: list[str], rounds: int) -> list[str]:
    """SPEC's "debate re-run without k" as a plain loop: the final-round answers of the other debaters."""
    live = [a for a in agents if a != k]
    said = {a: script(a, 0, {}) for a in live}
    for r in range(1, rounds):
        said = {a: script(a, r, {b: said[b] for b in live if b != a}) for a in live}
    return [_first_answer(said[a]) for a in live]


def plurality_reward(answers: list[str | None], gold: str) -> float:
    """Vote rule "expected": the correct group's share of the tied top groups."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    tied = [a for a, c in votes.items() if c == top]
    return (gold in tied) / len(tied)


class ScriptedDebaterForTest(_Scripted):
    """Test double for the model: plays :func:`script` from the observation text the env rendered."""

    def respond(self, role, text, k, question):
        rnd = 0 if text == question else 1
        visible = dict(re.findall(r"Answer of (debater_\d):\n(.*?)(?=\n\nAnswer of |\Z)", text, flags=re.S))
        assert role not in visible, "a debater must not be shown its own previous answer"
        return script(role, rnd, visible)


@pytest.mark.parametrize("n,rounds", [(3, 2), (4, 3), (3, 1)])
def test_debate_outcomes_match_a_plain_replay(n, rounds):
    agents = [f"debater_{i}" for i in range(n)]
    env = ccpo_envs.make("debate_v0", api="aec", source=SRC, n=n, rounds=rounds)
    task = Task("What is 2 + 2?", "4", {"source": "t"})
    rb = collect([env], [task], 1, ScriptedDebaterForTest(), SamplingConfig(max_tokens=8), seed=0)
    info = rb.infos[0]
    assert info["reward_joint"] == plurality_reward(replay_without(None, agents, rounds), "4")
    for k in agents:
        assert info["reward_removed"][k] == plurality_reward(replay_without(k, agents, rounds), "4"), k
    by_stage = [_first_answer(t) for t in info["messages_by_stage"]["debater_0"]]
    assert len(by_stage) == rounds and by_stage[0] == _first_answer(script("debater_0", 0, {}))
    assert by_stage[-1] == info["answers"]["debater_0"]  # the team answer comes from the final round
    # every debater's turns of every round are in the batch, one per round
    for a in agents:
        turns, episode, index = rb.role_turns(a)
        assert len(turns) == rounds and episode == [0] * rounds and index == list(range(rounds))
    assert len(rb.cf_turns[0]) == (n * (n - 1) if rounds > 1 else 0) * (rounds - 1)


def test_debate_differs_from_the_vote_where_round_two_changes_minds():
    """The 3-debater script: round 0 says 4,5,5; in round 1 debater_0 sees 5,5 and switches, so the team answers
    5,5,5 (wrong). Without debater_1, debater_0 and debater_2 each see only the other's round-0 answer and take it:
    5 and 4, a tie (0.5 under the "expected" rule). Dropping debater_1's final vote alone would leave 5,5: 0."""
    env = ccpo_envs.make("debate_v0", api="aec", source=SRC)
    rb = collect([env], [Task("What is 2 + 2?", "4", {"source": "t"})], 1, ScriptedDebaterForTest(),
                 SamplingConfig(max_tokens=8), seed=0)
    info = rb.infos[0]
    assert info["answers"] == {"debater_0": "5", "debater_1": "5", "debater_2": "5"}
    assert info["reward_joint"] == 0.0 and info["reward_removed"]["debater_1"] == 0.5


@pytest.mark.parametrize("name,kw", [("debate_v0", {}), ("debate_v0", {"n": 2, "rounds": 3}), ("chain_v0", {})])
def test_registered_envs_pass_pettingzoo_and_text_checks(name, kw):
    check_env(lambda: ccpo_envs.make(name, source=SRC, **kw), num_cycles=20)
    check_env(lambda: ccpo_envs.make(name, api="aec" if name == "debate_v0" else "parallel", source=SRC, **kw),
              num_cycles=20)


def test_rollout_drives_a_parallel_native_pipeline():
    """A Parallel-native env with several stages (each stage: one agent acts) through ``parallel_to_aec``."""
    register_env("chain_parallel_test_v0", "parallel", lambda **kw: TeamParallelEnv(chain(3), kw.pop("source"), **kw))
    envs = [ccpo_envs.make("chain_parallel_test_v0", api="aec", source=SRC) for _ in range(2)]
    task = Task("What is 3 + 3?", "6", {"source": "t"})
    rb = collect(envs, [task], 2, OracleChainForTest(), SamplingConfig(max_tokens=8), seed=0)
    assert all(i["reward_joint"] == 1.0 for i in rb.infos)
    assert [len(cf) for cf in rb.cf_turns] == [3, 3]  # agent_1, agent_2 without agent_0; agent_2 without agent_1


class OracleChainForTest(_Scripted):
    """Test double: every agent boxes the gold answer of the question it is given."""

    def respond(self, role, text, k, question):
        a, b = re.findall(r"\d+", question)
        return f"\\boxed{{{int(a) + int(b)}}}"
