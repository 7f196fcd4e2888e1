"""Building a run from its config: the policy (generation backend), task sources, environments' options, the
team's agents and role prompts, optimiser schedules and run folders. No training happens here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ccpo_agents.policy import SamplingConfig
from ccpo_algos.advantage import AdvantageConfig
from ccpo_algos.config import TrainConfig
from ccpo_algos.credit import CreditConfig
from ccpo_algos.loss import LossConfig
from ccpo_envs import make
from ccpo_envs.prompts import team_role_prompts  # the topology's prompts live with the envs
from ccpo_envs.registry import env_tasks, resolve_source, team_probe


def team_topology(cfg: TrainConfig) -> Any:
    """The run's topology (its env built on a one-task source)."""
    return team_probe(cfg.env, **cfg.env_kwargs(counterfactual=True)).topology


def role_prompts(cfg: TrainConfig) -> dict[str, str | None]:
    """System prompt per role kind and agent id: the template's, the topology's, then the config's overrides."""
    return team_role_prompts(team_topology(cfg), cfg.template, cfg.advisor_prompt, cfg.answer_prompt)


def team_agents(cfg: TrainConfig) -> list[str]:
    """The run's agent ids (``possible_agents``)."""
    return list(team_topology(cfg).agents)


def build_policy(cfg: TrainConfig, model_path: str, roles: list[str],
                 prompts: dict[str, str | None] | None = None) -> Any:
    """The rollout backend named by ``cfg.backend`` (:data:`ccpo_algos.backends.BACKENDS`), serving ``roles`` with
    ``prompts`` (default: the run's :func:`role_prompts`; an engine shared by several runs takes the union)."""
    from ccpo_algos.backends import BACKENDS

    return BACKENDS[cfg.backend](cfg, model_path, roles, role_prompts(cfg) if prompts is None else prompts)


#: Seed of the held-out splits (``eval``, ``test``): every run scores the same held-out items whatever its own seed,
#: so runs of different seeds and methods are paired item by item (the bench's statistics rely on it).
HELD_OUT_SEED = 0


def task_source(cfg: TrainConfig, split: str, size: int) -> Any:
    """The run's task source for one split (extraction modes apply to generated and math tasks): the training split
    drawn with the run's seed, the held-out splits with :data:`HELD_OUT_SEED`. An env that makes its own tasks (the
    credit gym's) gives them instead of ``cfg.task``."""
    seed = cfg.seed if split == "train" else HELD_OUT_SEED
    own = env_tasks(cfg.env, split, seed, size, **cfg.env_kwargs(True))  # an env that owns its tasks (the gym)
    if own is not None:
        return own
    kw: dict[str, Any] = {"path": cfg.task_path} if cfg.task_path else {}
    if cfg.task_path is None and cfg.task not in ("gsm8k", "hendrycks_math", "math500", "logiqa"):
        kw["modes"] = cfg.extract_modes
    return resolve_source(cfg.task, split=split, seed=seed, size=size, **kw)


def eval_env_pool(cfg: TrainConfig, source: Any, size: int) -> list[Any]:
    """AEC envs for evaluation (counterfactuals on, so reasoner-alone accuracy is reported): up to 32 (at least
    ``eval_samples``), reused across batches of ``size`` tasks."""
    n = max(min(size, 32), cfg.eval_samples)  # sampled evaluation plays eval_samples episodes of a task at once
    return [make(cfg.env, api="aec", source=source, **cfg.env_kwargs(True)) for _ in range(n)]


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


# The pure layers' settings, built from the run's one flat config here and nowhere else.

def sampling_config(cfg: TrainConfig, greedy: bool = False) -> SamplingConfig:
    """The run's training sampling (``greedy``: evaluation's temperature 0, same token cap)."""
    if greedy:
        return SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=cfg.max_tokens)
    return SamplingConfig(cfg.temperature, cfg.top_p, cfg.max_tokens)


def advantage_config(cfg: TrainConfig) -> AdvantageConfig:
    """The advantage settings of a run."""
    return AdvantageConfig(scale_std=cfg.scale_std, gamma=cfg.gamma, lam=cfg.lam)


def loss_config(cfg: TrainConfig) -> LossConfig:
    """The policy- and value-loss settings of a run."""
    return LossConfig(kind=cfg.loss, clip_eps=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high, dual_clip=cfg.dual_clip,
                      log_ratio_clip=cfg.log_ratio_clip, agg=cfg.loss_agg, kl_coef=cfg.kl_coef,
                      value_clip=cfg.value_clip)


def credit_config(cfg: TrainConfig) -> CreditConfig:
    """The credit settings of a run."""
    return CreditConfig(alpha=cfg.alpha, eta=cfg.eta, decay=cfg.ema_decay, truncation=cfg.truncation,
                        min_samples=cfg.min_samples, cf_lambda=cfg.cf_lambda,
                        group_solo_baseline=cfg.group_solo_baseline, event_bonus=cfg.event_bonus,
                        truncated_as_failure=cfg.truncated_as_failure)


def warmup_schedule(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / max(1, steps)))
