"""The benchmark suite's ``ccpo`` subcommands, registered through the ``ccpo.commands`` entry-point group (see
``pyproject.toml``), so that ``ccpo_algos`` never imports ``benchmarks``.
"""

from __future__ import annotations

import sys


def demo(argv: list[str]) -> int:
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


#: ``ccpo bench --tier``: ``gym`` (default; the credit gym, tiny models, minutes) or ``llm`` (SmolLM2 on vLLM).
TIERS = ("gym", "llm")


def _tier(argv: list[str]) -> tuple[str | None, list[str]]:
    """``(tier, the other arguments)``; ``None`` for an unknown tier (reported by the caller)."""
    if "--tier" not in argv:
        return "gym", argv
    i = argv.index("--tier")
    tier = argv[i + 1] if i + 1 < len(argv) else ""
    return (tier if tier in TIERS else None), argv[:i] + argv[i + 2:]


def gym_bench(argv: list[str]) -> int:
    """``ccpo bench [--preset default|smoke] [--envs ...] [--algos ...] [--seeds ...]``: the credit gym."""
    import tyro

    from benchmarks.gym_suite import GYM_PRESETS, GymBenchConfig, run_gym_bench

    cfg = tyro.cli(GymBenchConfig, args=argv, prog="ccpo bench", description=(
        "The credit gym: team tasks whose true contributions are known (split key, redundant pair, free rider, "
        "signalling game, noisy vote), tiny warm-started language models, every credit rule x every game x several "
        "seeds trained together on 2 CPU cores. Writes held-out learning curves with CI bands, each rule's credit "
        "against the truth, paired differences from shared GRPO, IQM and P(improvement). The SmolLM2 comparison: "
        f"ccpo bench --tier llm. Presets: {', '.join(GYM_PRESETS)}."))
    try:
        cfg.design()
    except ValueError as e:
        print(f"ccpo bench: {e}", file=sys.stderr)
        return 2
    return _run_and_show(lambda: run_gym_bench(cfg), "table.md, curves.png, credit.png, results.json, marl_eval.json")


def _run_and_show(run, files: str) -> int:
    """Run a bench; print its table and where its files are (130 on Ctrl-C: the folder is readable as it stands)."""
    try:
        out = run()
    except KeyboardInterrupt:
        return 130
    print((out / "table.md").read_text())
    print(f"results: {out}  ({files})")
    return 0


def bench(argv: list[str]) -> int:
    """``ccpo bench [--tier gym|llm] ...``: the credit gym (default) or the SmolLM2 comparison (``--tier llm``:
    ``[--preset default|full|long] [--ablations no_history no_gate ...]`` or ``report A B``)."""
    tier, argv = _tier(argv)
    if tier is None:
        print(f"ccpo bench: --tier takes one of {', '.join(TIERS)}", file=sys.stderr)
        return 2
    if tier == "gym" and argv[:1] != ["report"]:
        return gym_bench(argv)
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

    bc = tyro.cli(BenchConfig, args=argv, prog="ccpo bench --tier llm", description=(
        "Train CCPO, shared-reward GRPO and MAPPO on the dyad and the vote (plus the untrained team and the "
        f"reasoner alone as references) and write a table and plots. Presets: {', '.join(BENCH_PRESETS)}."))
    try:
        bc.runs()
        if bc.resume:
            from benchmarks.suite import resume_folder

            resume_folder(bc)
    except ValueError as e:
        print(f"ccpo bench: {e}", file=sys.stderr)
        return 2
    return _run_and_show(lambda: run_suite(bc), "table.md, curves.png, credit.png, results.json")




def credit_report(argv: list[str]) -> int:
    """``ccpo credit-report RUN``: credit fidelity of every method on the run's latest adapters."""
    import argparse

    from ccpo_algos.algorithms import ALGORITHMS

    p = argparse.ArgumentParser(prog="ccpo credit-report", description=(
        "On one rollout batch of the run's latest adapters (held-out tasks x the run's group size), compute every "
        "credit method side by side and compare each agent's credit with its measured marginal contribution "
        "(counterfactual replays, --samples per task): rank correlation, sign agreement, within-task spread. "
        "Writes credit_report.json and credit_report.md into the run folder."))
    p.add_argument("run", help="run folder written by `ccpo train`")
    p.add_argument("--tasks", type=int, default=32, help="held-out tasks (default 32)")
    p.add_argument("--samples", type=int, default=16, help="replays per task for the measured contribution")
    p.add_argument("--algos", nargs="*", default=None, choices=sorted(ALGORITHMS), help="methods (default: all)")
    args = p.parse_args(argv)
    if args.tasks < 2 or args.samples < 1:
        print("ccpo credit-report: --tasks must be >= 2 and --samples >= 1", file=sys.stderr)
        return 2
    from benchmarks.credit_fidelity import credit_report as run_report

    try:
        path = run_report(args.run, args.tasks, args.samples, args.algos)
    except (FileNotFoundError, ValueError) as e:
        print(f"ccpo credit-report: {e}", file=sys.stderr)
        return 2
    print(path.read_text())
    print(f"written: {path} and {path.with_suffix('.json')}")
    return 0
