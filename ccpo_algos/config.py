"""Training configuration: one documented dataclass, named presets, validation that names the fix.

``ccpo train --help`` shows every field with the docstring below it (tyro reads them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ccpo_algos.algorithms import ALGORITHMS


@dataclass
class TrainConfig:
    """Train a team of LLM agents with CCPO, shared-reward GRPO or MAPPO."""

    # --- run
    name: str = "run"
    """Run name; results go to ``<out_dir>/<name>`` (a numeric suffix is added rather than overwrite a run)."""
    out_dir: str = "runs"
    """Folder that holds all runs."""
    seed: int = 0
    """Seed for data order, adapter init and per-request sampling seeds."""
    steps: int = 20
    """Training steps (one rollout batch and one optimiser update each)."""
    resume: str | None = None
    """Resume from this run folder (its latest checkpoint); continues writing into it."""

    plugins: tuple[str, ...] = ()
    """Python modules to import first; they may register task sources (``register_source``) and envs."""

    # --- team and tasks
    env: str = "dyad_v0"
    """Topology: ``dyad_v0`` (thinker -> reasoner) or ``vote_v0`` (N voters)."""
    n_voters: int = 3
    """Voters in ``vote_v0``."""
    tie_rule: str = "expected"
    """Vote tie rule: ``expected`` or ``strict``."""
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
    thinker_prompt: str | None = None
    """Override the thinker's system prompt (default: SPEC's)."""
    solver_prompt: str | None = None
    """Override the reasoner's / voters' system prompt (default: SPEC's)."""

    # --- algorithm
    algo: str = "ccpo"
    """Algorithm: a key of ``ccpo_algos.ALGORITHMS`` (ccpo, grpo, mappo, ccpo_no_history, ccpo_no_gate, difference)."""
    prompts_per_step: int = 8
    """Prompts per step (B)."""
    group_size: int = 4
    """Samples per prompt (G); GRPO groups are per prompt and agent."""
    schedule: str = "alternate"
    """``alternate`` (one agent at a time, switching every ``switch_every`` steps, thinker first) or ``simultaneous``."""
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
    mask_truncated: bool = True
    """Zero the reward of turns truncated at ``max_tokens`` (SPEC; turn off only for debugging)."""
    scale_std: bool = True
    """GRPO divides by the group std (off: Dr. GRPO)."""
    gamma: float = 1.0
    """MAPPO discount over turns."""
    lam: float = 1.0
    """MAPPO GAE λ."""

    # --- update
    lr: float = 1e-4
    """AdamW learning rate of each role's adapter."""
    critic_lr: float = 1e-4
    """AdamW learning rate of the MAPPO critic (adapter + value head)."""
    warmup_steps: int = 10
    """Linear warm-up steps of every optimiser."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient norm clip per role."""
    clip_eps: float = 0.2
    """PPO clip ε."""
    dual_clip: float | None = 3.0
    """Dual-clip constant for negative advantages (None: off)."""
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
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    dtype: str = "bfloat16"
    """Frozen base dtype in the trainer (adapters stay float32)."""
    temperature: float = 1.0
    """Training sampling temperature (evaluation is greedy)."""
    top_p: float = 1.0
    """Training nucleus sampling mass."""
    max_tokens: int = 256
    """Completion cap per turn; truncated turns get reward 0."""
    max_model_len: int = 2048
    """Engine context length."""
    backend: str = "vllm"
    """Rollout backend: ``vllm`` (in-process engine) or ``server`` (OpenAI-compatible endpoints)."""
    endpoints: tuple[str, ...] = ()
    """Server endpoints for ``backend=server`` (empty: start one local server)."""

    # --- logging and checkpoints
    checkpoint_every: int = 10
    """Write a checkpoint every this many steps (0: only at the end)."""
    tensorboard: bool = True
    """Also log to TensorBoard."""
    wandb: bool = False
    """Also log to Weights & Biases (needs ``wandb`` installed)."""
    progress: bool = True
    """Show a progress bar."""

    def validate(self) -> "TrainConfig":
        """Raise ``ValueError`` naming the fix for any bad value (before any model is loaded)."""
        def bad(msg: str) -> None:
            raise ValueError(f"bad config: {msg}")

        if self.algo not in ALGORITHMS:
            bad(f"algo={self.algo!r}; choose one of {sorted(ALGORITHMS)}")
        if self.env not in ("dyad_v0", "vote_v0"):
            bad(f"env={self.env!r}; choose dyad_v0 or vote_v0")
        if self.schedule not in ("alternate", "simultaneous"):
            bad(f"schedule={self.schedule!r}; choose alternate or simultaneous")
        if self.tie_rule not in ("expected", "strict"):
            bad(f"tie_rule={self.tie_rule!r}; choose expected or strict")
        if self.loss_agg not in ("seq-mean", "token-mean"):
            bad(f"loss_agg={self.loss_agg!r}; choose seq-mean or token-mean")
        if self.eval_split == "train":
            bad("eval_split='train' would evaluate on training tasks; use eval")
        if self.backend not in ("vllm", "server"):
            bad(f"backend={self.backend!r}; choose vllm or server")
        for name in ("steps", "prompts_per_step", "group_size", "train_size", "eval_size", "max_tokens",
                     "switch_every", "micro_batch", "lora_r", "n_voters"):
            if getattr(self, name) < 1:
                bad(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("lr", "critic_lr"):
            if not 0 < getattr(self, name) < 1:
                bad(f"{name}={getattr(self, name)} must be in (0, 1); typical LoRA values are 1e-5 .. 1e-3")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            bad("temperature must be >= 0 and top_p in (0, 1]")
        if self.group_size < 2 and self.algo != "mappo":
            bad(f"group_size={self.group_size}: GRPO advantages need >= 2 samples per prompt")
        if self.dual_clip is not None and self.dual_clip <= 1:
            bad(f"dual_clip={self.dual_clip} must be > 1 (or None)")
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
                thinker_prompt=("You are a math tutor. In one short sentence, tell a weaker student how to compute "
                                "the result. Do not give the answer."),
                solver_prompt=("Solve the problem. Be brief: write the calculation, then the final answer as "
                               "\\boxed{answer}.")),
    # Plumbing check on a tiny random model (tests use this with model=<tiny dir>).
    "smoke": dict(task="arith_easy", prompts_per_step=2, group_size=2, max_tokens=16, max_model_len=768,
                  steps=2, eval_every=0, eval_size=4, lora_r=8, lora_alpha=16, warmup_steps=1,
                  checkpoint_every=1, switch_every=1),
    # SPEC's reference recipe (GPU, hub access): MATH train, Qwen2.5-7B-Instruct x2, 64 prompts x 4 samples.
    "gpu-qwen7b": dict(task="hendrycks_math", model="Qwen/Qwen2.5-7B-Instruct", prompts_per_step=64, group_size=4,
                       max_tokens=2048, max_model_len=6144, lr=1e-6, warmup_steps=10, steps=1170, eval_every=10,
                       eval_size=500, temperature=1.0, lora_r=64, lora_alpha=128, switch_every=10,
                       train_size=7500),
    "gpu-qwen1.5b": dict(task="hendrycks_math", model="Qwen/Qwen2.5-1.5B-Instruct", prompts_per_step=64,
                         group_size=4, max_tokens=2048, max_model_len=6144, lr=1e-5, warmup_steps=10, steps=300,
                         eval_every=10, eval_size=500, lora_r=64, lora_alpha=128, train_size=7500),
    # SPEC's logic experiment: LogiQA, 3 voters.
    "gpu-logiqa-vote": dict(env="vote_v0", task="logiqa", model="Qwen/Qwen2.5-7B-Instruct", prompts_per_step=64,
                            group_size=4, max_tokens=1024, max_model_len=4096, lr=1e-6, steps=300, eval_size=500),
}


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
