"""The README's worked example of a plug-in topology, executed as written: the module, its check, the training
command (on the tiny model) and evaluation from the run folder alone."""

import dataclasses
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import ccpo_envs
from ccpo_algos.cli import train_config_from_args
from ccpo_algos.evaluation import evaluate_run
from ccpo_algos.runlog import read_metrics
from ccpo_algos.trainer import train

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _example_module() -> str:
    (code,) = [b for b in _blocks("python") if b.startswith("# my_review.py")]
    return code


def _example_commands() -> list[str]:
    (block,) = [b for b in _blocks("bash") if "--plugins my_review" in b]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.fixture
def readme_module(tmp_path, monkeypatch):
    (tmp_path / "my_review.py").write_text(_example_module())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("my_review", None)
    ccpo_envs.ENVS.pop("review_v0", None)


def test_readme_topology_checks_as_shown(readme_module):
    check, train_cmd, eval_cmd = _example_commands()
    assert check.startswith("python -c ")
    # the exact command, in a fresh interpreter, from the folder that holds my_review.py
    out = subprocess.run([sys.executable, *shlex.split(check)[1:]], cwd=readme_module, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.slow
def test_readme_topology_trains_and_evaluates(readme_module, tiny_model, vllm_engine):
    _, train_cmd, eval_cmd = _example_commands()
    argv = shlex.split(train_cmd)
    assert argv[:2] == ["ccpo", "train"]
    cfg = train_config_from_args(argv[2:])
    assert (cfg.env, cfg.plugins, cfg.algo) == ("review_v0", ("my_review",), "ccpo")
    # the command's config on the tiny model and a 2-step budget (the cpu preset's model is what tests avoid)
    cfg = dataclasses.replace(cfg, model=tiny_model, task="arith_easy", out_dir=str(readme_module / "runs"),
                              steps=2, prompts_per_step=2, group_size=4, max_tokens=12, max_model_len=768,
                              eval_every=0, eval_size=4, eval_samples=0, lora_r=8, lora_alpha=16, lr=1e-2,
                              truncation="off", schedule="simultaneous", progress=False, tensorboard=False)
    run = train(cfg, policy=vllm_engine)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert all("credit/delta_mean_reviewer_0" in r for r in rows)  # the reviewer's counterfactual was played
    trained = {k for r in rows for k in r if k.startswith("grad_norm/")}
    assert trained == {"grad_norm/proposer_0", "grad_norm/reviewer_0"}
    # `ccpo eval RUN`: the run's recorded plugin is imported again from the config alone
    assert shlex.split(eval_cmd)[:2] == ["ccpo", "eval"]
    sys.modules.pop("my_review", None)
    ccpo_envs.ENVS.pop("review_v0", None)
    out = evaluate_run(run, "eval", size=2, policy=vllm_engine)
    assert "review_v0" in ccpo_envs.ENVS and 0.0 <= out["eval/charts/accuracy_joint"] <= 1.0
