"""The credit, advantage and loss code against plain-loop ports of the reference code's lines (bhai114/ccpo) and of
SPEC's formulas, on hand-made and random batches: truncation rules, the EMA warm-up, CCPO v2, GSPO, MAPPO's team
reward."""

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ccpo_algos.advantage import AdvantageConfig, grpo_mean_advantage, mappo_advantage
from ccpo_algos.credit import (
    CreditBatch,
    CreditConfig,
    ccpo_credit,
    ccpo_v2_credit,
    shared_credit,
    team_credit,
)
from ccpo_algos.loss import LossConfig, gspo_policy_loss, policy_loss, token_policy_loss, turn_policy_loss

NAN = float("nan")


# ------------------------------------------------------------------------------ CCPO v1 vs historical_normalizer.py

class RefNormalizer:
    """Plain port of CCPO-v1 ``verl/workers/reward_manager/historical_normalizer.py`` (update, normalize_agent1,
    normalize_agent2): scalar EMA statistics, min_samples counted on the history buffer."""

    def __init__(self, min_samples=10, decay=0.99, eps=1e-6):
        self.min_samples, self.decay, self.eps = min_samples, decay, eps
        self.n, self.buffer = 0, 0
        self.mu = {"d": 0.0, "j": 0.0, "s": 0.0}
        self.m2 = {"d": 1.0, "j": 1.0, "s": 1.0}

    def sigma(self, k):
        return math.sqrt(self.m2[k]) if self.m2[k] > self.eps else 1.0

    def update(self, deltas, joint, solo):
        for k, xs in (("d", deltas), ("j", joint), ("s", solo)):
            mean = sum(xs) / len(xs)
            var = sum((x - mean) ** 2 for x in xs) / len(xs)
            if self.n == 0:
                self.mu[k], self.m2[k] = mean, var
            else:
                self.mu[k] = self.decay * self.mu[k] + (1 - self.decay) * mean
                self.m2[k] = self.decay * self.m2[k] + (1 - self.decay) * var
        self.n += 1
        self.buffer += len(deltas)

    def agent1(self, deltas):
        if self.n < 1 or self.buffer < self.min_samples:
            return list(deltas)
        return [math.tanh((d - self.mu["d"]) / (self.sigma("d") + self.eps)) for d in deltas]

    def agent2(self, joint, solo):
        if self.n < 1 or self.buffer < self.min_samples:
            return list(joint)
        x = max(-20.0, min(20.0, self.mu["d"] / (self.sigma("d") + self.eps)))
        g = 1.0 / (1.0 + math.exp(-x))
        zj = [(j - self.mu["j"]) / (self.sigma("j") + self.eps) for j in joint]
        zs = [(s - self.mu["s"]) / (self.sigma("s") + self.eps) for s in solo]
        return [g * a + (1 - g) * b for a, b in zip(zj, zs)]


def _mask_loop(rewards, finished, rule):
    """SPEC's truncation rules, one episode at a time."""
    out = [list(r) for r in rewards]
    for e, fin in enumerate(finished):
        for a in range(len(fin)):
            if (rule == "episode" and not all(fin)) or (rule == "turn" and not fin[a]):
                out[e][a] = 0.0
    return out


@given(st.lists(st.integers(1, 7), min_size=1, max_size=6),
       st.sampled_from([("episode", False), ("turn", False), ("episode", True)]), st.integers(0, 10**6))
def test_ccpo_v1_matches_reference_normalizer_over_steps(sizes, rule, seed):
    """Several steps of random dyad batches (small batches: the min_samples=10 warm-up spans steps), with
    truncated turns: the vectorised credit equals the reference port plus the truncation rule. With the
    non-reference ``truncated_as_failure``, R_joint of an episode with a truncated turn is 0 before shaping and
    statistics (as the env's episode rule records it) and nothing is masked after shaping."""
    rnd = random.Random(seed)
    rule, as_failure = rule
    cfg = CreditConfig(truncation=rule, truncated_as_failure=as_failure)
    ref, state = RefNormalizer(), None
    for e in sizes:
        joint = [float(rnd.random() < 0.5) for _ in range(e)]
        solo = [float(rnd.random() < 0.5) for _ in range(e)]
        fin = [[rnd.random() < 0.8, rnd.random() < 0.8] for _ in range(e)]
        batch = CreditBatch(torch.tensor(joint), torch.tensor([[s, NAN] for s in solo]), torch.tensor(fin),
                            torch.tensor([-1, 0]))
        got, state = ccpo_credit(batch, state, cfg)
        if as_failure:
            joint = [j if all(f) else 0.0 for j, f in zip(joint, fin)]
        deltas = [j - s for j, s in zip(joint, solo)]
        want = list(zip(ref.agent1(deltas), ref.agent2(joint, solo)))
        if not as_failure:
            want = _mask_loop(want, fin, rule)
        ref.update(deltas, joint, solo)
        assert np.allclose(got.numpy(), np.array(want), atol=1e-9)


