"""``ccpo bench``: CCPO vs shared-reward GRPO vs MAPPO on the dyad and the vote, with references and ablations.

One vLLM engine serves every run (one adapter per agent role), so the suite pays engine start-up once. Results land
in a new folder per invocation (``results/bench-<time>``), never overwriting an earlier one:

* ``results.json`` - every run's config and final held-out metrics, and the references;
* ``table.md``     - accuracy mean ± spread over seeds, contribution rate, tokens, wall time;
* ``curves.png``   - training accuracy per step and held-out accuracy, per algorithm and topology;
* ``credit.png``   - per-agent credit (mean shaped reward) per step;
* ``runs/``        - each run's own folder (metrics.jsonl, checkpoints, TensorBoard).

``ccpo bench report A B`` puts two result folders side by side.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.compare import comparison_section, marl_eval_layout, paired_between_folders

#: The study's training recipe (``study`` preset, below); the default bench is its seed 0 with evaluation at the end.
_STUDY_TRAIN = dict(task="arith_easy", steps=10, prompts_per_step=4, group_size=4, eval_size=128, eval_every=5,
                    eval_samples=0)  # greedy only: the paired statistics read greedy items

#: Suite presets. ``train`` holds TrainConfig overrides shared by every run.
BENCH_PRESETS: dict[str, dict[str, Any]] = {
    # The README's main job: CPU, embedded SmolLM2-135M, 10 steps x 16 episodes per run (on top of the `cpu`
    # TrainConfig preset), greedy held-out evaluation at the end on 128 items of `arith_easy` (1-2 digit + -): the
    # `study` preset's seed 0 plus MAPPO, so the study's seeds put the default's single seed in context. (Until
    # 2026-12-01 it trained on `arith_1d` and held out 32 of its ~36 distinct questions, plus two sampled passes:
    # 34.8 min, benchmarks/measured/2026-11-30-default-bench-packed/: rollout 51 %, update 26 %, held-out eval 19 %;
    # one item was 3 points.) Measured: benchmarks/measured/2026-12-01-default-bench-128/.
    "default": dict(algos=("ccpo", "grpo", "mappo"), envs=("dyad_v0", "vote_v0"), seeds=(0,),
                    train=dict(_STUDY_TRAIN, eval_every=0)),
    # Three seeds of everything. Every bench preset holds out more items than `arith_1d` has (~36 distinct
    # questions), so they train and evaluate on `arith_easy` (1-2 digit + -).
    "full": dict(algos=("ccpo", "grpo", "mappo"), envs=("dyad_v0", "vote_v0"), seeds=(0, 1, 2),
                 train=dict(task="arith_easy", steps=30, prompts_per_step=8, group_size=4, eval_size=64,
                            eval_every=10)),
    # Longer CPU runs.
    "long": dict(algos=("ccpo", "grpo", "mappo"), envs=("dyad_v0", "vote_v0"), seeds=(0, 1, 2),
                 train=dict(task="arith_easy", steps=100, prompts_per_step=8, group_size=4, eval_size=128,
                            eval_every=10)),
    # CCPO vs shared GRPO, sized to detect a 5-point difference (benchmarks/stats.py minimal_detectable_difference)
    # with the seed-to-seed sd of 0.05 assumed from earlier runs: training noise dominates, and the normal
    # approximation needs ~16 seeds per method and topology whatever the item count; 128 held-out items keep the
    # item term small. The finished study measured a larger seed sd (0.10 dyad, 0.07 vote): with 16 seeds it detects
    # 10 and 7 points, and 5 points would need ~70 and ~33 seeds (benchmarks/measured/2026-11-30-study/).
    # 64 runs of 5-12 min on a 2-core AVX2 CPU (measured 2026-12-01, benchmarks/measured/2026-11-30-study/, parts
    # 5-7; 13-17 min in its first parts): ~10 hours. Runs seed by seed; `--budget-minutes M` and
    # `ccpo bench --resume FOLDER` run it in parts;
    # the table's power line re-estimates the design's detectable difference from the variances it measured.
    # Its task is `arith_easy` (1-2 digit + -; the untrained team scores 0.11 (dyad) and 0.08 (vote) greedy under
    # the cpu preset's 48-token budget, measured 2026-11-30): the cpu preset's `arith_1d` has only ~36 distinct
    # held-out questions. Every seed is scored on the same 128 items (ccpo_algos.build.HELD_OUT_SEED).
    "study": dict(algos=("ccpo", "grpo"), envs=("dyad_v0", "vote_v0"), seeds=tuple(range(16)),
                  train=_STUDY_TRAIN),
    # Tiny random model, for tests of the suite itself.
    "smoke": dict(algos=("ccpo", "grpo"), envs=("dyad_v0", "vote_v0"), seeds=(0,),
                  train=dict(steps=2, prompts_per_step=2, group_size=2, eval_size=4, eval_every=0,
                             max_tokens=12, max_model_len=768, lora_r=8, lora_alpha=16, checkpoint_every=0)),
}

#: Compute-matched baselines (``--baselines single``): one agent trained with shared-reward GRPO on as many sampled
#: turns per step as the team plays jointly (G x the team's joint turns per prompt), on the same tasks and held-out
#: items; and self-consistency@k of that one model, untrained and trained, with k = the team's joint turns (k samples
#: at the training temperature, plurality vote): what a team must beat to be worth its compute.
BASELINES = ("single",)
SINGLE_LABEL = "single agent (GRPO)"


#: Ablations, one flag each: name -> (algorithm override, TrainConfig overrides).
ABLATIONS: dict[str, tuple[str | None, dict[str, Any]]] = {
    "no_history": ("ccpo_no_history", {}),
    "no_gate": ("ccpo_no_gate", {}),
    "simultaneous": (None, {"schedule": "simultaneous"}),
    "G2": (None, {"group_size": 2}),
    "G8": (None, {"group_size": 8}),
    "alpha0.5": (None, {"alpha": 0.5}),
    "alpha2": (None, {"alpha": 2.0}),
    "eta0.5": (None, {"eta": 0.5}),
    "eta2": (None, {"eta": 2.0}),
    "trunc_fail": (None, {"truncated_as_failure": True}),  # a truncated episode shaped as a failure (not reference)
}


@dataclass
class BenchConfig:
    """What ``ccpo bench`` runs."""

    preset: str = "default"
    """Suite preset: default (CPU, ~50 min on 2 cores, 128 held-out items), full (3 seeds), long, study (CCPO vs GRPO,
    16 seeds, 128 held-out items: sized for 5 points at an assumed seed sd of 0.05, detects 7-10 at the measured
    one; ~10 h on 2 cores, runs in parts), smoke."""
    out_dir: str = "results"
    """Parent folder; each invocation writes a new ``bench-<time>`` folder in it."""
    model: str = "embedded"
    """Base model (``embedded`` = SmolLM2-135M-Instruct from the wheel)."""
    train_preset: str = "cpu"
    """TrainConfig preset every run starts from (see ``ccpo train --help``)."""
    ablations: tuple[str, ...] = ()
    """Ablations of CCPO to add (each one flag): no_history, no_gate, simultaneous, G2, G8, alpha0.5, alpha2, eta0.5,
    eta2, trunc_fail (a truncated episode shaped as a failed one instead of the reference's 0 after shaping)."""
    baselines: tuple[str, ...] = ()
    """Compute-matched baselines: ``single`` = one agent trained with GRPO on the team's joint turns per step, plus
    self-consistency@k of that model (untrained and trained) at the team's k joint turns."""
    algos: tuple[str, ...] | None = None
    """Override the preset's algorithms (``--algos`` with no name: only the ablations and baselines, e.g. to add
    an ablation to an earlier folder's runs and compare them with ``ccpo bench report``)."""
    envs: tuple[str, ...] | None = None
    """Override the preset's topologies."""
    seeds: tuple[int, ...] | None = None
    """Override the preset's seeds."""
    steps: int | None = None
    """Override the steps of every run."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More TrainConfig overrides for every run (programmatic use)."""
    resume: str | None = None
    """Finish an interrupted bench: this result folder's own configuration is used; finished runs and references
    are kept, a half-done run continues from its last checkpoint. With it, ``--envs``/``--seeds`` only pick which of
    the missing runs this invocation does (e.g. one topology's seeds first); other flags are ignored."""
    more_seeds: tuple[int, ...] = ()
    """With ``--resume``: add these seeds to that bench's plan, e.g. a finished 16-seed study extended to the seed
    count its power line asks for. Same configuration and held-out items, so the new seeds pair with the old ones
    item by item in one table; the folder records the longer plan."""
    budget_minutes: float | None = None
    """Start no new run after this many minutes of this invocation (the run in progress finishes): a long study runs
    in parts, each resumed with ``--resume FOLDER --budget-minutes M``."""
    verbose: bool = False
    """Show vLLM's and transformers' INFO logs (off: one progress bar, warnings once each)."""

    def runs(self) -> list[tuple[str, str, int, str, dict[str, Any]]]:
        """``(label, env, seed, algo, overrides)`` of every training run."""
        if self.preset not in BENCH_PRESETS:
            raise ValueError(f"unknown bench preset {self.preset!r}; choose from {sorted(BENCH_PRESETS)}")
        unknown = [a for a in self.ablations if a not in ABLATIONS]
        if unknown:
            raise ValueError(f"unknown ablation(s) {unknown}; choose from {sorted(ABLATIONS)}")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
        if self.more_seeds and not self.resume:
            raise ValueError("--more-seeds extends an earlier bench: use it with --resume FOLDER (a new bench "
                             "takes --seeds)")
        p = BENCH_PRESETS[self.preset]
        out = []  # seed-major: a study stopped part-way holds whole seeds, every topology and method in each
        for seed in self.seeds or p["seeds"]:
            for env in self.envs or p["envs"]:
                for algo in p["algos"] if self.algos is None else self.algos:
                    out.append((algo, env, seed, algo, {}))
                for ab in self.ablations:
                    algo, kw = ABLATIONS[ab]
                    out.append((f"ccpo[{ab}]", env, seed, algo or "ccpo", kw))
                if "single" in self.baselines:
                    out.append((SINGLE_LABEL, env, seed, "grpo", {"single_agent": True}))
        if not out:
            raise ValueError("nothing to run: --algos with no name needs --ablations or --baselines")
        return out


def _train_config(bc: BenchConfig, env: str, seed: int, algo: str, kw: dict[str, Any], runs_dir: Path, label: str):
    from ccpo_algos.config import preset

    base = dict(BENCH_PRESETS[bc.preset]["train"])
    if bc.steps is not None:
        base["steps"] = bc.steps
    kw = dict(kw)
    single = kw.pop("single_agent", False)
    name = label.replace("[", "-").replace("]", "").replace(" ", "_").replace("(", "").replace(")", "")
    over = {**base, **bc.extra, **kw, "model": bc.model, "env": env, "seed": seed, "algo": algo,
            "out_dir": str(runs_dir), "name": f"{name}_{env}_s{seed}",
            "counterfactual_metrics": True, "tensorboard": True}
    cfg = preset(bc.train_preset, **over).validate()
    if single:  # one voter alone, G x (the team's joint turns) samples per prompt: the team's generation per step
        cfg = dataclasses.replace(cfg, env=SINGLE_ENV, team_size=1, group_size=cfg.group_size * joint_turns(cfg))
    return cfg.validate()


SINGLE_ENV = "vote_v0"  # a one-voter vote is one agent answering alone (its plurality is its own answer)


def joint_turns(cfg: Any) -> int:
    """Turns the team plays per episode in the joint world (its compute per episode, counterfactuals aside)."""
    from ccpo_algos.build import team_topology

    return len(team_topology(cfg).slots)


def self_consistency(cfg: Any, policy: Any, k: int, adapter: Path | None) -> dict[str, Any]:
    """Self-consistency@k on the run's held-out items: ``k`` answers of one model sampled at the training temperature,
    plurality vote (a k-voter vote whose voters all serve ``adapter``; ``None``: the base model). Per-item scores
    are kept for paired statistics."""
    from ccpo_algos.build import eval_env_pool, task_source
    from ccpo_algos.evaluation import evaluate

    sc = dataclasses.replace(cfg, env=SINGLE_ENV, team_size=k, eval_samples=1).validate()
    for j in range(k):
        role = f"voter_{j}"
        policy.load_adapter(role, adapter) if adapter is not None else policy.use_base(role)
    src = task_source(sc, sc.eval_split, sc.eval_size)
    m = evaluate(policy, eval_env_pool(sc, src, sc.eval_size), src, sc.eval_size, sc)
    return {"k": k, "accuracy": m["eval_sampled/charts/accuracy_joint"]}


def _final(rows: list[dict[str, float]]) -> dict[str, float]:
    from ccpo_algos.metrics import step_seconds

    last = [r for r in rows if any(k.startswith("eval/") for k in r)][-1]
    out = {k: v for k, v in last.items() if k.startswith(("eval/", "eval_sampled/"))}
    out["tokens"] = sum(r.get("perf/tokens_generated", 0.0) for r in rows)
    out["seconds"] = sum(step_seconds(r) + r.get("perf/seconds_eval", 0) for r in rows)
    return out


def _sc_k(bc: BenchConfig, env: str, seed: int) -> int:
    """k of the self-consistency baseline on ``env``: the team's joint turns."""
    return joint_turns(_train_config(bc, env, seed, "grpo", {}, Path("."), "k"))


def _reference_key(cfg: Any) -> str:
    """What the untrained team's held-out score depends on: the env, the held-out tasks themselves and the settings
    of the episodes (not the seed: the held-out split and the evaluation's sampling seeds do not depend on it), so
    that identical references are evaluated once."""
    from ccpo_algos.build import task_source

    src = task_source(cfg, cfg.eval_split, cfg.eval_size)
    ids = [src[i].task_id for i in range(min(cfg.eval_size, len(src)))]
    return json.dumps([cfg.env, ids, cfg.eval_samples, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.truncation,
                       cfg.template, cfg.team_size, cfg.tie_rule, cfg.advisor_prompt, cfg.answer_prompt,
                       list(cfg.extract_modes), cfg.model, cfg.max_model_len, cfg.dtype])


def _save(results: dict[str, Any], out: Path) -> None:
    """results.json and table.md as they stand (after every run: an interrupted bench stays readable)."""
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / "results.json")
    (out / "table.md").write_text(table(results))
    (out / "marl_eval.json").write_text(json.dumps(marl_eval_layout(results)))


