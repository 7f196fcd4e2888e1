"""SPEC invariants of credit, advantage and loss as hypothesis properties, plus plain-loop references."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from ccpo_algos.advantage import AdvantageConfig, gae_advantages, grpo_advantage, grpo_advantages, mappo_advantage
from ccpo_algos.algorithms import ALGORITHMS
from ccpo_algos.credit import (
    CreditBatch,
    CreditConfig,
    EmaState,
    ccpo_credit,
    ccpo_no_gate_credit,
    difference_credit,
    ema_update,
    finished_mask,
    shapley_credit,
    shared_credit,
)
from ccpo_algos.loss import LossConfig, policy_loss, value_loss
from ccpo_envs.aggregate import plurality

#: The properties below test normalisation after the warm-up; min_samples=1 normalises from the second step on
#: whatever the batch size (the reference's min_samples=10 warm-up has its own tests).
CFG = CreditConfig(min_samples=1)
NAN = float("nan")
binary = st.sampled_from([0.0, 1.0])


@st.composite
def dyad_batches(draw, min_e=1, max_e=12):
    e = draw(st.integers(min_e, max_e))
    joint = draw(st.lists(binary, min_size=e, max_size=e))
    solo = draw(st.lists(binary, min_size=e, max_size=e))
    fin = draw(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=e, max_size=e))
    return CreditBatch(torch.tensor(joint), torch.tensor([[s, NAN] for s in solo]),
                       torch.tensor(fin, dtype=torch.bool), torch.tensor([-1, 0]))


def _all_finished(b):
    return CreditBatch(b.team_reward, b.removed_reward, torch.ones_like(b.finished), b.gate_source)


# ------------------------------------------------------------------------------------------------- credit

@given(dyad_batches())
def test_delta_is_in_minus_one_zero_one_for_binary_rewards(b):
    r, _ = difference_credit(_all_finished(b), None, CFG)
    assert set(r[:, 0].tolist()) <= {-1.0, 0.0, 1.0}


@given(st.lists(st.sampled_from([None, "1", "2", "3"]), min_size=2, max_size=6), st.integers(0, 5))
def test_non_pivotal_voter_gets_zero_and_delta_ignores_own_action(answers, k):
    """R_¬k is computed without voter k, so changing k's answer cannot change it; if removing k leaves the outcome
    unchanged, Δ_k = 0."""
    assume(k < len(answers))
    agg = plurality("strict")
    correct, same = (lambda a: float(a == "2")), (lambda a, b: a == b)
    named = {f"v{i}": a for i, a in enumerate(answers)}
    without = {n: a for n, a in named.items() if n != f"v{k}"}
    r_removed = agg(without, correct, same).reward
    for alt in (None, "1", "2", "3"):  # k's own action varies; R_¬k does not
        assert agg({n: a for n, a in {**named, f"v{k}": alt}.items() if n != f"v{k}"}, correct, same).reward == r_removed
    r_joint = agg(named, correct, same).reward
    b = CreditBatch(torch.tensor([r_joint]), torch.tensor([[r_removed]]), torch.ones(1, 1, dtype=torch.bool),
                    torch.tensor([-1]))
    delta = difference_credit(b, None, CFG)[0][0, 0].item()
    if r_joint == r_removed:
        assert delta == 0.0
    assert delta in (-1.0, 0.0, 1.0)


@given(st.integers(1, 8), st.integers(2, 5), st.randoms())
def test_permuting_voters_permutes_ccpo_credit(e, a, rnd):
    g = torch.Generator().manual_seed(rnd.randint(0, 10**6))
    joint = torch.randint(0, 2, (e,)).float()
    removed = torch.randint(0, 2, (e, a), generator=g).float()
    batch = CreditBatch(joint, removed, torch.ones(e, a, dtype=torch.bool), torch.full((a,), -1))
    perm = list(range(a))
    rnd.shuffle(perm)
    pb = CreditBatch(joint, removed[:, perm], torch.ones(e, a, dtype=torch.bool), torch.full((a,), -1))
    state = EmaState.zeros(2 * a + 1)
    r1, s1 = ccpo_credit(batch, state, CFG)
    r1b, _ = ccpo_credit(batch, s1, CFG)
    sig_perm = list(perm) + [a] + [a + 1 + p for p in perm]
    s1p = EmaState(s1.mean[sig_perm], s1.m2[sig_perm], s1.count, s1.seen)
    r2, _ = ccpo_credit(pb, state, CFG)
    r2b, _ = ccpo_credit(pb, s1p, CFG)
    assert torch.allclose(r2, r1[:, perm]) and torch.allclose(r2b, r1b[:, perm])


@given(dyad_batches())
def test_first_step_passthrough(b):
    b = _all_finished(b)
    r, state = ccpo_credit(b, None, CFG)
    assert torch.equal(r[:, 0], (b.team_reward - b.removed_reward[:, 0]).double())  # thinker: raw Δ
    assert torch.equal(r[:, 1], b.team_reward.double())  # reasoner: raw R_joint
    assert state.count == 1


@given(dyad_batches(), dyad_batches())
def test_normalise_then_update_order(b1, b2):
    """Step 2 is normalised with the statistics after step 1 only (not including step 2's own values)."""
    b1, b2 = _all_finished(b1), _all_finished(b2)
    _, s1 = ccpo_credit(b1, None, CFG)
    r2, s2 = ccpo_credit(b2, s1, CFG)
    delta = (b2.team_reward - b2.removed_reward[:, 0]).double()
    expect = torch.tanh((delta - s1.mean[0]) / (s1.sigma()[0] + CFG.eps))
    assert torch.allclose(r2[:, 0], expect)
    assert s2.count == 2
    sig = torch.stack([delta, torch.zeros_like(delta), b2.team_reward.double(), b2.removed_reward[:, 0].double(),
                       torch.zeros_like(delta)], dim=1)
    assert torch.allclose(s2.mean, 0.99 * s1.mean + 0.01 * sig.mean(0))
    assert torch.allclose(s2.m2, 0.99 * s1.m2 + 0.01 * sig.var(0, unbiased=False))


@given(st.floats(-1, 1), st.floats(-1, 1), st.floats(1e-3, 1))
def test_gate_in_unit_interval_and_monotone_in_mean_delta(mu1, mu2, m2):
    assume(mu1 < mu2)

    def gate(mu):
        st_ = EmaState(torch.tensor([mu, 0, 0.5, 0.5, 0], dtype=torch.float64),
                       torch.tensor([m2, 0, 0.25, 0.25, 0], dtype=torch.float64), 1, 100)
        # joint=1, solo=0: reasoner reward g*z_J + (1-g)*z_S is affine in g with slope z_J - z_S = 2
        b = CreditBatch(torch.tensor([1.0]), torch.tensor([[0.0, NAN]]), torch.ones(1, 2, dtype=torch.bool),
                        torch.tensor([-1, 0]))
        r, _ = ccpo_credit(b, st_, CFG)
        z_j, z_s = (1 - 0.5) / (0.5 + 1e-6), (0 - 0.5) / (0.5 + 1e-6)
        return (r[0, 1].item() - z_s) / (z_j - z_s)

    g1, g2 = gate(mu1), gate(mu2)
    assert 0 < g1 < 1 and 0 < g2 < 1
    assert g1 <= g2 + 1e-12


@given(dyad_batches())
def test_shapley_split_sums_to_team_reward(b):
    b = _all_finished(b)
    r, _ = shapley_credit(b, None, CFG)
    assert torch.allclose(r.sum(1), b.team_reward.double())


@given(dyad_batches(), st.sampled_from([ccpo_credit, ccpo_no_gate_credit, shared_credit, difference_credit,
                                        shapley_credit]))
def test_truncated_turns_get_zero_reward(b, fn):
    state = None
    for _ in range(2):
        r, state = fn(b, state, CFG)
    assert torch.all(r[~b.finished] == 0)


def test_ignored_thinker_gets_zero_delta_but_full_shared_reward():
    """Scripted free-rider: the reasoner ignores the plan, so joint and solo outcomes are equal."""
    joint = torch.tensor([1.0, 0.0, 1.0, 1.0])
    b = CreditBatch(joint, torch.stack([joint, torch.full((4,), NAN)], 1), torch.ones(4, 2, dtype=torch.bool),
                    torch.tensor([-1, 0]))
    assert torch.all(difference_credit(b, None, CFG)[0][:, 0] == 0)
    assert torch.all(ccpo_credit(b, None, CFG)[0][:, 0] == 0)
    assert torch.equal(shared_credit(b, None, CFG)[0][:, 0], joint.double())


def test_ema_state_round_trips_and_sigma_floor():
    s = ema_update(EmaState.zeros(2), torch.tensor([[1.0, 2.0], [1.0, 4.0]]))
    assert s.sigma()[0] == 1.0 and s.sigma()[1] == 1.0  # var 0 -> 1; var 1 -> sqrt(1)
    s2 = EmaState.from_state_dict(s.state_dict())
    assert torch.equal(s2.mean, s.mean) and torch.equal(s2.m2, s.m2) and s2.count == s.count


# ---------------------------------------------------------------------------------------------- advantage

def _grpo_loop(rewards, groups, scale_std=True, eps=1e-6):
    out = np.zeros_like(rewards, dtype=float)
    for g in set(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        for a in range(rewards.shape[1]):
            vals = [rewards[i, a] for i in idx]
            if len(vals) == 1:
                continue
            m = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
            for i in idx:
                out[i, a] = (rewards[i, a] - m) / (sd + eps) if scale_std else rewards[i, a] - m
    return out


# Rewards on a grid of quarters: shifts and power-of-two scales are then exact in floating point, so the
# invariances can be checked tightly (an arbitrary float like 1e-133 vanishes when shifted by 1).
quarter = st.integers(-20, 20).map(lambda k: k / 4)
rewards_st = st.integers(1, 12).flatmap(lambda e: st.tuples(
    st.lists(st.lists(quarter, min_size=2, max_size=2), min_size=e, max_size=e),
    st.lists(st.integers(0, 3), min_size=e, max_size=e)))


@given(rewards_st, st.booleans())
def test_grpo_equals_loop_reference_and_has_zero_group_mean(data, scale):
    r, g = data
    rt, gt = torch.tensor(r, dtype=torch.float64), torch.tensor(g)
    adv = grpo_advantages(rt, gt, scale)
    assert np.allclose(adv.numpy(), _grpo_loop(np.array(r), g, scale), atol=1e-9)
    for grp in set(g):
        idx = [i for i, x in enumerate(g) if x == grp]
        assert abs(adv[idx].sum(0)).max() < 1e-6


@given(rewards_st, quarter, st.sampled_from([0.25, 0.5, 2.0, 4.0, 8.0]))
def test_grpo_shift_and_scale_invariance(data, shift, scale):
    r, g = data
    rt, gt = torch.tensor(r, dtype=torch.float64), torch.tensor(g)
    base = grpo_advantages(rt, gt, True, eps=0.0)
    assume(torch.isfinite(base).all())
    # groups with zero spread stay zero under any affine map
    assert torch.allclose(grpo_advantages(rt + shift, gt, True, eps=0.0).nan_to_num(), base.nan_to_num(), atol=1e-6)
    assert torch.allclose(grpo_advantages(rt * scale, gt, True, eps=0.0).nan_to_num(), base.nan_to_num(), atol=1e-6)
    assert torch.allclose(grpo_advantages(rt + shift, gt, False), grpo_advantages(rt, gt, False), atol=1e-9)


def test_grpo_group_of_one_is_zero():
    assert torch.equal(grpo_advantages(torch.tensor([3.0, 1.0]), torch.tensor([0, 1])), torch.zeros(2, dtype=torch.float64))


def _gae_loop(r, v, gamma, lam):
    E, S = len(r), len(r[0])
    adv = [[0.0] * S for _ in range(E)]
    for e in range(E):
        for t in range(S):
            total = 0.0
            for l_ in range(S - t):
                nv = v[e][t + l_ + 1] if t + l_ + 1 < S else 0.0
                total += (gamma * lam) ** l_ * (r[e][t + l_] + gamma * nv - v[e][t + l_])
            adv[e][t] = total
    return adv


@given(st.integers(1, 5), st.integers(1, 4), st.floats(0.5, 1), st.floats(0, 1), st.randoms())
def test_gae_equals_loop_reference(e, s, gamma, lam, rnd):
    r = [[rnd.uniform(-1, 1) for _ in range(s)] for _ in range(e)]
    v = [[rnd.uniform(-1, 1) for _ in range(s)] for _ in range(e)]
    adv, ret = gae_advantages(torch.tensor(r, dtype=torch.float64), torch.tensor(v, dtype=torch.float64), gamma, lam)
    assert np.allclose(adv.numpy(), _gae_loop(r, v, gamma, lam), atol=1e-6)
    assert torch.allclose(ret, adv + torch.tensor(v, dtype=torch.float64))


def test_mappo_dyad_advantages_with_gamma_lambda_one():
    """Hand-computed GAE with gamma = lambda = 1: A_t = R - V_t, returns = R."""
    r = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    v = torch.tensor([[0.3, 0.8], [0.5, 0.2]])
    adv, ret = mappo_advantage(r, torch.tensor([0, 0]), v, torch.tensor([0, 1]),
                               AdvantageConfig(normalize_batch=False))
    assert torch.allclose(adv, torch.tensor([[0.7, 0.2], [-0.5, -0.2]], dtype=torch.float64))
    assert torch.allclose(ret, torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64))


# --------------------------------------------------------------------------------------------------- loss

@st.composite
def loss_inputs(draw):
    n, L = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    seed = draw(st.integers(0, 10**6))
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, L + 1, (n,), generator=g)
    mask = torch.arange(L)[None, :] < lengths[:, None]
    logp = -torch.rand(n, L, generator=g, dtype=torch.float64) * 3
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    return logp, adv, mask