def test_reference_rule_pays_truncation_above_a_wrong_answer_and_the_option_does_not():
    """The measured collapse, in numbers: after warm-up at 50 % accuracy, a finished wrong dyad episode is shaped
    below 0 for both agents while a truncated one gets 0 (the reference); with ``truncated_as_failure`` the two
    get the same credit."""
    rnd = random.Random(0)
    warm = [CreditBatch(torch.tensor([float(rnd.random() < 0.5) for _ in range(16)]),
                        torch.tensor([[float(rnd.random() < 0.3), NAN] for _ in range(16)]),
                        torch.ones(16, 2, dtype=torch.bool), torch.tensor([-1, 0])) for _ in range(3)]
    # episode 0 finished wrong, episode 1 the reasoner truncated (the env scored it 0); the solo reasoner failed too
    probe = CreditBatch(torch.tensor([0.0, 0.0]), torch.tensor([[0.0, NAN], [0.0, NAN]]),
                        torch.tensor([[True, True], [True, False]]), torch.tensor([-1, 0]))
    for flag in (False, True):
        cfg, state = CreditConfig(truncated_as_failure=flag), None
        for b in warm:
            state = ccpo_credit(b, state, cfg)[1]
        r = ccpo_credit(probe, state, cfg)[0]
        assert (r[0] < 0).all()  # a wrong answer is below the average
        if flag:
            assert torch.equal(r[1], r[0])
        else:
            assert r[1].tolist() == [0.0, 0.0]


def test_ema_warmup_passes_raw_values_until_ten_values_seen():
    joint, solo = torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0.0, 0.0, 1.0, 0.0])
    b = CreditBatch(joint, torch.stack([solo, torch.full((4,), NAN)], 1), torch.ones(4, 2, dtype=torch.bool),
                    torch.tensor([-1, 0]))
    state = None
    for step in range(1, 5):  # 4 episodes per step: 0, 4, 8 values seen before steps 1-3 -> raw; 12 before step 4
        r, state = ccpo_credit(b, state, CreditConfig())
        raw = torch.equal(r[:, 0], joint.double() - solo.double()) and torch.equal(r[:, 1], joint.double())
        assert raw == (step <= 3), step
    assert state.seen == 16 and state.count == 4


def test_episode_truncation_zeroes_every_agent_turn_only_the_truncated_one():
    b = CreditBatch(torch.tensor([1.0, 1.0]), torch.tensor([[NAN, NAN], [NAN, NAN]]),
                    torch.tensor([[True, True], [False, True]]), torch.tensor([-1, -1]))
    ep, _ = shared_credit(b, None, CreditConfig(truncation="episode"))
    turn, _ = shared_credit(b, None, CreditConfig(truncation="turn"))
    off, _ = shared_credit(b, None, CreditConfig(truncation="off"))
    assert ep.tolist() == [[1, 1], [0, 0]]
    assert turn.tolist() == [[1, 1], [0, 1]]
    assert off.tolist() == [[1, 1], [1, 1]]


# ------------------------------------------------------------------------------------- MAPPO: the team reward

def test_mappo_terminal_reward_is_the_team_reward_not_a_masked_average():
    """A correct dyad whose thinker was truncated: under ``turn`` the team return is 1 (was 0.5 when averaged over
    per-agent masked rewards); under ``episode`` it is 0 (the reference: the episode did not finish)."""
    b = CreditBatch(torch.tensor([1.0]), torch.tensor([[NAN, NAN]]), torch.tensor([[False, True]]),
                    torch.tensor([-1, 0]))
    assert team_credit(b, None, CreditConfig(truncation="turn"))[0].tolist() == [[1.0, 1.0]]
    assert team_credit(b, None, CreditConfig(truncation="episode"))[0].tolist() == [[0.0, 0.0]]
    v = torch.zeros(1, 2)
    _, ret = mappo_advantage(team_credit(b, None, CreditConfig(truncation="turn"))[0], torch.tensor([0]), v,
                             torch.tensor([0, 1]), AdvantageConfig(normalize_batch=False))
    assert ret.tolist() == [[1.0, 1.0]]  # the critic's targets too
    with pytest.raises(ValueError, match="team reward"):
        mappo_advantage(torch.tensor([[0.0, 1.0]]), torch.tensor([0]), v, torch.tensor([0, 1]), AdvantageConfig())


