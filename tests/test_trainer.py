"""The trainer end to end on the tiny model through real vLLM (CPU), the credit on scripted teams, resume, CLI."""

import dataclasses
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ccpo_envs
from ccpo_agents.hardware import resolve_dtype
from ccpo_agents.hf_backend import HFTeam, LoraSpec
from ccpo_agents.policy import SamplingConfig
from ccpo_agents.scripted import ConstantPolicy, IgnoresTeammatePolicy, OraclePolicy, PerRolePolicy
from ccpo_algos.algorithms import ALGORITHMS
from ccpo_algos.build import team_agents
from ccpo_algos.checkpoint import latest_checkpoint
from ccpo_algos.config import preset
from ccpo_algos.credit import CreditConfig
from ccpo_algos.rollout import collect, team_layout
from ccpo_algos.evaluation import evaluate_run
from ccpo_algos.metrics import step_seconds
from ccpo_algos.runlog import read_metrics
from ccpo_algos.trainer import batch_indices, roles_to_train, train
from ccpo_algos.update import mini_batches


import parity_plugin  # noqa: F401,E402 - registers the parity_stub task source
from procs import alive as _alive, descendants as _descendants  # noqa: E402

# envs that make their own tasks (the credit gym) are trained by their own tier (tests/test_gym_runner.py); the
# LLM trainer on them is checked below
CASES = [(algo, env) for algo in ("ccpo", "grpo", "mappo") for env in sorted(ccpo_envs.ENVS)
         if ccpo_envs.ENVS[env].tasks is None] + [
    ("magrpo", "vote_v0"), ("rae", "dyad_v0"), ("shapley", "vote_v0"),  # peers' rows (SPEC "More credit methods")
    ("marti_margin", "debate_v0"), ("at_grpo", "debate_v0")]  # per-turn rules: each debate round its own reward


def _cfg(tiny_model, tmp_path, **kw):
    base = dict(model=tiny_model, task="parity_stub", out_dir=str(tmp_path), progress=False, tensorboard=False,
                train_size=16, eval_size=4, max_tokens=12, lr=1e-2, warmup_steps=1,
                truncation="off")  # a random model almost never stops within 12 tokens
    return preset("smoke", **{**base, **kw})


def _adapter(path):
    """The weights in a folder: a peft adapter, or a model's safetensors shards."""
    files = [Path(path) / "adapter_model.safetensors"] if (Path(path) / "adapter_model.safetensors").exists() \
        else sorted(Path(path).glob("*.safetensors"))
    return {k: v for f in files for k, v in load_file(str(f)).items()}


@pytest.mark.slow
@pytest.mark.parametrize("algo,env", [("ccpo", "signal_v0"), ("mappo", "noisyvote_v0")])
def test_the_trainer_runs_a_gym_env_on_its_own_tasks(algo, env, tiny_model, vllm_engine, tmp_path):
    """``ccpo train --env <gym env>`` plays the game's own tasks (not ``--task``) through the same trainer; a random
    tiny model rarely answers one symbol, so only the run itself and finite losses are asserted."""
    cfg = _cfg(tiny_model, tmp_path, algo=algo, env=env, schedule="simultaneous", name=f"{algo}-{env}",
               group_size=2, team_size=3)
    run = train(cfg, policy=vllm_engine)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(v)) for r in rows for k, v in r.items() if k.startswith("losses/"))
    items = json.loads(next((run / "eval_items").glob("step_*.json")).read_text())
    assert all(str(i["task_id"]).startswith(f"gym:{env[:-3]}/eval/") for i in items)


@pytest.mark.slow
@pytest.mark.parametrize("algo,env", CASES)
def test_every_algorithm_and_topology_trains_two_steps(algo, env, tiny_model, vllm_engine, tmp_path):
    cfg = _cfg(tiny_model, tmp_path, algo=algo, env=env, schedule="simultaneous", name=f"{algo}-{env}",
               group_size=4)  # groups of 4: a group with a reward spread (a gradient) is near certain
    run = train(cfg, policy=vllm_engine)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    agents = team_agents(cfg)
    for r in rows:
        losses = {k: v for k, v in r.items() if k.startswith("losses/")}
        assert len(losses) == len(agents) + (algo == "mappo")
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    for a in agents:
        assert any(r[f"grad_norm/{a}"] > 0 for r in rows), f"{a} never got a gradient"
        # pi_old = the trainer's log-probs (one optimiser step per rollout): the ratio is exactly 1 ...
        assert all(r[f"policy/ratio_{a}"] == 1.0 for r in rows)
    # ... and the engine's behaviour log-probs, at the same temperature, agree with them (stated tolerance, nats)
    assert all(abs(r["policy/engine_log_ratio"]) < 0.02 and r["policy/engine_log_ratio_abs"] < 0.02 for r in rows)
    init = HFTeam(tiny_model, agents, LoraSpec(cfg.lora_r, cfg.lora_alpha), cfg.dtype, seed=cfg.seed)
    for a in agents:
        trained = _adapter(run / "checkpoints" / "step_000002" / "adapters" / a)
        init_dir = init.save_adapter(a, tmp_path / "init" / a)
        before = _adapter(init_dir)
        assert trained.keys() == before.keys()
        changed = [k for k in trained if not torch.equal(trained[k], before[k])]
        assert any("lora_B" in k for k in changed), f"{a}: trainable parameters did not change"
    meta = json.loads((run / "config.json").read_text())
    assert cfg.dtype == "auto" and meta["dtype"] == resolve_dtype("auto", "cpu")  # what it ran in, for a resume
    assert meta["algo"] == algo and (run / "checkpoints" / "latest").read_text() == "step_000002"
    assert any(k.startswith("eval/") for k in rows[-1])
    if algo == "ccpo" and env == "dyad_v0":  # `ccpo credit-report RUN` on the trained adapters
        from benchmarks.credit_fidelity import credit_report

        md = credit_report(run, tasks=2, samples=2, algos=["ccpo", "grpo", "difference"], policy=vllm_engine)
        rep = json.loads(md.with_suffix(".json").read_text())
        assert set(rep["methods"]) == {"ccpo", "grpo", "difference"} and set(rep["contribution"]) == {"thinker_0"}
        assert rep["checkpoint"] == "step_000002" and "| ccpo |" in md.read_text()
    if algo == "grpo" and env == "dyad_v0":  # the paper's protocol: train on one source, test on a benchmark
        out = evaluate_run(run, "test", size=3, policy=vllm_engine, task="gaokao2023en",
                           task_path=os.path.join(os.path.dirname(__file__), "data", "gaokao2023en.jsonl"))
        assert 0.0 <= out["test/charts/accuracy_joint"] <= 1.0
        assert (run / "eval_test_gaokao2023en_step_000002.json").exists()