@given(loss_inputs(), st.sampled_from(["seq-mean", "token-mean"]))
def test_loss_at_ratio_one_is_minus_mean_advantage(inp, agg):
    logp, adv, mask = inp
    loss, _ = policy_loss(logp.clone().requires_grad_(), logp, adv, mask, LossConfig(agg=agg))
    if agg == "seq-mean":
        want = -adv.mean()
    else:
        w = mask.double().sum(1)
        want = -(adv * w).sum() / w.sum()
    assert torch.allclose(loss, want)


@given(loss_inputs(), st.floats(0.3, 2.0))
def test_clipped_side_has_zero_gradient(inp, shift):
    logp, adv, mask = inp
    cfg = LossConfig(dual_clip=None)
    new = (logp + shift).requires_grad_()  # ratio = e^shift > 1 + eps for every turn
    adv_pos = adv.abs() + 0.1  # positive advantages: clipped at 1 + eps, no gradient
    loss, _ = policy_loss(new, logp, adv_pos, mask, cfg)
    loss.backward()
    assert torch.all(new.grad == 0)
    new2 = (logp + shift).requires_grad_()
    loss2, _ = policy_loss(new2, logp, -(adv.abs() + 0.1), mask, cfg)  # negative advantages: not clipped above
    loss2.backward()
    assert new2.grad.abs().sum() > 0


