"""The training loop: ROLLOUT -> CREDIT -> ADVANTAGE -> UPDATE -> SYNC -> LOG, the same for every algorithm.

The algorithm is a row of :data:`ccpo_algos.algorithms.ALGORITHMS`; the loop never branches on its name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccpo_agents.hardware import resolve_device, resolve_dtype
from ccpo_agents.hf_backend import CRITIC, HFTeam, LoraSpec
from ccpo_agents.models import resolve_model
from ccpo_agents.policy import DEFAULT_ROLE_PROMPTS, ChatFormatter, Completion, SamplingConfig
from ccpo_algos.advantage import AdvantageConfig
from ccpo_algos.algorithms import ALGORITHMS
from ccpo_algos.checkpoint import (
    atomic_write_text,
    clean_partial_writes,
    latest_checkpoint,
    load_checkpoint,
    mark_best,
    prune_checkpoints,
    save_checkpoint,
)
from ccpo_algos.config import TrainConfig, load_run_config
from ccpo_algos.credit import CreditBatch, CreditConfig, EmaState
from ccpo_algos.distributed import SINGLE, DistContext
from ccpo_algos.loss import LossConfig, policy_loss, value_loss
from ccpo_algos.metrics import rollout_metrics
from ccpo_algos.rollout import RolloutBatch, collect, request_seed, team_layout
from ccpo_envs import make
from ccpo_envs.prompts import RELEASED_ROLE_PROMPTS  # the topology's prompts live with the envs
from ccpo_envs.registry import resolve_source

# ------------------------------------------------------------------------------------------------- helpers


def role_prompts(cfg: TrainConfig) -> dict[str, str | None]:
    p: dict[str, str | None] = dict(RELEASED_ROLE_PROMPTS if cfg.template == "v2" else DEFAULT_ROLE_PROMPTS)
    if cfg.thinker_prompt is not None:
        p["thinker"] = cfg.thinker_prompt
    if cfg.solver_prompt is not None:
        p.update(reasoner=cfg.solver_prompt, voter=cfg.solver_prompt)
    return p


def env_kwargs(cfg: TrainConfig, counterfactual: bool) -> dict[str, Any]:
    if cfg.env == "dyad_v0":
        return {"counterfactual": counterfactual, "truncation": cfg.truncation, "template": cfg.template}
    return {"n": cfg.n_voters, "tie_rule": cfg.tie_rule, "truncation": cfg.truncation}


def team_agents(cfg: TrainConfig) -> list[str]:
    return ["thinker_0", "reasoner_0"] if cfg.env == "dyad_v0" else [f"voter_{i}" for i in range(cfg.n_voters)]


def build_policy(cfg: TrainConfig, model_path: str, roles: list[str]) -> Any:
    """The rollout backend named by ``cfg.backend``."""
    import torch

    dtype = resolve_dtype(cfg.dtype, "cuda" if torch.cuda.is_available() else "cpu")  # where vLLM runs
    if cfg.finetune == "full":
        from ccpo_agents.full_backend import PerRoleEngines

        return PerRoleEngines(model_path, roles, max_model_len=cfg.max_model_len, seed=cfg.seed,
                              role_prompts=role_prompts(cfg), dtype=dtype)
    if cfg.backend == "vllm":
        from ccpo_agents.vllm_backend import VLLMPolicy

        return VLLMPolicy(model_path, roles, max_model_len=cfg.max_model_len, max_lora_rank=cfg.lora_r,
                          seed=cfg.seed, role_prompts=role_prompts(cfg), dtype=dtype)
    from ccpo_agents.server_backend import ServerPolicy, VLLMServer

    endpoints = list(cfg.endpoints)
    api_key = os.environ.get(cfg.api_key_env) or None  # remote servers: the key comes from the environment
    if not endpoints:
        server = VLLMServer(model_path, max_model_len=cfg.max_model_len, max_lora_rank=cfg.lora_r,
                            max_loras=len(roles), dtype=dtype).start()
        endpoints, api_key = [server.url], server.api_key
    return ServerPolicy(endpoints, model_path, roles, cfg.max_model_len, role_prompts(cfg), api_key=api_key)


def task_source(cfg: TrainConfig, split: str, size: int) -> Any:
    """The run's task source for one split (extraction modes apply to generated and math tasks)."""
    kw: dict[str, Any] = {"path": cfg.task_path} if cfg.task_path else {}
    if cfg.task_path is None and cfg.task not in ("gsm8k", "hendrycks_math", "math500", "logiqa"):
        kw["modes"] = cfg.extract_modes
    return resolve_source(cfg.task, split=split, seed=cfg.seed, size=size, **kw)


