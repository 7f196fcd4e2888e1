"""The training loop: ROLLOUT -> CREDIT -> ADVANTAGE -> UPDATE -> SYNC -> LOG, the same for every algorithm.

The algorithm is a row of :data:`ccpo_algos.algorithms.ALGORITHMS`; the loop never branches on its name.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccpo_agents.hardware import resolve_device, resolve_dtype
from ccpo_agents.hf_backend import CRITIC, HFTeam, LoraSpec
from ccpo_agents.models import resolve_model
from ccpo_algos.advantage import stage_targets
from ccpo_algos.algorithms import ALGORITHMS
from ccpo_algos.build import (
    advantage_config,
    build_policy,
    credit_config,
    eval_env_pool,
    loss_config,
    new_run_dir,
    sampling_config,
    task_source,
    warmup_schedule,
)
from ccpo_algos.checkpoint import (
    clean_partial_writes,
    latest_checkpoint,
    load_checkpoint,
    mark_best,
    prune_checkpoints,
    save_checkpoint,
)
from ccpo_algos.config import TrainConfig, load_run_config
from ccpo_algos.credit import CreditBatch, EmaState
from ccpo_algos.distributed import DistContext
from ccpo_algos.evaluation import evaluate, save_eval_items
from ccpo_algos.metrics import rollout_metrics
from ccpo_algos.rollout import collect, request_seed, team_layout
from ccpo_algos.runlog import RunLogger
from ccpo_algos.update import critic_prompts, sync, update_critic, update_role
from ccpo_envs import make


def batch_indices(seed: int, step: int, batch: int, n: int) -> list[int]:
    """Task indices of ``step`` (1-based): epochs of seeded permutations, a pure function of the step."""
    perms: dict[int, np.ndarray] = {}  # a step spans at most two epochs: each permutation is drawn once
    out = []
    for pos in range((step - 1) * batch, step * batch):
        epoch, k = divmod(pos, n)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        out.append(int(perms[epoch][k]))
    return out


def roles_to_train(cfg: TrainConfig, step: int, agents: list[str]) -> list[str]:
    """``simultaneous``: all; ``alternate``/``alternate_v2``: one agent per block of ``switch_every`` steps.

    ``alternate`` is CCPO v1's formula ``idx = (step // switch_every) mod A`` with steps counted from 1, so its
    first block is one step shorter; ``alternate_v2`` is the released recipe's ``(step − 1) // switch_every``
    (``two_model_trainer.py`` l.354): every block has ``switch_every`` steps.
    """
    if cfg.schedule == "simultaneous":
        return list(agents)
    block = (step - 1) // cfg.switch_every if cfg.schedule == "alternate_v2" else step // cfg.switch_every
    return [agents[block % len(agents)]]


# ------------------------------------------------------------------------------------------------ the loop


def train(cfg: TrainConfig, policy: Any | None = None,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """Train a team; returns the run folder (config.json, metrics.jsonl, checkpoints/, adapters/, tb/).

    Args:
        cfg: the configuration (validated first: a bad value fails before any model is loaded).
        policy: a rollout backend to use instead of building one (e.g. a shared engine in tests); it must serve
            adapters for the team's agents.
        on_step: called with ``(step, metrics)`` after each step is logged (e.g. an outer progress bar).
    """
    cfg.validate()  # imports cfg.plugins first
    # 'auto' is resolved once, here, and config.json records the result: a run resumed on other hardware (a CPU
    # with native bf16, where 'auto' is bfloat16) keeps the dtype its first steps ran in
    device = resolve_device(cfg.device)
    cfg = dataclasses.replace(cfg, dtype=resolve_dtype(cfg.dtype, device))
    algo = ALGORITHMS[cfg.algo]
    ctx = DistContext.from_env()
    if cfg.prompts_per_step % ctx.world:
        raise ValueError(f"bad config: prompts_per_step={cfg.prompts_per_step} must be divisible by the "
                         f"{ctx.world} data-parallel ranks")
    if cfg.ppo_mini_batch % ctx.world:
        raise ValueError(f"bad config: ppo_mini_batch={cfg.ppo_mini_batch} must be divisible by the "
                         f"{ctx.world} data-parallel ranks")
    if cfg.resume:
        load_run_config(cfg.resume)  # a run folder with a readable config.json, else a clear ValueError
        latest_checkpoint(Path(cfg.resume))  # a dangling `latest` fails here, before anything is written

    # --- SETUP: tasks and envs (E = B·G training envs, one per episode), before any file is written
    train_src = task_source(cfg, "train", cfg.train_size)
    eval_src = task_source(cfg, cfg.eval_split, cfg.eval_size)
    E = cfg.prompts_per_step // ctx.world * cfg.group_size  # this rank's episodes
    counterfactual = algo.needs_counterfactual or cfg.counterfactual_metrics
    envs = [make(cfg.env, api="aec", source=train_src, **cfg.env_kwargs(counterfactual)) for _ in range(E)]
    eval_envs = eval_env_pool(cfg, eval_src, cfg.eval_size)
    agents = list(envs[0].unwrapped.possible_agents)
    stage, gate = team_layout(envs[0].unwrapped.topology)  # each agent's first stage (critic columns)
    used = sorted(set(stage.tolist()))  # the stages where some agent speaks first
    dense = torch.tensor([used.index(s) for s in stage.tolist()])  # the advantage's stage layout: 0..S-1
    if algo.needs_coalitions and not envs[0].unwrapped.topology.independent:
        raise ValueError(f"--algo {cfg.algo} needs every coalition's outcome, which env {cfg.env} does not record "
                         "(its agents read each other's messages); use it on an independent team")

    # --- SETUP: the run folder (everything above is validated)
    if cfg.resume:
        run_dir = Path(cfg.resume)
    elif ctx.world == 1:
        run_dir = new_run_dir(cfg)
    else:  # every rank must agree on the folder: rank 0 picks it
        picked = [str(new_run_dir(cfg)) if ctx.main else None]
        torch.distributed.broadcast_object_list(picked, src=0)
        run_dir = Path(picked[0])
    if ctx.main:
        if cfg.resume:
            clean_partial_writes(run_dir)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    adapters_dir = run_dir if ctx.main else run_dir / f"rank{ctx.rank}"

    # --- SETUP: models, optimisers
    model_path = resolve_model(cfg.model)
    torch.manual_seed(cfg.seed)
    team = HFTeam(model_path, agents, LoraSpec(cfg.lora_r, cfg.lora_alpha), cfg.dtype,
                  critic=algo.needs_critic, seed=cfg.seed, device=device,
                  full_roles=agents if cfg.finetune == "full" else ())
    owners = agents + ([CRITIC] if algo.needs_critic else [])
    optimizers = {r: torch.optim.AdamW(team.trainable_parameters(r), lr=cfg.critic_lr if r == CRITIC else cfg.lr,
                                       weight_decay=cfg.weight_decay) for r in owners}
    schedulers = {r: warmup_schedule(o, cfg.warmup_steps) for r, o in optimizers.items()}
    credit_cfg = credit_config(cfg)
    adv_cfg, loss_cfg, sampling = advantage_config(cfg), loss_config(cfg), sampling_config(cfg)

    start, credit_state = 0, None
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt is not None:
        st = load_checkpoint(ckpt, team, optimizers, schedulers)
        start = int(st["step"])
        credit_state = EmaState.from_state_dict(st["credit_state"]) if st["credit_state"] else None
    policy = policy if policy is not None else build_policy(cfg, model_path, agents)
    for r in agents:  # the engine serves exactly the trainer's adapters from the first rollout on
        sync(policy, team, r, adapters_dir)
    logger = RunLogger(run_dir, cfg, start, resumed=bool(cfg.resume)) if ctx.main else None
    bar = None
    if cfg.progress and ctx.main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"{cfg.algo}/{cfg.env}", unit="step")

    for step in range(start + 1, cfg.steps + 1):
        metrics: dict[str, float] = {}
        # ROLLOUT
        t0 = time.perf_counter()
        tasks = ctx.shard([train_src[i] for i in batch_indices(cfg.seed, step, cfg.prompts_per_step, len(train_src))])
        rb = collect(envs, tasks, cfg.group_size, policy, sampling, seed=request_seed(cfg.seed, step, ctx.rank))
        metrics["perf/seconds_rollout"] = time.perf_counter() - t0
        metrics["perf/tokens_generated"] = float(rb.tokens_generated())

        # CREDIT (over the global batch: CCPO's running statistics are batch-global)
        local = rb.credit_batch(gate, group_offset=ctx.rank * len(tasks))  # group ids unique across ranks
        global_batch = CreditBatch(ctx.gather_rows(local.team_reward), ctx.gather_rows(local.removed_reward),
                                   ctx.gather_rows(local.finished), gate, ctx.gather_rows(local.group_ids),
                                   None if local.coalition_reward is None else ctx.gather_rows(local.coalition_reward),
                                   None if local.turn_reward is None else ctx.gather_rows(local.turn_reward))
        rewards, credit_state = algo.credit(global_batch, credit_state, credit_cfg)  # (world·E, A[, T])
        if not torch.isfinite(rewards).all():
            raise FloatingPointError(f"step {step}: the credit is not finite; check the credit settings (alpha, eta, "
                                     "...); the run stops here, its last checkpoint is intact")
        rewards = rewards[ctx.rank * E:(ctx.rank + 1) * E]  # (E, A[, T]) this rank's episodes

        # ADVANTAGE (on the trainer's device, like every tensor of the update)
        t0 = time.perf_counter()
        values = None
        if algo.needs_critic:
            flat = team.values(critic_prompts(team, rb), cfg.micro_batch)  # (E·S,), with grad for the update
            stage_values = flat.view(len(rb), -1)
            values = stage_values.detach()[:, stage.tolist()]
        adv, returns = algo.advantage(rewards.to(team.device), rb.group_ids.to(team.device), values, dense,
                                      adv_cfg)  # (E, A[, T]); ``dense`` is layout (host ints)

        # UPDATE
        trained = roles_to_train(cfg, step, agents)
        for r in trained:
            j = agents.index(r)
            metrics.update(update_role(team, r, optimizers[r], schedulers[r], rb, adv[:, j], cfg, loss_cfg, ctx))
        metrics["policy/engine_log_ratio"] = sum(metrics[f"policy/engine_log_ratio_{r}"] for r in trained) / len(trained)
        metrics["policy/engine_log_ratio_abs"] = sum(
            metrics[f"policy/engine_log_ratio_abs_{r}"] for r in trained) / len(trained)
        if algo.needs_critic:  # the critic regresses the row's returns at each stage where some agent starts
            target = stage_targets(returns, dense).to(torch.float32)  # (E, S')
            metrics.update(update_critic(team, optimizers[CRITIC], schedulers[CRITIC], stage_values[:, used], target,
                                         cfg, ctx))
        metrics["perf/seconds_update"] = time.perf_counter() - t0

        # SYNC
        t0 = time.perf_counter()
        for r in trained:
            sync(policy, team, r, adapters_dir)
        metrics["perf/seconds_sync"] = time.perf_counter() - t0

        # LOG
        metrics.update(rollout_metrics(rb, rewards))  # this rank's share of the batch
        metrics["charts/accuracy_joint_global"] = global_batch.team_reward.float().mean().item()
        metrics["charts/trained_" + "_".join(trained)] = 1.0
        if ctx.main and (cfg.eval_every and step % cfg.eval_every == 0 or step == cfg.steps):
            t0 = time.perf_counter()
            items: list[dict[str, Any]] = []
            metrics.update(evaluate(policy, eval_envs, eval_src, cfg.eval_size, cfg, items))
            metrics["perf/seconds_eval"] = time.perf_counter() - t0
            save_eval_items(run_dir, step, items)
        if logger is not None:
            logger.log(step, metrics)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(acc=f"{metrics['charts/accuracy_joint']:.2f}",
                            eval=f"{metrics.get('eval/charts/accuracy_joint', float('nan')):.2f}")
        if ctx.main and ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps):
            save_checkpoint(run_dir, step, team, optimizers, schedulers, credit_state)
            if "eval/charts/accuracy_joint" in metrics:
                mark_best(run_dir, step, metrics["eval/charts/accuracy_joint"])
            prune_checkpoints(run_dir, cfg.keep_checkpoints)
        if on_step is not None and ctx.main:
            on_step(step, metrics)
        ctx.barrier()

    if not ctx.main:  # the other ranks leave their final adapters for inspection
        for r in agents:
            team.save_adapter(r, adapters_dir / "final" / r)
    if logger is not None:
        logger.close()
    if bar is not None:
        bar.close()
    return run_dir