def test_dual_clip_bounds_negative_advantage_loss_and_log_ratio_clamp():
    logp = torch.zeros(1, 3, dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, _ = policy_loss(logp + 10, logp, torch.tensor([-1.0], dtype=torch.float64), mask, LossConfig())
    assert loss.item() == pytest.approx(3.0)  # min(-A*rho, -A*c) with rho = e^3 (clamped) > c = 3
    loss, _ = policy_loss(logp + 10, logp, torch.tensor([-1.0], dtype=torch.float64), mask,
                          LossConfig(dual_clip=None))
    assert loss.item() == pytest.approx(math.exp(3.0))


def test_kl_k3_is_zero_at_reference_and_positive_elsewhere():
    logp = -torch.rand(2, 4, dtype=torch.float64)
    mask = torch.ones(2, 4, dtype=torch.bool)
    cfg = LossConfig(kl_coef=1.0)
    _, m = policy_loss(logp, logp, torch.zeros(2, dtype=torch.float64), mask, cfg, ref_logprobs=logp)
    assert float(m["policy/kl"]) == pytest.approx(0.0)
    _, m = policy_loss(logp, logp, torch.zeros(2, dtype=torch.float64), mask, cfg, ref_logprobs=logp - 0.5)
    assert float(m["policy/kl"]) > 0
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(logp, logp, torch.zeros(2), mask, cfg)


def test_value_loss_clipping():
    v_old, ret = torch.tensor([0.0]), torch.tensor([1.0])
    assert value_loss(torch.tensor([1.0]), v_old, ret, clip=0.2).item() == pytest.approx(0.5 * 0.8 ** 2)
    assert value_loss(torch.tensor([0.1]), v_old, ret, clip=0.2).item() == pytest.approx(0.5 * 0.9 ** 2)


def test_algorithm_table_rows_share_signatures():
    b = CreditBatch(torch.tensor([1.0, 0.0]), torch.tensor([[0.0, NAN], [0.0, NAN]]),
                    torch.ones(2, 2, dtype=torch.bool), torch.tensor([-1, 0]),
                    coalition_reward=torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]),
                    turn_reward=torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]]]))
    for name, algo in ALGORITHMS.items():
        r, _ = algo.credit(b, None, CFG)
        values = torch.zeros(2, 2) if algo.needs_critic else None
        adv, _ = algo.advantage(r, torch.tensor([0, 0]), values, torch.tensor([0, 1]), AdvantageConfig())
        assert adv.shape == r.shape and adv.shape[:2] == (2, 2) and torch.isfinite(adv).all(), name
    assert ALGORITHMS["ccpo"].needs_counterfactual and not ALGORITHMS["grpo"].needs_counterfactual
    assert ALGORITHMS["mappo"].needs_critic


