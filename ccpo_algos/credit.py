"""Credit: the team outcome (and counterfactual outcomes) -> one reward per agent per episode. Pure functions.

Every credit function has the signature ``credit(batch, state, cfg) -> (rewards (E, A), new_state)`` so that the
algorithms are rows of one table (:mod:`ccpo_algos.algorithms`) and the trainer never branches on the algorithm.

Signals (SPEC.md, "Credit"):

* shared: every agent gets ``R_joint``;
* difference: ``Δ_k = R_joint − R_¬k``;
* CCPO v1 (arXiv 2603.21563, reference code ``leave_one_out_rema.py`` + ``historical_normalizer.py``):
  removable agents get ``tanh(α·(Δ_k − μ_Δk)/(σ_Δk + ε))``; a gated agent ``j`` (the dyad's reasoner, gated on the
  thinker ``k``) gets ``g·z(R_joint) + (1−g)·z(R_¬k)`` with ``g = sigmoid(η·μ_Δk/(σ_Δk + ε))``; an agent
  downstream of several removable agents ``K_j`` (a chain's last agent) gets the mean of that mix over ``k ∈ K_j``
  (SPEC's formula for each teammate it depends on; one teammate: SPEC's reasoner exactly); statistics are
  EMAs kept across steps, applied *before* being updated with this batch; the very first step passes raw values.
* ablations: ``no_history`` (two-player Shapley split, no running statistics) and ``no_gate`` (``g = 1``);
* team (MAPPO's terminal reward): ``R_joint`` in every column, never an average of per-agent masked rewards;
* exact Shapley (independent teams: the vote): each agent's Shapley value of the team outcome over all coalitions;
* RAE (SPIRAL, ``train_spiral.py`` l.78-79, 158-163): ``R − b_k`` with a per-role running baseline;
* CCPO v2, the released recipe (reference ``CCPO/examples/gspo_trainer/two_model/two_model_trainer.py``
  l.1063-1087): {−1,+1} outcomes, per-prompt solo baseline, event bonus, stateless.

Truncation (``cfg.truncation``, SPEC "Truncation"): ``episode`` (default, the reference's one finish flag per
episode, ``multi_agent_rollout.py:393-402, 694``) sets every agent's reward of an episode with any truncated (or
skipped) joint turn to 0 after shaping; ``turn`` zeroes only the truncated agent's reward.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

NAN = float("nan")


@dataclass(frozen=True)
class CreditBatch:
    """Outcomes of ``E`` episodes of an ``A``-agent team.

    Attributes:
        team_reward: ``(E,)`` ``R_joint``.
        removed_reward: ``(E, A)`` ``R_¬k`` for removable agents, NaN for agents without a counterfactual.
        finished: ``(E, A)`` bool, whether the agent's turn ended normally (not truncated).
        gate_source: which removable agents' Δ statistics gate each non-removable agent: ``(A, A)`` bool,
            ``[j, k]`` true when agent ``j`` reads removable agent ``k`` (directly or through others; see
            ``ccpo_algos.rollout.team_layout``), or the one-source form ``(A,)`` long (index of that agent or -1;
            dyad: reasoner -> thinker).
        group_ids: ``(E,)`` prompt group of each episode (globally unique across data-parallel ranks), or ``None``
            (every episode its own group). Used by credit rules with per-prompt baselines (``ccpo_v2``).
        coalition_reward: ``(E, 2^A)`` ``v(S)`` of every coalition by bitmask over the agents (``v(∅) = 0``), where
            the env records it (independent teams: the vote); ``None`` otherwise. Used by exact Shapley credit.
        turn_reward: ``(E, A, T)`` the verifier's score of each agent's answer at each of its joint turns (``t``-th
            turn of that agent; NaN where it has fewer than ``T``), or ``None``. Used by per-turn rules
            (:mod:`ccpo_algos.turn_credit`).
    """

    team_reward: Tensor
    removed_reward: Tensor
    finished: Tensor
    gate_source: Tensor
    group_ids: Tensor | None = None
    coalition_reward: Tensor | None = None
    turn_reward: Tensor | None = None

    @property
    def removable(self) -> Tensor:
        """``(A,)`` bool: agents with a counterfactual outcome."""
        return ~torch.isnan(self.removed_reward).all(dim=0)

    def delta(self) -> Tensor:
        """``(E, A)`` ``Δ_k = R_joint − R_¬k`` (0 for agents without a counterfactual)."""
        d = self.team_reward[:, None] - self.removed_reward
        return torch.nan_to_num(d, nan=0.0)

    def gate_weights(self) -> Tensor:
        """``(A, A)`` float64: row ``j`` of a gated agent (not removable, at least one removable source) spreads
        weight ``1/|K_j|`` over its sources ``K_j``; other rows are 0."""
        A = self.removed_reward.shape[1]
        g = self.gate_source
        if g.dim() == 1:
            m = torch.zeros(A, A, dtype=torch.bool, device=g.device)
            rows = torch.nonzero(g >= 0).flatten()
            m[rows, g[rows]] = True
        else:
            m = g.to(torch.bool)
        m = m & self.removable[None, :] & ~self.removable[:, None]
        w = m.to(torch.float64)
        return w / w.sum(dim=1, keepdim=True).clamp_min(1.0)


@dataclass(frozen=True)
class CreditConfig:
    """Credit hyper-parameters (SPEC defaults).

    Attributes:
        alpha: tanh slope of the removable agents' shaping.
        eta: gate temperature of gated agents.
        eps: added to σ in every normalisation.
        decay: EMA decay ``d`` of the running statistics.
        gate_clip: the gate's sigmoid argument is clipped to ±gate_clip.
        truncation: ``episode`` (any truncated joint turn zeroes every agent's reward of that episode) or ``turn``
            (only the truncated agent's reward is zeroed), after shaping; ``off`` (debugging only) keeps them.
        min_samples: CCPO passes raw values through (as on its first step) while fewer than this many values
            have been seen for a signal (reference ``historical_normalizer.py``, ``min_samples=10``).
        cf_lambda: ``ccpo_v2``'s bonus weight λ (``counterfactual_lambda``, >= 0).
        group_solo_baseline: ``ccpo_v2``'s solo baseline is the prompt-group mean (off: paired by index).
        event_bonus: ``ccpo_v2``'s bonus is the helped/hurt event (off: ``0.5·(R_J − b)``).
        truncated_as_failure: not in the reference. An episode with a truncated joint turn (``episode`` rule) is
            shaped as a failed episode (``R_joint = 0``) like any other instead of getting 0 after shaping. After
            normalisation 0 is the *average* shaped reward and a finished wrong answer scores below it, so the
            reference's rule pays an agent to run out of tokens (measured: CCPO collapsed to 100 % truncation on
            CPU, ``benchmarks/measured/2026-11-25-cpu-numbers-fixed/``); under this option truncating is worth
            what failing is (on one seed it did not prevent the collapse: ``benchmarks/measured/2026-11-30-study/``).
            Rules on the raw 0/1 scale (shared GRPO, RAE, MAPPO, the per-turn rules) do not change: a failure is 0
            there already. Only with the ``episode`` rule.
    """

    alpha: float = 1.0
    eta: float = 1.0
    eps: float = 1e-6
    decay: float = 0.99
    gate_clip: float = 20.0
    truncation: str = "episode"
    min_samples: int = 10
    cf_lambda: float = 0.2
    group_solo_baseline: bool = True
    event_bonus: bool = True
    truncated_as_failure: bool = False


@dataclass(frozen=True)
class EmaState:
    """Running statistics for ``S`` signals, as an explicit value (checkpointed with the run).

    ``mean``/``m2`` are EMAs of the batch mean and the *within-batch* population variance (as the reference code);
    ``count`` is the number of updates so far (0: no statistics yet); ``seen`` the number of values each signal
    has received (every signal gets one value per episode).
    """

    mean: Tensor
    m2: Tensor
    count: int = 0
    seen: int = 0

    @staticmethod
    def zeros(n_signals: int) -> EmaState:
        return EmaState(torch.zeros(n_signals, dtype=torch.float64), torch.zeros(n_signals, dtype=torch.float64), 0, 0)

    def sigma(self, threshold: float = 1e-6) -> Tensor:
        """``sqrt(m2)`` where ``m2 > 1e-6``, else 1."""
        return torch.where(self.m2 > threshold, self.m2.clamp_min(0).sqrt(), torch.ones_like(self.m2))

    def state_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "m2": self.m2.tolist(), "count": self.count, "seen": self.seen}

    @staticmethod
    def from_state_dict(d: dict) -> EmaState:
        return EmaState(torch.tensor(d["mean"], dtype=torch.float64), torch.tensor(d["m2"], dtype=torch.float64),
                        int(d["count"]), int(d["seen"]))


def ema_update(state: EmaState, values: Tensor, decay: float = 0.99) -> EmaState:
    """Update running statistics with a batch ``values (E, S)``.

    First update: copy the batch mean and population variance. Afterwards ``μ ← d·μ + (1−d)·mean``,
    ``m2 ← d·m2 + (1−d)·var`` (population variance over the batch).
    """
    v = values.to(torch.float64)
    mean, var = v.mean(dim=0), v.var(dim=0, unbiased=False)
    seen = state.seen + v.shape[0]
    if state.count == 0:
        return EmaState(mean, var, 1, seen)
    return EmaState(decay * state.mean + (1 - decay) * mean, decay * state.m2 + (1 - decay) * var, state.count + 1,
                    seen)


def ema_normalize(values: Tensor, state: EmaState, eps: float = 1e-6) -> Tensor:
    """``(values − μ)/(σ + ε)`` per signal; ``values (E, S)``."""
    return (values.to(torch.float64) - state.mean) / (state.sigma() + eps)


def _signals(batch: CreditBatch) -> Tensor:
    """``(E, 2A+1)`` tracked signals: ``[Δ_0..Δ_{A-1}, R_joint, R_¬0..R_¬{A-1}]`` (NaN-free)."""
    return torch.cat([batch.delta(), batch.team_reward[:, None], torch.nan_to_num(batch.removed_reward, nan=0.0)],
                     dim=1).to(torch.float64)


#: ``off`` keeps truncated turns' rewards: for debugging and for plumbing tests on random models only.
TRUNCATION_RULES = ("episode", "turn", "off")


def finished_mask(finished: Tensor, truncation: str) -> Tensor:
    """``(E, A)`` bool: whose reward survives truncation. ``episode``: all agents of an episode whose joint turns
    all finished; ``turn``: each agent whose own turn finished; ``off``: everyone."""
    if truncation == "off":
        return torch.ones_like(finished)
    if truncation == "turn":
        return finished
    if truncation == "episode":
        return finished.all(dim=1, keepdim=True).expand_as(finished)
    raise ValueError(f"truncation={truncation!r}: use one of {TRUNCATION_RULES}")


def _team_if_finished(batch: CreditBatch) -> Tensor:
    """``(E,)`` ``R_joint``, 0 for an episode with a truncated joint turn."""
    return batch.team_reward * batch.finished.all(dim=1).to(batch.team_reward.dtype)


def _scored(batch: CreditBatch, cfg: CreditConfig) -> CreditBatch:
    """The outcomes a credit rule shapes: as recorded, or under ``truncated_as_failure`` with ``R_joint = 0`` for
    every episode with a truncated joint turn (the env's ``episode`` rule scores it so already)."""
    if not cfg.truncated_as_failure:
        return batch
    return dataclasses.replace(batch, team_reward=_team_if_finished(batch))


def _mask(rewards: Tensor, batch: CreditBatch, cfg: CreditConfig) -> Tensor:
    """Shaped rewards after truncation: 0 where the rule masks them (the reference), or kept as shaped from the
    failed outcome under ``truncated_as_failure``."""
    if cfg.truncated_as_failure:
        return rewards
    return rewards * finished_mask(batch.finished, cfg.truncation).to(rewards.dtype)


def shared_credit(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig) -> tuple[Tensor, EmaState | None]:
    """Every agent gets the team reward ``R_joint``. Returns ``(E, A)``."""
    batch = _scored(batch, cfg)
    E, A = batch.removed_reward.shape
    r = batch.team_reward[:, None].expand(E, A).to(torch.float64)
    return _mask(r, batch, cfg), state


def team_credit(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig) -> tuple[Tensor, EmaState | None]:
    """MAPPO's terminal reward: the team reward ``R_joint`` in every column, 0 for an episode truncated under the
    ``episode`` rule; under ``turn`` it is ``R_joint`` as the env scored it (never an average of per-agent masked
    rewards: a correct dyad with a truncated thinker is not worth 0.5). Returns ``(E, A)``."""
    E, A = batch.removed_reward.shape
    team = (_team_if_finished(batch) if cfg.truncation == "episode" else batch.team_reward).to(torch.float64)
    return team[:, None].expand(E, A).clone(), state


def difference_credit(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig) -> tuple[Tensor, EmaState | None]:
    """``Δ_k = R_joint − R_¬k`` for removable agents, ``R_joint`` for the others. Returns ``(E, A)``."""
    batch = _scored(batch, cfg)
    r = torch.where(batch.removable[None, :], batch.delta().to(torch.float64),
                    batch.team_reward[:, None].to(torch.float64).expand_as(batch.removed_reward))
    return _mask(r, batch, cfg), state


def _ccpo(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig, gate: bool) -> tuple[Tensor, EmaState]:
    batch = _scored(batch, cfg)
    E, A = batch.removed_reward.shape
    sig = _signals(batch)
    state = state if state is not None else EmaState.zeros(2 * A + 1)
    if state.mean.shape[0] != 2 * A + 1:
        raise ValueError(f"CCPO state tracks {state.mean.shape[0]} signals; a {A}-agent team needs {2 * A + 1}")
    removable = batch.removable
    team = batch.team_reward.to(torch.float64)
    if state.count == 0 or state.seen < cfg.min_samples:
        # No statistics yet (first step, or fewer than min_samples values seen): removable agents get raw Δ,
        # everyone else raw R_joint.
        r = torch.where(removable[None, :], batch.delta().to(torch.float64), team[:, None].expand(E, A))
    else:
        z = ema_normalize(sig, state, cfg.eps)  # normalise with the statistics from *before* this batch
        z_delta, z_joint, z_removed = z[:, :A], z[:, A], z[:, A + 1:]
        r = team[:, None].expand(E, A).clone()
        r = torch.where(removable[None, :], torch.tanh(cfg.alpha * z_delta), r)
        w = batch.gate_weights().to(r.device)  # (A, A): gated agent j -> its sources k
        gated = w.sum(dim=1) > 0
        if gated.any():
            mu_d, sd_d = state.mean[:A], state.sigma()[:A]  # (A,) every agent's Δ statistics (sources read theirs)
            g = torch.sigmoid((cfg.eta * mu_d / (sd_d + cfg.eps)).clamp(-cfg.gate_clip, cfg.gate_clip))
            if not gate:
                g = torch.ones_like(g)
            # mean over sources k of g_k·z(R_joint) + (1 − g_k)·z(R_¬k)
            mixed = z_joint[:, None] * (w @ g)[None, :] + (torch.nan_to_num(z_removed, nan=0.0) * (1 - g)[None, :]) @ w.T
            r = torch.where(gated[None, :], mixed, r)
    new_state = ema_update(state, sig, cfg.decay)  # then update with this batch's raw values
    return _mask(r, batch, cfg), new_state


def ccpo_credit(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig) -> tuple[Tensor, EmaState]:
    """CCPO v1 credit (see module docstring). Returns ``(E, A)`` rewards and the updated statistics."""
    return _ccpo(batch, state, cfg, gate=True)


def ccpo_no_gate_credit(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig) -> tuple[Tensor, EmaState]:
    """Ablation: CCPO with the gate fixed at ``g = 1`` (a gated agent gets ``z(R_joint)``)."""
    return _ccpo(batch, state, cfg, gate=False)


def shapley_credit(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig) -> tuple[Tensor, EmaState | None]:
    """Ablation "no history": the two-player Shapley split, no running statistics.

    Removable agent: ``0.5·(R_joint − R_¬k)``; gated agent: ``0.5·R_¬k + 0.5·R_joint`` (the mean over its
    sources ``k``); others: ``R_joint``. For the dyad the two shares sum to ``R_joint``.
    """
    batch = _scored(batch, cfg)
    E, A = batch.removed_reward.shape
    team = batch.team_reward.to(torch.float64)
    removed = torch.nan_to_num(batch.removed_reward, nan=0.0).to(torch.float64)
    r = team[:, None].expand(E, A).clone()
    r = torch.where(batch.removable[None, :], 0.5 * batch.delta().to(torch.float64), r)
    w = batch.gate_weights().to(r.device)
    gated = w.sum(dim=1) > 0
    if gated.any():
        r = torch.where(gated[None, :], 0.5 * removed @ w.T + 0.5 * team[:, None], r)
    return _mask(r, batch, cfg), state




def group_mean(values: Tensor, group_ids: Tensor | None) -> Tensor:
    """Each row's prompt-group mean of ``values (E,)`` (``group_ids None``: the values themselves)."""
    if group_ids is None:
        return values
    _, inv = torch.unique(group_ids, return_inverse=True)
    n = int(inv.max()) + 1 if inv.numel() else 0
    total = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, inv, values)
    count = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, inv, torch.ones_like(values))
    return (total / count)[inv]