@given(st.integers(2, 9), st.integers(0, 10**6))
def test_mappo_normalises_each_agent_column_over_the_batch(e, seed):
    g = torch.Generator().manual_seed(seed)
    team = torch.randint(0, 2, (e,), generator=g).double()
    values = torch.rand(e, 2, generator=g, dtype=torch.float64)
    adv, _ = mappo_advantage(team[:, None].expand(e, 2), torch.arange(e), values, torch.tensor([0, 1]),
                             AdvantageConfig())
    for a in range(2):  # gamma = lambda = 1: A_t = R - V_t (hand-derived GAE), then (x - mean)/(std + eps) per column
        col = [team[i].item() - values[i, a].item() for i in range(e)]
        m = sum(col) / e
        sd = math.sqrt(sum((x - m) ** 2 for x in col) / (e - 1))
        assert np.allclose(adv[:, a].numpy(), [(x - m) / (sd + 1e-6) for x in col], atol=1e-6)


# ------------------------------------------------------------------------------------ CCPO v2 (released recipe)

def _v2_loop(joint, solo, groups, lam=0.2, group_baseline=True, event=True):
    """Port of ``two_model_trainer.py`` l.1063-1087 (``_group_mean`` l.181-203) as loops over episodes."""
    rj = [1.0 if x > 0 else -1.0 for x in joint]
    rs = [1.0 if x > 0 else -1.0 for x in solo]
    out = []
    for i in range(len(rj)):
        if group_baseline:
            members = [k for k in range(len(rj)) if groups[k] == groups[i]]
            b = sum(rs[k] for k in members) / len(members)
        else:
            b = rs[i]
        if event:
            bonus = float(rj[i] > 0 and b < 0) - float(rj[i] < 0 and b > 0)
        else:
            bonus = (rj[i] - b) * 0.5
        out.append([rj[i] + lam * bonus, rj[i]])
    return out


def _v2(joint, solo, groups, **kw):
    e = len(joint)
    b = CreditBatch(torch.tensor(joint), torch.tensor([[s, NAN] for s in solo]), torch.zeros(e, 2, dtype=torch.bool),
                    torch.tensor([-1, 0]), torch.tensor(groups))
    return ccpo_v2_credit(b, None, CreditConfig(**kw))[0]


def test_ccpo_v2_hand_computed_groups():
    # all correct, solo all wrong: b = -1 -> helped: thinker 1 + 0.2
    assert _v2([1, 1], [0, 0], [0, 0]).tolist() == [[1.2, 1.0], [1.2, 1.0]]
    # all wrong, solo all right: b = +1 -> hurt: thinker -1 - 0.2
    assert _v2([0, 0], [1, 1], [0, 0]).tolist() == [[-1.2, -1.0], [-1.2, -1.0]]
    # zero solo baseline (one solo right, one wrong): no event either way
    assert _v2([1, 0], [1, 0], [0, 0]).tolist() == [[1.0, 1.0], [-1.0, -1.0]]
    # mixed groups: group 0 b = -1 (helped where joint right), group 1 b = +1/3 (hurt where joint wrong)
    r = _v2([1, 0, 1, 0, 1, 0], [0, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1])
    assert np.allclose(r[:, 0].numpy(), [1.2, -1.0, 1.0, -1.2, 1.0, -1.2])
    # truncation does not enter: finished flags are all False above, and nothing was zeroed
    assert (r != 0).all()


@given(st.integers(1, 12), st.integers(0, 10**6), st.booleans(), st.booleans(), st.sampled_from([0.0, 0.2, 1.0]))
def test_ccpo_v2_equals_reference_loop(e, seed, group_baseline, event, lam):
    rnd = random.Random(seed)
    joint = [float(rnd.random() < 0.5) for _ in range(e)]
    solo = [float(rnd.random() < 0.5) for _ in range(e)]
    groups = [rnd.randrange(3) for _ in range(e)]
    got = _v2(joint, solo, groups, cf_lambda=lam, group_solo_baseline=group_baseline, event_bonus=event)
    assert np.allclose(got.numpy(), _v2_loop(joint, solo, groups, lam, group_baseline, event))


