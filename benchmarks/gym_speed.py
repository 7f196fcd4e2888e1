"""How much running gym runs together buys: the same runs trained as one batch and one at a time, side by side.

    python -m benchmarks.gym_speed [--env splitkey_v0] [--runs 32] [--steps 10] [--out FILE]

Runs ``--runs`` (algorithm, seed) pairs of one game for ``--steps`` steps, first each alone (one stacked team per
run, one after the other), then all in one batch, in one process after a warm-up; reports run-steps per second,
the phases, and whether the batched runs' held-out rewards equal the runs alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._report import cpu_description, emit

ALGOS = ("ccpo", "ccpo_v2", "grpo", "magrpo", "difference", "shapley", "rae", "ccpo_no_history")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="splitkey_v0")
    p.add_argument("--runs", type=int, default=32, help="(algorithm, seed) pairs, algorithms cycling")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default=None, help="also write the markdown report here")
    args = p.parse_args(argv)
    if args.runs < 1 or args.steps < 1:
        p.error("--runs and --steps must be >= 1")

    from ccpo_agents.logs import quiet_logs

    quiet_logs()
    from ccpo_algos.gym.runner import GymConfig, GymRun, train_gym
    from ccpo_algos.gym.warmstart import warm_start

    model = warm_start(args.env)
    cfg = GymConfig(env=args.env, model=str(model), steps=args.steps, eval_every=0, eval_size=16)
    runs = [GymRun(ALGOS[i % len(ALGOS)], i // len(ALGOS)) for i in range(args.runs)]
    train_gym(GymConfig(env=args.env, model=str(model), steps=1, eval_size=4), runs[:2])  # warm-up (imports)

    t0 = time.perf_counter()
    alone = [train_gym(cfg, [r]) for r in runs]
    t_alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = train_gym(cfg, runs)
    t_batch = time.perf_counter() - t0
    same = all(np.array_equal(batched.eval_items[k], a.eval_items[0]) for k, a in enumerate(alone))
    n = args.runs * args.steps
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in batched.seconds.items())
    text = "\n".join([
        f"# {args.runs} gym runs of {args.env}, {args.steps} steps each: one at a time vs one batch, on "
        f"{cpu_description()}", "",
        "| | seconds | run-steps / s |", "|---|---|---|",
        f"| one run at a time | {t_alone:.1f} | {n / t_alone:.1f} |",
        f"| one batch | {t_batch:.1f} | {n / t_batch:.1f} |", "",
        f"Batched / alone throughput: {t_alone / t_batch:.1f}x. Batch phases: {phases}. "
        f"Held-out rewards of every batched run equal the run alone: {'yes' if same else 'NO'}.", ""])
    emit(text, args.out)


if __name__ == "__main__":
    main()
