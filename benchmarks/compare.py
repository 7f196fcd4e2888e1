"""Comparisons between the methods of one bench, from every held-out item's score (``results.json``):

* paired differences from shared GRPO and from the untrained team, each with its 95 % CI over items and seeds, and
  words where the CI contains 0;
* across topologies and seeds: IQM and probability of improvement over shared GRPO (rliable);
* the design's minimal detectable difference (80 % power, two-sided 5 %);
* the results in marl-eval's JSON layout (``marl_eval.json``), which existing MARL tooling reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.stats import (item_variance, iqm, minimal_detectable_difference, paired_difference,
                              probability_of_improvement)

BASELINE = "grpo"  # shared-reward GRPO: what a credit method must beat
SEED_SD = 0.05  # training noise of one seed's accuracy assumed by the power line when a bench has one seed
                # (the 2-7 points seed spread of the CPU benches in benchmarks/measured/)


def item_matrix(results: dict[str, Any], env: str, label: str) -> tuple[list[int], np.ndarray] | None:
    """``(seeds, (seeds, items) rewards)`` of a method on a topology, items in the held-out order; ``None`` if the
    runs kept no per-item scores (results of an older ccpo)."""
    if label == "untrained team":
        refs = [r for r in results["references"] if r["env"] == env and r.get("items")]
        refs = refs[:1]  # every seed's reference scores the same items with the same untrained team
        rows = [(r["seed"], r["items"]) for r in refs]
    else:
        rows = sorted((r["seed"], r["items"]) for r in results["runs"]
                      if r["env"] == env and r["label"] == label and r.get("items"))
    if not rows:
        return None
    ids = [x["task_id"] for x in rows[0][1]]
    if any([x["task_id"] for x in items] != ids for _, items in rows):
        return None
    return [s for s, _ in rows], np.array([[x["reward"] for x in items] for _, items in rows])


def _common_seeds(a: tuple[list[int], np.ndarray], b: tuple[list[int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    seeds = [s for s in a[0] if s in b[0]]
    return a[1][[a[0].index(s) for s in seeds]], b[1][[b[0].index(s) for s in seeds]]


def _verdict(d: Any, other: str) -> str:
    if d.contains_zero:
        return f"{d} - CI contains 0: no difference from {other} shown"
    return f"{d} - {'better' if d.value > 0 else 'worse'} than {other}"


def comparison_section(results: dict[str, Any]) -> list[str]:
    """Markdown lines: paired differences, IQM / P(improvement) across topologies, and the power of the design."""
    envs = sorted({r["env"] for r in results["runs"]})
    labels = list(dict.fromkeys(r["label"] for r in results["runs"]))
    lines = ["", "## Is a difference real? (greedy held-out accuracy, paired over the same items)", "",
             "Mean difference with its 95 % bootstrap CI (crossed: whole seeds and items resampled independently).",
             "",
             "| env | method | vs shared GRPO | vs untrained team |", "|---|---|---|---|"]
    shown = False
    for env in envs:
        base, untrained = item_matrix(results, env, BASELINE), item_matrix(results, env, "untrained team")
        for label in labels:
            m = item_matrix(results, env, label)
            if m is None:
                continue
            vs_base = ""
            if base is not None and label != BASELINE:
                a, b = _common_seeds(m, base)
                vs_base = _verdict(paired_difference(a, b), "shared GRPO") if len(a) else ""
            vs_ref = _verdict(paired_difference(m[1], untrained[1]), "the untrained team") if untrained else ""
            lines.append(f"| {env} | {label} | {vs_base} | {vs_ref} |")
            shown = True
    if not shown:
        return []
    lines += _across_section(results, envs, labels)
    lines += _power_lines(results, envs)
    return lines


def _across_section(results: dict[str, Any], envs: list[str], labels: list[str]) -> list[str]:
    """IQM of the mean held-out accuracy (runs x topologies) and P(method > shared GRPO) with stratified CIs."""
    dropped: set[str] = set()

    def runs_by_env(label: str) -> np.ndarray | None:
        cols = []
        for env in envs:
            m = item_matrix(results, env, label)
            if m is None:
                return None
            cols.append(m[1].mean(axis=1))
        n = min(len(c) for c in cols)
        if any(len(c) > n for c in cols):
            dropped.add(label)
        return np.stack([c[:n] for c in cols], axis=1)  # (runs, topologies)

    xs = {label: runs_by_env(label) for label in labels}
    base = xs.get(BASELINE)  # None without shared-GRPO runs, as runs_by_env would give
    one_seed = base is None or base.shape[0] < 2
    lines = ["", "Across topologies and seeds (runs x topologies, stratified bootstrap over runs"
             + ("; one seed per method: no spread to resample, the CIs collapse to the point):" if one_seed else "):"),
             ""]
    if dropped:  # rliable takes a (runs, tasks) matrix: as many runs on every topology
        lines[-2] += (f" {', '.join(sorted(dropped))}: more seeds on some topologies than on others; this section uses "
                      "the lowest seeds, as many on each topology as the fewest (the per-topology rows use all).")
    for label in labels:
        x = xs[label]
        if x is None:
            continue
        q = iqm(x)  # one bootstrap, not one per printed number
        line = f"- {label}: IQM {q.value:.3f} [{q.lo:.3f}, {q.hi:.3f}]"
        if base is not None and label != BASELINE:
            p = probability_of_improvement(x, base)
            line += f"; P({label} > shared GRPO) {p.value:.2f} [{p.lo:.2f}, {p.hi:.2f}]"
        lines.append(line)
    return lines


def _power_lines(results: dict[str, Any], envs: list[str]) -> list[str]:
    """The minimal detectable difference of this design, from the item variance it measured."""
    out = ["", "Power of this design (80 % power, two-sided 5 %; normal approximation, "
           "`benchmarks/stats.py` `minimal_detectable_difference`):", ""]
    for env in envs:
        labels = [lb for lb in dict.fromkeys(r["label"] for r in results["runs"] if r["env"] == env)]
        mats = [item_matrix(results, env, lb) for lb in labels]
        mats = [m for m in mats if m is not None]
        if len(mats) < 2:
            continue
        pairs = [_common_seeds(a, b) for i, a in enumerate(mats) for b in mats[i + 1:]]
        var = float(np.mean([item_variance(a, b) for a, b in pairs if len(a)]))
        items, seeds = mats[0][1].shape[1], mats[0][1].shape[0]
        spread = [np.std(m[1].mean(axis=1), ddof=1) for m in mats if m[1].shape[0] > 1]
        seed_sd = float(np.mean(spread)) if spread else SEED_SD
        mdd = minimal_detectable_difference(items, seeds, var, seed_sd)
        need = next((s for s in range(1, 1000) if minimal_detectable_difference(items, s, var, seed_sd) <= 0.05), None)
        out.append(f"- {env}: {items} items x {seeds} seed(s): differences under {mdd:.3f} ({100 * mdd:.0f} points) "
                   f"are not reliably detected (item variance {var:.3f}, seed sd {seed_sd:.3f}"
                   f"{'' if spread else ' assumed'}); a 5-point difference needs "
                   f"{need if need else '> 1000'} seeds of {items} items.")
    return out if len(out) > 3 else []


def marl_eval_layout(results: dict[str, Any]) -> dict[str, Any]:
    """``{"ccpo": {env: {method: {"run_<seed>": {"step_<k>": {"step_count", "accuracy": [per item]}, ...,
    "absolute_metrics": {"accuracy": [...]}}}}}}`` - the raw-data layout of instadeepai/marl-eval."""
    out: dict[str, Any] = {}
    for r in results["runs"]:
        run: dict[str, Any] = {f"step_{k}": {"step_count": int(k), "accuracy": v}
                               for k, v in sorted(r.get("curve", {}).items(), key=lambda kv: int(kv[0]))}
        run["absolute_metrics"] = {"accuracy": [x["reward"] for x in r.get("items", [])]}
        out.setdefault("ccpo", {}).setdefault(r["env"], {}).setdefault(r["label"], {})[f"run_{r['seed']}"] = run
    return out


def paired_between_folders(ra: dict[str, Any], rb: dict[str, Any], env: str, label: str,
                           label_b: str | None = None) -> str:
    """``B - A`` of two result folders scored on the same items (paired CI over items and common seeds), or ``""``:
    method ``label`` in both, or ``label_b`` of B against ``label`` of A (e.g. an ablation run later beside a
    study's methods)."""
    label_b = label if label_b is None else label_b
    a, b = item_matrix(ra, env, label), item_matrix(rb, env, label_b)
    if a is None or b is None or a[1].shape[1] != b[1].shape[1]:
        return ""
    if _task_ids(ra, env, label) != _task_ids(rb, env, label_b):
        return ""
    y, x = _common_seeds(b, a)
    return str(paired_difference(y, x)) if len(y) else ""


def _task_ids(results: dict[str, Any], env: str, label: str) -> list[str]:
    entries = results["references"] if label == "untrained team" else results["runs"]
    first = next((r for r in entries if r["env"] == env and r.get("label", "untrained team") in (label, "untrained")
                  and r.get("items")), None)
    return [] if first is None else [x["task_id"] for x in first["items"]]
