"""Environment throughput: episodes per second with scripted agents, verifier included and excluded.

Compare the numbers with generation cost (tokens/s of the policy layer) to see whether the env can ever be the
bottleneck. Usage::

    python -m benchmarks.env_throughput --episodes 300 --out results/env_throughput.md
"""

from __future__ import annotations

from benchmarks._report import emit

import argparse
import time
from collections.abc import Callable

from tqdm import tqdm

import ccpo_envs
from ccpo_envs import Task, make_source


class _NoVerifyStub:
    """Test double standing in for the verifier (what this measurement excludes): finds no answer, scores 0."""

    def extract(self, text: str) -> None:
        return None

    def score_answer(self, answer: str, task: Task) -> float:
        return 0.0

    def equivalent(self, a: str, b: str) -> bool:
        return False


class _StubSource:
    def __init__(self, inner):
        self.inner, self.name, self.split, self.verifier = inner, inner.name, inner.split, _NoVerifyStub()

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        return self.inner[i]


def _oracle(agent: str, env) -> str:
    task = env.unwrapped.task
    return f"Let me think step by step. 2 + 2 = 4, so the answer is \\boxed{{{task.answer}}}."


def _garbage(agent: str, env) -> str:
    return "I am not sure what to say here; maybe the answer is twelve or so." * 3


def run_aec(env, policy: Callable, episodes: int, desc: str) -> float:
    t0 = time.perf_counter()
    for ep in tqdm(range(episodes), desc=desc, leave=False):
        env.reset(seed=ep)
        for agent in env.agent_iter():
            _, _, term, trunc, _ = env.last()
            env.step(None if term or trunc else policy(agent, env))
    return episodes / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=200, help="episodes per measurement")
    p.add_argument("--source", default="math", help="task source name (see ccpo_envs.make_source)")
    p.add_argument("--out", default=None, help="write the markdown table here too")
    args = p.parse_args(argv)

    src = make_source(args.source, "train", seed=0, size=max(50, args.episodes))
    rows = []
    for env_name in ("dyad_v0", "vote_v0"):
        for verify in (True, False):
            for pol_name, pol in (("oracle", _oracle), ("garbage", _garbage)):
                s = src if verify else _StubSource(src)
                env = ccpo_envs.make(env_name, api="aec", source=s)
                eps = run_aec(env, pol, args.episodes, f"{env_name} {pol_name} verify={verify}")
                n_turns = len(env.unwrapped.episode.turns) if hasattr(env.unwrapped, "episode") else None
                rows.append((env_name, pol_name, "yes" if verify else "no", f"{eps:.0f}", n_turns))
    lines = [
        f"# Env throughput ({args.source}, {args.episodes} episodes each, 1 process)",
        "",
        "| env | scripted agents | verifier | episodes/s | turns/episode |",
        "|---|---|---|---|---|",
    ] + [f"| {e} | {p_} | {v} | {x} | {t or ''} |" for e, p_, v, x, t in rows]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
