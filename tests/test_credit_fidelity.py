"""Credit fidelity (``ccpo credit-report``): the statistics against scipy, and the measured contributions of a
scripted vote whose every outcome is known by hand."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ccpo_envs
from benchmarks.credit_fidelity import fidelity, markdown, sign_agreement, spearman
from ccpo_agents.policy import SamplingConfig
from ccpo_agents.scripted import ConstantPolicy, OraclePolicy, PerRolePolicy
from ccpo_algos.credit import CreditConfig


@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=3, max_size=30))
def test_spearman_equals_scipy(pairs):
    from scipy import stats as scipy_stats  # installed with vLLM
    x, y = [float(a) for a, _ in pairs], [float(b) for _, b in pairs]
    ours = spearman(x, y)
    if len(set(x)) < 2 or len(set(y)) < 2:
        assert math.isnan(ours)
    else:
        assert math.isclose(ours, scipy_stats.spearmanr(x, y).statistic, abs_tol=1e-9)


def test_sign_agreement_ignores_zero_contributions():
    assert sign_agreement([1.0, -1.0, 0.0, 5.0], [0.5, 0.5, -1.0, 0.0]) == 1 / 3
    assert math.isnan(sign_agreement([1.0], [0.0]))


def test_fidelity_of_a_scripted_vote_matches_the_hand_computed_contributions():
    """voter_0 always right, voter_1 right on even tasks only (silent otherwise), voter_2 always says -1.
    Even tasks: answers (g, g, -1), R=1; without voter_0 or voter_1 a tie g/-1 (0.5), without voter_2 still 1.
    Odd tasks: (g, -, -1), R=0.5 (tie); without voter_0: -1 wins (0); without voter_1: 0.5; without voter_2: 1."""
    records = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)]
    src = ccpo_envs.ListSource(records)
    gold = {r["question"]: r["answer"] for r in records}
    evens = {r["question"]: r["answer"] for i, r in enumerate(records) if i % 2 == 0}
    policy = PerRolePolicy({"voter_0": OraclePolicy(gold.get), "voter_1": OraclePolicy(evens.get),
                            "voter_2": ConstantPolicy("\\boxed{-1}")})
    envs = [ccpo_envs.make("vote_v0", api="aec", source=src) for _ in range(6 * 3)]
    rep = fidelity(policy, envs, [src[i] for i in range(6)], 2, 3, ["difference", "grpo", "ccpo", "marti_margin"],
                   SamplingConfig(max_tokens=8), CreditConfig(min_samples=1))
    even = [i % 2 == 0 for i in range(6)]
    assert rep["contribution"] == {"voter_0": [0.5] * 6, "voter_1": [0.5 if e else 0.0 for e in even],
                                   "voter_2": [0.0 if e else -0.5 for e in even]}
    diff = rep["methods"]["difference"]
    assert diff["voter_1"]["spearman"] == pytest.approx(1.0) and diff["voter_2"]["spearman"] == pytest.approx(1.0)
    assert all(diff[k]["sign_agreement"] == 1.0 and diff[k]["within_task_std"] == 0.0 for k in diff)
    # the shared reward is positive where voter_2 hurts the team: its sign never agrees
    assert rep["methods"]["grpo"]["voter_2"]["sign_agreement"] == 0.0
    assert "| difference |" in markdown(rep)