def pin_dtype(bc: BenchConfig) -> BenchConfig:
    """``bc`` with its runs' dtype chosen now and recorded in ``extra`` (``auto`` -> this hardware's choice,
    :func:`ccpo_agents.hardware.resolve_dtype`): a bench resumed on other hardware (a CPU with native bf16, where
    ``auto`` means bfloat16, after parts run in float32 on one without) keeps the dtype of its first runs, so every
    run of a folder computes the same equations in the same precision."""
    from ccpo_agents.hardware import resolve_device, resolve_dtype

    label, env, seed, algo, kw = bc.runs()[0]
    cfg = _train_config(bc, env, seed, algo, kw, Path(bc.out_dir), label)
    return dataclasses.replace(bc, extra={**bc.extra, "dtype": resolve_dtype(cfg.dtype, resolve_device(cfg.device))})


def load_result_folder(folder: str) -> tuple[BenchConfig, Path, dict[str, Any]]:
    """The configuration, folder and partial results of an earlier bench (for ``--resume``)."""
    out = Path(folder)
    try:
        results = json.loads((out / "results.json").read_text())
        fields = {f.name for f in dataclasses.fields(BenchConfig)}
        bc = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["config"].items()
                            if k in fields and k not in ("resume", "verbose", "budget_minutes", "more_seeds")})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--resume {folder}: not a bench result folder with a readable results.json ({e})") from None
    return bc, out, results