def ccpo_v2_credit(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig) -> tuple[Tensor, EmaState | None]:
    """CCPO as released (reference ``two_model_trainer.py`` l.1063-1087; SPEC "The released recipe").

    ``R_J = +1 if R_joint > 0 else −1``; for a removable agent k, ``R_S = ±1`` likewise from ``R_¬k`` and the solo
    baseline ``b = mean of R_S over the prompt's group`` (``group_solo_baseline``; else ``b = R_S``, paired by
    index). Bonus ``1[R_J > 0 ∧ b < 0] − 1[R_J < 0 ∧ b > 0]`` (``event_bonus``; else ``0.5·(R_J − b)``).
    Removable agent (thinker): ``R_J + λ·bonus``; every other agent (solver): ``R_J``. Stateless; no truncation
    mask (a truncated answer simply scores −1). Pair with mean-centred GRPO (no std scaling: it erases the bonus).

    >>> b = CreditBatch(torch.tensor([1., 1.]), torch.tensor([[0., NAN], [0., NAN]]), torch.ones(2, 2, dtype=torch.bool),
    ...                 torch.tensor([-1, 0]), torch.tensor([0, 0]))
    >>> ccpo_v2_credit(b, None, CreditConfig())[0]
    tensor([[1.2000, 1.0000],
            [1.2000, 1.0000]], dtype=torch.float64)
    """
    E, A = batch.removed_reward.shape
    sign = lambda x: torch.where(x > 0, 1.0, -1.0).to(torch.float64)
    r_joint = sign(batch.team_reward)
    r = r_joint[:, None].expand(E, A).clone()
    for k in torch.nonzero(batch.removable).flatten().tolist():
        r_solo = sign(batch.removed_reward[:, k])
        b = group_mean(r_solo, batch.group_ids if cfg.group_solo_baseline else None)
        if cfg.event_bonus:
            bonus = ((r_joint > 0) & (b < 0)).to(torch.float64) - ((r_joint < 0) & (b > 0)).to(torch.float64)
        else:
            bonus = 0.5 * (r_joint - b)
        r[:, k] = r_joint + cfg.cf_lambda * bonus
    return r, state


