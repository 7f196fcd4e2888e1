"""Held-out evaluation: greedy (and sampled) team accuracy of a policy, of a run's checkpoint, of the untrained
team, with every task's score kept for paired statistics (``eval_items/step_<k>.json``)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from ccpo_agents.models import resolve_model
from ccpo_agents.policy import SamplingConfig
from ccpo_algos.build import build_policy, eval_env_pool, sampling_config, task_source, team_agents
from ccpo_algos.checkpoint import atomic_write_text, latest_checkpoint
from ccpo_algos.config import TrainConfig, load_run_config
from ccpo_algos.metrics import rollout_metrics
from ccpo_algos.rollout import RolloutBatch, collect, request_seed


def evaluate(policy: Any, envs: list[Any], source: Any, size: int, cfg: TrainConfig,
             items: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """Greedy joint (and counterfactual) accuracy on the first ``size`` tasks of a held-out source (``eval/``), and,
    with ``cfg.eval_samples = k > 0``, the mean accuracy of ``k`` episodes per task sampled at the training
    temperature (``eval_sampled/``; fixed seeds, so every checkpoint is scored on the same random numbers).

    ``items``, if given, receives one ``{"task_id", "reward", "tokens"}`` per held-out task (greedy episode, in task
    order): what paired statistics between methods need (every method is scored on the same tasks)."""
    n = min(size, len(source))

    def run(sampling: SamplingConfig, k: int, prefix: str) -> dict[str, float]:
        infos, turns, tokens = [], [], []
        per = max(1, len(envs) // k)
        for s in range(0, n, per):
            tasks = [source[i] for i in range(s, min(n, s + per))]
            rb = collect(envs, tasks, k, policy, sampling, seed=None if k == 1 else request_seed("eval", s))
            infos += rb.infos
            turns += rb.turns
            tokens += [sum(len(c.completion_ids) for a in rb.agents for c in rb.agent_turns(e, a))
                       for e in range(len(rb))]  # every joint turn (a debater's rounds too)
        merged = RolloutBatch(list(rb.agents), [], torch.zeros(len(infos)), turns, infos, [])
        if k == 1:
            greedy_items[:] = [{"task_id": i["task_id"], "reward": float(i["reward_joint"]), "tokens": t}
                               for i, t in zip(infos, tokens)]
        return rollout_metrics(merged, prefix=prefix)

    greedy_items: list[dict[str, Any]] = []

    m = run(sampling_config(cfg, greedy=True), 1, "eval/")
    if items is not None:
        items.extend(greedy_items)
    if cfg.eval_samples:
        sampled = run(sampling_config(cfg), cfg.eval_samples, "eval_sampled/")
        m.update({k: v for k, v in sampled.items() if "/charts/" in k or "truncation" in k})
    return m


def save_eval_items(run_dir: Path, step: int, items: list[dict[str, Any]]) -> None:
    """``eval_items/step_<step>.json``: the held-out score of every task at this step (for paired statistics)."""
    (run_dir / "eval_items").mkdir(exist_ok=True)
    atomic_write_text(run_dir / "eval_items" / f"step_{step:06d}.json", json.dumps(items))


def read_eval_items(run_dir: str | os.PathLike) -> dict[int, list[dict[str, Any]]]:
    """Every evaluation's per-task scores of a run: ``{step: [{"task_id", "reward", "tokens"}, ...]}``."""
    folder = Path(run_dir) / "eval_items"
    if not folder.is_dir():
        return {}
    return {int(p.stem[len("step_"):]): json.loads(p.read_text()) for p in sorted(folder.glob("step_*.json"))}


def evaluate_run(run_dir: str | os.PathLike, split: str = "eval", size: int | None = None,
                 policy: Any | None = None, task: str | None = None, task_path: str | None = None,
                 plugins: tuple[str, ...] = ()) -> dict[str, float]:
    """Greedy evaluation of a run's latest checkpoint on ``split`` (``test`` only for final reporting).

    ``task`` evaluates on another source than the run trained on (the paper trains on MATH and tests on
    ``math500``, ``aime2024``, ``aime2025``, ``amc23``, ``minerva``, ``gaokao2023en``); ``task_path`` is a local copy.
    The run's recorded ``plugins`` are imported first, then ``plugins`` (e.g. a module that moved).
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    cfg = dataclasses.replace(cfg, plugins=tuple(dict.fromkeys((*cfg.plugins, *plugins)))).validate()
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


def evaluate_untrained(cfg: TrainConfig, policy: Any, items: list[dict[str, Any]] | None = None
                       ) -> dict[str, float]:
    """Greedy held-out metrics of the untrained team (every role on the bare base model; the roles stay there),
    the counterfactual worlds' accuracies included; ``items`` receives the per-task scores (see :func:`evaluate`)."""
    cfg.validate()
    eval_src = task_source(cfg, cfg.eval_split, cfg.eval_size)
    envs = eval_env_pool(cfg, eval_src, cfg.eval_size)
    for r in team_agents(cfg):  # every role on the bare base model (a later run syncs its own adapters)
        policy.use_base(r)
    return evaluate(policy, envs, eval_src, cfg.eval_size, cfg, items)