def resume_folder(bc: BenchConfig) -> tuple[BenchConfig, Path, dict[str, Any]]:
    """:func:`load_result_folder` of ``bc.resume``, its plan extended by ``bc.more_seeds``, with ``bc.envs``/
    ``bc.seeds`` (this invocation's picks) checked against that plan."""
    folder_bc, out, results = load_result_folder(bc.resume)
    if bc.more_seeds:  # recorded in results.json with the next save, after validation and a finished reference/run
        known = list(dict.fromkeys(p[2] for p in folder_bc.runs()))
        folder_bc = dataclasses.replace(folder_bc, seeds=tuple(known + [s for s in dict.fromkeys(bc.more_seeds)
                                                                         if s not in known]))
        results["config"]["seeds"] = list(folder_bc.seeds)
    plan = folder_bc.runs()
    for name, picked, planned in (("--envs", bc.envs, {p[1] for p in plan}),
                                  ("--seeds", bc.seeds, {p[2] for p in plan})):
        outside = sorted(set(picked or ()) - planned)
        if outside:
            raise ValueError(f"--resume {out}: {name} {outside} not in that bench (it has {sorted(planned)}); "
                             f"pick from those or start a new bench")
    if results["runs"] and "dtype" not in folder_bc.extra:  # a folder from before dtypes were pinned
        print(f"note: {out}'s runs did not record which dtype 'auto' chose for them; on this machine it is "
              f"{pin_dtype(folder_bc).extra['dtype']}. If they ran on other hardware, pin theirs first: "
              f"\"extra\": {{\"dtype\": ...}} in the \"config\" of {out / 'results.json'}", file=sys.stderr)
    return folder_bc, out, results


