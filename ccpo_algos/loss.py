"""Policy and value losses. Pure functions on tensors.

Turn-level ratio (ReMA / CCPO reference ``compute_policy_loss`` with ``clip_mode=turn``):
``ρ = exp(mean over the turn's tokens of (log π_θ − log π_old))``, log-ratio clamped at ``log_ratio_clip``;
PPO clip ε; dual clip ``c`` for negative advantages; optional k3 KL to a reference policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

AGG_MODES = ("seq-mean", "token-mean")


@dataclass(frozen=True)
class LossConfig:
    """Policy-loss hyper-parameters (SPEC defaults).

    Attributes:
        clip_eps: PPO clip ε.
        dual_clip: dual-clip constant ``c`` (> 1) for negative advantages; ``None`` disables it.
        log_ratio_clip: upper clamp of the turn's mean log-ratio.
        agg: ``seq-mean`` (every turn weighs 1) or ``token-mean`` (turns weighted by their token count).
        kl_coef: weight of the k3 KL to the reference policy (0: off, no reference needed).
        value_clip: MAPPO value-loss clip.
    """

    clip_eps: float = 0.2
    dual_clip: float | None = 3.0
    log_ratio_clip: float = 3.0
    agg: str = "seq-mean"
    kl_coef: float = 0.0
    value_clip: float = 0.2


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


def policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cfg: LossConfig,
                ref_logprobs: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Turn-level clipped policy loss.

    Args:
        logprobs: ``(N, L)`` log π_θ of the completion tokens (requires grad).
        old_logprobs: ``(N, L)`` behaviour log-probs.
        advantages: ``(N,)`` one advantage per turn.
        mask: ``(N, L)`` completion mask.
        cfg: clip settings and aggregation.
        ref_logprobs: ``(N, L)`` reference log-probs, needed when ``cfg.kl_coef > 0``.
    Returns:
        ``(loss, metrics)``. At ``ρ = 1`` the loss equals ``−mean(A)`` under the chosen aggregation.
    """
    log_ratio = _turn_mean(logprobs - old_logprobs, mask).clamp(max=cfg.log_ratio_clip)
    ratio = log_ratio.exp()
    adv = advantages.to(ratio.dtype)
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps)
    per_turn = torch.maximum(pg1, pg2)
    if cfg.dual_clip is not None:
        per_turn = torch.where(adv < 0, torch.minimum(per_turn, -adv * cfg.dual_clip), per_turn)
    loss = aggregate(per_turn, mask, cfg.agg)
    metrics = {
        "policy/ratio_mean": float(ratio.detach().mean()),
        "policy/clip_frac": float((pg2.detach() > pg1.detach()).float().mean()),
    }
    if cfg.kl_coef > 0:
        if ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs ref_logprobs")
        d = ref_logprobs - logprobs
        kl = _turn_mean(d.exp() - d - 1, mask)  # k3 estimator, >= 0
        kl_agg = aggregate(kl, mask, cfg.agg)
        loss = loss + cfg.kl_coef * kl_agg
        metrics["policy/kl"] = float(kl_agg.detach())
    return loss, metrics


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip: float = 0.2) -> Tensor:
    """Clipped value loss ``0.5·mean(max((V − R)², (V_old + clip(V − V_old, ±c) − R)²))``; all ``(N,)``."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2).mean()
