"""Credit fidelity: does a method's per-agent credit track what each agent actually contributes?

On one fixed rollout batch (``B`` held-out tasks x ``G`` episodes, what a training step sees) every credit method is
computed side by side; the agent's *measured* marginal contribution to each task comes from separate
counterfactual replays with more samples (``M`` joint episodes per task, each with its "agent k removed" worlds
re-generated): ``c(task, k) = mean over M of (R_joint − R_¬k)``. Per method and removable agent the report gives

* ``spearman``: rank correlation across tasks of the method's mean credit with ``c`` (NaN when either is constant);
* ``sign_agreement``: the share of tasks with ``c ≠ 0`` where the mean credit has the sign of ``c`` (a shared
  reward has the sign of the team outcome, not of the agent's contribution);
* ``within_task_std``: the credit's spread over the ``G`` episodes of a task, averaged over tasks (noise that the
  advantage must average out).

Stateful methods (CCPO's running statistics, RAE's baseline) first see the replay batch as their history, then
credit the training batch. Per-turn rules are averaged over an agent's turns. ``ccpo credit-report RUN`` writes
``credit_report.json`` and ``credit_report.md`` into the run folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from ccpo_agents.policy import SamplingConfig
from ccpo_algos.algorithms import ALGORITHMS
from ccpo_algos.credit import CreditConfig
from ccpo_algos.rollout import RolloutBatch, collect, request_seed, team_layout


def ranks(x: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    out = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (Pearson on average ranks); NaN when either side is constant."""
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx, sy = math.sqrt(sum((a - mx) ** 2 for a in rx)), math.sqrt(sum((b - my) ** 2 for b in ry))
    return sxy / (sx * sy) if sx > 0 and sy > 0 else float("nan")


def sign_agreement(credit: list[float], contribution: list[float]) -> float:
    """Share of items with a non-zero contribution whose credit has the same sign (NaN if there are none)."""
    pairs = [(c, m) for c, m in zip(credit, contribution) if m != 0]
    if not pairs:
        return float("nan")
    return sum((c > 0) == (m > 0) and c != 0 for c, m in pairs) / len(pairs)


def per_task(values: torch.Tensor, group_ids: torch.Tensor, n_tasks: int) -> tuple[list[float], list[float]]:
    """``(mean, std)`` of ``values (E,)`` over each task's episodes (population std)."""
    means, stds = [], []
    for t in range(n_tasks):
        v = values[group_ids == t].to(torch.float64)
        means.append(v.mean().item())
        stds.append(v.std(unbiased=False).item() if v.numel() > 1 else 0.0)
    return means, stds


def measured_contribution(rb: RolloutBatch, n_tasks: int) -> dict[str, list[float]]:
    """``{k: [mean over the task's episodes of R_joint − R_¬k]}`` for every agent with counterfactual outcomes."""
    out: dict[str, list[float]] = {}
    for k in rb.agents:
        if not all(k in i.get("reward_removed", {}) for i in rb.infos):
            continue
        delta = torch.tensor([float(i["reward_joint"]) - float(i["reward_removed"][k]) for i in rb.infos])
        out[k] = per_task(delta, rb.group_ids, n_tasks)[0]
    return out


