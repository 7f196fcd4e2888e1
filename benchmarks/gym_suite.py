"""``ccpo bench`` (the credit gym tier): every credit rule on every gym game, many seeds, trained together.

Each game's runs (every algorithm x every seed) train in one process on one stacked team
(:func:`ccpo_algos.gym.runner.train_gym`); the results folder gets ``results.json`` (rewritten after each game, so an
interrupted bench is readable), ``table.md``, ``curves.png``, ``credit.png`` and ``marl_eval.json``
(:mod:`benchmarks.gym_report`). The SmolLM2 comparison is ``ccpo bench --tier llm`` (:mod:`benchmarks.suite`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The gym's games, in the table's order.
GYM_ENVS = ("splitkey_v0", "redundant_v0", "freerider_v0", "signal_v0", "noisyvote_v0")
#: The credit rules the gym compares.
GYM_ALGOS = ("ccpo", "ccpo_v2", "grpo", "magrpo", "difference", "shapley", "rae", "mappo")
#: The rule every other is paired against.
BASELINE = "grpo"


@dataclass(frozen=True)
class GymPreset:
    """A named design: which games, rules and seeds, and how long each run trains."""

    envs: tuple[str, ...]
    algos: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    eval_every: int
    eval_size: int
    seeds_for: tuple[tuple[str, tuple[int, ...]], ...] = ()  # per-game seeds where a game needs more (a study)

    def seeds_of(self, env: str) -> tuple[int, ...]:
        return dict(self.seeds_for).get(env, self.seeds)


GYM_PRESETS = {
    # the main job: every rule on every game, 4 seeds, 100 updates per agent, 11 evaluation points
    "default": GymPreset(GYM_ENVS, GYM_ALGOS, (0, 1, 2, 3), 100, 10, 48),
    # the decisive question, where free-riding exists: counterfactual credit against shared reward, with the seeds
    # that detect 3 points at the pilot's seed spread (the default bench: 97 on the redundant pair, 10 on the free
    # rider; benchmarks/measured/2026-12-03-gym-study/README.md)
    "study": GymPreset(("redundant_v0", "freerider_v0"), ("ccpo", "ccpo_v2", "difference", "grpo", "magrpo"),
                       tuple(range(16)), 100, 10, 64, seeds_for=(("redundant_v0", tuple(range(96))),)),
    # the whole grid: every rule x every game x 32 seeds x 100 updates per agent (the speed target: <= 30 min)
    "grid": GymPreset(GYM_ENVS, GYM_ALGOS, tuple(range(32)), 100, 10, 48),
    # a few seconds: two rules, two seeds, one game (tests, a first look)
    "smoke": GymPreset(("splitkey_v0",), ("ccpo", "grpo"), (0, 1), 4, 2, 16),
}


@dataclass
class GymBenchConfig:
    """The credit gym's bench. Empty or zero fields take the preset's value.

    Attributes:
        preset: a design of GYM_PRESETS (``default``: every rule x every game x 4 seeds, 100 steps).
        envs: gym games to run (``splitkey_v0``, ``redundant_v0``, ``freerider_v0``, ``signal_v0``,
            ``noisyvote_v0``).
        algos: credit rules (rows of the algorithm table; ``shapley`` only runs on games whose agents do not read
            each other).
        seeds: training seeds (a seed fixes the tasks, the adapters' init and the sampling noise, so the rules of one
            seed are paired); given, they apply to every game.
        steps: updates per agent (every agent is trained at every step).
        eval_every: steps between held-out evaluations (the untrained team is step 0).
        eval_size: held-out tasks per evaluation (the same for every run).
        lr: the adapters' learning rate.
        out_dir: where the results folder is created.
        cache: where warm-started models are kept (default ``~/.cache/ccpo/gym``).
        batch_runs: at most this many runs train together in one batch (a run's numbers do not depend on its batch;
            past a few dozen runs a batch gets slower per run here: 480 runs ran at 15 run-steps/s, 28 at ~28).
        workers: processes training batches side by side, one torch thread each (default: one per core, at most
            2; a run's numbers do not depend on it).
        progress: show a progress bar.
        verbose: show transformers' logs and loading bars.
    """

    preset: str = "default"
    envs: tuple[str, ...] = ()
    algos: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    steps: int = 0
    eval_every: int = 0
    eval_size: int = 0
    lr: float = 2e-3
    out_dir: str = "results"
    cache: str | None = None
    batch_runs: int = 40
    workers: int = 0
    progress: bool = True
    verbose: bool = False

    def design(self) -> GymPreset:
        """The preset with this config's overrides; ``ValueError`` naming the fix for a bad value."""
        if self.preset not in GYM_PRESETS:
            raise ValueError(f"--preset {self.preset!r}: choose from {sorted(GYM_PRESETS)}")
        p = GYM_PRESETS[self.preset]
        d = GymPreset(self.envs or p.envs, self.algos or p.algos, self.seeds or p.seeds, self.steps or p.steps,
                      self.eval_every or p.eval_every, self.eval_size or p.eval_size,
                      () if self.seeds else p.seeds_for)
        bad = [e for e in d.envs if e not in GYM_ENVS]
        if bad:
            raise ValueError(f"--envs {bad}: the gym's games are {list(GYM_ENVS)}")
        from ccpo_algos.algorithms import ALGORITHMS

        bad = [a for a in d.algos if a not in ALGORITHMS]
        if bad:
            raise ValueError(f"--algos {bad}: the gym runs the rows of the algorithm table, {sorted(ALGORITHMS)}")
        if len(set(d.seeds)) != len(d.seeds):
            raise ValueError(f"--seeds {list(d.seeds)}: give each seed once")
        if min(d.steps, d.eval_every, d.eval_size) < 1:
            raise ValueError("--steps, --eval-every and --eval-size must be >= 1")
        if self.workers < 0:
            raise ValueError(f"--workers {self.workers}: must be >= 1 (0: one per core, at most 2)")
        if self.batch_runs < 1:
            raise ValueError(f"--batch-runs {self.batch_runs}: must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"--lr {self.lr}: must be > 0")
        return d

    def worker_count(self) -> int:
        """``workers``, or one per core this process may use, at most 2."""
        import os

        return self.workers or max(1, min(2, len(os.sched_getaffinity(0))))


def applicable(env: str, algos: tuple[str, ...]) -> tuple[str, ...]:
    """The rules that can run on ``env`` (exact Shapley needs an independent team)."""
    from ccpo_algos.algorithms import ALGORITHMS
    from ccpo_envs import make

    independent = make(env, size=1).unwrapped.topology.independent
    return tuple(a for a in algos if independent or not ALGORITHMS[a].needs_coalitions)


def game_results(env: str, res: Any, design: GymPreset) -> list[dict[str, Any]]:
    """One results.json entry per run: its curve, final items, credit read-outs and costs."""
    from ccpo_algos.gym.truth_metrics import truth_readouts

    out = []
    for k, run in enumerate(res.runs):
        read = truth_readouts(res.records[k])
        out.append({
            "env": env, "label": run.algo, "seed": run.seed, "agents": res.agents,
            "curve": {str(s): float(v) for s, v in zip(res.eval_steps, res.eval_success[k])},
            "items": [{"reward": float(x)} for x in res.eval_items[k, -1]],
            "items_untrained": [float(x) for x in res.eval_items[k, 0]],
            "agent_accuracy": {str(s): res.eval_agent_correct[k, i].tolist() for i, s in enumerate(res.eval_steps)},
            "readouts": {name: [None if np.isnan(x) else float(x) for x in v] for name, v in read.items()},
            "steps": design.steps,
        })
    return out


def _init_worker(progress: Any, parent: int, verbose: bool) -> None:
    """A bench worker: one torch thread (two workers fill two cores better than one worker's two threads: the tiny
    models' steps are mostly Python), quiet logs, and it stops when the bench process does."""
    import os
    import threading

    import torch

    from ccpo_agents.logs import quiet_logs

    torch.set_num_threads(1)
    quiet_logs(verbose)
    global _PROGRESS
    _PROGRESS = progress

    def watch() -> None:  # the bench was killed (not just interrupted): do not train on for nobody
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


_PROGRESS: Any = None


def _tick(n: int, step: int) -> None:
    if _PROGRESS is not None:
        _PROGRESS.put(n)


def train_chunk(env: str, gc: Any, runs: list[Any], design: GymPreset) -> tuple[str, list[dict[str, Any]],
                                                                                  dict[str, float]]:
    """One unit of a bench's work: ``runs`` of ``env`` trained together; their results.json entries and phase
    times. A run's numbers do not depend on which chunk or worker trains it."""
    from ccpo_algos.gym.runner import train_gym

    res = train_gym(gc, runs, on_step=functools.partial(_tick, len(runs)))
    return env, game_results(env, res, design), res.seconds


def run_gym_bench(cfg: GymBenchConfig) -> Path:
    """Run the bench; returns the results folder.

    The warm starts are made first (cached); then every chunk of at most ``batch_runs`` runs of one game is a unit of
    work for ``workers`` processes (one torch thread each). Each game's results are written when its last chunk is
    in; ``results.json`` keeps the games in the plan's order and each game's runs in theirs, so the folder is the same
    whatever the worker count.
    """
    import multiprocessing as mp
    import os

    from benchmarks._report import cpu_description
    from benchmarks.gym_report import write_outputs
    from ccpo_agents.logs import quiet_logs
    from ccpo_algos.build import unique_dir
    from ccpo_algos.gym.runner import GymConfig, GymRun
    from ccpo_algos.gym.warmstart import warm_start

    quiet_logs(cfg.verbose)
    design, workers = cfg.design(), cfg.worker_count()
    out = unique_dir(cfg.out_dir, f"gym-{time.strftime('%Y%m%d-%H%M%S')}")
    results: dict[str, Any] = {"tier": "gym", "config": {**dataclasses.asdict(cfg), "design": dataclasses.asdict(design)},
                               "cpu": cpu_description(), "workers": workers, "runs": [], "seconds": {}}
    plan = [(env, applicable(env, design.algos)) for env in design.envs]
    total = sum(len(a) * len(design.seeds_of(env)) * design.steps for env, a in plan)
    t_all = time.perf_counter()
    units, pending = [], {}
    for env, algos in plan:
        t0 = time.perf_counter()
        gc = GymConfig(env=env, model=str(warm_start(env, cache=cfg.cache)), steps=design.steps,
                       eval_every=design.eval_every, eval_size=design.eval_size, lr=cfg.lr)
        runs = [GymRun(a, s) for a in algos for s in design.seeds_of(env)]
        chunks = [runs[i:i + cfg.batch_runs] for i in range(0, len(runs), cfg.batch_runs)]
        units += [(env, gc, c, design) for c in chunks]
        pending[env] = {"chunks": len(chunks), "runs": {}, "seconds": {"warm_start": time.perf_counter() - t0}}
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"ccpo bench (gym, {workers} workers)", unit="run-step")
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(queue, os.getpid(), cfg.verbose))
    try:
        jobs = {i: pool.apply_async(train_chunk, u) for i, u in enumerate(units)}
        done_games = 0
        while jobs:
            while not queue.empty():
                n = queue.get()
                if bar is not None:
                    bar.update(n)
            finished = [i for i, j in jobs.items() if j.ready()]
            if not finished:
                time.sleep(0.2)
                continue
            for i in finished:
                env, entries, seconds = jobs.pop(i).get()  # re-raises a worker's error here
                g = pending[env]
                g["runs"][i] = entries
                g["seconds"] = {k: g["seconds"].get(k, 0.0) + v for k, v in seconds.items()}
                if len(g["runs"]) < g["chunks"]:
                    continue
                g["done"] = True
                done_games += 1
                # finished games in the plan's order (the table's), whichever finished first
                results["runs"] = [e for env_, _ in plan if pending[env_].get("done")
                                   for k in sorted(pending[env_]["runs"]) for e in pending[env_]["runs"][k]]
                results["seconds"][env] = g["seconds"]
                results["seconds"]["all"] = time.perf_counter() - t_all
                (out / "results.json").write_text(json.dumps(results, indent=1))
                write_outputs(out, results, final=done_games == len(plan))
        if bar is not None:
            bar.update(bar.total - bar.n)
    finally:
        pool.terminate()  # an error or Ctrl-C: no worker trains on
        pool.join()
        if bar is not None:
            bar.close()
    return out
