"""The one ``ccpo`` command-line entry point.

Subcommands:
  train    train a team (dyad or vote) with CCPO, shared-reward GRPO or MAPPO
  eval     greedy evaluation of a run's latest checkpoint on a held-out split
  bench    the benchmark suite (the README's main job); `ccpo bench report A B` compares two result folders
  demo     play scripted teams and measure env throughput (no model needed)
  (bench and demo are registered by the `benchmarks` package through the `ccpo.commands` entry points)

Run ``ccpo <command> --help`` for the options of one command.
"""

from __future__ import annotations

import json
import os
import sys

import ccpo_agents.logs  # noqa: F401 - quiets the vLLM engine processes a quiet run spawns (they import this module)

USAGE = __doc__


def train_config_from_args(argv: list[str]) -> "TrainConfig":  # noqa: F821 - imported lazily
    """The (not yet validated) config that ``ccpo train ARGV`` runs: ``--preset NAME`` first, then every flag.
    Raises ``ValueError`` for an unknown or missing preset name."""
    import tyro

    from ccpo_algos.config import PRESETS, TrainConfig, preset

    name = None
    if "--preset" in argv:
        i = argv.index("--preset")
        if i + 1 >= len(argv):
            raise ValueError(f"--preset needs a name: {sorted(PRESETS)}")
        name = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    base = preset(name)
    desc = (f"Train a team of LLM agents. Presets (--preset NAME, then any flag overrides it): "
            f"{', '.join(sorted(PRESETS))}.")
    return tyro.cli(TrainConfig, default=base, args=argv, description=desc, prog="ccpo train")


def _train(argv: list[str]) -> int:
    """``ccpo train [--preset NAME] [--field value ...]``: every TrainConfig field is a flag (see --help)."""
    if "--resume" in argv:
        return _resume(argv)
    try:
        cfg = train_config_from_args(argv)
        cfg.validate()
    except ValueError as e:  # before any model is loaded
        print(f"ccpo train: {e}", file=sys.stderr)
        return 2
    return _run_train(cfg)


def _run_train(cfg: "TrainConfig") -> int:  # noqa: F821 - imported lazily
    from ccpo_agents.logs import quiet_logs

    quiet_logs(cfg.verbose)
    from ccpo_algos.runlog import read_metrics
    from ccpo_algos.trainer import train

    try:
        run_dir = train(cfg)
    except FloatingPointError as e:
        print(f"ccpo train: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:  # user errors found at start-up (a task file, a pointer, ...)
        print(f"ccpo train: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:
        print(f"ccpo train: cannot write there ({e}); choose another --out-dir", file=sys.stderr)
        return 2
    last = read_metrics(run_dir)[-1]
    print(f"run folder: {run_dir}")
    print(json.dumps({k: round(v, 4) for k, v in last.items() if k.startswith(("eval/", "charts/accuracy"))},
                     indent=1))
    return 0


def _resume(argv: list[str]) -> int:
    """``ccpo train --resume RUN [--steps N ...]``: the run's own config.json, plus the flags that are safe to
    change (more steps, evaluation and logging settings); nothing is written before the result is validated."""
    import dataclasses

    import tyro

    from ccpo_algos.config import RESUME_SAFE, TrainConfig, load_run_config

    i = argv.index("--resume")
    if i + 1 >= len(argv) or "--preset" in argv:
        print("ccpo train: use --resume RUN_FOLDER (no --preset: the run's own config.json is used)", file=sys.stderr)
        return 2
    try:
        saved = load_run_config(argv[i + 1])
    except ValueError as e:
        print(f"ccpo train: {e}", file=sys.stderr)
        return 2
    cfg = tyro.cli(TrainConfig, default=saved, args=argv, prog="ccpo train")
    changed = [f.name for f in dataclasses.fields(TrainConfig) if getattr(cfg, f.name) != getattr(saved, f.name)]
    unsafe = [n for n in changed if n not in RESUME_SAFE]
    if unsafe:
        print(f"ccpo train: --resume continues the run with its own config.json; {unsafe} cannot change (only "
              f"{[n for n in RESUME_SAFE if n != 'resume']}); start a new run instead", file=sys.stderr)
        return 2
    try:
        cfg.validate()
    except ValueError as e:
        print(f"ccpo train: {e}", file=sys.stderr)
        return 2
    notes = [f"{n} {getattr(saved, n)!r} -> {getattr(cfg, n)!r}" for n in changed if n != "resume"]
    print(f"resuming {cfg.resume} with its config.json" + (f" ({', '.join(notes)})" if notes else ""), file=sys.stderr)
    return _run_train(cfg)


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
    p.add_argument("--plugins", nargs="*", default=[],
                   help="modules to import besides the run's recorded plugins (they register its env or tasks)")
    args = p.parse_args(argv)
    from ccpo_algos.evaluation import evaluate_run

    try:
        out = evaluate_run(args.run, args.split, args.size, task=args.task, task_path=args.task_path,
                           plugins=tuple(args.plugins))
    except (FileNotFoundError, ValueError) as e:
        print(f"ccpo eval: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1))
    return 0


#: Built-in commands. Others come from the ``ccpo.commands`` entry-point group (the benchmark suite registers
#: ``bench`` and ``demo`` there), so the library does not depend on its experiments.
COMMANDS = {"train": _train, "eval": _eval}


def commands() -> dict:
    """Built-in commands plus those registered under the ``ccpo.commands`` entry point group."""
    from importlib.metadata import entry_points

    out = dict(COMMANDS)
    for ep in entry_points(group="ccpo.commands"):
        out.setdefault(ep.name, ep)
    return out


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM takes Ctrl-C's path: the run stops between writes (checkpoints are atomic) and cleanup runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def _stop_children() -> None:
    """At exit, stop every child process ccpo started that is still alive (vLLM's engine core and workers)."""
    import multiprocessing

    children = multiprocessing.active_children()
    for c in children:
        c.terminate()
    for c in children:
        c.join(timeout=10)
        if c.is_alive():
            c.kill()


def main(argv: list[str] | None = None) -> int:
    import atexit
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    atexit.register(_stop_children)
    if "" not in sys.path and os.getcwd() not in sys.path:  # --plugins finds modules in the working directory,
        sys.path.insert(0, os.getcwd())                      # as `python -m` would
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    table = commands()
    if cmd not in table:
        print(f"ccpo: unknown command {cmd!r} (have {sorted(table)})\n{USAGE}", file=sys.stderr)
        return 2
    fn = table[cmd].load() if hasattr(table[cmd], "load") else table[cmd]  # an entry point loads on use
    try:
        return fn(rest)
    except KeyboardInterrupt:
        print(f"ccpo {cmd}: interrupted; the run folder is resumable (ccpo {cmd} --resume ...)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