# ------------------------------------------------------------------------------------ peers' credit rows

@given(st.lists(dyad_batches(), min_size=1, max_size=5), st.sampled_from(["episode", "turn"]))
def test_rae_equals_a_plain_loop_of_spirals_baseline(batches, truncation):
    """SPIRAL ``train_spiral.py`` l.78-79, 158-163, per role and episode: the baseline is read before the batch
    updates it (it starts at 0), then ``b ← 0.95 b + 0.05 mean(R)``; R is the shared reward after truncation."""
    from ccpo_algos.credit import rae_credit

    cfg = CreditConfig(truncation=truncation)
    state, b = None, [0.0, 0.0]
    for batch in batches:
        got, state = rae_credit(batch, state, cfg)
        E = len(batch.team_reward)
        for k in range(2):
            rk = []
            for e in range(E):
                kept = batch.finished[e].all() if truncation == "episode" else batch.finished[e, k]
                r = float(batch.team_reward[e]) if kept else 0.0
                rk.append(r)
                assert float(got[e, k]) == pytest.approx(r - b[k])
            b[k] = 0.95 * b[k] + 0.05 * sum(rk) / E
        assert state.mean.tolist() == pytest.approx(b)
    again = EmaState.from_state_dict(state.state_dict())  # checkpoints like CCPO's statistics
    assert again.mean.tolist() == pytest.approx(b) and again.count == len(batches)


