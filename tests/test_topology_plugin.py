"""The plug-in point: a third topology (a three-agent chain) built from the same pieces passes every check."""

import pytest

from ccpo_envs import ListSource, Task, TeamAECEnv, TeamParallelEnv, Topology, chain, check_env, turn_plan
from ccpo_envs.aggregate import answer_of
from ccpo_envs.registry import make, register_env
from ccpo_envs.topology import downstream, dyad, vote

SRC = ListSource([{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(20)])


def test_turn_plans_follow_the_removal_rule():
    assert [(t.agent, t.removed) for t in turn_plan(dyad())] == [
        ("thinker_0", None), ("reasoner_0", None), ("reasoner_0", "thinker_0")]
    assert [(t.agent, t.removed) for t in turn_plan(vote(3))] == [("voter_0", None), ("voter_1", None),
                                                                  ("voter_2", None)]
    c = chain(3)
    assert downstream(c, "agent_0") == ("agent_1", "agent_2") and downstream(c, "agent_1") == ("agent_2",)
    assert [(t.agent, t.removed) for t in turn_plan(c)][3:] == [
        ("agent_1", "agent_0"), ("agent_2", "agent_0"), ("agent_2", "agent_1")]


def test_chain_passes_pettingzoo_and_text_checks():
    check_env(lambda: TeamAECEnv(chain(3), SRC), num_cycles=20)
    check_env(lambda: TeamParallelEnv(chain(3), SRC), num_cycles=20)


def test_chain_counterfactual_views_and_credit():
    env = TeamAECEnv(chain(3), SRC)
    env.reset(options={"task": Task("What is 2 + 2?", "4", {"source": "t"})})
    views = {}
    script = {("agent_0", None): "hint: double it", ("agent_1", None): "draft \\boxed{4}",
              ("agent_2", None): "\\boxed{4}", ("agent_1", "agent_0"): "draft \\boxed{5}",
              ("agent_2", "agent_0"): "\\boxed{5}", ("agent_2", "agent_1"): "\\boxed{4}"}
    for agent in env.agent_iter():
        obs, _, term, _, info = env.last()
        if term:
            env.step(None)
            continue
        turn = env.episode.current
        views[(agent, turn.removed)] = obs["text"]
        env.step(script[(agent, turn.removed)])
    assert "hint: double it" in views[("agent_2", None)] and "draft \\boxed{4}" in views[("agent_2", None)]
    assert "hint" not in views[("agent_1", "agent_0")]
    # without agent_0, agent_2 reads agent_1's *re-run* message
    assert "draft \\boxed{5}" in views[("agent_2", "agent_0")] and "hint" not in views[("agent_2", "agent_0")]
    # without agent_1, agent_2 still reads agent_0's joint message but not agent_1's
    assert "hint: double it" in views[("agent_2", "agent_1")] and "draft" not in views[("agent_2", "agent_1")]
    assert info["reward_joint"] == 1.0
    assert info["reward_removed"] == {"agent_0": 0.0, "agent_1": 1.0}  # agent_0 pivotal, agent_1 not


def test_registering_a_plugin_env_makes_it_constructible():
    register_env("chain3_v0", "aec", lambda **kw: TeamAECEnv(chain(3), SRC, **kw))
    env = make("chain3_v0")
    env.reset(seed=0)
    assert env.agent_selection == "agent_0"
    par = make("chain3_v0", api="parallel")
    obs, _ = par.reset(seed=0)
    assert set(obs) == {"agent_0", "agent_1", "agent_2"}


def test_topology_validation_names_the_problem():
    with pytest.raises(ValueError, match="earlier stages"):
        Topology("bad", (("a",), ("b",)), {"a": ("b",)}, answer_of("b"), ())
    with pytest.raises(ValueError, match="at most once per stage"):
        Topology("bad", (("a", "a"),), {}, answer_of("a"), ())
    with pytest.raises(ValueError, match="earlier stages"):  # b speaks only in a's last stage: a never reads it
        Topology("bad", (("a",), ("a", "b")), {"a": ("b",)}, answer_of("a"), ())
    Topology("ok", (("a",), ("a",)), {"a": ("a",)}, answer_of("a"), ())  # an agent may speak in several stages
    with pytest.raises(ValueError, match="removable"):
        Topology("bad", (("a",),), {}, answer_of("a"), ("z",))