def _scripted_batch(env_name, policy, n_tasks=4, group=2, **env_kw):
    src = ccpo_envs.make_source("arith_easy", size=20)
    envs = [ccpo_envs.make(env_name, api="aec", source=src, **env_kw) for _ in range(n_tasks * group)]
    tasks = [src[i] for i in range(n_tasks)]
    rb = collect(envs, tasks, group, policy, SamplingConfig())
    return rb, team_layout(envs[0].unwrapped.topology)


def test_free_riding_thinker_gets_zero_ccpo_credit_but_full_shared_reward():
    src = ccpo_envs.make_source("arith_easy", size=20)
    gold = {src[i].question: src[i].answer for i in range(20)}
    team = PerRolePolicy({"thinker_0": ConstantPolicy("Think hard."),
                          "reasoner_0": IgnoresTeammatePolicy(OraclePolicy(gold.get))})
    rb, (stage, gate) = _scripted_batch("dyad_v0", team)
    cb = rb.credit_batch(gate)
    assert torch.all(cb.team_reward == 1.0) and torch.all(cb.removed_reward[:, 0] == 1.0)
    ccpo, _ = ALGORITHMS["ccpo"].credit(cb, None, CreditConfig())
    shared, _ = ALGORITHMS["grpo"].credit(cb, None, CreditConfig())
    assert torch.all(ccpo[:, 0] == 0.0)  # Δ = R_joint - R_solo = 0 for the thinker
    assert torch.all(shared[:, 0] == 1.0)  # the free-rider still gets the full team reward
    # a helpful thinker whose plan the reasoner needs: the reasoner is right only with the plan
    helper = PerRolePolicy({"thinker_0": ConstantPolicy("PLAN"),
                            "reasoner_0": _NeedsPlan(OraclePolicy(gold.get))})
    rb, (_, gate) = _scripted_batch("dyad_v0", helper)
    ccpo, _ = ALGORITHMS["ccpo"].credit(rb.credit_batch(gate), None, CreditConfig())
    assert torch.all(ccpo[:, 0] == 1.0)


class _NeedsPlan:
    def __init__(self, inner):
        self.inner = inner

    def generate(self, requests, sampling):
        out = self.inner.generate(requests, sampling)
        for r, cs in zip(requests, out):
            if "PLAN" not in r.text:
                for c in cs:
                    c.text = "no idea"
        return out


class TruncatingPolicyDouble:
    """Test double for a model that runs out of tokens: wraps a scripted policy and marks one role's completions
    as cut at the generation limit (finish reason ``length``)."""

    def __init__(self, inner, role):
        self.inner, self.role = inner, role

    def generate(self, requests, sampling):
        out = self.inner.generate(requests, sampling)
        for r, cs in zip(requests, out):
            for c in cs:
                if r.role == self.role:
                    c.finish_reason = "length"
        return out


def test_rollout_applies_the_episode_truncation_rule():
    """A truncated thinker ends the joint episode: the reasoner's joint turn is never generated (a ``skipped``
    placeholder that trains nothing), R_joint = 0, the solo run still plays, and every agent's credit is 0."""
    src = ccpo_envs.make_source("arith_easy", size=20)
    gold = {src[i].question: src[i].answer for i in range(20)}
    calls = []

    class Recording(PerRolePolicy):
        def generate(self, requests, sampling):
            calls.extend((r.role, "Instruction" in r.text) for r in requests)
            return super().generate(requests, sampling)

    inner = Recording({"thinker_0": ConstantPolicy("PLAN"), "reasoner_0": OraclePolicy(gold.get)})
    rb, (_, gate) = _scripted_batch("dyad_v0", TruncatingPolicyDouble(inner, "thinker_0"))
    assert ("reasoner_0", True) not in calls and ("reasoner_0", False) in calls  # no joint turn, solo played
    assert all(t["reasoner_0"].finish_reason == "skipped" and not t["reasoner_0"].completion_ids for t in rb.turns)
    cb = rb.credit_batch(gate)
    assert torch.all(cb.team_reward == 0) and torch.all(cb.removed_reward[:, 0] == 1)
    for algo in ("ccpo", "grpo", "difference"):
        r, _ = ALGORITHMS[algo].credit(cb, None, CreditConfig())
        assert torch.all(r == 0), algo
    rb, _ = _scripted_batch("dyad_v0", TruncatingPolicyDouble(inner, "thinker_0"), truncation="turn")
    assert all(i["reward_joint"] == 1.0 for i in rb.infos)  # the reasoner ran on the cut plan


