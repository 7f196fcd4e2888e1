"""Per-step metrics from a rollout batch and the credit it produced. Pure functions; names are namespaced."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch

from ccpo_algos.rollout import RolloutBatch


def step_seconds(row: dict[str, float]) -> float:
    """Seconds of one training step in a metrics row: rollout + update + sync (evaluation excluded)."""
    return row.get("perf/seconds_rollout", 0.0) + row.get("perf/seconds_update", 0.0) + row.get("perf/seconds_sync", 0.0)


def rollout_metrics(batch: RolloutBatch, rewards: torch.Tensor | None = None, prefix: str = "") -> dict[str, float]:
    """Accuracy (joint, solo), contribution rate, per-agent credit, vote agreement/entropy, lengths, truncation."""
    m: dict[str, float] = {}
    E = len(batch)
    joint = torch.tensor([float(i["reward_joint"]) for i in batch.infos])
    m[f"{prefix}charts/accuracy_joint"] = joint.mean().item()
    for a in batch.agents:
        m[f"{prefix}charts/accuracy_{a}"] = sum(bool(i["correct"].get(a)) for i in batch.infos) / E
        removed = [i["reward_removed"][a] for i in batch.infos if a in i.get("reward_removed", {})]
        if removed:
            delta = joint[: len(removed)] - torch.tensor(removed, dtype=torch.float32)
            m[f"{prefix}charts/accuracy_without_{a}"] = sum(removed) / len(removed)
            m[f"{prefix}credit/contribution_rate_{a}"] = ((delta > 0).float().mean() - (delta < 0).float().mean()).item()
            m[f"{prefix}credit/delta_mean_{a}"] = delta.mean().item()
        lens = torch.tensor([len(t[a].completion_ids) for t in batch.turns], dtype=torch.float32)
        m[f"{prefix}lengths/{a}"] = lens.mean().item()
        m[f"{prefix}lengths/truncation_rate_{a}"] = sum(t[a].finish_reason == "length" for t in batch.turns) / E
        m[f"{prefix}lengths/skipped_rate_{a}"] = sum(t[a].finish_reason == "skipped" for t in batch.turns) / E
    if rewards is not None:
        for j, a in enumerate(batch.agents):
            m[f"{prefix}credit/reward_mean_{a}"] = rewards[:, j].float().mean().item()
            m[f"{prefix}credit/reward_std_{a}"] = rewards[:, j].float().std().item() if E > 1 else 0.0
    if any(i.get("votes") for i in batch.infos):
        agree, ent = [], []
        for i in batch.infos:
            votes = [v for v in i["answers"].values()]
            team = i["team_answer"]
            agree.append(sum(v is not None and v == team for v in votes) / len(votes))
            counts = Counter(v for v in votes if v is not None)
            n = sum(counts.values())
            ent.append(-sum(c / n * math.log(c / n) for c in counts.values()) if n else 0.0)
        m[f"{prefix}vote/agreement"] = sum(agree) / E
        m[f"{prefix}vote/entropy"] = sum(ent) / E
        m[f"{prefix}vote/tie_rate"] = sum(bool(i["tie"]) for i in batch.infos) / E
    return m


def summarize(values: list[float]) -> dict[str, Any]:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": t.mean().item(), "std": t.std().item() if len(values) > 1 else 0.0, "n": len(values)}