def run_suite(bc: BenchConfig, policy: Any | None = None) -> Path:
    """Run the suite (or finish the one ``bc.resume`` names); returns its result folder.

    Seed by seed: each (topology, seed)'s untrained-team reference just before its first run, then the runs. One
    progress bar covers everything with the ETA and the latest held-out accuracy. ``results.json`` and ``table.md``
    are rewritten after every reference and run, so Ctrl-C leaves a readable partial result that
    ``ccpo bench --resume FOLDER`` completes.
    """
    from tqdm import tqdm

    from ccpo_agents.logs import quiet_logs

    quiet_logs(bc.verbose)  # before vLLM is imported

    from ccpo_agents.models import resolve_model
    from ccpo_algos.build import build_policy, role_prompts, team_agents, unique_dir
    from ccpo_algos.checkpoint import latest_checkpoint
    from ccpo_algos.evaluation import evaluate_untrained, read_eval_items
    from ccpo_algos.runlog import read_metrics
    from ccpo_algos.trainer import train

    t_call, budget = time.perf_counter(), bc.budget_minutes
    only_envs, only_seeds = (bc.envs, bc.seeds) if bc.resume else (None, None)
    if bc.resume:
        bc, out, results = resume_folder(bc)
        bc.budget_minutes = budget  # the budget belongs to this invocation, not to the folder
    else:
        bc = pin_dtype(bc)  # validates before anything heavy happens; a resume elsewhere keeps this dtype
        out = unique_dir(bc.out_dir, f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
        (out / "runs").mkdir()
        results = {"config": dataclasses.asdict(bc), "runs": [], "references": []}
    plan = bc.runs()
    cfgs = [(label, env, seed, _train_config(bc, env, seed, algo, kw, out / "runs", label))
            for label, env, seed, algo, kw in plan]
    done_runs = {(r["label"], r["env"], r["seed"]) for r in results["runs"]}
    done_refs = {(r["env"], r["seed"]) for r in results["references"]}
    picked = [c for c in cfgs  # this invocation's share (all of it unless --resume comes with --envs/--seeds)
              if (only_envs is None or c[1] in only_envs) and (only_seeds is None or c[2] in only_seeds)]
    refs = list(dict.fromkeys((env, seed) for _, env, seed, _ in picked))  # the untrained team per (env, seed)
    todo = [c for c in picked if (c[0], c[1], c[2]) not in done_runs]
    total = len(refs) + sum(c[3].steps for c in picked)
    bar = tqdm(total=total, initial=len(done_refs & set(refs)) + sum(c[3].steps for c in picked if c not in todo),
               desc="bench", unit="step", dynamic_ncols=True, disable=None)
    latest = {"held-out": float("nan")}

    def show(i: int, label: str, env: str, seed: int, step: int | str) -> None:
        bar.set_postfix_str(f"run {i}/{len(cfgs)} {label}/{env}/s{seed} step {step} | "
                            f"last held-out acc {latest['held-out']:.3f}", refresh=True)

    t_start = time.perf_counter() - results.get("wall_seconds", 0.0)
    try:
        if policy is None:  # one engine for every run: adapters for the dyad's and the vote's agents
            c0 = cfgs[0][3]
            roles = list(dict.fromkeys(a for *_, c in cfgs for a in team_agents(c)))
            roles += [f"voter_{j}" for j in range(max([_sc_k(bc, e, s) for lb, e, s, _ in cfgs if lb == SINGLE_LABEL],
                                                      default=0)) if f"voter_{j}" not in roles]
            prompts = {k: v for *_, c in cfgs for k, v in role_prompts(c).items()}  # ids differ across topologies
            bar.set_postfix_str("starting the vLLM engine", refresh=True)
            policy = build_policy(c0, resolve_model(bc.model), roles, prompts)
        known: dict[str, dict[str, Any]] = {}  # reference key -> its entry (identical references run once)
        for ref in results["references"]:
            if "key" in ref:
                known.setdefault(ref["key"], ref)

        def reference(env: str, seed: int) -> None:
            """The untrained team (and the reasoner alone, in its infos) on this seed's held-out items."""
            if (env, seed) in done_refs:
                return
            cfg = next(c for _, e, s, c in cfgs if (e, s) == (env, seed))
            bar.set_postfix_str(f"untrained team {env}/s{seed}", refresh=True)
            key = _reference_key(cfg)
            if key in known:  # same held-out tasks and settings as another seed's: the same numbers
                results["references"].append({**known[key], "seed": seed, "seconds": 0.0,
                                              "same_as_seed": known[key]["seed"]})
            else:
                t0 = time.perf_counter()
                items: list[dict[str, Any]] = []
                ref = evaluate_untrained(cfg, policy, items)
                known[key] = {"label": "untrained", "env": env, "seed": seed, "metrics": ref,
                              "seconds": time.perf_counter() - t0, "key": key, "items": items}
                results["references"].append(known[key])
            done_refs.add((env, seed))
            _save(results, out)
            bar.update(1)

        for label, env, seed, cfg in todo:
            if budget is not None and time.perf_counter() - t_call > 60 * budget:
                results["wall_seconds"] = time.perf_counter() - t_start
                _save(results, out)
                bar.close()
                print(f"\nbudget of {budget:g} min spent: {len(results['runs'])}/{len(cfgs)} runs done in {out}; "
                      f"continue with `ccpo bench --resume {out}`")
                plot(results, out)
                return out
            reference(env, seed)  # just before the seed's first run: a study stopped part-way holds whole seeds
            i = cfgs.index((label, env, seed, cfg)) + 1
            show(i, label, env, seed, 0)
            run_dir = Path(cfg.out_dir) / cfg.name
            if (run_dir / "config.json").exists():  # interrupted earlier: continue from its last checkpoint
                cfg = dataclasses.replace(cfg, resume=str(run_dir))
                bar.update(len(read_metrics(run_dir)) if (run_dir / "metrics.jsonl").exists() else 0)

            def on_step(step: int, m: dict[str, float], i=i, label=label, env=env, seed=seed) -> None:
                if "eval/charts/accuracy_joint" in m:
                    latest["held-out"] = m["eval/charts/accuracy_joint"]
                bar.update(1)
                show(i, label, env, seed, step)

            run_dir = train(dataclasses.replace(cfg, progress=False), policy=policy, on_step=on_step)
            rows = read_metrics(run_dir)
            evals = read_eval_items(run_dir)
            entry = {"label": label, "env": env, "seed": seed, "run_dir": str(run_dir), "config": cfg.to_dict(),
                     "final": _final(rows), "rows": rows, "items": evals[max(evals)] if evals else [],
                     "curve": {str(k): [x["reward"] for x in v] for k, v in evals.items()}}
            if label == SINGLE_LABEL:  # self-consistency of the same model at the team's k turns
                k = _sc_k(bc, env, seed)
                show(i, label, env, seed, f"self-consistency@{k}")
                entry["self_consistency"] = {
                    "untrained": self_consistency(cfg, policy, k, None),
                    "trained": self_consistency(cfg, policy, k, latest_checkpoint(run_dir) / "adapters" / "voter_0")}
            results["runs"].append(entry)
            results["wall_seconds"] = time.perf_counter() - t_start
            _save(results, out)
        for env, seed in refs:  # a reference missing where every run was done before
            reference(env, seed)
    except KeyboardInterrupt:
        results["wall_seconds"] = time.perf_counter() - t_start
        _save(results, out)
        bar.close()
        print(f"\ninterrupted: partial results in {out} (table.md, results.json); finish with "
              f"`ccpo bench --resume {out}`")
        raise
    bar.close()
    results["wall_seconds"] = time.perf_counter() - t_start
    _save(results, out)
    plot(results, out)
    return out


def _agg(values: list[float], signed: bool = False) -> str:
    import statistics

    if not values:
        return "–"
    f = "+.3f" if signed else ".3f"
    if len(values) == 1:
        return format(values[0], f)
    return f"{format(statistics.mean(values), f)} ± {statistics.stdev(values):.3f}"


def _agg_ref(values: list[float]) -> str:
    """The untrained team over seeds: one number when every seed scored the same (same items, deterministic team:
    the usual case, since held-out items do not depend on the seed), else mean ± std as for a method."""
    return "" if not values else f"{values[0]:.3f}" if len(set(values)) == 1 else _agg(values)


def _per_item(items: list[dict[str, Any]] | None) -> str:
    """Held-out tokens per item and accuracy per 1k of them (the team's compute at evaluation)."""
    if not items:
        return " | "
    tokens = sum(x["tokens"] for x in items) / len(items)
    acc = sum(x["reward"] for x in items) / len(items)
    return f"{tokens:.0f} | {1000 * acc / tokens:.2f}" if tokens else f"{tokens:.0f} | "


def table(results: dict[str, Any]) -> str:
    """Markdown table: held-out accuracy (greedy; mean ± std over seeds), its change over the untrained team of the
    same seed, sampled held-out accuracy (if measured), reasoner/voter alone, contribution rate, tokens, wall time."""
    greedy, sampled = "eval/charts/accuracy_joint", "eval_sampled/charts/accuracy_joint"
    alone_key = "eval/charts/accuracy_without_thinker_0"
    lines = ["| env | method | seeds | held-out accuracy (greedy) | vs untrained | held-out accuracy (sampled) | "
             "reasoner alone | contribution rate | training tokens | held-out tokens/item | accuracy per 1k tokens | "
             "wall s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    untrained = {(ref["env"], ref["seed"]): ref["metrics"] for ref in results["references"]}
    by_env: dict[str, list[dict[str, Any]]] = {}
    for ref in results["references"]:
        by_env.setdefault(ref["env"], []).append(ref)
    for env, refs in by_env.items():  # one row per topology, like the methods' rows (not one per seed)
        ms = [ref["metrics"] for ref in refs]
        timed = [ref["seconds"] for ref in refs if ref["seconds"] > 0]  # 0: copied from a seed with the same items
        lines.append(f"| {env} | untrained team | {len(refs)} | {_agg_ref([m[greedy] for m in ms])} | | "
                     f"{_agg_ref([m[sampled] for m in ms if sampled in m])} | "
                     f"{_agg_ref([m[alone_key] for m in ms if alone_key in m])} | | | "
                     f"{_per_item([x for ref in refs for x in ref.get('items') or []])} | "
                     f"{sum(timed) / len(timed) if timed else 0:.0f} |")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results["runs"]:
        groups.setdefault((r["env"], r["label"]), []).append(r)
    for (env, label), runs in groups.items():
        finals = [r["final"] for r in runs]
        acc = [f[greedy] for f in finals]
        gain = [r["final"][greedy] - untrained[(env, r["seed"])][greedy] for r in runs if (env, r["seed"]) in untrained]
        samp = [f[sampled] for f in finals if sampled in f]
        alone = [f[alone_key] for f in finals if alone_key in f]
        contrib = [v for f in finals for k, v in f.items() if k.startswith("eval/credit/contribution_rate_")
                   and label != SINGLE_LABEL]  # an agent alone has no teammate to contribute beside
        lines.append(f"| {env} | {label} | {len(runs)} | {_agg(acc)} | {_agg(gain, signed=True)} | {_agg(samp)} | "
                     f"{_agg(alone)} | {_agg(contrib)} | {sum(f['tokens'] for f in finals) / len(finals):.0f} | "
                     f"{_per_item([x for r in runs for x in r.get('items', [])])} | "
                     f"{sum(f['seconds'] for f in finals) / len(finals):.0f} |")
    if any(sampled in r["final"] for r in results["runs"]):
        c = results["runs"][0]["config"]
        lines += ["", f"Sampled accuracy: mean over {c['eval_samples']} episodes per held-out task at the training "
                  f"temperature {c['temperature']} (same seeds for every team). Greedy is the paper's metric."]
    sc = [r for r in results["runs"] if r.get("self_consistency")]
    if sc:
        lines += ["", "Compute-matched baselines: one agent trained with shared-reward GRPO on the team's joint turns "
                  "per step (the row above), and self-consistency@k of that model (k answers sampled at the training "
                  "temperature, plurality vote; k = the team's joint turns):", ""]
        for env in dict.fromkeys(r["env"] for r in sc):
            rs = [r["self_consistency"] for r in sc if r["env"] == env]
            lines.append(f"- {env}: self-consistency@{rs[0]['trained']['k']} untrained {_agg([x['untrained']['accuracy'] for x in rs])}, "
                         f"trained single agent {_agg([x['trained']['accuracy'] for x in rs])}")
    lines += comparison_section(results)
    ratios = step_time_ratios(results)
    if ratios:
        lines += ["", "Training step time (rollout + update + sync, mean over steps and seeds), CCPO over shared-reward "
                  "GRPO, measured in this run:", ""]
        lines += [f"- {env}: {r:.2f}x" for env, r in ratios.items()]
    return "\n".join(lines) + "\n"


def run_rows(run: dict[str, Any]) -> list[dict[str, float]]:
    """A finished run's per-step metrics: kept in ``results.json`` (so a result folder copied elsewhere stays whole),
    else read from its run folder (folders of an earlier ccpo), else none."""
    from ccpo_algos.runlog import read_metrics

    if "rows" in run:
        return run["rows"]
    return read_metrics(run["run_dir"]) if Path(run["run_dir"], "metrics.jsonl").exists() else []


def step_time_ratios(results: dict[str, Any]) -> dict[str, float]:
    """Mean training step time of ``ccpo`` over ``grpo``, per topology (from the runs' perf metrics)."""
    from ccpo_algos.metrics import step_seconds

    def step_time(label: str, env: str) -> float | None:
        times = [step_seconds(r) for run in results["runs"] if run["label"] == label and run["env"] == env
                 for r in run_rows(run)]
        return sum(times) / len(times) if times else None

    out = {}
    for env in sorted({r["env"] for r in results["runs"]}):
        c, g = step_time("ccpo", env), step_time("grpo", env)
        if c and g:
            out[env] = c / g
    return out


def _curve(results: dict[str, Any], env: str, label: str) -> list[tuple[int, Any]]:
    """Held-out accuracy per evaluated step of a method with its CI over items and seeds (steps every seed has)."""
    from benchmarks.stats import mean_interval

    runs = [r for r in results["runs"] if r["env"] == env and r["label"] == label and r.get("curve")]
    if not runs:
        return []
    steps = sorted(set.intersection(*(set(r["curve"]) for r in runs)), key=int)
    return [(int(k), mean_interval(np.array([r["curve"][k] for r in runs]), reps=500)) for k in steps]


def plot(results: dict[str, Any], out: Path) -> None:
    """``curves.png``: held-out accuracy per method with 95 % CI bands over items and seeds (top, one panel per
    topology; the untrained team at step 0) and training accuracy per run (bottom); ``credit.png``: per-agent mean
    credit per step. Legends sit beside the panels, not on the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.stats import mean_interval

    envs = sorted({r["env"] for r in results["runs"]})
    if not envs:  # no training run finished yet: nothing to draw
        return
    fig, axes = plt.subplots(2, len(envs), figsize=(7.5 * len(envs), 7), squeeze=False)
    fig2, axes2 = plt.subplots(1, len(envs), figsize=(7.5 * len(envs), 4), squeeze=False)
    for j, env in enumerate(envs):
        ax, ax_train, ax2 = axes[0, j], axes[1, j], axes2[0, j]
        colors: dict[str, Any] = {}
        for label in dict.fromkeys(r["label"] for r in results["runs"] if r["env"] == env):
            curve = _curve(results, env, label)
            if curve:
                steps = [k for k, _ in curve]
                line, = ax.plot(steps, [c.value for _, c in curve], "o-", label=label)
                ax.fill_between(steps, [c.lo for _, c in curve], [c.hi for _, c in curve], color=line.get_color(),
                                alpha=0.2)
                colors[label] = line.get_color()
        ref = next((x for x in results["references"] if x["env"] == env), None)
        if ref is not None:
            acc = ref["metrics"]["eval/charts/accuracy_joint"]
            if ref.get("items"):
                c = mean_interval(np.array([[x["reward"] for x in ref["items"]]]), reps=500)
                ax.errorbar([0], [c.value], yerr=[[c.value - c.lo], [c.hi - c.value]], fmt="s", color="gray",
                            capsize=3, label="untrained team")
            else:
                ax.plot([0], [acc], "s", color="gray", label="untrained team")
        env_runs = [r for r in results["runs"] if r["env"] == env]
        credit: dict[tuple[str, str], dict[int, list[float]]] = {}  # (method, agent) -> step -> one value per seed
        for r in env_runs:
            rows = run_rows(r)
            steps = [x["step"] for x in rows]
            n = sum(1 for q in env_runs if q["label"] == r["label"])
            first = r is next(q for q in env_runs if q["label"] == r["label"])
            ax_train.plot(steps, [x["charts/accuracy_joint"] for x in rows], alpha=0.6, color=colors.get(r["label"]),
                          label=(f"{r['label']} s{r['seed']}" if n == 1 else
                                 f"{r['label']} ({n} seeds, a line each)" if first else "_nolegend_"))
            for x in rows:
                for k, v in x.items():
                    if k.startswith("credit/reward_mean_"):
                        credit.setdefault((r["label"], k[len("credit/reward_mean_"):]), {}).setdefault(
                            x["step"], []).append(v)
        for (label, agent), by_step in credit.items():  # one line per method and agent: the mean over its seeds
            n = max(len(v) for v in by_step.values())
            steps = sorted(by_step)
            ax2.plot(steps, [float(np.mean(by_step[s])) for s in steps],
                     label=f"{label} {agent}" + (f" (mean of {n} seeds)" if n > 1 else ""))
        ax.set(title=f"{env}: held-out team accuracy (greedy, 95 % CI)", xlabel="step", ylabel="accuracy")
        ax_train.set(title=f"{env}: training batch accuracy", xlabel="step", ylabel="accuracy")
        ax2.set(title=f"{env}: per-agent credit (mean shaped reward)", xlabel="step", ylabel="credit")
        for a in (ax, ax_train, ax2):
            if a.get_legend_handles_labels()[0]:
                a.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110, bbox_inches="tight")
    fig2.tight_layout()
    fig2.savefig(out / "credit.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    plt.close(fig2)


def report(a: str | Path, b: str | Path) -> str:
    """Side-by-side held-out accuracy of two result folders (same env and method rows)."""
    ra = json.loads(Path(a, "results.json").read_text())
    rb = json.loads(Path(b, "results.json").read_text())

    def acc(res: dict[str, Any]) -> dict[tuple[str, str], list[float]]:
        d: dict[tuple[str, str], list[float]] = {}
        for r in res["runs"]:
            d.setdefault((r["env"], r["label"]), []).append(r["final"]["eval/charts/accuracy_joint"])
        for r in res["references"]:
            d.setdefault((r["env"], "untrained team"), []).append(r["metrics"]["eval/charts/accuracy_joint"])
        return d

    da, db = acc(ra), acc(rb)
    lines = [f"| env | method | {Path(a).name} | {Path(b).name} | second - first (paired 95 % CI, same items) |",
             "|---|---|---|---|---|"]
    for key in sorted(set(da) | set(db)):
        lines.append(f"| {key[0]} | {key[1]} | {_agg(da.get(key, []))} | {_agg(db.get(key, []))} | "
                     f"{paired_between_folders(ra, rb, *key)} |")
    new = [key for key in sorted(db) if key not in da]  # methods only the second folder ran, against the first's
    cross = [(env, lb, la) for env, lb in new for e, la in sorted(da) if e == env]
    if cross:
        lines += ["", f"Methods only in {Path(b).name} against those of {Path(a).name} (paired over common seeds):",
                  "", "| env | second | first | second - first (paired 95 % CI, same items) |", "|---|---|---|---|"]
        lines += [f"| {env} | {lb} | {la} | {paired_between_folders(ra, rb, env, la, lb)} |" for env, lb, la in cross]
    return "\n".join(lines) + "\n"
