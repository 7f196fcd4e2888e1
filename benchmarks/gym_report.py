"""The credit gym bench's outputs from its ``results.json``: ``table.md``, ``curves.png``, ``credit.png`` and
``marl_eval.json``. Pure functions of the results dict (``ccpo bench`` rewrites them after each game).

Statistics (``benchmarks.stats``): final held-out success per method with a crossed bootstrap CI over seeds and
items; each method's paired difference from shared GRPO (same seeds, same held-out items, same sampling noise);
across games, rliable's IQM and P(method > GRPO); the minimal detectable difference of the design at the measured
seed spread.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.compare import marl_eval_layout
from benchmarks.gym_suite import BASELINE
from benchmarks.stats import (
    iqm,
    item_variance,
    mean_interval,
    minimal_detectable_difference,
    paired_difference,
    probability_of_improvement,
)

#: The difference the gym's study is sized to detect (3 points of held-out success).
TARGET = 0.03
#: Bootstrap replications of the across-games IQM and P(improvement) (rliable's P(improvement) costs ~5 ms a
#: replicate here; the CI bounds move by about 0.01 between reruns at this size).
ACROSS_REPS = 500


def seeds_to_detect(diff: float, items: int, item_var: float, seed_sd: float) -> int:
    """The fewest seeds whose paired design detects ``diff`` (:func:`minimal_detectable_difference` <= diff)."""
    for n in range(2, 10_001):
        if minimal_detectable_difference(items, n, item_var, seed_sd) <= diff:
            return n
    return math.inf  # type: ignore[return-value]


def _runs(results: dict[str, Any], env: str, label: str) -> list[dict[str, Any]]:
    return sorted((r for r in results["runs"] if r["env"] == env and r["label"] == label), key=lambda r: r["seed"])


def item_matrix(results: dict[str, Any], env: str, label: str, untrained: bool = False) -> tuple[list[int], np.ndarray]:
    """``(seeds, (seeds, items))`` final (or, ``untrained``, step-0) held-out rewards of ``label`` on ``env``."""
    runs = _runs(results, env, label)
    rows = [r["items_untrained"] if untrained else [x["reward"] for x in r["items"]] for r in runs]
    return [r["seed"] for r in runs], np.asarray(rows, dtype=float)


def methods(results: dict[str, Any], env: str) -> list[str]:
    return list(dict.fromkeys(r["label"] for r in results["runs"] if r["env"] == env))


def envs(results: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(r["env"] for r in results["runs"]))


def _fmt(values: list[float | None]) -> str:
    return " / ".join("-" if v is None else f"{v:.2f}" for v in values)


def _readout(results: dict[str, Any], env: str, label: str, name: str) -> list[float | None]:
    """A read-out per agent, mean over seeds (``None`` where undefined in every seed)."""
    runs = _runs(results, env, label)
    cols = np.array([[np.nan if x is None else x for x in r["readouts"][name]] for r in runs], dtype=float)
    with warnings.catch_warnings():  # an agent whose read-out is undefined in every seed: NaN, shown as "-"
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmean(cols, axis=0) if len(cols) else np.array([])
    return [None if np.isnan(x) else float(x) for x in m]


def game_table(results: dict[str, Any], env: str) -> list[str]:
    """The markdown rows of one game."""
    labels = methods(results, env)
    first = _runs(results, env, labels[0])[0]
    agents = first["agents"]
    seeds, untrained = item_matrix(results, env, labels[0], untrained=True)
    lines = [f"### {env}  (agents {' / '.join(agents)}; untrained team {untrained.mean():.3f}, "
             f"{len(seeds)} seeds x {untrained.shape[1]} held-out items, {first['steps']} updates per agent)", "",
             "| method | held-out success [95 % CI] | vs shared GRPO [95 % CI] | rank corr. with truth | "
             "sign agreement | advantage error | free-riding share | signal variance |",
             "|---|---|---|---|---|---|---|---|"]
    base = item_matrix(results, env, BASELINE) if BASELINE in labels else None
    for label in labels:
        s, x = item_matrix(results, env, label)
        diff = ""
        if base is not None and label != BASELINE and s == base[0]:
            d = paired_difference(x, base[1])
            diff = f"{d}" + (" (contains 0)" if d.contains_zero else "")
        lines.append(f"| {label} | {str(mean_interval(x)).replace('+', '')} | {diff} | {_fmt(_readout(results, env, label, 'rank_corr'))} | "
                     f"{_fmt(_readout(results, env, label, 'sign_agree'))} | "
                     f"{_fmt(_readout(results, env, label, 'adv_error'))} | "
                     f"{_fmt(_readout(results, env, label, 'free_riding'))} | "
                     f"{_fmt(_readout(results, env, label, 'adv_var'))} |")
    if base is not None and len(base[0]) >= 2:
        spread = float(np.std(base[1].mean(1), ddof=1))
        var = float(np.mean([item_variance(item_matrix(results, env, m)[1], base[1]) for m in labels
                             if m != BASELINE])) if len(labels) > 1 else 0.0
        mdd = minimal_detectable_difference(base[1].shape[1], len(base[0]), var, spread)
        need = seeds_to_detect(TARGET, base[1].shape[1], var, spread)
        lines += ["", f"Seed spread of GRPO's final success: sd {spread:.3f}; this design detects a difference of "
                  f"{mdd:.3f} (80 % power, two-sided 5 %); {need} seeds would detect {TARGET:.2f}."]
    return lines + [""]


def table(results: dict[str, Any], across: bool = True) -> str:
    """``table.md``: one table per game, then (``across``) IQM and P(> GRPO) across games."""
    cpu = results.get("cpu", "")
    secs = results.get("seconds", {}).get("all")
    lines = ["# Credit gym: which credit rule assigns credit better, and does it matter?", "",
             f"{cpu}; {secs:.0f} s" if secs else cpu, "",
             "Per-agent read-outs are written `agent_0 / agent_1 / ...`; rank correlation, sign agreement and "
             "advantage error compare each rule's learning signal with the true leave-one-out contribution "
             "(`benchmarks/gym_report.py`, `ccpo_algos/gym/truth_metrics.py`). Held-out success is sampled at the "
             "training temperature.", ""]
    for env in envs(results):
        lines += game_table(results, env)
    games = envs(results)
    labels = [m for m in dict.fromkeys(r["label"] for r in results["runs"])
              if all(m in methods(results, e) for e in games)]
    if across and labels:
        lines += [f"### Across games (rliable, stratified bootstrap over seeds, {ACROSS_REPS} replications)", "",
                  "| method | IQM of final success | P(method > shared GRPO) |", "|---|---|---|"]
        common = sorted(set.intersection(*({r["seed"] for r in results["runs"] if r["env"] == e} for e in games)))

        def final(label: str) -> np.ndarray:  # (common seeds, games) final success
            out = []
            for e in games:
                seeds, x = item_matrix(results, e, label)
                out.append([x[seeds.index(s)].mean() for s in common])
            return np.array(out).T

        lines[-4] = lines[-4].replace(" replications)", f" replications; the {len(common)} seeds every game ran)")
        for label in labels:
            scores = final(label)
            p = ""
            if BASELINE in labels and label != BASELINE:
                base = final(BASELINE)
                p = str(probability_of_improvement(scores, base, reps=ACROSS_REPS)).replace("+", "")
            lines.append(f"| {label} | {str(iqm(scores, reps=ACROSS_REPS)).replace('+', '')} | {p} |")
    return "\n".join(lines) + "\n"


def plot_curves(results: dict[str, Any], path: Path) -> None:
    """``curves.png``: held-out success over steps per game, mean over seeds with a 95 % t-interval band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import t as student

    games = envs(results)
    fig, axes = plt.subplots(1, len(games), figsize=(4.2 * len(games), 3.4), squeeze=False)
    for ax, env in zip(axes[0], games):
        for label in methods(results, env):
            runs = _runs(results, env, label)
            steps = sorted(int(s) for s in runs[0]["curve"])
            y = np.array([[r["curve"][str(s)] for s in steps] for r in runs])
            m = y.mean(0)
            ax.plot(steps, m, label=label, lw=1.4)
            if len(runs) > 1:
                h = student.ppf(0.975, len(runs) - 1) * y.std(0, ddof=1) / np.sqrt(len(runs))
                ax.fill_between(steps, m - h, m + h, alpha=0.15)
        ax.set_title(env)
        ax.set_xlabel("update")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out team success")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_credit(results: dict[str, Any], path: Path) -> None:
    """``credit.png``: per game, each rule's advantage error against the truth per agent (bars) and the share of
    positive advantage reaching agents whose true contribution is 0 (text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    games = envs(results)
    fig, axes = plt.subplots(1, len(games), figsize=(4.2 * len(games), 3.4), squeeze=False)
    for ax, env in zip(axes[0], games):
        labels = methods(results, env)
        agents = _runs(results, env, labels[0])[0]["agents"]
        w = 0.8 / len(agents)
        for j, a in enumerate(agents):
            vals = [(_readout(results, env, m, "adv_error")[j] or 0.0) for m in labels]
            ax.bar(np.arange(len(labels)) + j * w, vals, w, label=a)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - w / 2, labels, rotation=45, fontsize=7)
        ax.set_title(env)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("advantage error vs the truth (RMS)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, results: dict[str, Any], final: bool = True) -> None:
    """Write table.md, curves.png, credit.png and marl_eval.json into ``out`` (``final``: with the across-games
    statistics, which take a few seconds; a bench writes them after its last game)."""
    (out / "table.md").write_text(table(results, across=final))
    plot_curves(results, out / "curves.png")
    plot_credit(results, out / "credit.png")
    (out / "marl_eval.json").write_text(json.dumps(marl_eval_layout(results)))