@given(dyad_batches(min_e=2), st.integers(1, 3))
def test_magrpo_is_the_joint_return_minus_its_siblings_mean(batch, groups):
    """CoMLRL ``magrpo.py::_compute_advantages``: every agent gets the joint return G; ``A = G − mean`` over the
    sibling samples of its prompt; no std scaling (loop reference)."""
    algo = ALGORITHMS["magrpo"]
    E = len(batch.team_reward)
    gid = torch.tensor([e % groups for e in range(E)])
    r, _ = algo.credit(batch, None, CreditConfig())
    adv, _ = algo.advantage(r, gid, None, torch.tensor([0, 1]), AdvantageConfig())
    for e in range(E):
        g = float(batch.team_reward[e]) * float(batch.finished[e].all())
        sib = [float(batch.team_reward[f]) * float(batch.finished[f].all()) for f in range(E) if gid[f] == gid[e]]
        want = g - sum(sib) / len(sib) if len(sib) > 1 else 0.0
        assert float(adv[e, 0]) == pytest.approx(want) and float(adv[e, 1]) == pytest.approx(want)


def _loop_shapley(v, n):
    """φ_k = Σ_{S ⊆ N∖k} |S|!(n−|S|−1)!/n! · (v(S ∪ k) − v(S)), over explicit subsets (itertools)."""
    from itertools import combinations

    phi = []
    for k in range(n):
        others = [j for j in range(n) if j != k]
        total = 0.0
        for size in range(n):
            for S in combinations(others, size):
                m = sum(1 << j for j in S)
                w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                total += w * (v[m | 1 << k] - v[m])
        phi.append(total)
    return phi