def test_non_pivotal_voter_gets_zero_credit():
    src = ccpo_envs.make_source("arith_easy", size=20)
    gold = {src[i].question: src[i].answer for i in range(20)}
    team = PerRolePolicy({"voter_0": OraclePolicy(gold.get), "voter_1": OraclePolicy(gold.get),
                          "voter_2": ConstantPolicy("\\boxed{-12345}")})
    rb, (_, gate) = _scripted_batch("vote_v0", team)
    diff, _ = ALGORITHMS["difference"].credit(rb.credit_batch(gate), None, CreditConfig())
    # voters 0 and 1 are pivotal (without either, a 1-1 tie: expected reward 0.5); voter 2 is not
    assert torch.all(diff[:, 2] == 0.0)
    assert torch.allclose(diff[:, :2], torch.full_like(diff[:, :2], 0.5))


def test_schedule_and_data_order():
    cfg = preset(None, switch_every=10)
    assert [roles_to_train(cfg, s, ["t", "r"])[0] for s in (1, 9, 10, 19, 20)] == ["t", "t", "r", "r", "t"]
    v2 = preset(None, switch_every=10, schedule="alternate_v2")  # (step - 1) // P: blocks of exactly P from step 1
    assert [roles_to_train(v2, s, ["t", "r"])[0] for s in (1, 10, 11, 20, 21)] == ["t", "t", "r", "r", "t"]
    assert mini_batches([0, 1, 2, 3, 5, 6, 7], 2, 2, 8) == [[0, 1, 2, 3], [5, 6, 7]]
    assert mini_batches([0, 1, 2], 2, 0, 4) == [[0, 1, 2]]
    assert mini_batches([0, 1], 2, 1, 6) == [[0, 1], [], []]  # same number of steps on every rank
    assert roles_to_train(preset(None, schedule="simultaneous"), 3, ["a", "b"]) == ["a", "b"]
    a = [i for s in range(1, 6) for i in batch_indices(0, s, 4, 10)]
    assert sorted(a[:10]) == list(range(10)) and a == [i for s in range(1, 6) for i in batch_indices(0, s, 4, 10)]


def test_bad_config_fails_before_any_model_loads(tmp_path, monkeypatch):
    import ccpo_algos.trainer as trainer_mod

    def no_model(*a, **k):
        raise AssertionError("a model was resolved before the config was validated")

    monkeypatch.setattr(trainer_mod, "resolve_model", no_model)
    for kw, msg in [({"algo": "ppo"}, "choose one of"), ({"lr": 3.0}, "lr=3.0"), ({"group_size": 1}, "group_size"),
                    ({"eval_split": "train"}, "use eval"), ({"extract_modes": ("boxed", "magic")}, "magic"),
                    ({"max_tokens": 4096, "max_model_len": 1024}, "no room"), ({"alpha": float("nan")}, "finite"),
                    ({"temperature": 0.0}, "temperature"), ({"truncation": "never"}, "truncation"),
                    ({"ppo_mini_batch": 3, "prompts_per_step": 8}, "ppo_mini_batch"), ({"cf_lambda": -1.0}, "cf_lambda"),
                    ({"finetune": "full", "backend": "server"}, "backend=vllm"),
                    ({"task_path": "x.jsonl"}, "drop --task-path"), ({"task": "no_such_task"}, "unknown task source"),
                    ({"algo": "shapley", "env": "dyad_v0"}, "coalition"),
                    ({"env": "no_such_env"}, "not registered.*debate_v0"), ({"env_options": ("rounds",)}, "KEY=VALUE"),
                    ({"env": "debate_v0", "env_options": ("rounds=0",)}, "rounds >= 1"),
                    ({"env": "chain_v0", "env_options": ("colour=3",)}, "colour"),
                    ({"plugins": ("no_such_plugin_module",)}, "cannot import"),
                    ({"truncated_as_failure": True, "truncation": "turn"}, "needs truncation='episode'")]:
        with pytest.raises(ValueError, match=msg):
            train(preset(None, out_dir=str(tmp_path), **kw))
    assert not list(tmp_path.iterdir())  # nothing was written, not even an empty run folder
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        train(preset(None, out_dir=str(tmp_path / "a_file")))


