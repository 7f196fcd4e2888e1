"""Environments: PettingZoo conformance over a configuration table, counterfactual semantics, bad actions."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ccpo_envs
from ccpo_envs import ListSource, Task, check_env, dyad_v0, make, vote_v0
from ccpo_envs.aggregate import group_answers, plurality
from ccpo_envs.verify import math_equal

SMALL = dict(source="arith_easy", size=12)

CONFIGS = [
    ("dyad_v0", dict(SMALL)),
    ("dyad_v0", dict(SMALL, counterfactual=False)),
    ("dyad_v0", dict(source="logic", size=6, max_message_chars=64)),
    ("vote_v0", dict(SMALL)),
    ("vote_v0", dict(SMALL, n=1)),
    ("vote_v0", dict(SMALL, n=2, tie_rule="strict")),
    ("vote_v0", dict(source="math", size=6, n=5)),
]


@pytest.mark.parametrize("api", ["aec", "parallel"])
@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_pettingzoo_conformance(name, kw, api):
    check_env(lambda: make(name, api=api, **kw), num_cycles=20)


def test_constructors():
    from pettingzoo import AECEnv, ParallelEnv
    assert isinstance(dyad_v0.env(**SMALL), AECEnv) and isinstance(dyad_v0.raw_env(**SMALL), AECEnv)
    assert isinstance(dyad_v0.parallel_env(**SMALL), ParallelEnv)
    assert isinstance(vote_v0.parallel_env(**SMALL), ParallelEnv) and isinstance(vote_v0.env(**SMALL), AECEnv)
    assert vote_v0.parallel_env(n=4, **SMALL).possible_agents == [f"voter_{i}" for i in range(4)]
    with pytest.raises(ValueError, match="unknown env"):
        make("nope_v0")
    with pytest.raises(ValueError, match="tie_rule"):
        make("vote_v0", tie_rule="coin", **SMALL)


def _play_dyad(plan, joint, solo, task):
    env = dyad_v0.env(**SMALL)
    env.reset(seed=0, options={"task": task})
    seen = {}
    for agent in env.agent_iter():
        obs, _, term, trunc, info = env.last()
        if term or trunc:
            env.step(None)
            continue
        active, cf, turn = obs["observation"]
        assert active == 1
        seen[(agent, int(cf))] = obs["text"]
        env.step(plan if agent == "thinker_0" else solo if cf else joint)
    return seen, info


def test_dyad_counterfactual_reasoner_sees_the_bare_question():
    task = Task("Calculate 2 + 3.", "5", {"source": "t"})
    seen, info = _play_dyad("Add the numbers.", r"\boxed{5}", r"\boxed{6}", task)
    assert seen[("thinker_0", 0)] == "Calculate 2 + 3."
    assert seen[("reasoner_0", 0)] == "Question:\nCalculate 2 + 3.\n\nInstruction:\nAdd the numbers."
    assert seen[("reasoner_0", 1)] == "Calculate 2 + 3."
    assert info["reward_joint"] == 1.0 and info["reward_removed"] == {"thinker_0": 0.0}
    assert info["answers"] == {"thinker_0": None, "reasoner_0": "5"}
    assert info["correct"] == {"thinker_0": False, "reasoner_0": True}
    assert info["answers_removed"] == {"thinker_0": {"reasoner_0": "6"}}
    assert info["messages_removed"] == {"thinker_0": {"reasoner_0": r"\boxed{6}"}}


def test_dyad_rewards_are_the_shared_team_reward():
    env = dyad_v0.env(**SMALL)
    env.reset(seed=1)
    gold = env.unwrapped.task.answer
    rewards = {}
    for agent in env.agent_iter():
        _, r, term, trunc, _ = env.last()
        if term:
            rewards[agent] = r
            env.step(None)
        else:
            env.step(f"\\boxed{{{gold}}}" if agent == "reasoner_0" else "")
    assert rewards == {"thinker_0": 1.0, "reasoner_0": 1.0}


def _vote(answers, tie_rule="expected", gold="5"):
    src = ListSource([{"question": "q", "answer": gold}])  # MathVerifier: symbolic equivalence
    env = vote_v0.parallel_env(n=len(answers), tie_rule=tie_rule, source=src)
    env.reset(seed=0, options={"task": Task("q", gold, {"source": "t"})})
    _, rewards, terms, _, infos = env.step({f"voter_{i}": a for i, a in enumerate(answers)})
    assert all(terms.values()) and env.agents == []
    return rewards, infos["voter_0"]


def test_vote_plurality_equivalence_and_no_vote():
    r, info = _vote([r"\boxed{1/2}", r"\boxed{0.5}", r"\boxed{3}"], gold=r"\frac{1}{2}")
    assert info["reward_joint"] == 1.0 and info["votes"] == (2, 1) and not info["tie"]
    assert r == {f"voter_{i}": 1.0 for i in range(3)}
    # voter_2 is not pivotal, voters 0 and 1 are: without either, 1/2 vs 3 ties (expected reward 0.5)
    assert info["reward_removed"] == {"voter_0": 0.5, "voter_1": 0.5, "voter_2": 1.0}
    _, info = _vote(["I don't know", "no idea", r"\boxed{5}"])
    assert info["reward_joint"] == 1.0 and info["answers"]["voter_0"] is None  # unparseable answers cast no vote
    _, info = _vote(["", "", ""])
    assert info["reward_joint"] == 0.0 and info["team_answer"] is None


def test_vote_tie_rules():
    _, info = _vote([r"\boxed{5}", r"\boxed{6}"], "expected")
    assert info["tie"] and info["reward_joint"] == 0.5
    _, info = _vote([r"\boxed{5}", r"\boxed{6}"], "strict")
    assert info["tie"] and info["reward_joint"] == 0.0
    _, info = _vote([r"\boxed{5}", r"\boxed{6}", r"\boxed{7}", r"\boxed{5}"], "strict")
    assert not info["tie"] and info["reward_joint"] == 1.0


answer_st = st.one_of(st.none(), st.sampled_from(["1", "2", "3"]))


@given(st.lists(answer_st, min_size=1, max_size=6), st.sampled_from(["expected", "strict"]), st.randoms())
def test_vote_counterfactuals_permute_with_voters_and_nonpivotal_voters_get_zero(answers, tie_rule, rnd):
    agg = plurality(tie_rule)
    correct = lambda a: float(a == "2")
    same = lambda a, b: a == b

    def outcomes(ans):
        named = {f"v{i}": a for i, a in enumerate(ans)}
        joint = agg(named, correct, same).reward
        removed = [agg({k: v for k, v in named.items() if k != f"v{i}"}, correct, same).reward for i in range(len(ans))]
        return joint, removed

    joint, removed = outcomes(answers)
    perm = list(range(len(answers)))
    rnd.shuffle(perm)
    joint_p, removed_p = outcomes([answers[p] for p in perm])
    assert joint_p == pytest.approx(joint)
    assert removed_p == pytest.approx([removed[p] for p in perm])
    for i, a in enumerate(answers):
        if a is None:  # a voter who cast no vote is never pivotal
            assert removed[i] == joint
    if tie_rule == "strict":
        assert {joint - r for r in removed} <= {-1.0, 0.0, 1.0}


def test_group_answers_uses_verifier_equivalence():
    assert group_answers(["0.5", "1/2", r"\frac{1}{2}", "2"], lambda a, b: math_equal(a, b)) == [[0, 1, 2], [3]]


def test_bad_actions_are_accepted_or_rejected_cleanly():
    env = dyad_v0.env(**SMALL)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="must be a str"):
        env.step(7)
    env.step("\U0001F600" * 10 + "\x00\ud800")  # any string is fine
    env.step("x" * (1 << 20))
    obs = env.observe("reasoner_0")
    assert env.observation_space("reasoner_0").contains(obs)
    env.step("")
    assert all(env.terminations.values())
    assert env.infos["thinker_0"]["reward_joint"] == 0.0


def test_reset_options_pick_tasks_and_seed_is_deterministic():
    src = ListSource([{"question": f"{i} + 0 = ?", "answer": str(i)} for i in range(50)])
    env = dyad_v0.raw_env(source=src)
    env.reset(options={"index": 7})
    assert env.task.answer == "7"
    firsts = []
    for _ in range(2):
        env.reset(seed=123)
        firsts.append(env.task.question)
    assert firsts[0] == firsts[1]
    seq = []
    env.reset(seed=5)
    for _ in range(10):
        seq.append(env.task.answer)
        env.reset()
    assert len(set(seq)) > 1  # unseeded resets keep drawing from the seeded RNG


def test_observation_is_a_dict_with_numeric_flags_and_text():
    env = vote_v0.parallel_env(**SMALL)
    obs, _ = env.reset(seed=0)
    o = obs["voter_0"]
    assert o["observation"].dtype == np.int64 and list(o["observation"]) == [1, 0, 0]
    assert isinstance(o["text"], str) and o["text"]


def test_render_ansi_shows_the_transcript():
    env = dyad_v0.env(render_mode="ansi", **SMALL)
    env.reset(seed=0)
    env.step("my plan")
    assert "my plan" in env.render()


def test_import_ccpo_envs_without_torch():
    code = ("import sys\n"
            "for m in ('torch', 'transformers', 'vllm', 'peft'):\n"
            "    sys.modules[m] = None  # any import of these now raises ImportError\n"
            "import ccpo_envs\n"
            "env = ccpo_envs.make('dyad_v0', source='arith_easy', size=3)\n"
            "env.reset(seed=0)\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_public_api_is_exported():
    for name in ccpo_envs.__all__:
        assert hasattr(ccpo_envs, name)


# ---------------------------------------------------------------------------------------------- truncation

def _play_dyad_with(env, task, actions):
    """Play the dyad; ``actions[(agent, cf)]`` is the action (a str or a TruncatedMessage). Returns the agents in
    the order they acted, and the final infos."""
    env.reset(seed=0, options={"task": task})
    order = []
    for agent in env.agent_iter():
        obs, _, term, trunc, info = env.last()
        if term or trunc:
            env.step(None)
            continue
        cf = int(obs["observation"][1])
        order.append((agent, cf))
        env.step(actions[(agent, cf)])
    return order, info


@pytest.mark.parametrize("api", ["aec", "parallel"])
def test_truncated_thinker_ends_the_joint_episode_under_the_episode_rule(api):
    """The reference: a truncated thinker ends the episode before the reasoner runs (R_joint = 0); the solo run,
    which does not read the thinker, still happens. Under ``turn`` the reasoner runs on the cut plan."""
    from ccpo_envs import TruncatedMessage

    task = Task("What is 2+3?", "5")
    acts = {("thinker_0", 0): TruncatedMessage("Add the two num"), ("reasoner_0", 0): "\\boxed{5}",
            ("reasoner_0", 1): "\\boxed{5}"}
    if api == "aec":
        order, info = _play_dyad_with(dyad_v0.env(**SMALL), task, acts)
        assert order == [("thinker_0", 0), ("reasoner_0", 1)]  # the joint reasoner turn was skipped
    else:
        env = dyad_v0.parallel_env(**SMALL)
        obs, _ = env.reset(seed=0, options={"task": task})
        while env.agents:
            acting = [a for a in env.agents if obs[a]["observation"][0]]
            obs, _, _, _, infos = env.step({a: acts[(a, int(obs[a]["observation"][1]))] for a in acting})
        info = infos["reasoner_0"]
    assert info["reward_joint"] == 0.0 and info["reward_removed"] == {"thinker_0": 1.0}
    assert info["truncated"] == {"thinker_0": True, "reasoner_0": False} and info["skipped"] == ["reasoner_0"]
    assert info["truncation"] == "episode"
    order, info = _play_dyad_with(dyad_v0.env(truncation="turn", **SMALL), task, acts)
    assert order == [("thinker_0", 0), ("reasoner_0", 0), ("reasoner_0", 1)]
    assert info["reward_joint"] == 1.0 and info["skipped"] == []


def test_truncated_reasoner_scores_zero_under_episode_but_not_turn():
    from ccpo_envs import TruncatedMessage

    task = Task("What is 2+3?", "5")
    acts = {("thinker_0", 0): "Add.", ("reasoner_0", 0): TruncatedMessage("\\boxed{5} and then"),
            ("reasoner_0", 1): TruncatedMessage("\\boxed{5}")}
    _, info = _play_dyad_with(dyad_v0.env(**SMALL), task, acts)
    assert info["reward_joint"] == 0.0 and info["reward_removed"]["thinker_0"] == 0.0
    assert info["truncated_removed"] == {"thinker_0": {"reasoner_0": True}}
    _, info = _play_dyad_with(dyad_v0.env(truncation="turn", **SMALL), task, acts)
    assert info["reward_joint"] == 1.0 and info["reward_removed"]["thinker_0"] == 1.0


def test_truncated_voter_ends_only_the_worlds_that_contain_it():
    from ccpo_envs import TruncatedMessage

    env = vote_v0.parallel_env(n=3, **SMALL)
    env.reset(options={"task": Task("What is 2+3?", "5")})
    _, _, _, _, infos = env.step({"voter_0": "\\boxed{5}", "voter_1": TruncatedMessage("\\boxed{5}"),
                                  "voter_2": "\\boxed{4}"})
    info = infos["voter_0"]
    assert info["reward_joint"] == 0.0  # the joint vote contains a truncated answer
    assert info["reward_removed"]["voter_1"] == 0.5  # without voter_1: a 1-1 tie, expected correctness 0.5
    assert info["reward_removed"]["voter_0"] == 0.0 and info["reward_removed"]["voter_2"] == 0.0
    assert info["answers"]["voter_1"] == "5" and info["skipped"] == []  # same-stage agents still act
    with pytest.raises(ValueError, match="truncation"):
        vote_v0.parallel_env(truncation="sometimes", **SMALL)


def test_vote_compares_each_answer_pair_once_per_episode(monkeypatch):
    """Five voters: the joint vote and five "voter removed" votes regroup the same answers; each distinct pair is
    checked once (hostile answers used to cost one symbolic time bound per world)."""
    import ccpo_envs.episode as episode_mod

    calls = []
    real = episode_mod.safe_equivalent

    def counting(verifier, a, b):
        calls.append(frozenset((a, b)))
        return real(verifier, a, b)

    monkeypatch.setattr(episode_mod, "safe_equivalent", counting)
    answers = ["1/2", "0.5", "2", "x+1", "3"]
    _, info = _vote([f"\\boxed{{{a}}}" for a in answers], gold="1/2")
    assert info["reward_joint"] == 1.0  # 1/2 and 0.5 form the plurality group
    assert len(calls) == len(set(calls))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["\\boxed{5}", "\\boxed{4}", "\\boxed{3}", "no answer"]), min_size=1, max_size=4),
       st.lists(st.booleans(), min_size=4, max_size=4), st.sampled_from(["episode", "turn"]))
def test_vote_records_every_coalition_outcome_consistently(answers, cut, truncation):
    """``reward_coalitions`` (bitmask over possible_agents) agrees with the env's own outcomes: the full coalition is
    ``reward_joint``, each one-removal coalition is ``reward_removed``, and a coalition is the plurality of its
    members' answers (0 under the ``episode`` rule if a member was truncated)."""
    from ccpo_envs import TruncatedMessage

    n = len(answers)
    env = vote_v0.parallel_env(n=n, truncation=truncation, **SMALL)
    env.reset(options={"task": Task("What is 2+3?", "5")})
    acts = {f"voter_{i}": TruncatedMessage(a) if cut[i] else a for i, a in enumerate(answers)}
    info = env.step(acts)[4]["voter_0"]
    v = info["reward_coalitions"]
    agents = env.possible_agents
    assert len(v) == 2 ** n and v[0] == 0.0 and v[-1] == info["reward_joint"]
    for j, k in enumerate(agents):
        assert v[(2 ** n - 1) & ~(1 << j)] == info["reward_removed"][k]
    for mask in range(1, 2 ** n):
        members = [i for i in range(n) if mask >> i & 1]
        if truncation == "episode" and any(cut[i] for i in members):
            assert v[mask] == 0.0
            continue
        votes = [answers[i][len("\\boxed{"):-1] for i in members if answers[i].startswith("\\boxed")]
        if not votes:
            assert v[mask] == 0.0
            continue
        counts = {a: votes.count(a) for a in votes}
        top = [a for a, c in counts.items() if c == max(counts.values())]
        assert v[mask] == pytest.approx(sum(a == "5" for a in top) / len(top))  # tie rule "expected"


def test_dependent_topologies_record_no_coalitions():
    env = dyad_v0.env(**SMALL)
    env.reset(options={"task": Task("What is 2+3?", "5")})
    for agent in env.agent_iter():
        if env.terminations[agent] or env.truncations[agent]:
            env.step(None)
        else:
            env.step("\\boxed{5}")
    assert env.unwrapped.episode.outcome().reward_coalitions is None and not env.unwrapped.topology.independent


def test_episode_outcome_round_trips_and_names_missing_keys():
    from ccpo_envs import EpisodeOutcome

    env = ccpo_envs.make("vote_v0", source="arith_easy", size=5)
    env.reset(seed=0)
    _, _, _, _, infos = env.step({a: "\\boxed{1}" for a in env.agents})
    info = infos["voter_0"]
    out = EpisodeOutcome.from_info(info)
    assert out.to_info() == info and out.reward_coalitions is not None
    with pytest.raises(ValueError, match="lack \\['reward_removed'\\]"):
        EpisodeOutcome.from_info({k: v for k, v in info.items() if k != "reward_removed"})
    with pytest.raises(ValueError, match="non-numeric"):
        EpisodeOutcome.from_info({**info, "reward_joint": "1"})