@given(st.integers(1, 5), st.integers(1, 6), st.randoms(), st.sampled_from(["episode", "turn"]))
def test_exact_shapley_equals_the_subset_loop_and_splits_the_team_reward(n, e, rnd, truncation):
    from ccpo_algos.credit import exact_shapley_credit

    agg = plurality(rnd.choice(["expected", "strict"]))
    correct, same = (lambda a: float(a == "2")), (lambda a, b: a == b)
    rows, joint, fin = [], [], []
    for _ in range(e):
        ans = [rnd.choice([None, "1", "2", "3"]) for _ in range(n)]
        v = [0.0] + [agg({j: ans[j] for j in range(n) if m >> j & 1}, correct, same).reward for m in range(1, 2 ** n)]
        rows.append(v)
        joint.append(v[-1])
        fin.append([rnd.random() > 0.2 for _ in range(n)])
    finished = torch.tensor(fin)
    b = CreditBatch(torch.tensor(joint), torch.tensor([[v[(2 ** n - 1) & ~(1 << k)] for k in range(n)] for v in rows]),
                    finished, torch.full((n,), -1), None, torch.tensor(rows))
    cfg = CreditConfig(truncation=truncation)
    got, _ = exact_shapley_credit(b, None, cfg)
    full, _ = exact_shapley_credit(CreditBatch(b.team_reward, b.removed_reward, torch.ones_like(finished),
                                               b.gate_source, None, b.coalition_reward), None, cfg)
    for i, v in enumerate(rows):
        want = _loop_shapley(v, n)
        assert full[i].tolist() == pytest.approx(want)
        assert float(full[i].sum()) == pytest.approx(joint[i])  # efficiency: the split sums to R_joint
        for k in range(n):
            kept = finished[i].all() if truncation == "episode" else finished[i, k]
            assert float(got[i, k]) == pytest.approx(want[k] if kept else 0.0)
    with pytest.raises(ValueError, match="coalition"):
        exact_shapley_credit(CreditBatch(b.team_reward, b.removed_reward, finished, b.gate_source), None, cfg)