#: SPIRAL's baseline decay (``train_spiral.py`` l.78-79: ``b ← 0.95·b + 0.05·R``).
RAE_DECAY = 0.95


def rae_credit(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig) -> tuple[Tensor, EmaState]:
    """Role-conditioned advantage estimation (SPIRAL, arXiv 2506.24119; ``train_spiral.py`` l.78-79, 158-163):
    ``A_k = R − b_k`` with ``b_k`` read *before* this batch updates it, then ``b_k ← 0.95·b_k + 0.05·mean(R_k)``
    over the batch's episodes; ``b_k`` starts at 0. ``R`` is the shared team reward after truncation. The state is
    an :class:`EmaState` whose ``mean`` holds ``b`` (``m2`` unused), so it checkpoints like CCPO's. ``(E, A)``."""
    batch = _scored(batch, cfg)
    E, A = batch.removed_reward.shape
    r = _mask(batch.team_reward[:, None].expand(E, A).to(torch.float64), batch, cfg)
    state = state if state is not None else EmaState.zeros(A)
    b = state.mean.to(r.device)
    out = r - b[None, :]
    new_b = RAE_DECAY * b + (1 - RAE_DECAY) * r.mean(dim=0)
    return out, EmaState(new_b, state.m2, state.count + 1, state.seen + E)


