"""The one ``ccpo`` command-line entry point.

Subcommands:
  train    train a team (dyad or vote) with CCPO, shared-reward GRPO or MAPPO
  eval     greedy evaluation of a run's latest checkpoint on a held-out split
  bench    the benchmark suite (the README's main job); `ccpo bench report A B` compares two result folders
  demo     play scripted teams on dyad_v0 and vote_v0 and measure env throughput (no model needed)

Run ``ccpo <command> --help`` for the options of one command.
"""

from __future__ import annotations

import json
import sys

USAGE = __doc__


def _demo(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="ccpo demo", description=(
        "Play one scripted episode of each environment (thinker/reasoner dyad and 3-voter vote) on held-out "
        "reasoning-gym tasks, print the transcript with the counterfactual outcomes the algorithms consume, then "
        "measure env throughput with scripted agents."))
    p.add_argument("--source", default="math", help="task source: math, logic, arith_easy, rg:<name>, gsm8k, ...")
    p.add_argument("--seed", type=int, default=0, help="seed of the task draw")
    p.add_argument("--episodes", type=int, default=100, help="episodes per throughput measurement")
    p.add_argument("--out", default=None, help="also write the throughput table (markdown) to this file")
    args = p.parse_args(argv)

    import ccpo_envs
    from benchmarks import env_throughput

    env = ccpo_envs.make("dyad_v0", source=args.source, split="eval", size=50, render_mode="ansi")
    env.reset(seed=args.seed)
    gold = env.unwrapped.task.answer
    script = {("thinker_0", 0): "Work it out carefully, one operation at a time.",
              ("reasoner_0", 0): f"Following the plan, the result is \\boxed{{{gold}}}.",
              ("reasoner_0", 1): "I am not sure; maybe \\boxed{0}."}
    for agent in env.agent_iter():
        obs, _, term, trunc, info = env.last()
        if term or trunc:
            env.step(None)
            continue
        env.step(script[(agent, int(obs["observation"][1]))])
    print("=== dyad_v0 (scripted: helpful thinker, reasoner fails alone) ===")
    print(env.unwrapped.render())
    print(f"R_joint={info['reward_joint']}  R_solo={info['reward_removed']['thinker_0']}  "
          f"thinker credit Δ={info['reward_joint'] - info['reward_removed']['thinker_0']:+.0f}")

    par = ccpo_envs.make("vote_v0", source=args.source, split="eval", size=50)
    par.reset(seed=args.seed)
    gold = par.unwrapped.task.answer
    _, _, _, _, infos = par.step({"voter_0": f"\\boxed{{{gold}}}", "voter_1": f"\\boxed{{{gold}}}",
                                  "voter_2": "I think it is \\boxed{-1}"})
    i0 = infos["voter_0"]
    print("\n=== vote_v0 (scripted: two right, one wrong) ===")
    print(f"answers={i0['answers']}  team={i0['team_answer']!r}  R_joint={i0['reward_joint']}")
    print("credit Δ_k = R_joint - R_¬k: " + ", ".join(
        f"{k}={i0['reward_joint'] - r:+.1f}" for k, r in i0["reward_removed"].items()))
    print()
    env_throughput.main(["--episodes", str(args.episodes), "--source", args.source]
                        + (["--out", args.out] if args.out else []))
    return 0


def _train(argv: list[str]) -> int:
    """``ccpo train [--preset NAME] [--field value ...]``: every TrainConfig field is a flag (see --help)."""
    import tyro

    from ccpo_algos.config import PRESETS, TrainConfig, preset

    name = None
    if "--preset" in argv:
        i = argv.index("--preset")
        if i + 1 >= len(argv):
            print(f"ccpo train: --preset needs a name: {sorted(PRESETS)}", file=sys.stderr)
            return 2
        name = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    try:
        base = preset(name)
    except ValueError as e:
        print(f"ccpo train: {e}", file=sys.stderr)
        return 2
    desc = (f"Train a team of LLM agents. Presets (--preset NAME, then any flag overrides it): "
            f"{', '.join(sorted(PRESETS))}.")
    cfg = tyro.cli(TrainConfig, default=base, args=argv, description=desc, prog="ccpo train")
    try:
        cfg.validate()
    except ValueError as e:  # before any model is loaded
        print(f"ccpo train: {e}", file=sys.stderr)
        return 2
    from ccpo_algos.trainer import read_metrics, train

    run_dir = train(cfg)
    last = read_metrics(run_dir)[-1]
    print(f"run folder: {run_dir}")
    print(json.dumps({k: round(v, 4) for k, v in last.items() if k.startswith(("eval/", "charts/accuracy"))},
                     indent=1))
    return 0


def _eval(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="ccpo eval", description="Greedy evaluation of a run's latest checkpoint.")
    p.add_argument("run", help="run folder written by `ccpo train`")
    p.add_argument("--split", default="eval", choices=["eval", "test"],
                   help="held-out split (use test only for final numbers, never to pick checkpoints)")
    p.add_argument("--size", type=int, default=None, help="number of tasks (default: the run's eval_size)")
    p.add_argument("--task", default=None,
                   help="evaluate on another task source than the run's (e.g. math500, aime2024, aime2025, amc23, "
                        "minerva, gaokao2023en with --split test)")
    p.add_argument("--task-path", default=None, help="local copy of a hub benchmark (offline use)")
    args = p.parse_args(argv)
    from ccpo_algos.trainer import evaluate_run

    try:
        out = evaluate_run(args.run, args.split, args.size, task=args.task, task_path=args.task_path)
    except (FileNotFoundError, ValueError) as e:
        print(f"ccpo eval: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1))
    return 0


def _bench(argv: list[str]) -> int:
    """``ccpo bench [--preset default|full|long] [--ablations no_history no_gate ...]`` or ``ccpo bench report A B``."""
    if argv[:1] == ["report"]:
        if len(argv) != 3:
            print("usage: ccpo bench report RESULTS_A RESULTS_B", file=sys.stderr)
            return 2
        from benchmarks.suite import report

        try:
            print(report(argv[1], argv[2]))
        except FileNotFoundError as e:
            print(f"ccpo bench report: {e}; pass two folders written by `ccpo bench`", file=sys.stderr)
            return 2
        return 0
    import tyro

    from benchmarks.suite import BENCH_PRESETS, BenchConfig, run_suite

    bc = tyro.cli(BenchConfig, args=argv, prog="ccpo bench", description=(
        "Train CCPO, shared-reward GRPO and MAPPO on the dyad and the vote (plus the untrained team and the "
        f"reasoner alone as references) and write a table and plots. Presets: {', '.join(BENCH_PRESETS)}."))
    try:
        bc.runs()
    except ValueError as e:
        print(f"ccpo bench: {e}", file=sys.stderr)
        return 2
    out = run_suite(bc)
    print((out / "table.md").read_text())
    print(f"results: {out}  (table.md, curves.png, credit.png, results.json)")
    return 0


COMMANDS = {"train": _train, "eval": _eval, "bench": _bench, "demo": _demo}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"ccpo: unknown command {cmd!r}\n{USAGE}", file=sys.stderr)
        return 2
    return COMMANDS[cmd](rest)


if __name__ == "__main__":
    sys.exit(main())