def test_non_finite_gradient_stops_before_the_update(tiny_model):
    from ccpo_agents.policy import Completion
    from ccpo_algos.loss import LossConfig
    from ccpo_algos.update import policy_step

    team = HFTeam(tiny_model, ["agent_0"], LoraSpec(8, 16), "float32")
    turns = [Completion("agent_0", "x", [1, 2, 3], [4, 5], [-1.0, -1.0], "stop"),
             Completion("agent_0", "y", [1, 2], [6, 7, 8], [-1.0] * 3, "stop")]
    params = team.trainable_parameters("agent_0")
    opt = torch.optim.AdamW(params, lr=1e-2)
    before = [p.detach().clone() for p in params]
    cfg = preset("smoke", model=tiny_model, group_size=1, prompts_per_step=2)
    with pytest.raises(FloatingPointError, match="not finite"):
        policy_step(team, "agent_0", opt, turns, torch.tensor([float("nan"), 1.0]), cfg, LossConfig())
    assert all(torch.equal(a, b) for a, b in zip(before, params))  # no step into NaN weights


def test_cli_help_and_errors():
    out = subprocess.run([sys.executable, "-m", "ccpo_algos.cli", "train", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    for field in ("--algo", "--group-size", "--schedule", "--resume", "Presets"):
        assert field in out.stdout
    bad = subprocess.run([sys.executable, "-m", "ccpo_algos.cli", "train", "--schedule", "random"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "choose one of ['alternate', 'alternate_v2', 'simultaneous']" in bad.stderr
    ev = subprocess.run([sys.executable, "-m", "ccpo_algos.cli", "eval", "/no/such/run"], capture_output=True,
                        text=True, timeout=120)
    assert ev.returncode == 2 and "not a run folder" in ev.stderr


def _cli_train(args, env):
    return subprocess.Popen([sys.executable, "-m", "ccpo_algos.cli", "train", "--preset", "smoke"] + args,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _comparable(rows):
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


@pytest.mark.slow
def test_released_recipe_trains_with_gspo_mini_batches(tiny_model, vllm_engine, tmp_path):
    """ccpo_v2 with the reference's GSPO band and two PPO mini-batches per rollout: the first mini-batch sees
    ratio 1 (pi_old = the trainer's log-probs before the step), the second sees the policy moved by the first."""
    cfg = _cfg(tiny_model, tmp_path, algo="ccpo_v2", env="dyad_v0", name="v2", loss="gspo", clip_eps=3e-4,
               clip_eps_high=4e-4, log_ratio_clip=10.0, dual_clip=None, ppo_mini_batch=1, schedule="alternate_v2",
               switch_every=1, group_size=4)
    rows = read_metrics(train(cfg, policy=vllm_engine))
    assert [r["step"] for r in rows] == [1, 2]
    assert "losses/policy_thinker_0" in rows[0] and "losses/policy_reasoner_0" in rows[1]  # alternate_v2, P = 1
    for r, role in zip(rows, ("thinker_0", "reasoner_0")):
        assert math.isfinite(r[f"losses/policy_{role}"]) and r[f"grad_norm/{role}"] > 0
        assert r[f"policy/ratio_{role}"] != 1.0  # mean over the two mini-batches: the second one moved
        assert r[f"policy/clip_frac_{role}"] > 0  # a 4e-4 band clips once the policy has moved


@pytest.mark.slow
def test_full_finetune_trains_each_role_as_its_own_model(tiny_model, tmp_path):
    """finetune=full: every role is a full model served by its own engine, reloaded after each update."""
    cfg = _cfg(tiny_model, tmp_path, algo="grpo", env="dyad_v0", name="full", finetune="full", lr=1e-3,
               schedule="simultaneous", group_size=4)
    run = train(cfg)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    base = _adapter(tiny_model)
    for a in ("thinker_0", "reasoner_0"):
        assert any(r[f"grad_norm/{a}"] > 0 for r in rows)
        assert all(r[f"policy/ratio_{a}"] == 1.0 for r in rows)
        saved = _adapter(run / "checkpoints" / "step_000002" / "adapters" / a)
        assert any(not torch.equal(saved[k].float(), base[k].float()) for k in saved if k in base), a
    # step 2 was sampled by the reloaded engines: they serve the trainer's weights
    assert abs(rows[1]["policy/engine_log_ratio"]) < 0.02 and rows[1]["policy/engine_log_ratio_abs"] < 0.02


def _killed_at(point, args, env):
    """Run ``ccpo train`` under tests/kill_points.py: SIGKILLed, engine and all, at the first ``point``."""
    script = str(Path(__file__).with_name("kill_points.py"))
    p = subprocess.Popen([sys.executable, script, point] + args, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    assert p.wait(timeout=600) == -signal.SIGKILL, f"the run was not killed at {point}"


def _checkpoint_invariants(run):
    """What every kill must leave: ``latest`` names a complete checkpoint of this run, and the metrics rows past
    it are only the ones the resume will trim."""
    ckpt = latest_checkpoint(run)
    k = 0 if ckpt is None else int(ckpt.name[len("step_"):])
    if ckpt is not None:
        for f in ("state.json", "optim.pt", "adapters/thinker_0/adapter_model.safetensors",
                  "adapters/reasoner_0/adapter_model.safetensors"):
            assert (ckpt / f).is_file(), f
    return k


@pytest.mark.slow
def test_killed_run_resumes_exactly(tiny_model, tmp_path):
    """SIGKILL a real run (engine and all) four times, at the moments a crash is hardest on its files: at a random
    moment of a step, right after a metrics row, in the middle of a checkpoint write, and between a checkpoint's
    rename and its ``latest`` pointer. Every resume continues the run it was given; the finished run's metrics and
    adapters equal an uninterrupted run's, with no duplicate row and no leftover temporary folder."""
    env = dict(os.environ, CCPO_CACHE=str(tmp_path / "cache"))
    common = ["--model", tiny_model, "--task", "rg:basic_arithmetic", "--steps", "6", "--checkpoint-every", "1",
              "--lr", "0.01", "--max-tokens", "12", "--no-progress", "--out-dir", str(tmp_path)]
    full = _cli_train(common + ["--name", "full"], env)
    assert full.wait(timeout=600) == 0
    run = tmp_path / "killed"
    # somewhere in step 2 (rollout, update or sync): a random moment within the time step 2 took in the full run,
    # timed from inside the run (polling for checkpoint 1 from here let a fast machine finish all six steps first)
    step2 = step_seconds(read_metrics(tmp_path / "full")[1])
    _killed_at(f"in-step={random.uniform(0.0, step2):.3f}", ["--preset", "smoke"] + common + ["--name", "killed"], env)
    k = _checkpoint_invariants(run)
    assert 1 <= k < 6, "the run should have been killed before its end"
    resume = ["--resume", str(run)]

    _killed_at("after-metrics", resume, env)
    assert _checkpoint_invariants(run) == k and read_metrics(run)[-1]["step"] == k + 1  # a row past the checkpoint

    _killed_at("checkpoint-write", resume, env)
    assert _checkpoint_invariants(run) == k
    assert list((run / "checkpoints").glob(f".step_{k + 1:06d}.*")), "the write should have been cut short"

    _killed_at("latest-pointer", resume, env)
    assert _checkpoint_invariants(run) == k and (run / "checkpoints" / f"step_{k + 1:06d}" / "state.json").is_file()

    config_before = (run / "config.json").read_text()
    bad = subprocess.run([sys.executable, "-m", "ccpo_algos.cli", "train", "--resume", str(run), "--lr", "0.5"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "cannot change" in bad.stderr and "'lr'" in bad.stderr
    assert (run / "config.json").read_text() == config_before  # nothing written before validation
    resumed = subprocess.Popen([sys.executable, "-m", "ccpo_algos.cli", "train", "--resume", str(run)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    assert resumed.wait(timeout=600) == 0
    a, b = read_metrics(tmp_path / "full"), read_metrics(run)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert _comparable(a) == _comparable(b)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    kept = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert kept[-1] == "step_000006" and len(kept) <= 4  # keep_checkpoints (3) plus the best
    for role in ("thinker_0", "reasoner_0"):
        x = _adapter(tmp_path / "full" / "checkpoints" / "step_000006" / "adapters" / role)
        y = _adapter(run / "checkpoints" / "step_000006" / "adapters" / role)
        assert all(torch.equal(x[k], y[k]) for k in x)
    # TensorBoard: the resumed steps' events replace the killed ones (purge_step), none is shown twice
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("charts/accuracy_joint")] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_sigterm_stops_every_process_and_leaves_the_run_resumable(tiny_model, tmp_path):
    env = dict(os.environ, CCPO_CACHE=str(tmp_path / "cache"))
    common = ["--model", tiny_model, "--task", "rg:basic_arithmetic", "--checkpoint-every", "1", "--max-tokens",
              "12", "--no-progress", "--no-tensorboard", "--out-dir", str(tmp_path), "--name", "term"]
    proc = _cli_train(common + ["--steps", "50"], env)
    run = tmp_path / "term"
    deadline = time.monotonic() + 600
    while not (run / "checkpoints" / "step_000001").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    kids = _descendants(proc.pid)
    assert kids, "the run should have started an engine process"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    deadline = time.monotonic() + 30
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [k for k in kids if _alive(k)], "processes ccpo started outlived it"
    k = int((run / "checkpoints" / "latest").read_text().strip()[len("step_"):])  # the last complete checkpoint
    resumed = subprocess.run([sys.executable, "-m", "ccpo_algos.cli", "train", "--resume", str(run),
                              "--steps", str(k + 1)], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["step"] for r in read_metrics(run)] == list(range(1, k + 2))


@pytest.mark.slow
def test_bench_suite_writes_table_plots_and_report(tiny_model, vllm_engine, tmp_path):
    from benchmarks.suite import SINGLE_LABEL, BenchConfig, report, run_suite

    bc = BenchConfig(preset="smoke", out_dir=str(tmp_path), model=tiny_model, ablations=("no_history",),
                     baselines=("single",),
                     extra={"task": "parity_stub", "truncation": "off", "progress": False, "eval_samples": 2})
    out = run_suite(bc, policy=vllm_engine)
    res = json.loads((out / "results.json").read_text())
    sampled = "eval_sampled/charts/accuracy_joint"
    for m in [r["final"] for r in res["runs"]] + [r["metrics"] for r in res["references"]]:
        assert 0.0 <= m[sampled] <= 1.0 and 0.0 <= m["eval/charts/accuracy_joint"] <= 1.0
    assert {(r["label"], r["env"]) for r in res["runs"]} == {
        (a, e) for a in ("ccpo", "grpo", "ccpo[no_history]", SINGLE_LABEL) for e in ("dyad_v0", "vote_v0")}
    # the compute-matched single agent: one voter, G x the team's joint turns per prompt, on the same items
    for r in res["runs"]:
        if r["label"] == SINGLE_LABEL:
            k = 2 if r["env"] == "dyad_v0" else 3
            assert (r["config"]["env"], r["config"]["team_size"], r["config"]["group_size"]) == ("vote_v0", 1, 2 * k)
            sc = r["self_consistency"]
            assert sc["trained"]["k"] == sc["untrained"]["k"] == k
            assert all(0.0 <= sc[x]["accuracy"] <= 1.0 for x in ("trained", "untrained"))
    assert len(res["references"]) == 2
    table_md = (out / "table.md").read_text()
    assert "untrained team" in table_md and "ccpo[no_history]" in table_md and "Sampled accuracy: mean over 2" in table_md
    assert "dyad_v0: self-consistency@2 untrained" in table_md and "vote_v0: self-consistency@3" in table_md
    ref = {r["env"]: r["metrics"]["eval/charts/accuracy_joint"] for r in res["references"]}
    row = next(ln for ln in table_md.splitlines() if ln.startswith("| dyad_v0 | grpo |"))
    gain = next(r["final"]["eval/charts/accuracy_joint"] for r in res["runs"] if r["label"] == "grpo"
                and r["env"] == "dyad_v0") - ref["dyad_v0"]
    assert f"{gain:+.3f}" in row  # the "vs untrained" column is the change over the same seed's untrained team
    assert (out / "curves.png").stat().st_size > 1000 and (out / "credit.png").stat().st_size > 1000
    # every method is scored item by item on the same held-out tasks: paired statistics
    ids = {tuple(x["task_id"] for x in r["items"]) for r in res["runs"] + res["references"] if r["env"] == "dyad_v0"}
    assert len(ids) == 1 and len(next(iter(ids))) == 4
    for r in res["runs"]:
        scores = [x["reward"] for x in r["items"]]
        assert sum(scores) / len(scores) == pytest.approx(r["final"]["eval/charts/accuracy_joint"])
    assert "Is a difference real?" in table_md and "Power of this design" in table_md
    assert next(ln for ln in table_md.splitlines() if ln.startswith("| vote_v0 | ccpo | ") and "[" in ln)
    me = json.loads((out / "marl_eval.json").read_text())
    run0 = me["ccpo"]["dyad_v0"]["grpo"]["run_0"]
    assert run0["step_2"]["step_count"] == 2 and len(run0["absolute_metrics"]["accuracy"]) == 4
    out2 = run_suite(BenchConfig(preset="smoke", out_dir=str(tmp_path), model=tiny_model, envs=("vote_v0",),
                                 algos=("grpo",), seeds=(0, 1), extra={"task": "parity_stub", "progress": False}),
                     policy=vllm_engine)
    assert out2 != out and out.exists()  # a new folder, the earlier run untouched
    refs = json.loads((out2 / "results.json").read_text())["references"]
    assert [r["seed"] for r in refs] == [0, 1] and refs[1]["same_as_seed"] == 0  # same held-out tasks: run once
    assert refs[1]["metrics"] == refs[0]["metrics"]
    rep = report(out, out2)
    assert "grpo" in rep and out.name in rep
    grpo_vote = next(ln for ln in rep.splitlines() if ln.startswith("| vote_v0 | grpo |"))
    assert grpo_vote.count("[") == 1  # same held-out items in both folders: a paired difference
    with pytest.raises(ValueError, match="unknown ablation"):
        BenchConfig(ablations=("nope",)).runs()


@pytest.mark.slow
def test_interrupted_bench_leaves_partial_results_and_resumes(tiny_model, vllm_engine, tmp_path, monkeypatch):
    """Ctrl-C during the third run: results.json / table.md hold what finished; --resume continues the half-done
    run from its checkpoint and runs the rest, without redoing references or finished runs."""
    import ccpo_algos.trainer as trainer_mod
    from benchmarks.suite import BenchConfig, run_suite

    real_train, calls = trainer_mod.train, []

    def interrupted_train(cfg, policy=None, on_step=None):
        calls.append(cfg.name)

        def boom(step, m):
            on_step(step, m)
            if len(calls) == 3 and step == 1:
                raise KeyboardInterrupt  # as Ctrl-C during the third run, after its first step
        return real_train(cfg, policy=policy, on_step=boom)

    monkeypatch.setattr(trainer_mod, "train", interrupted_train)
    bc = BenchConfig(preset="smoke", out_dir=str(tmp_path), model=tiny_model,
                     extra={"task": "parity_stub", "truncation": "off", "checkpoint_every": 1})
    with pytest.raises(KeyboardInterrupt):
        run_suite(bc, policy=vllm_engine)
    out = next(tmp_path.glob("bench-*"))
    res = json.loads((out / "results.json").read_text())
    assert len(res["runs"]) == 2 and len(res["references"]) == 2
    assert "untrained team" in (out / "table.md").read_text()
    monkeypatch.setattr(trainer_mod, "train", real_train)
    assert run_suite(BenchConfig(resume=str(out)), policy=vllm_engine) == out
    res = json.loads((out / "results.json").read_text())
    assert len(res["runs"]) == 4 and len(res["references"]) == 2
    third = next(r for r in res["runs"] if r["run_dir"].endswith(calls[2]))
    assert [r["step"] for r in read_metrics(third["run_dir"])] == [1, 2]  # resumed, not restarted in a new folder
    assert (out / "curves.png").exists()


def test_bench_pins_its_dtype_so_a_resume_on_other_hardware_keeps_it(monkeypatch, tmp_path):
    """A study run in parts on two CPUs (one with native bf16, where 'auto' means bfloat16) computes every run in
    the dtype its first part chose; an explicit dtype is kept as given."""
    import ccpo_agents.hardware as hw
    from benchmarks.suite import BenchConfig, _train_config, load_result_folder, pin_dtype

    for native, want in ((False, "float32"), (True, "bfloat16")):
        monkeypatch.setattr(hw, "cpu_has_native_bf16", lambda native=native: native)
        bc = pin_dtype(BenchConfig(preset="study", out_dir=str(tmp_path)))
        assert bc.extra == {"dtype": want}
        folder = tmp_path / want
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"config": dataclasses.asdict(bc), "runs": [],
                                                         "references": []}))
        monkeypatch.setattr(hw, "cpu_has_native_bf16", lambda native=native: not native)  # the resuming machine
        resumed, _, _ = load_result_folder(str(folder))
        for label, env, seed, algo, kw in resumed.runs():
            assert _train_config(resumed, env, seed, algo, kw, tmp_path, label).dtype == want
    assert pin_dtype(BenchConfig(preset="study", extra={"dtype": "float16"})).extra == {"dtype": "float16"}


def test_more_seeds_extends_a_resumed_bench_plan_and_is_checked_before_anything_is_written(tmp_path):
    """--more-seeds (with --resume) appends seeds to the folder's plan, once each and in order; --seeds may then
    pick them; results.json is not touched by the check; without --resume it is a user error."""
    from benchmarks.suite import BenchConfig, resume_folder

    folder = tmp_path / "bench"
    folder.mkdir()
    saved = json.dumps({"config": dataclasses.asdict(BenchConfig(preset="smoke", seeds=(0, 1))), "runs": [],
                        "references": [], "wall_seconds": 1.0})
    (folder / "results.json").write_text(saved)
    bc, _, results = resume_folder(BenchConfig(resume=str(folder), more_seeds=(3, 1, 2, 3), seeds=(3,)))
    assert bc.seeds == (0, 1, 3, 2) and results["config"]["seeds"] == [0, 1, 3, 2]
    assert [p[2] for p in bc.runs()] == [s for s in (0, 1, 3, 2) for _ in range(4)]  # smoke: 2 algos x 2 envs
    assert (folder / "results.json").read_text() == saved
    with pytest.raises(ValueError, match=r"--seeds \[4\] not in that bench"):
        resume_folder(BenchConfig(resume=str(folder), more_seeds=(3,), seeds=(4,)))
    with pytest.raises(ValueError, match="use it with --resume"):
        BenchConfig(preset="smoke", more_seeds=(3,)).runs()


@pytest.mark.slow
def test_bench_budget_stops_between_runs_and_resume_keeps_going(tiny_model, vllm_engine, tmp_path, capsys):
    """--budget-minutes 0: nothing starts (references run seed by seed, just before their runs), the folder is
    readable and names the resume command; resuming with a budget of its own does not inherit the folder's;
    --seeds beside --resume picks which missing runs to do, and a seed the bench does not have is refused."""
    from benchmarks.suite import BenchConfig, run_suite

    bc = BenchConfig(preset="smoke", out_dir=str(tmp_path), model=tiny_model, seeds=(0, 1), envs=("vote_v0",),
                     algos=("grpo",), budget_minutes=0,
                     extra={"task": "parity_stub", "truncation": "off", "checkpoint_every": 0})
    out = run_suite(bc, policy=vllm_engine)
    res = json.loads((out / "results.json").read_text())
    assert res["references"] == [] and res["runs"] == []
    assert res["config"]["extra"]["dtype"] == resolve_dtype("auto", "cpu")  # pinned: a resume elsewhere keeps it
    assert f"--resume {out}" in capsys.readouterr().out
    assert run_suite(BenchConfig(resume=str(out), seeds=(1,)), policy=vllm_engine) == out
    res = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in res["references"]] == [1] and [r["seed"] for r in res["runs"]] == [1]
    with pytest.raises(ValueError, match=r"--seeds \[7\] not in that bench"):
        run_suite(BenchConfig(resume=str(out), seeds=(7,)), policy=vllm_engine)
    assert run_suite(BenchConfig(resume=str(out)), policy=vllm_engine) == out
    res = json.loads((out / "results.json").read_text())
    assert sorted(r["seed"] for r in res["references"]) == [0, 1] and sorted(r["seed"] for r in res["runs"]) == [0, 1]
    # a finished bench extended by a seed: only the new seed runs, and the table pairs all three
    assert run_suite(BenchConfig(resume=str(out), more_seeds=(2, 1)), policy=vllm_engine) == out
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["seeds"] == [0, 1, 2] and sorted(r["seed"] for r in res["runs"]) == [0, 1, 2]
    assert sorted(r["seed"] for r in res["references"]) == [0, 1, 2]
    assert "| vote_v0 | grpo | 3 |" in (out / "table.md").read_text()


@pytest.mark.slow
def test_data_parallel_two_cpu_ranks_on_gloo(tiny_model, tmp_path):
    """torchrun, 2 ranks, gloo: each rank plays its half of the prompts; averaged gradients keep the ranks' weights
    identical, and they did change."""
    from ccpo_agents.server_backend import free_port

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
               CCPO_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "ccpo_algos.cli", "train", "--preset", "smoke", "--model", tiny_model, "--plugins", "parity_plugin",
           "--task", "parity_stub", "--prompts-per-step", "2", "--steps", "2", "--schedule", "simultaneous",
           "--lr", "0.01", "--max-tokens", "12", "--truncation", "off", "--no-progress", "--no-tensorboard",
           "--out-dir", str(tmp_path), "--name", "dp"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "dp"
    assert [r["step"] for r in read_metrics(run)] == [1, 2]
    for role in ("thinker_0", "reasoner_0"):
        r0 = _adapter(run / "checkpoints" / "step_000002" / "adapters" / role)
        r1 = _adapter(run / "rank1" / "final" / role)
        assert all(torch.equal(r0[k], r1[k]) for k in r0), f"{role}: ranks diverged"
        assert any(r0[k].abs().sum() > 0 for k in r0 if "lora_B" in k), f"{role}: nothing was trained"


def test_library_does_not_import_its_benchmarks():
    code = ("import sys, ccpo_algos.cli, ccpo_algos.trainer, ccpo_algos.config; "
            "bad = [m for m in sys.modules if m == 'benchmarks' or m.startswith('benchmarks.')]; "
            "assert not bad, bad; print(sorted(ccpo_algos.cli.commands()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "bench" in out.stdout and "demo" in out.stdout  # registered from outside through entry points


def test_run_folders_written_with_earlier_field_names_still_load(tmp_path):
    from ccpo_algos.config import RENAMED, load_run_config

    cfg = preset("cpu", team_size=5, advisor_prompt="plan", answer_prompt="solve").to_dict()
    old = {next((o for o, n in RENAMED.items() if n == k), k): v for k, v in cfg.items()}
    assert set(old) - set(cfg) == set(RENAMED)  # the file really uses the earlier names
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = load_run_config(tmp_path)
    assert (loaded.team_size, loaded.advisor_prompt, loaded.answer_prompt) == (5, "plan", "solve")


@pytest.mark.parametrize("name", ["default", "full", "long", "study"])
def test_every_bench_preset_has_its_held_out_items(name):
    """Each preset's runs validate and their task source can supply eval_size distinct held-out items (a generator
    with a small problem space cannot: found when the study first ran)."""
    from benchmarks.suite import BenchConfig, _train_config
    from ccpo_algos.build import task_source

    bc = BenchConfig(preset=name)
    for label, env, seed, algo, kw in bc.runs()[:2]:
        cfg = _train_config(bc, env, seed, algo, kw, Path("."), label)
        src = task_source(cfg, cfg.eval_split, cfg.eval_size)
        assert len({src[i].question for i in range(cfg.eval_size)}) == cfg.eval_size  # generated lazily: ask all


def test_bench_runs_are_seed_major():
    """A study interrupted part-way holds whole seeds: every (topology, method) of seed s before any of seed s+1."""
    from benchmarks.suite import BenchConfig

    plan = BenchConfig(preset="study").runs()
    seeds = [seed for _, _, seed, _, _ in plan]
    assert seeds == sorted(seeds)
    per_seed = len(plan) // len(set(seeds))
    first = {(label, env) for label, env, *_ in plan[:per_seed]}
    assert first == {(a, e) for a in ("ccpo", "grpo") for e in ("dyad_v0", "vote_v0")}


def test_bench_algos_can_be_emptied_to_run_only_ablations():
    """``--algos`` with no name runs only the ablations (to add one to an earlier folder's runs); with nothing left
    to run the error names the fix."""
    import tyro

    from benchmarks.suite import BenchConfig

    bc = tyro.cli(BenchConfig, args=["--preset", "study", "--seeds", "0", "--algos", "--ablations", "trunc_fail"])
    assert [(label, env) for label, env, *_ in bc.runs()] == [("ccpo[trunc_fail]", "dyad_v0"),
                                                              ("ccpo[trunc_fail]", "vote_v0")]
    with pytest.raises(ValueError, match="needs --ablations"):
        BenchConfig(algos=()).runs()


def test_held_out_items_are_the_same_for_every_seed_and_the_training_order_is_not():
    """Seeds vary training (task order, init, sampling), not the held-out set: runs of any seed and method are
    paired item by item, and the bench evaluates the untrained team once per topology instead of once per seed."""
    from benchmarks.suite import BenchConfig, _reference_key, _train_config
    from ccpo_algos.build import task_source

    c0, c1 = (preset("smoke", seed=s, task="arith_easy") for s in (0, 1))
    for split in ("eval", "test"):
        assert [task_source(c0, split, 8)[i].task_id for i in range(8)] == \
            [task_source(c1, split, 8)[i].task_id for i in range(8)]
    assert batch_indices(0, 1, 8, 100) != batch_indices(1, 1, 8, 100)  # the training order is the seed's
    bc = BenchConfig(preset="study")
    keys = {_reference_key(_train_config(bc, "vote_v0", s, "grpo", {}, Path("."), "grpo")) for s in (0, 1, 2)}
    assert len(keys) == 1