def test_shapley_of_a_one_removal_team_is_the_difference_split():
    """Two voters: φ_k = ½(v({k}) − v(∅)) + ½(v(N) − v(N∖k)), the vote's R_¬k being the one-removal case."""
    from ccpo_algos.credit import exact_shapley_credit

    v = torch.tensor([[0.0, 1.0, 0.0, 0.5]])  # voter_0 alone correct, voter_1 alone wrong, together a tie
    b = CreditBatch(torch.tensor([0.5]), torch.tensor([[0.0, 1.0]]), torch.ones(1, 2, dtype=torch.bool),
                    torch.tensor([-1, -1]), None, v)
    phi, _ = exact_shapley_credit(b, None, CreditConfig())
    assert phi[0].tolist() == pytest.approx([0.5 * 1.0 + 0.5 * 0.5, 0.5 * 0.0 + 0.5 * -0.5])


def _ccpo_gate_loop(team, removed, gates, state, cfg):
    """SPEC's gated reward written as a plain loop for any topology: agent j, gated on removable sources K_j, gets
    the mean over k in K_j of g_k·z(R_joint) + (1 − g_k)·z(R_¬k), g_k = sigmoid(clip(η·μ_Δk/(σ_Δk + ε), ±20))."""
    A = len(removed[0])
    mu, m2 = state.mean.tolist(), state.m2.tolist()
    sd = [math.sqrt(v) if v > 1e-6 else 1.0 for v in m2]
    out = {}
    for j in range(A):
        ks = [k for k in range(A) if gates[j][k]]
        if not ks:
            continue
        for e in range(len(team)):
            z_j = (team[e] - mu[A]) / (sd[A] + cfg.eps)
            total = 0.0
            for k in ks:
                g = 1 / (1 + math.exp(-max(-20.0, min(20.0, cfg.eta * mu[k] / (sd[k] + cfg.eps)))))
                z_k = (removed[e][k] - mu[A + 1 + k]) / (sd[A + 1 + k] + cfg.eps)
                total += g * z_j + (1 - g) * z_k
            out[(e, j)] = total / len(ks)
    return out


@given(st.integers(1, 12), st.integers(1, 12), st.randoms(use_true_random=False))
def test_chain_gate_equals_the_loop_over_every_upstream_agent(e1, e2, rnd):
    """A chain's last agent reads agent_0 and agent_1 (both removable): it is gated on both, not on the first only."""
    from ccpo_algos.rollout import team_layout
    from ccpo_envs import chain

    _, gates = team_layout(chain(3))
    assert gates.tolist() == [[False] * 3, [False] * 3, [True, True, False]]

    def batch(e):
        team = torch.tensor([float(rnd.random() < 0.5) for _ in range(e)])
        removed = torch.tensor([[float(rnd.random() < 0.5), float(rnd.random() < 0.5), NAN] for _ in range(e)])
        return CreditBatch(team, removed, torch.ones(e, 3, dtype=torch.bool), gates)

    _, s1 = ccpo_credit(batch(e1), None, CFG)
    b2 = batch(e2)
    r, _ = ccpo_credit(b2, s1, CFG)
    ref = _ccpo_gate_loop(b2.team_reward.tolist(), b2.removed_reward.tolist(), gates.tolist(), s1, CFG)
    for (e, j), v in ref.items():
        assert math.isclose(r[e, j].item(), v, rel_tol=1e-9, abs_tol=1e-9)
    # one source: the matrix form and the dyad's index form are the same gate
    dyad = CreditBatch(b2.team_reward, b2.removed_reward[:, [0, 2]], torch.ones(e2, 2, dtype=torch.bool),
                       torch.tensor([-1, 0]))
    dyad_m = CreditBatch(dyad.team_reward, dyad.removed_reward, dyad.finished, torch.tensor([[False, False],
                                                                                             [True, False]]))
    s = EmaState(s1.mean[[0, 2, 3, 4, 6]], s1.m2[[0, 2, 3, 4, 6]], s1.count, s1.seen)
    assert torch.equal(ccpo_credit(dyad, s, CFG)[0], ccpo_credit(dyad_m, s, CFG)[0])
    # no history: the gated agent's share is the mean over its sources of 0.5·R_¬k + 0.5·R_joint
    r0, _ = shapley_credit(b2, None, CFG)
    expect = 0.5 * b2.removed_reward[:, :2].double().mean(dim=1) + 0.5 * b2.team_reward.double()
    assert torch.allclose(r0[:, 2], expect)


