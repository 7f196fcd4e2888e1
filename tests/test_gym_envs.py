"""The credit gym's tasks: PettingZoo conformance, and the truth each episode reports, by property.

The truth (``infos["contribution"]``) is checked against plain loops written from the games' definitions: a
permutation-average Shapley value, and each game's rule for a removed agent.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ccpo_envs
from ccpo_envs import check_env
from ccpo_envs.gym import GymSource, alphabet
from ccpo_envs.truth import from_coalitions

GYM = ["splitkey_v0", "redundant_v0", "freerider_v0", "signal_v0", "noisyvote_v0"]
K = 5
SYMS = alphabet(K)
# an agent's message: a symbol (right or wrong), an abstention, garbage, or a boxed symbol
MESSAGES = st.one_of(st.sampled_from(list(SYMS)), st.just("pass"), st.text(max_size=6),
                     st.sampled_from(list(SYMS)).map(lambda s: f"\\boxed{{{s}}}"))


def play(name: str, index: int, say, **options):
    """One episode of env ``name`` on task ``index`` through the AEC API; ``say(agent, removed, task) -> str``."""
    env = ccpo_envs.make(name, api="aec", size=64, **options)
    env.reset(options={"index": index})
    task = env.unwrapped.task
    final = None
    for agent in env.agent_iter(max_iter=100):
        _, _, term, trunc, info = env.last()
        if term or trunc:
            final = final or dict(info)
            env.step(None)
        elif agent in env.unwrapped.acting_turns():
            env.step(say(agent, info.get("removed"), task))
        else:
            env.step("")
    return task, final


def first_word(msg: str) -> str | None:
    """The reference reading of a message: its boxed symbol or first word, if that is a symbol."""
    if msg.startswith("\\boxed{"):
        msg = msg[7:-1]
    w = msg.split()[0].strip(".,;:!").lower() if msg.split() else ""
    return w if w in SYMS and len(w) == 1 else None


def shapley_by_permutations(agents, v):
    """Plain reference: the average marginal contribution over every joining order."""
    n, out = len(agents), {a: 0.0 for a in agents}
    for order in itertools.permutations(range(n)):
        mask = 0
        for j in order:
            out[agents[j]] += (v[mask | 1 << j] - v[mask]) / math.factorial(n)
            mask |= 1 << j
    return out


@pytest.mark.parametrize("name", GYM)
def test_gym_env_passes_pettingzoo_and_text_checks(name):
    check_env(lambda: ccpo_envs.make(name, size=32))


@pytest.mark.parametrize("name", GYM)
def test_gym_tasks_are_pure_functions_of_seed_split_index(name):
    game = name[:-3]
    a, b = GymSource(game, "train", 3, 20), GymSource(game, "train", 3, 20)
    assert [a[i] for i in range(20)] == [b[i] for i in range(20)]
    ev = GymSource(game, "eval", 3, 20)
    assert [t.metadata["views"] for t in (a[i] for i in range(20))] != [
        t.metadata["views"] for t in (ev[i] for i in range(20))]


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 63), worker=MESSAGES, rider=MESSAGES)
def test_free_rider_removal_never_changes_the_outcome(index, worker, rider):
    _, info = play("freerider_v0", index, lambda a, r, t: worker if a == "worker_0" else rider)
    assert info["reward_removed"]["rider_0"] == info["reward_joint"]
    assert info["contribution"]["loo"]["rider_0"] == 0.0 and info["contribution"]["shapley"]["rider_0"] == 0.0
    # without the worker the team guesses its answer
    assert info["reward_removed"]["worker_0"] == pytest.approx(1 / K)


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 63), m0=MESSAGES, m1=MESSAGES)
def test_split_key_without_either_holder_is_at_chance(index, m0, m1):
    task, info = play("splitkey_v0", index, lambda a, r, t: m0 if a == "holder_0" else m1)
    right = {a: first_word(m) == task.gold_of(a) for a, m in (("holder_0", m0), ("holder_1", m1))}
    assert info["reward_joint"] == float(right["holder_0"] and right["holder_1"])
    assert info["reward_removed"]["holder_0"] == pytest.approx(right["holder_1"] / K)
    assert info["reward_removed"]["holder_1"] == pytest.approx(right["holder_0"] / K)
    assert info["correct"] == right


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 63), m0=MESSAGES, m1=MESSAGES)
def test_redundant_holder_removal_changes_nothing_unless_it_was_the_only_right_one(index, m0, m1):
    task, info = play("redundant_v0", index, lambda a, r, t: m0 if a == "holder_0" else m1)
    w0, w1 = first_word(m0), first_word(m1)
    if w0 == w1:  # holders that say the same thing: removing either changes nothing
        assert info["reward_removed"] == {"holder_0": info["reward_joint"], "holder_1": info["reward_joint"]}
    right = {"holder_0": w0 == task.answer, "holder_1": w1 == task.answer}
    assert info["reward_joint"] == float(any(right.values()))
    for k, other in (("holder_0", "holder_1"), ("holder_1", "holder_0")):
        assert info["reward_removed"][k] == float(right[other])
    if all(right.values()):
        assert info["contribution"]["loo"] == {"holder_0": 0.0, "holder_1": 0.0}
        assert info["contribution"]["shapley"]["holder_0"] == pytest.approx((1 - 1 / K) / 2)


def plurality_reference(answers, gold):
    """Plain loop from SPEC's vote with the gym's guess: plurality, expected ties, no vote -> 1/K."""
    votes = [a for a in answers if a is not None]
    if not votes:
        return 1 / K
    counts = {a: votes.count(a) for a in votes}
    top = [a for a, c in counts.items() if c == max(counts.values())]
    return sum(a == gold for a in top) / len(top)


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 63), msgs=st.lists(MESSAGES, min_size=3, max_size=3))
def test_noisy_vote_truth_equals_coalition_loops(index, msgs):
    agents = ["voter_0", "voter_1", "voter_2"]
    task, info = play("noisyvote_v0", index, lambda a, r, t: msgs[agents.index(a)])
    words = [first_word(m) for m in msgs]
    v = [plurality_reference([w for j, w in enumerate(words) if mask >> j & 1], task.answer) for mask in range(8)]
    assert info["reward_joint"] == pytest.approx(v[7])
    for j, a in enumerate(agents):
        assert info["reward_removed"][a] == pytest.approx(v[7 ^ 1 << j])
        assert info["contribution"]["loo"][a] == pytest.approx(v[7] - v[7 ^ 1 << j])
    ref = shapley_by_permutations(agents, v)
    assert info["contribution"]["shapley"] == pytest.approx(ref)
    assert sum(ref.values()) == pytest.approx(info["reward_joint"] - 1 / K)  # efficiency, v(empty) = chance


@settings(max_examples=40, deadline=None)
@given(index=st.integers(0, 63), msg=MESSAGES, pick=MESSAGES, blind=MESSAGES)
def test_signal_truth_is_analytic_chance_and_the_blind_receiver_is_replayed(index, msg, pick, blind):
    def say(agent, removed, task):
        return msg if agent == "sender_0" else (blind if removed == "sender_0" else pick)

    task, info = play("signal_v0", index, say)
    R = float(first_word(pick) == task.answer)
    assert info["reward_joint"] == R
    assert info["reward_removed"]["sender_0"] == float(first_word(blind) == task.answer)  # the re-run, sampled
    c = info["contribution"]
    assert c["method"] == "analytic"
    assert c["loo"] == pytest.approx({"sender_0": R - 1 / K, "receiver_0": R - 1 / K})
    assert sum(c["shapley"].values()) == pytest.approx(R - 1 / K)


def test_signal_receiver_reads_the_message_and_its_replay_does_not():
    seen = {}

    def say(agent, removed, task):
        seen[(agent, removed)] = None
        return task.gold_of(agent)

    env = ccpo_envs.make("signal_v0", api="aec", size=8)
    env.reset(options={"index": 0})
    texts = {}
    for agent in env.agent_iter(max_iter=20):
        obs, _, term, trunc, info = env.last()
        if term or trunc:
            env.step(None)
            continue
        texts[(agent, info["removed"])] = obs["text"]
        env.step("c")
    assert texts[("receiver_0", None)].endswith("; message : c")
    assert "message" not in texts[("receiver_0", "sender_0")]
    assert texts[("sender_0", None)].startswith("target : ")


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 5), data=st.data())
def test_from_coalitions_matches_permutation_shapley(n, data):
    v = data.draw(st.lists(st.floats(0, 1), min_size=1 << n, max_size=1 << n))
    agents = [f"a_{j}" for j in range(n)]
    c = from_coalitions(agents, v)
    assert c.shapley == pytest.approx(shapley_by_permutations(agents, v), abs=1e-12)
    assert c.loo == pytest.approx({a: v[-1] - v[(1 << n) - 1 ^ 1 << j] for j, a in enumerate(agents)})


def test_the_vote_reports_its_truth_too():
    env = ccpo_envs.make("vote_v0", source=ccpo_envs.ListSource([{"question": "1+1?", "answer": "2"}]), n=3)
    env.reset(options={"index": 0})
    *_, infos = env.step({"voter_0": "\\boxed{2}", "voter_1": "\\boxed{2}", "voter_2": "\\boxed{3}"})
    info = infos["voter_0"]
    assert info["contribution"]["method"] == "enumeration"
    # without voter_0 (or voter_1) the vote ties 2 against 3: expected reward 1/2
    assert info["contribution"]["loo"] == {"voter_0": 0.5, "voter_1": 0.5, "voter_2": 0.0}


@pytest.mark.parametrize("name,options,needle", [
    ("splitkey_v0", {"symbols": 1}, "symbols=1"),
    ("noisyvote_v0", {"n": 3, "reliability": [0.5, 0.5]}, "one per voter"),
    ("noisyvote_v0", {"n": 2, "reliability": [0.5, 1.5]}, "in [0, 1]"),
    ("signal_v0", {"source": ccpo_envs.ListSource([{"question": "q", "answer": "a"}])}, "makes its own tasks"),
    ("redundant_v0", {"split": "dev"}, "split='dev'"),
])
def test_bad_gym_options_name_the_fix(name, options, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("(", r"\(")):
        ccpo_envs.make(name, **options)
