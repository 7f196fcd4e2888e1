"""Policy and value losses. Pure functions on tensors, one row per loss kind in :data:`POLICY_LOSSES`.

* ``turn`` (CCPO v1 / ReMA reference ``compute_policy_loss`` with ``clip_mode=turn``): one ratio per turn,
  ``ρ = exp(mean over the turn's tokens of (log π_θ − log π_old))``, log-ratio clamped at ``log_ratio_clip``;
  PPO clip ``[1 − ε, 1 + ε_high]``; dual clip ``c`` for negative advantages.
* ``gspo`` (the released recipe, reference ``CCPO/verl/trainer/ppo/core_algos.py:1468-1554``): the same
  sequence ratio written per token as ``sg[s]·π_θ/sg[π_θ]`` (log clamped at ``log_ratio_clip``, 10 in the
  reference), asymmetric clip (3e-4 / 4e-4 in the reference), no dual clip, ``seq-mean-token-mean``.
* ``token`` (the GRPO scripts of the same repository; verl's ``vanilla`` loss): a ratio per token (log-ratio
  clamped to ±20), clip, dual clip, aggregated by ``agg`` (``token-mean`` in the reference).

Every loss takes ``(logprobs, old_logprobs, advantages, mask, cfg, ref_logprobs)`` and returns ``(loss, metrics)``
with metrics as detached 0-dim tensors (no host sync inside the math; the trainer reads them once per step).
An optional k3 KL to a reference policy is added by every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

AGG_MODES = ("seq-mean", "token-mean")


@dataclass(frozen=True)
class LossConfig:
    """Policy-loss hyper-parameters (SPEC defaults).

    Attributes:
        kind: ``turn``, ``gspo`` or ``token`` (see the module docstring).
        clip_eps: PPO clip ε (lower side ``1 − ε``).
        clip_eps_high: upper side ``1 + ε_high`` (``None``: ``ε``).
        dual_clip: dual-clip constant ``c`` (> 1) for negative advantages; ``None`` disables it (``gspo`` never
            applies it).
        log_ratio_clip: upper clamp of the sequence log-ratio (``turn``, ``gspo``).
        agg: ``seq-mean`` (every turn weighs 1; each turn's tokens averaged first) or ``token-mean`` (turns
            weighted by their token count). ``gspo`` always uses ``seq-mean``.
        kl_coef: weight of the k3 KL to the reference policy (0: off, no reference needed).
        value_clip: MAPPO value-loss clip.
    """

    kind: str = "turn"
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    dual_clip: float | None = 3.0
    log_ratio_clip: float = 3.0
    agg: str = "seq-mean"
    kl_coef: float = 0.0
    value_clip: float = 0.2

    @property
    def clip_high(self) -> float:
        return self.clip_eps if self.clip_eps_high is None else self.clip_eps_high


def _turn_mean(x: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum(-1) / m.sum(-1).clamp_min(1)


def aggregate(per_turn: Tensor, mask: Tensor, agg: str) -> Tensor:
    """Mean of per-turn values ``(N,)`` over turns (``seq-mean``) or over tokens (``token-mean``)."""
    if agg == "seq-mean":
        return per_turn.mean()
    if agg == "token-mean":
        w = mask.to(per_turn.dtype).sum(-1)
        return (per_turn * w).sum() / w.sum().clamp_min(1)
    raise ValueError(f"agg={agg!r}: use one of {AGG_MODES}")


def _clipped(adv: Tensor, ratio: Tensor, cfg: LossConfig, dual: bool) -> tuple[Tensor, Tensor]:
    """``max(−A·ρ, −A·clip(ρ))`` (then ``min(·, −A·c)`` for ``A < 0`` with the dual clip); also the clip flags."""
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_high)
    loss = torch.maximum(pg1, pg2)
    if dual and cfg.dual_clip is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * cfg.dual_clip), loss)
    return loss, (pg2 > pg1).detach()


def _with_kl(loss: Tensor, metrics: dict[str, Tensor], logprobs: Tensor, mask: Tensor, cfg: LossConfig,
             ref_logprobs: Tensor | None, agg: str) -> tuple[Tensor, dict[str, Tensor]]:
    if cfg.kl_coef > 0:
        if ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs ref_logprobs")
        d = ref_logprobs - logprobs
        kl = aggregate(_turn_mean(d.exp() - d - 1, mask), mask, agg)  # k3 estimator, >= 0
        loss = loss + cfg.kl_coef * kl
        metrics["policy/kl"] = kl.detach()
    return loss, metrics


def turn_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cfg: LossConfig,
                     ref_logprobs: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Turn-level clipped policy loss (CCPO v1).

    Args:
        logprobs: ``(N, L)`` log π_θ of the completion tokens (requires grad).
        old_logprobs: ``(N, L)`` π_old log-probs.
        advantages: ``(N,)`` one advantage per turn.
        mask: ``(N, L)`` completion mask.
        cfg: clip settings and aggregation.
        ref_logprobs: ``(N, L)`` reference log-probs, needed when ``cfg.kl_coef > 0``.
    Returns:
        ``(loss, metrics)``. At ``ρ = 1`` the loss equals ``−mean(A)`` under the chosen aggregation.
    """
    ratio = _turn_mean(logprobs - old_logprobs, mask).clamp(max=cfg.log_ratio_clip).exp()  # (N,)
    per_turn, clipped = _clipped(advantages.to(ratio.dtype), ratio, cfg, dual=True)
    metrics = {"policy/ratio_mean": ratio.detach().mean(), "policy/clip_frac": clipped.float().mean()}
    return _with_kl(aggregate(per_turn, mask, cfg.agg), metrics, logprobs, mask, cfg, ref_logprobs, cfg.agg)