# ------------------------------------------------------------------------------------ per-turn rows (debate)

@st.composite
def debate_turn_batches(draw):
    e, a, t = draw(st.integers(1, 8)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    scores = draw(st.lists(st.sampled_from([0.0, 1.0, 0.5]), min_size=e * a * t, max_size=e * a * t))
    team = draw(st.lists(st.sampled_from([0.0, 1.0, 0.5]), min_size=e, max_size=e))
    fin = draw(st.lists(st.booleans(), min_size=e * a, max_size=e * a))
    return CreditBatch(torch.tensor(team), torch.full((e, a), NAN), torch.tensor(fin).view(e, a),
                       torch.full((a,), -1), torch.arange(e) // 2, None, torch.tensor(scores).view(e, a, t))


def _marti_loop(raw, alpha=0.5):
    """MARTI's ``_reward_shaping`` for one debate (``auto_reward_alloc.py`` l.65-103, name="margin"), in lists."""
    m_, t_ = len(raw), len(raw[0])
    out = [row[:] for row in raw]
    for m in range(m_):
        for t in range(1, t_):
            earlier = [raw[i][s] for i in range(m_) for s in range(t)]
            q = sum(earlier) / len(earlier)
            out[m][t] = raw[m][t] + alpha * (raw[m][t] - q)
    return out


@given(debate_turn_batches(), st.sampled_from(["episode", "turn", "off"]))
def test_marti_margin_and_at_grpo_equal_their_reference_loops(b, truncation):
    from ccpo_algos.turn_credit import at_grpo_credit, marti_margin_credit

    cfg = CreditConfig(truncation=truncation, min_samples=1)
    r, _ = marti_margin_credit(b, None, cfg)
    g, _ = at_grpo_credit(b, None, cfg)
    keep = finished_mask(b.finished, truncation)
    for e in range(b.team_reward.shape[0]):
        ref = _marti_loop(b.turn_reward[e].tolist())
        for a in range(b.turn_reward.shape[1]):
            for t in range(b.turn_reward.shape[2]):
                k = float(keep[e, a])
                assert math.isclose(r[e, a, t].item(), ref[a][t] * k, abs_tol=1e-9)
                assert math.isclose(g[e, a, t].item(), (float(b.team_reward[e]) + float(b.turn_reward[e, a, t])) * k,
                                    abs_tol=1e-9)


@given(debate_turn_batches())
def test_per_turn_advantage_groups_by_prompt_turn_and_agent(b):
    """AT-GRPO's uid = (prompt, turn, agent): each group is normalised on its own (loop reference)."""
    from ccpo_algos.advantage import per_turn

    r = b.turn_reward.double()
    adv, _ = per_turn(grpo_advantage)(r, b.group_ids, None, torch.zeros(r.shape[1]), AdvantageConfig())
    for t in range(r.shape[2]):
        for a in range(r.shape[1]):
            ref = _grpo_loop(r[:, a, t, None].numpy(), b.group_ids.tolist())[:, 0]
            assert torch.allclose(adv[:, a, t], torch.tensor(ref, dtype=adv.dtype), atol=1e-6)