def shapley_weights(n_agents: int) -> Tensor:
    """``(2^A, A)`` matrix ``W`` with ``φ = v @ W``: for coalition ``m`` and agent ``k``, ``+w(|m| − 1)`` if
    ``k ∈ m`` and ``−w(|m|)`` otherwise, ``w(s) = s!(A − s − 1)!/A!`` (the Shapley weight of joining a coalition of
    size ``s``)."""
    import math

    A = n_agents
    w = [math.factorial(s) * math.factorial(A - s - 1) / math.factorial(A) for s in range(A)]
    W = torch.zeros(1 << A, A, dtype=torch.float64)
    for m in range(1 << A):
        size = bin(m).count("1")
        for k in range(A):
            W[m, k] = w[size - 1] if m >> k & 1 else (-w[size] if size < A else 0.0)
    return W


def exact_shapley_credit(batch: CreditBatch, state: EmaState | None, cfg: CreditConfig
                         ) -> tuple[Tensor, EmaState | None]:
    """Each agent's exact Shapley value of the team outcome, ``φ_k = Σ_{S ⊆ N∖k} w(|S|)·(v(S ∪ k) − v(S))``, over
    the coalition outcomes the env recorded from the joint episode's answers (SPEC "More credit methods": the vote's
    ``R_¬k`` is the one-removal special case; no extra generation). Efficient: ``Σ_k φ_k = R_joint`` (``v(∅) = 0``);
    symmetric voters get equal values; a voter who never changes any coalition's outcome gets 0. Truncation as
    every credit. ``(E, A)``."""
    batch = _scored(batch, cfg)
    if batch.coalition_reward is None:
        raise ValueError("exact Shapley credit needs every coalition's outcome, which only independent topologies "
                         "(no agent reads another) record; use another --algo for this env")
    E, A = batch.removed_reward.shape
    v = batch.coalition_reward.to(torch.float64)
    phi = v @ shapley_weights(A).to(v.device)
    return _mask(phi, batch, cfg), state