def fidelity(policy: Any, envs: list[Any], tasks: list[Any], group_size: int, samples: int, algos: list[str],
             sampling: SamplingConfig, credit_cfg: CreditConfig, seed: int = 0) -> dict[str, Any]:
    """The report's numbers (see the module docstring). ``envs``: AEC envs with counterfactual worlds on, at least
    ``len(tasks) · max(group_size, samples)``."""
    n = len(tasks)
    topo = envs[0].unwrapped.topology
    _, gates = team_layout(topo)
    replay = collect(envs, tasks, samples, policy, sampling, seed=request_seed(seed, "replay"))
    batch = collect(envs, tasks, group_size, policy, sampling, seed=request_seed(seed, "batch"))
    contribution = measured_contribution(replay, n)
    history, cb = replay.credit_batch(gates), batch.credit_batch(gates)
    rows: dict[str, Any] = {}
    for name in algos:
        algo = ALGORITHMS[name]
        if algo.needs_coalitions and not topo.independent:
            continue
        state = algo.credit(history, None, credit_cfg)[1]  # the replay batch is the method's history
        credit = algo.credit(cb, state, credit_cfg)[0]
        if credit.dim() == 3:  # per-turn rules: the mean over each agent's turns
            n_turns = torch.tensor([[len(batch.agent_turns(e, a)) for a in batch.agents] for e in range(len(batch))])
            credit = credit.sum(dim=2) / n_turns.to(credit.dtype)
        per_agent = {}
        for k, contrib in contribution.items():
            mean, std = per_task(credit[:, batch.agents.index(k)], batch.group_ids, n)
            per_agent[k] = {"spearman": spearman(mean, contrib), "sign_agreement": sign_agreement(mean, contrib),
                            "within_task_std": sum(std) / n, "credit": mean}
        rows[name] = per_agent
    return {"tasks": [t.task_id for t in tasks], "group_size": group_size, "samples": samples,
            "contribution": contribution, "methods": rows}


def markdown(report: dict[str, Any]) -> str:
    """The report as a table: one row per method, one column group per removable agent."""
    agents = list(report["contribution"])
    lines = [f"# Credit fidelity ({len(report['tasks'])} held-out tasks; credit from {report['group_size']} "
             f"episodes per task, contribution from {report['samples']} replays)", "",
             "Spearman ρ of the mean credit with the measured contribution across tasks, sign agreement where the "
             "contribution is non-zero, and the credit's within-task std. NaN: one side is constant.", ""]
    head = "| method | " + " | ".join(f"{k}: ρ | {k}: sign | {k}: std" for k in agents) + " |"
    lines += [head, "|" + "---|" * (1 + 3 * len(agents))]
    for name, per in report["methods"].items():
        cells = []
        for k in agents:
            m = per[k]
            cells += [f"{m['spearman']:.2f}", f"{m['sign_agreement']:.2f}", f"{m['within_task_std']:.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for k in agents:
        c = report["contribution"][k]
        lines.append(f"\nMeasured contribution of {k}: mean {sum(c) / len(c):+.3f}, "
                     f"{sum(x > 0 for x in c)} tasks helped, {sum(x < 0 for x in c)} hurt, "
                     f"{sum(x == 0 for x in c)} unchanged.")
    return "\n".join(lines) + "\n"


def credit_report(run_dir: str, tasks: int = 32, samples: int = 16, algos: list[str] | None = None,
                  policy: Any | None = None) -> Path:
    """``ccpo credit-report RUN``: the run's latest adapters on its held-out split; writes the JSON and markdown
    report into the run folder and returns the markdown's path."""
    from ccpo_agents.models import resolve_model
    from ccpo_algos.build import build_policy, credit_config, sampling_config, task_source, team_agents
    from ccpo_algos.checkpoint import atomic_write_text, latest_checkpoint
    from ccpo_algos.config import load_run_config
    from ccpo_envs import make

    run = Path(run_dir)
    cfg = load_run_config(run)
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise FileNotFoundError(f"{run} has no checkpoint yet")
    agents = team_agents(cfg)
    policy = policy if policy is not None else build_policy(cfg, resolve_model(cfg.model), agents)
    for r in agents:
        policy.load_adapter(r, ckpt / "adapters" / r)
    source = task_source(cfg, cfg.eval_split, tasks)
    items = [source[i] for i in range(min(tasks, len(source)))]
    envs = [make(cfg.env, api="aec", source=source, **cfg.env_kwargs(True))
            for _ in range(len(items) * max(cfg.group_size, samples))]
    report = fidelity(policy, envs, items, cfg.group_size, samples, algos or sorted(ALGORITHMS),
                      sampling_config(cfg), credit_config(cfg), cfg.seed)
    report["run"], report["checkpoint"] = str(run), ckpt.name
    atomic_write_text(run / "credit_report.json", json.dumps(report, indent=1))
    atomic_write_text(run / "credit_report.md", markdown(report))
    return run / "credit_report.md"