def test_ccpo_v2_advantage_is_mean_centred_whatever_scale_std_says():
    r = torch.tensor([[1.2, 1.0], [-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    adv, _ = grpo_mean_advantage(r, torch.tensor([0, 0, 0]), None, torch.tensor([0, 1]),
                                 AdvantageConfig(scale_std=True))
    assert torch.allclose(adv, r - r.mean(0))


# ----------------------------------------------------------------------------------------------- GSPO / token

@st.composite
def loss_inputs(draw):
    n, L = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 10**6)))
    lengths = torch.randint(1, L + 1, (n,), generator=g)
    mask = torch.arange(L)[None, :] < lengths[:, None]
    old = -torch.rand(n, L, generator=g, dtype=torch.float64) * 3
    new = old + torch.randn(n, L, generator=g, dtype=torch.float64) * draw(st.sampled_from([0.0, 1e-4, 0.05, 1.0]))
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    return new, old, adv, mask


GSPO = LossConfig(kind="gspo", clip_eps=3e-4, clip_eps_high=4e-4, log_ratio_clip=10.0, dual_clip=None)


@given(loss_inputs())
def test_gspo_at_ratio_one_is_minus_mean_advantage(inp):
    new, old, adv, mask = inp
    loss, _ = gspo_policy_loss(old.clone().requires_grad_(), old, adv, mask, GSPO)
    assert torch.allclose(loss, -adv.mean())


@given(loss_inputs())
def test_gspo_equals_the_sequence_ratio_loss_in_value_and_gradient(inp):
    """The reference's per-token form ``sg[s]·π/sg[π]`` is the turn-level sequence ratio with seq-mean-token-mean:
    same value and same gradient as the independently written ``turn`` loss with the same band, no dual clip."""
    new, old, adv, mask = inp
    a, b = new.clone().requires_grad_(), new.clone().requires_grad_()
    la, _ = gspo_policy_loss(a, old, adv, mask, GSPO)
    lb, _ = turn_policy_loss(b, old, adv, mask, LossConfig(kind="turn", clip_eps=3e-4, clip_eps_high=4e-4,
                                                            log_ratio_clip=10.0, dual_clip=None, agg="seq-mean"))
    la.backward()
    lb.backward()
    assert torch.allclose(la, lb) and torch.allclose(a.grad, b.grad, atol=1e-12)


@given(loss_inputs(), st.sampled_from([1e-3, 0.5]))
def test_gspo_clipped_side_has_zero_gradient(inp, shift):
    new, old, adv, mask = inp
    x = (old + shift).requires_grad_()  # s = e^shift > 1 + 4e-4 for every turn
    loss, m = gspo_policy_loss(x, old, adv.abs() + 0.1, mask, GSPO)
    loss.backward()
    assert torch.all(x.grad == 0) and float(m["policy/clip_frac"]) == 1.0


def _token_loss_loop(new, old, adv, mask, eps, c, agg):
    per_turn, weights = [], []
    for i in range(new.shape[0]):
        vals = []
        for t in range(new.shape[1]):
            if not mask[i, t]:
                continue
            r = math.exp(max(-20.0, min(20.0, new[i, t].item() - old[i, t].item())))
            a = adv[i].item()
            loss = max(-a * r, -a * min(max(r, 1 - eps), 1 + eps))
            if a < 0:
                loss = min(loss, -a * c)
            vals.append(loss)
        per_turn.append(sum(vals) / len(vals))
        weights.append(len(vals))
    if agg == "seq-mean":
        return sum(per_turn) / len(per_turn)
    return sum(p * w for p, w in zip(per_turn, weights)) / sum(weights)


@given(loss_inputs(), st.sampled_from(["seq-mean", "token-mean"]))
def test_token_loss_equals_loop_reference(inp, agg):
    new, old, adv, mask = inp
    loss, _ = token_policy_loss(new, old, adv, mask, LossConfig(kind="token", agg=agg))
    assert loss.item() == pytest.approx(_token_loss_loop(new, old, adv, mask, 0.2, 3.0, agg), rel=1e-9, abs=1e-12)


@given(loss_inputs(), st.sampled_from(["turn", "gspo", "token"]), st.sampled_from(["seq-mean", "token-mean"]))
def test_every_loss_kind_at_ratio_one_is_minus_mean_advantage(inp, kind, agg):
    _, old, adv, mask = inp
    loss, _ = policy_loss(old.clone().requires_grad_(), old, adv, mask, LossConfig(kind=kind, agg=agg))
    w = mask.double().sum(1)
    want = -adv.mean() if agg == "seq-mean" or kind == "gspo" else -(adv * w).sum() / w.sum()
    assert torch.allclose(loss, want)