def eval_env_pool(cfg: TrainConfig, source: Any, size: int) -> list[Any]:
    """AEC envs for evaluation (counterfactuals on, so reasoner-alone accuracy is reported): up to 32 (at least
    ``eval_samples``), reused across batches of ``size`` tasks."""
    n = max(min(size, 32), cfg.eval_samples)  # sampled evaluation plays eval_samples episodes of a task at once
    return [make(cfg.env, api="aec", source=source, **env_kwargs(cfg, True)) for _ in range(n)]


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
    """``simultaneous``: all; ``alternate``/``alternate_v2``: one agent per block of ``switch_every`` steps, first
    agent first.

    ``alternate`` is CCPO v1's formula ``idx = (step // switch_every) mod A`` with steps counted from 1, so its
    first block is one step shorter; ``alternate_v2`` is the released recipe's ``(step − 1) // switch_every``
    (``two_model_trainer.py`` l.354): every block has ``switch_every`` steps.
    """
    if cfg.schedule == "simultaneous":
        return list(agents)
    block = (step - 1) // cfg.switch_every if cfg.schedule == "alternate_v2" else step // cfg.switch_every
    return [agents[block % len(agents)]]


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


def _warmup(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / max(1, steps)))


# -------------------------------------------------------------------------------------------------- update


