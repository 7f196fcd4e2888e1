"""Where a bench's time goes: per run, the seconds of each phase the trainer logs (``perf/seconds_*`` in
``metrics.jsonl``: rollout, update, engine sync, held-out evaluation) against the run's wall time, read from a
finished (or interrupted) ``ccpo bench`` folder. Nothing is re-run.

A run's wall time is the span of its folder's files (``config.json`` is written first, the last metrics and
checkpoint last); "other" is the wall time no phase accounts for (building the team and envs, checkpoints, the
first engine load of an adapter). The untrained-team references are in ``results.json`` (``seconds``).

    python -m benchmarks.phases /path/to/bench-folder --out phases.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._report import emit

PHASES = ("rollout", "update", "sync", "eval")


def run_phases(run_dir: Path) -> dict[str, float]:
    """Summed ``perf/seconds_<phase>`` over the run's steps, its wall time and generated tokens."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    out = {p: sum(r.get(f"perf/seconds_{p}", 0.0) for r in rows) for p in PHASES}
    out["tokens"] = sum(r.get("perf/tokens_generated", 0.0) for r in rows)
    times = [f.stat().st_mtime for f in run_dir.rglob("*") if f.is_file()]
    out["wall"] = max(times) - (run_dir / "config.json").stat().st_mtime
    out["steps"] = len(rows)
    return out


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a ccpo bench folder (with runs/ and results.json)")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)
    runs_dir = args.folder / "runs"
    runs = sorted(d for d in runs_dir.iterdir() if (d / "metrics.jsonl").exists()) if runs_dir.is_dir() else []
    if not runs:
        p.exit(2, f"error: no run with a metrics.jsonl under {args.folder / 'runs'}; pass a ccpo bench folder\n")
    lines = ["| run | steps | wall s | " + " | ".join(f"{ph} s" for ph in PHASES) + " | other s | tokens/s in rollout |",
             "|---|---|---|" + "---|" * len(PHASES) + "---|---|"]
    total = dict.fromkeys(("wall", *PHASES), 0.0)
    for d in runs:
        r = run_phases(d)
        other = r["wall"] - sum(r[ph] for ph in PHASES)
        for k in total:
            total[k] += r[k]
        lines.append(f"| {d.name} | {r['steps']} | {r['wall']:.0f} | " + " | ".join(f"{r[ph]:.0f}" for ph in PHASES)
                     + f" | {other:.0f} | {r['tokens'] / max(r['rollout'], 1e-9):.0f} |")
    share = " | ".join(f"{100 * total[ph] / total['wall']:.0f} %" for ph in PHASES)
    other = total["wall"] - sum(total[ph] for ph in PHASES)
    lines.append(f"| **all runs** | | {total['wall']:.0f} | {share} | {100 * other / total['wall']:.0f} % | |")
    results = args.folder / "results.json"
    refs = json.loads(results.read_text()).get("references", []) if results.exists() else []
    text = "\n".join(lines) + "\n"
    timed = [r for r in refs if r.get("seconds")]  # 0: reused from an earlier run of the same evaluation
    if timed:
        text += "\nUntrained-team references: " + ", ".join(
            f"{r['env']} s{r['seed']} {r['seconds']:.0f} s" for r in timed) + "\n"
    return emit(text, args.out)


if __name__ == "__main__":
    main()
