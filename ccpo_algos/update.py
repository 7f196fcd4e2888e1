"""One role's policy update from a rollout (PPO-style clipped loss over micro- and mini-batches, KL to the base),
and the engine sync that follows it. Every tensor lives on the trainer's device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ccpo_agents.hf_backend import CRITIC, HFTeam
from ccpo_agents.policy import ChatFormatter, Completion
from ccpo_algos.config import TrainConfig
from ccpo_algos.distributed import SINGLE, DistContext
from ccpo_algos.loss import LossConfig, policy_loss, value_loss
from ccpo_algos.rollout import RolloutBatch


def sync(policy: Any, team: HFTeam, role: str, run_dir: Path) -> None:
    """Put ``role``'s current adapter into the rollout backend.

    An adapter that is still the identity (``lora_B == 0``, never updated) is served as the bare base model: the
    outputs are the same, without the adapter's extra matmuls.
    """
    if team.is_identity(role):
        policy.use_base(role)
    else:
        policy.load_adapter(role, team.save_adapter(role, run_dir / "adapters" / role))


def _pad(rows: list[list[float]], width: int, device: torch.device) -> torch.Tensor:
    return torch.tensor([r + [0.0] * (width - len(r)) for r in rows], dtype=torch.float32, device=device)


def mini_batches(keep: list[int], group_size: int, prompts_per_mini_batch: int, n_episodes: int,
                 episode: list[int] | None = None) -> list[list[int]]:
    """Split turn indices into PPO mini-batches of whole prompt groups (turn ``t`` belongs to episode
    ``episode[t]``, default ``t``, which is in group ``episode // group_size``); ``prompts_per_mini_batch = 0``: one
    mini-batch. Always ``n_prompts / per`` mini-batches, empty ones included, so that every data-parallel rank takes
    the same number of optimiser steps."""
    if not prompts_per_mini_batch:
        return [keep]
    n = max(1, -(-n_episodes // (group_size * prompts_per_mini_batch)))
    out: list[list[int]] = [[] for _ in range(n)]
    for t in keep:
        out[(t if episode is None else episode[t]) // group_size // prompts_per_mini_batch].append(t)
    return out


def prompt_major_order(turns: list[Completion], idx: list[int]) -> list[int]:
    """``idx`` reordered for micro-batching: by prompt tokens, lexicographically, so that turns sharing a prompt (a
    GRPO group) or a prompt prefix (the same question, another agent's message after it) are neighbours and the
    trainer runs what they share once (:mod:`ccpo_agents.prefix_plan`); then by completion length. Deterministic;
    the loss does not depend on the order."""
    return sorted(idx, key=lambda e: (turns[e].prompt_ids, len(turns[e].completion_ids), e))


def _trainer_logprobs(team: HFTeam, role: str, turns: list[Completion], idx: list[int], cfg: TrainConfig
                      ) -> dict[int, torch.Tensor]:
    """Per-episode log-probs of the current parameters, no grad (π_old for several optimiser steps)."""
    out: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for s in range(0, len(idx), cfg.micro_batch):
            mb = idx[s:s + cfg.micro_batch]
            lp, _ = team.token_logprobs(role, [turns[e].prompt_ids for e in mb], [turns[e].completion_ids for e in mb],
                                        cfg.micro_batch, temperature=cfg.temperature)
            out.update({e: lp[i, :len(turns[e].completion_ids)] for i, e in enumerate(mb)})
    return out


def policy_step(team: HFTeam, role: str, opt: torch.optim.Optimizer, turns: list[Completion], adv: torch.Tensor,
                cfg: TrainConfig, loss_cfg: LossConfig, ctx: DistContext = SINGLE, episode: list[int] | None = None
                ) -> dict[str, torch.Tensor]:
    """The optimiser steps of ``role`` on its turns with per-turn advantages ``adv`` (aligned with ``turns``;
    ``episode[t]``: the episode of turn ``t``, which keeps prompt groups whole in PPO mini-batches; default: one
    turn per episode): one per PPO mini-batch, gradients averaged over data-parallel ranks and clipped. Every tensor
    lives on ``team.device``; metrics are returned as 0-dim tensors (read once by the caller).

    π_old (``cfg.pi_old``): ``trainer`` = the trainer's log-probs before this step's first update (with one
    mini-batch that is ``logp.detach()``, no extra pass; with several, one no-grad pass first), ``engine`` = vLLM's
    behaviour log-probs. ``policy/engine_log_ratio`` = mean over tokens of (trainer − engine) log-prob at the
    sampling parameters: the engine/trainer mismatch.
    """
    dev = team.device
    keep = [e for e, c in enumerate(turns) if c.completion_ids]  # skipped / did-not-fit turns train nothing
    episode = list(range(len(turns))) if episode is None else episode
    n_episodes = max(episode) + 1 if episode else 0
    batches = mini_batches(keep, cfg.group_size, cfg.ppo_mini_batch // ctx.world if cfg.ppo_mini_batch else 0,
                           n_episodes, episode)
    before = _trainer_logprobs(team, role, turns, prompt_major_order(turns, keep), cfg) if len(batches) > 1 else None
    zero = torch.zeros((), device=dev)
    stats = {k: zero.clone() for k in ("loss", "ratio", "kl", "clip_frac", "mismatch", "mismatch_abs", "tokens")}
    params = team.trainable_parameters(role)
    grad_norms = []
    for batch in batches:
        batch = prompt_major_order(turns, batch)
        opt.zero_grad(set_to_none=True)
        n_tokens = sum(len(turns[e].completion_ids) for e in batch)
        for s in range(0, len(batch), cfg.micro_batch):
            mb = batch[s:s + cfg.micro_batch]
            prompts = [turns[e].prompt_ids for e in mb]
            comps = [turns[e].completion_ids for e in mb]
            lp, mask = team.token_logprobs(role, prompts, comps, cfg.micro_batch, temperature=cfg.temperature)
            engine = _pad([turns[e].logprobs for e in mb], lp.shape[1], dev)
            trainer_old = lp.detach() if before is None else torch.stack(
                [torch.nn.functional.pad(before[e], (0, lp.shape[1] - before[e].shape[0])) for e in mb])
            old = trainer_old if cfg.pi_old == "trainer" else engine
            ref = team.token_logprobs(role, prompts, comps, cfg.micro_batch, reference=True,
                                      temperature=cfg.temperature)[0] if loss_cfg.kl_coef > 0 else None
            loss, m = policy_loss(lp, old, adv[mb].to(dev, torch.float32), mask, loss_cfg, ref)
            per_turn = loss_cfg.kind == "gspo" or loss_cfg.agg == "seq-mean"  # micro-batch weight in the mean
            weight = len(mb) / len(batch) if per_turn else sum(len(c) for c in comps) / n_tokens
            (loss * weight).backward()
            w = weight / len(batches)  # every mini-batch weighs the same in the logged means
            stats["loss"] += loss.detach() * w
            stats["ratio"] += m["policy/ratio_mean"] * w
            stats["clip_frac"] += m["policy/clip_frac"] * w
            stats["kl"] += m.get("policy/kl", zero) * w
            diff = (trainer_old - engine) * mask
            stats["mismatch"] += diff.sum()
            stats["mismatch_abs"] += diff.abs().sum()
            stats["tokens"] += mask.sum()
        ctx.average_grads(params)
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if any(p.grad is not None for p in params) \
            else zero
        if not torch.isfinite(norm):  # one host sync per optimiser step: never step into NaN weights
            raise FloatingPointError(f"{role}: the gradient is not finite (loss {float(stats['loss']):.4g}); the run "
                                     "stops before this update, its last checkpoint is intact")
        grad_norms.append(norm)
        opt.step()
    tokens = stats.pop("tokens").clamp_min(1)
    stats["mismatch"] /= tokens
    stats["mismatch_abs"] /= tokens
    stats["grad_norm"] = torch.stack([g.to(dev) for g in grad_norms]).mean()
    return stats


def update_role(team: HFTeam, role: str, opt: torch.optim.Optimizer, sched: Any, rb: RolloutBatch,
                adv: torch.Tensor, cfg: TrainConfig, loss_cfg: LossConfig, ctx: DistContext = SINGLE
                ) -> dict[str, float]:
    """:func:`policy_step` on every joint turn of ``role`` in ``rb``, then one scheduler step; returns the role's
    metrics as floats. ``adv``: ``(E,)`` one advantage per episode for all of the role's turns, or ``(E, T)`` one per
    turn (per-turn credit rules)."""
    turns, episode, index = rb.role_turns(role)
    per_turn = adv[episode, index] if adv.dim() == 2 else adv[episode]  # (n_turns,)
    st = {k: float(v) for k, v in policy_step(team, role, opt, turns, per_turn, cfg, loss_cfg, ctx, episode).items()}
    team.mark_updated(role)
    sched.step()
    return {f"losses/policy_{role}": st["loss"], f"policy/ratio_{role}": st["ratio"],
            f"policy/clip_frac_{role}": st["clip_frac"], f"policy/kl_{role}": st["kl"],
            f"policy/engine_log_ratio_{role}": st["mismatch"], f"policy/engine_log_ratio_abs_{role}": st["mismatch_abs"],
            f"grad_norm/{role}": st["grad_norm"], f"charts/lr_{role}": sched.get_last_lr()[0]}


def update_critic(team: HFTeam, opt: torch.optim.Optimizer, sched: Any, values: torch.Tensor, target: torch.Tensor,
                  cfg: TrainConfig, ctx: DistContext = SINGLE) -> dict[str, float]:
    """One optimiser step of the centralised critic: clipped value loss of ``values (E, S)`` (with grad) against
    ``target (E, S)``, gradients averaged over ranks and clipped."""
    vl = value_loss(values, values.detach(), target, cfg.value_clip)
    opt.zero_grad(set_to_none=True)
    vl.backward()
    params = team.trainable_parameters(CRITIC)
    ctx.average_grads(params)
    norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
    opt.step()
    sched.step()
    return {"grad_norm/critic": norm, "losses/value": vl.item()}


def critic_prompts(team: HFTeam, rb: RolloutBatch) -> list[list[int]]:
    """Chat-templated joint transcripts before each stage, flattened ``(E·S)``."""
    fmt = ChatFormatter(team.tokenizer, {})
    return [fmt.prompt_ids(CRITIC, text) for texts in rb.stage_texts for text in texts]