def mini_batches(keep: list[int], group_size: int, prompts_per_mini_batch: int, n_episodes: int) -> list[list[int]]:
    """Split episode indices into PPO mini-batches of whole prompt groups (episode ``e`` is in group
    ``e // group_size``); ``prompts_per_mini_batch = 0``: one mini-batch. Always ``n_prompts / per`` mini-batches,
    empty ones included, so that every data-parallel rank takes the same number of optimiser steps."""
    if not prompts_per_mini_batch:
        return [keep]
    n = max(1, -(-n_episodes // (group_size * prompts_per_mini_batch)))
    out: list[list[int]] = [[] for _ in range(n)]
    for e in keep:
        out[e // group_size // prompts_per_mini_batch].append(e)
    return out


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
                cfg: TrainConfig, loss_cfg: LossConfig, ctx: DistContext = SINGLE) -> dict[str, torch.Tensor]:
    """The optimiser steps of ``role`` on its turns with per-turn advantages ``adv (E,)``: one per PPO mini-batch,
    gradients averaged over data-parallel ranks and clipped. Every tensor lives on ``team.device``; metrics are
    returned as 0-dim tensors (read once by the caller).

    π_old (``cfg.pi_old``): ``trainer`` = the trainer's log-probs before this step's first update (with one
    mini-batch that is ``logp.detach()``, no extra pass; with several, one no-grad pass first), ``engine`` = vLLM's
    behaviour log-probs. ``policy/engine_log_ratio`` = mean over tokens of (trainer − engine) log-prob at the
    sampling parameters: the engine/trainer mismatch.
    """
    dev = team.device
    keep = [e for e, c in enumerate(turns) if c.completion_ids]  # skipped / did-not-fit turns train nothing
    batches = mini_batches(keep, cfg.group_size, cfg.ppo_mini_batch // ctx.world if cfg.ppo_mini_batch else 0,
                           len(turns))
    by_length = sorted(keep, key=lambda e: (len(turns[e].prompt_ids) + len(turns[e].completion_ids), e))
    before = _trainer_logprobs(team, role, turns, by_length, cfg) if len(batches) > 1 else None
    zero = torch.zeros((), device=dev)
    stats = {k: zero.clone() for k in ("loss", "ratio", "kl", "clip_frac", "mismatch", "mismatch_abs", "tokens")}
    params = team.trainable_parameters(role)
    grad_norms = []
    for batch in batches:
        # micro-batches of similar lengths: less padding in every forward (the loss weights do not depend on order)
        batch = sorted(batch, key=lambda e: (len(turns[e].prompt_ids) + len(turns[e].completion_ids), e))
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


def update_role(team: HFTeam, role: str, opt: torch.optim.Optimizer, sched: Any, turns: list[Completion],
                adv: torch.Tensor, cfg: TrainConfig, loss_cfg: LossConfig, ctx: DistContext = SINGLE
                ) -> dict[str, float]:
    """:func:`policy_step`, then one scheduler step; returns the role's metrics as floats."""
    st = {k: float(v) for k, v in policy_step(team, role, opt, turns, adv, cfg, loss_cfg, ctx).items()}
    team.mark_updated(role)
    sched.step()
    return {f"losses/policy_{role}": st["loss"], f"policy/ratio_{role}": st["ratio"],
            f"policy/clip_frac_{role}": st["clip_frac"], f"policy/kl_{role}": st["kl"],
            f"policy/engine_log_ratio_{role}": st["mismatch"], f"policy/engine_log_ratio_abs_{role}": st["mismatch_abs"],
            f"grad_norm/{role}": st["grad_norm"], f"charts/lr_{role}": sched.get_last_lr()[0]}


def critic_prompts(team: HFTeam, rb: RolloutBatch) -> list[list[int]]:
    """Chat-templated joint transcripts before each stage, flattened ``(E·S)``."""
    fmt = ChatFormatter(team.tokenizer, {})
    return [fmt.prompt_ids(CRITIC, text) for texts in rb.stage_texts for text in texts]


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate(policy: Any, envs: list[Any], source: Any, size: int, cfg: TrainConfig) -> dict[str, float]:
    """Greedy joint (and counterfactual) accuracy on the first ``size`` tasks of a held-out source (``eval/``), and,
    with ``cfg.eval_samples = k > 0``, the mean accuracy of ``k`` episodes per task sampled at the training
    temperature (``eval_sampled/``; fixed seeds, so every checkpoint is scored on the same random numbers)."""
    n = min(size, len(source))

    def run(sampling: SamplingConfig, k: int, prefix: str) -> dict[str, float]:
        infos, turns = [], []
        per = max(1, len(envs) // k)
        for s in range(0, n, per):
            tasks = [source[i] for i in range(s, min(n, s + per))]
            rb = collect(envs, tasks, k, policy, sampling, seed=None if k == 1 else request_seed("eval", s))
            infos += rb.infos
            turns += rb.turns
        merged = RolloutBatch(list(rb.agents), [], torch.zeros(len(infos)), turns, infos, [])
        return rollout_metrics(merged, prefix=prefix)

    m = run(SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=cfg.max_tokens), 1, "eval/")
    if cfg.eval_samples:
        sampled = run(SamplingConfig(cfg.temperature, cfg.top_p, cfg.max_tokens), cfg.eval_samples, "eval_sampled/")
        m.update({k: v for k, v in sampled.items() if "/charts/" in k or "truncation" in k})
    return m


def _rows_upto(path: Path, step: int) -> list[str]:
    """The metrics lines of steps <= ``step``; a torn last line (the run was killed while writing it) is dropped."""
    keep = []
    for ln in path.read_text().splitlines():
        try:
            if ln and json.loads(ln)["step"] <= step:
                keep.append(ln)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return keep


class RunLogger:
    """metrics.jsonl (always), TensorBoard and W&B (optional)."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, resume_step: int, resumed: bool = False):
        self.path = run_dir / "metrics.jsonl"
        if resumed and self.path.exists():  # drop rows after the checkpoint (even step 0): they are recomputed
            atomic_write_text(self.path, "".join(ln + "\n" for ln in _rows_upto(self.path, resume_step)))
        self.tb = self.wb = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: TensorBoard hides the killed run's events from the resumed step on
                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resumed else None)
            except ImportError:
                warnings.warn("tensorboard is not installed; logging to metrics.jsonl only")
        if cfg.wandb:
            import wandb

            self.wb = wandb.init(project="ccpo", name=run_dir.name, config=cfg.to_dict(), dir=str(run_dir))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wb is not None:
            self.wb.log(metrics, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()


def unique_dir(parent: str | os.PathLike, name: str) -> Path:
    """Create and return ``parent/name``, or ``name-1``, ``name-2``... so that no earlier folder is overwritten."""
    base = Path(parent) / name
    path, k = base, 0
    while path.exists():
        k += 1
        path = base.with_name(f"{name}-{k}")
    path.mkdir(parents=True)
    return path


def new_run_dir(cfg: TrainConfig) -> Path:
    """A new run folder ``out_dir/name`` (see :func:`unique_dir`)."""
    return unique_dir(cfg.out_dir, cfg.name)


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
    cfg.validate()
    import importlib

    for mod in cfg.plugins:  # user modules that register task sources or envs
        importlib.import_module(mod)
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
    envs = [make(cfg.env, api="aec", source=train_src, **env_kwargs(cfg, counterfactual)) for _ in range(E)]
    eval_envs = eval_env_pool(cfg, eval_src, cfg.eval_size)
    agents = list(envs[0].unwrapped.possible_agents)
    stage, gate = team_layout(envs[0].unwrapped.topology)

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
    device = resolve_device(cfg.device)
    team = HFTeam(model_path, agents, LoraSpec(cfg.lora_r, cfg.lora_alpha), resolve_dtype(cfg.dtype, device),
                  critic=algo.needs_critic, seed=cfg.seed, device=device,
                  full_roles=agents if cfg.finetune == "full" else ())
    owners = agents + ([CRITIC] if algo.needs_critic else [])
    optimizers = {r: torch.optim.AdamW(team.trainable_parameters(r), lr=cfg.critic_lr if r == CRITIC else cfg.lr,
                                       weight_decay=cfg.weight_decay) for r in owners}
    schedulers = {r: _warmup(o, cfg.warmup_steps) for r, o in optimizers.items()}
    credit_cfg = CreditConfig(alpha=cfg.alpha, eta=cfg.eta, decay=cfg.ema_decay, truncation=cfg.truncation,
                              min_samples=cfg.min_samples, cf_lambda=cfg.cf_lambda,
                              group_solo_baseline=cfg.group_solo_baseline, event_bonus=cfg.event_bonus)
    adv_cfg = AdvantageConfig(scale_std=cfg.scale_std, gamma=cfg.gamma, lam=cfg.lam)
    loss_cfg = LossConfig(kind=cfg.loss, clip_eps=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high,
                          dual_clip=cfg.dual_clip, log_ratio_clip=cfg.log_ratio_clip, agg=cfg.loss_agg,
                          kl_coef=cfg.kl_coef, value_clip=cfg.value_clip)
    sampling = SamplingConfig(cfg.temperature, cfg.top_p, cfg.max_tokens)

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
                                   ctx.gather_rows(local.finished), gate, ctx.gather_rows(local.group_ids))
        rewards, credit_state = algo.credit(global_batch, credit_state, credit_cfg)  # (world·E, A)
        if not torch.isfinite(rewards).all():
            raise FloatingPointError(f"step {step}: the credit is not finite; check the credit settings (alpha, eta, "
                                     "...); the run stops here, its last checkpoint is intact")
        rewards = rewards[ctx.rank * E:(ctx.rank + 1) * E]  # (E, A) this rank's episodes

        # ADVANTAGE (on the trainer's device, like every tensor of the update)
        t0 = time.perf_counter()
        values = None
        if algo.needs_critic:
            flat = team.values(critic_prompts(team, rb), cfg.micro_batch)  # (E·S,), with grad for the update
            stage_values = flat.view(len(rb), -1)
            values = stage_values.detach()[:, stage.tolist()]
        adv, returns = algo.advantage(rewards.to(team.device), rb.group_ids.to(team.device), values, stage,
                                      adv_cfg)  # (E, A); ``stage`` is layout (host ints)

        # UPDATE
        trained = roles_to_train(cfg, step, agents)
        for r in trained:
            j = agents.index(r)
            metrics.update(update_role(team, r, optimizers[r], schedulers[r], [t[r] for t in rb.turns],
                                       adv[:, j], cfg, loss_cfg, ctx))
        metrics["policy/engine_log_ratio"] = sum(metrics[f"policy/engine_log_ratio_{r}"] for r in trained) / len(trained)
        metrics["policy/engine_log_ratio_abs"] = sum(
            metrics[f"policy/engine_log_ratio_abs_{r}"] for r in trained) / len(trained)
        if algo.needs_critic:
            first = [stage.tolist().index(s) for s in range(stage_values.shape[1])]
            target = returns[:, first].to(torch.float32)
            vl = value_loss(stage_values, stage_values.detach(), target, cfg.value_clip)
            optimizers[CRITIC].zero_grad(set_to_none=True)
            vl.backward()
            ctx.average_grads(team.trainable_parameters(CRITIC))
            metrics["grad_norm/critic"] = float(torch.nn.utils.clip_grad_norm_(
                team.trainable_parameters(CRITIC), cfg.grad_clip))
            optimizers[CRITIC].step()
            schedulers[CRITIC].step()
            metrics["losses/value"] = vl.item()
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
            metrics.update(evaluate(policy, eval_envs, eval_src, cfg.eval_size, cfg))
            metrics["perf/seconds_eval"] = time.perf_counter() - t0
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


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of a run's metrics.jsonl."""
    return [json.loads(ln) for ln in Path(run_dir, "metrics.jsonl").read_text().splitlines() if ln.strip()]


def evaluate_run(run_dir: str | os.PathLike, split: str = "eval", size: int | None = None,
                 policy: Any | None = None, task: str | None = None, task_path: str | None = None
                 ) -> dict[str, float]:
    """Greedy evaluation of a run's latest checkpoint on ``split`` (``test`` only for final reporting).

    ``task`` evaluates on another source than the run trained on (the paper trains on MATH and tests on
    ``math500``, ``aime2024``, ``aime2025``, ``amc23``, ``minerva``, ``gaokao2023en``); ``task_path`` is a local copy.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if task is not None:
        cfg = dataclasses.replace(cfg, task=task, task_path=task_path)
    elif task_path is not None:
        cfg = dataclasses.replace(cfg, task_path=task_path)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet")
    agents = team_agents(cfg)
    size = size or cfg.eval_size
    source = task_source(cfg, split, size)
    envs = eval_env_pool(cfg, source, size)
    policy = policy if policy is not None else build_policy(cfg, resolve_model(cfg.model), agents)
    for r in agents:
        policy.load_adapter(r, ckpt / "adapters" / r)
    m = evaluate(policy, envs, source, size, cfg)
    out = {k.replace("eval", split, 1): v for k, v in m.items()}  # eval/... and eval_sampled/...
    tag = f"{split}_{cfg.task}" if task is not None else split
    (run_dir / f"eval_{tag}_{ckpt.name}.json").write_text(json.dumps(out, indent=2))
    return out


def evaluate_untrained(cfg: TrainConfig, policy: Any) -> dict[str, float]:
    """Greedy held-out metrics of the untrained team (every role on the bare base model), reasoner-alone included."""
    cfg.validate()
    eval_src = task_source(cfg, cfg.eval_split, cfg.eval_size)
    envs = eval_env_pool(cfg, eval_src, cfg.eval_size)
    saved = dict(policy.adapters)
    try:
        for r in team_agents(cfg):
            policy.use_base(r)
        return evaluate(policy, envs, eval_src, cfg.eval_size, cfg)
    finally:
        policy.adapters.update(saved)