def gspo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cfg: LossConfig,
                     ref_logprobs: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO as the reference writes it (``core_algos.py:1468-1554``): per token
    ``log s_t = log π_θ,t − sg[log π_θ,t] + sg[mean_t(log π_θ − log π_old)]`` clamped at ``log_ratio_clip``,
    ``max(−A·s_t, −A·clip(s_t, 1 − ε, 1 + ε_high))``, no dual clip, mean over each turn's tokens, then over turns.
    Arguments as :func:`turn_policy_loss`; at ``s = 1`` the loss equals ``−mean(A)``."""
    m = mask.to(logprobs.dtype)
    seq = (((logprobs - old_logprobs) * m).sum(-1) / m.sum(-1).clamp_min(1)).detach()  # (N,)
    log_s = (logprobs - logprobs.detach() + seq[:, None]).clamp(max=cfg.log_ratio_clip)  # (N, L)
    s = log_s.exp()
    adv = advantages.to(s.dtype)[:, None].expand_as(s)
    per_token, clipped = _clipped(adv, s, cfg, dual=False)
    metrics = {"policy/ratio_mean": seq.exp().mean(), "policy/clip_frac": _turn_mean(clipped.float(), mask).mean()}
    loss = _turn_mean(per_token, mask).mean()
    return _with_kl(loss, metrics, logprobs, mask, cfg, ref_logprobs, "seq-mean")


def token_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cfg: LossConfig,
                      ref_logprobs: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token ratio ``r_t = exp(clamp(log π_θ,t − log π_old,t, ±20))`` (verl's vanilla PPO loss), clip, dual
    clip, aggregated by ``cfg.agg``. Arguments as :func:`turn_policy_loss`."""
    ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0).exp()  # (N, L)
    adv = advantages.to(ratio.dtype)[:, None].expand_as(ratio)
    per_token, clipped = _clipped(adv, ratio, cfg, dual=True)
    metrics = {"policy/ratio_mean": _turn_mean(ratio.detach(), mask).mean(),
               "policy/clip_frac": _turn_mean(clipped.float(), mask).mean()}
    return _with_kl(aggregate(_turn_mean(per_token, mask), mask, cfg.agg), metrics, logprobs, mask, cfg,
                    ref_logprobs, cfg.agg)


#: Loss kinds: every function takes the same inputs (the trainer reads ``POLICY_LOSSES[cfg.kind]``).
POLICY_LOSSES: dict[str, Callable[..., tuple[Tensor, dict[str, Tensor]]]] = {
    "turn": turn_policy_loss,
    "gspo": gspo_policy_loss,
    "token": token_policy_loss,
}


def policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cfg: LossConfig,
                ref_logprobs: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The policy loss of kind ``cfg.kind`` (see :data:`POLICY_LOSSES`)."""
    try:
        fn = POLICY_LOSSES[cfg.kind]
    except KeyError:
        raise ValueError(f"loss kind {cfg.kind!r}: use one of {sorted(POLICY_LOSSES)}") from None
    return fn(logprobs, old_logprobs, advantages, mask, cfg, ref_logprobs)


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float = 0.2) -> Tensor:
    """Clipped value loss ``0.5·mean(max((V − R)², (V_old + clip(V − V_old, ±c) − R)²))``; all ``(N,)``."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2).mean()
