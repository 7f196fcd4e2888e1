"""The credit-vs-truth read-outs against plain loops, and on hand-made records whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.credit_fidelity import spearman  # a plain loop over average ranks: the reference
from ccpo_algos.gym.records import StepRecord
from ccpo_algos.gym.truth_metrics import free_riding_index, group_normalised, truth_readouts


def record(truth, credit, adv, groups, trained=None, step=1):
    truth, credit, adv = (np.asarray(x, dtype=np.float64) for x in (truth, credit, adv))
    A = truth.shape[1]
    return StepRecord(step, truth.sum(1), truth, truth, credit, adv,
                      np.ones(A, bool) if trained is None else np.asarray(trained), np.asarray(groups))


def test_group_normalised_matches_a_loop():
    rng = np.random.default_rng(0)
    x, groups = rng.normal(size=(12, 3)), np.repeat(np.arange(3), 4)
    got = group_normalised(x, groups)
    for g in range(3):
        for j in range(3):
            vals = [x[e, j] for e in range(12) if groups[e] == g]
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
            for e in range(12):
                if groups[e] == g:
                    assert got[e, j] == pytest.approx((x[e, j] - mean) / (std + 1e-6))


def test_a_rule_that_is_the_truth_scores_perfectly_and_shared_reward_feeds_the_free_rider():
    # agent 0 does the work (truth 1 when right), agent 1 rides free (truth 0 always)
    truth = [[1, 0], [0, 0], [1, 0], [0, 0]]
    ideal = group_normalised(np.asarray(truth, float), np.zeros(4))
    exact = truth_readouts([record(truth, truth, ideal, np.zeros(4))])
    assert exact["rank_corr"][0] == pytest.approx(1.0) and exact["sign_agree"][0] == 1.0
    assert exact["adv_error"][0] == pytest.approx(0.0, abs=1e-12)
    assert exact["free_riding"][1] == 0.0
    shared = [[1, 1], [0, 0], [1, 1], [0, 0]]  # the team reward for both
    adv = group_normalised(np.asarray(shared, float), np.zeros(4))
    got = truth_readouts([record(truth, shared, adv, np.zeros(4))])
    assert got["free_riding"][1] == pytest.approx(0.5)  # half of all positive advantage reaches the rider
    assert free_riding_index([record(truth, shared, adv, np.zeros(4))]) == pytest.approx(0.5)
    assert math.isnan(got["rank_corr"][1])  # no rank order against a constant truth


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_readouts_match_plain_loops_on_random_records(seed):
    rng = np.random.default_rng(seed)
    recs = []
    for step in range(3):
        truth = rng.choice([-1.0, 0.0, 0.5, 1.0], size=(8, 2))
        credit = truth + rng.normal(scale=0.5, size=(8, 2))
        adv = rng.normal(size=(8, 2))
        recs.append(record(truth, credit, adv, np.repeat(np.arange(2), 4), trained=[True, step != 1], step=step))
    got = truth_readouts(recs)
    pos_total = 0.0
    pooled = {j: [] for j in range(2)}
    for r in recs:
        ideal = group_normalised(r.truth_loo, r.group_ids)
        for j in range(2):
            if not r.trained[j]:
                continue
            for e in range(8):
                cent = r.truth_loo[e, j] - np.mean([r.truth_loo[f, j] for f in range(8) if r.group_ids[f] == r.group_ids[e]])
                pooled[j].append((r.credit[e, j], r.truth_loo[e, j], r.advantage[e, j], ideal[e, j], cent))
                pos_total += max(r.advantage[e, j], 0.0)
    for j in range(2):
        rows = pooled[j]
        err = math.sqrt(sum((a - i) ** 2 for _, _, a, i, _ in rows) / len(rows))
        assert got["adv_error"][j] == pytest.approx(err)
        agree = [(a > 0) == (c > 0) for _, _, a, _, c in rows if abs(a) > 1e-9 and abs(c) > 1e-9]
        assert got["sign_agree"][j] == pytest.approx(sum(agree) / len(agree))
        fr = sum(max(a, 0.0) for _, t, a, _, _ in rows if t == 0) / pos_total
        assert got["free_riding"][j] == pytest.approx(fr)
        assert got["rank_corr"][j] == pytest.approx(spearman([c for c, *_ in rows], [t for _, t, *_ in rows]))
        mean = sum(a for _, _, a, _, _ in rows) / len(rows)
        assert got["adv_var"][j] == pytest.approx(sum((a - mean) ** 2 for _, _, a, _, _ in rows) / len(rows))
