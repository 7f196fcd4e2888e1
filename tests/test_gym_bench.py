"""``ccpo bench``'s credit-gym tier: bad options exit 2 with the fix before anything runs, and the smoke preset
writes every output a researcher reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gym_suite import GymBenchConfig, run_gym_bench

CCPO = str(Path(sys.executable).with_name("ccpo"))


@pytest.mark.parametrize("args,needle", [
    (["--envs", "dyad_v0"], "the gym's games are"),
    (["--tier", "fast"], "--tier takes one of gym, llm"),
])
def test_bad_gym_bench_options_exit_2_with_the_fix(args, needle, tmp_path):
    out = subprocess.run([CCPO, "bench", *args, "--out-dir", str(tmp_path)] if "--tier" not in args
                         else [CCPO, "bench", *args], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("kw,needle", [
    ({"algos": ("ppo",)}, "the gym runs the rows"),
    ({"seeds": (1, 1)}, "each seed once"),
    ({"preset": "huge"}, "choose from"),
    ({"batch_runs": 0}, "--batch-runs 0"),
    ({"steps": -1}, "must be >= 1"),
    ({"workers": -1}, "--workers -1"),
])
def test_bad_gym_bench_settings_name_the_fix(kw, needle):
    with pytest.raises(ValueError, match=needle):
        GymBenchConfig(**kw).design()


@pytest.mark.slow
def test_gym_bench_smoke_writes_table_plots_and_results(tmp_path):
    out = run_gym_bench(GymBenchConfig(preset="smoke", out_dir=str(tmp_path / "res"), cache=str(tmp_path / "models"),
                                       progress=False))
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert {(r["label"], r["seed"]) for r in runs} == {("ccpo", 0), ("ccpo", 1), ("grpo", 0), ("grpo", 1)}
    assert all(sorted(map(int, r["curve"])) == [0, 2, 4] and len(r["items"]) == 16 for r in runs)
    # a seed's rules share the untrained team's held-out items and noise: the same step-0 rewards
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r["seed"], set()).add(tuple(r["items_untrained"]))
    assert all(len(v) == 1 for v in by_seed.values())
    table = (out / "table.md").read_text()
    assert "| ccpo |" in table and "| grpo |" in table and "vs shared GRPO" in table
    assert (out / "curves.png").stat().st_size > 1000 and (out / "credit.png").stat().st_size > 1000
    marl = json.loads((out / "marl_eval.json").read_text())
    assert set(marl["ccpo"]["splitkey_v0"]) == {"ccpo", "grpo"}


@pytest.mark.slow
def test_gym_bench_numbers_do_not_depend_on_workers_or_chunks(tmp_path):
    """Two worker processes and chunks of one run each give the runs of one worker and one chunk, in the same order."""
    def runs(**kw):
        out = run_gym_bench(GymBenchConfig(preset="smoke", steps=2, eval_every=1, out_dir=str(tmp_path / "res"),
                                           cache=str(tmp_path / "models"), progress=False, **kw))
        return json.loads((out / "results.json").read_text())["runs"]

    one = runs(workers=1)
    many = runs(workers=2, batch_runs=1)
    assert [(r["label"], r["seed"]) for r in one] == [(r["label"], r["seed"]) for r in many]
    assert [r["curve"] for r in one] == [r["curve"] for r in many]
    assert [r["items"] for r in one] == [r["items"] for r in many]
    assert [r["readouts"] for r in one] == [r["readouts"] for r in many]
