"""vLLM CPU generation on an idle machine against one with a core taken by another process, per thread setting.

vLLM's CPU backend pins one OpenMP thread to every core it may use and its threads spin while they wait; when
another process takes one of those cores, every parallel region waits for the thread that lost its core, and
generation can collapse far below the lost core's share. This measures it, one engine per child process (one at a
time), alternating idle and busy, with the busy load a ``yes > /dev/null`` process the OS schedules freely:

* ``default``: ccpo's defaults (``VLLM_CPU_OMP_THREADS_BIND=auto``, no reserved core on <= 4 cores);
* ``passive``: the same with ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep instead of spinning);
* ``reserve1``: one core left to other processes (``VLLM_CPU_NUM_OF_RESERVED_CPU=1``: one thread fewer);
* ``nobind``: no pinning (``VLLM_CPU_OMP_THREADS_BIND=nobind``): the OS may move a thread off a taken core;
* ``inproc``: the engine core in the calling process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): no second process
  that wakes up at every decode step to pass outputs on.

    python -m benchmarks.busy_machine --out benchmarks/measured/<date>/busy_machine.md
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys

from benchmarks._report import emit
from benchmarks._report import cpu_description

_CHILD = r"""
import json, sys, time
from ccpo_agents.policy import Request, SamplingConfig
from ccpo_agents.vllm_backend import VLLMPolicy
model, n, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pol = VLLMPolicy(model, ["agent_0"], max_model_len=1024, enable_lora=False, dtype="float32")
reqs = [Request("agent_0", f"Count from {i} to {i + 40}, one number per line.") for i in range(n)]
sp = SamplingConfig(temperature=0.0, max_tokens=max_tokens)
pol.generate(reqs[:2], sp)  # warm-up
print("READY", flush=True)
sys.stdin.readline()  # the parent starts the load, then says go
t0 = time.perf_counter()
out = pol.generate(reqs, sp)
dt = time.perf_counter() - t0
print("RESULT " + json.dumps({"tokens": sum(len(c[0].completion_ids) for c in out), "seconds": dt}), flush=True)
"""

SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "reserve1": {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"},
    "nobind": {"VLLM_CPU_OMP_THREADS_BIND": "nobind"},
    "inproc": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
}


def tokens_per_second(model: str, setting: str, busy: bool, prompts: int, max_tokens: int) -> float:
    """One engine under ``setting``; the load (if ``busy``) runs only while the timed batch does."""
    env = dict(os.environ, **SETTINGS[setting])
    child = subprocess.Popen([sys.executable, "-c", _CHILD, model, str(prompts), str(max_tokens)], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             start_new_session=True)
    load = None
    try:
        for line in child.stdout:
            if line.startswith("READY"):
                break
        else:
            raise RuntimeError(f"vLLM child ({setting}) failed to start")
        if busy:
            load = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL)
        child.stdin.write("go\n")
        child.stdin.flush()
        for line in child.stdout:
            if line.startswith("RESULT "):
                res = json.loads(line[len("RESULT "):])
                return res["tokens"] / res["seconds"]
        raise RuntimeError(f"vLLM child ({setting}) gave no result")
    finally:
        if load is not None:
            load.kill()
            load.wait()
        os.killpg(child.pid, signal.SIGKILL)  # the child and its engine processes
        child.wait()


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--repeats", type=int, default=1, help="repeats of each (setting, load) pair")
    p.add_argument("--loads", nargs="+", default=["idle", "busy"], choices=["idle", "busy"])
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)

    from ccpo_agents.models import resolve_model

    model = resolve_model(args.model)
    raw: dict[str, dict[str, list[float]]] = {s: {"idle": [], "busy": []} for s in args.settings}
    for r in range(args.repeats):
        for s in (args.settings if r % 2 == 0 else args.settings[::-1]):
            for load in (args.loads if r % 2 == 0 else args.loads[::-1]):
                raw[s][load].append(tokens_per_second(model, s, load == "busy", args.prompts, args.max_tokens))
    def mean(xs: list[float]) -> float:
        return statistics.mean(xs) if xs else float("nan")

    idle0 = mean(raw["default"]["idle"]) if "default" in raw else None
    lines = [f"# vLLM CPU generation, idle vs one core taken by `yes`, on {cpu_description()}", "",
             f"{args.prompts} prompts x {args.max_tokens} tokens, greedy, float32, {args.repeats} repeat(s) each.", "",
             "| setting | idle tok/s | busy tok/s | busy / idle | idle vs default idle |", "|---|---|---|---|---|"]
    for s, v in raw.items():
        i, b = mean(v["idle"]), mean(v["busy"])
        rel = f"{i / idle0:.2f}x" if idle0 else ""
        lines.append(f"| {s} | {i:.1f} | {b:.1f} | {b / i:.2f} | {rel} |")
    lines += ["", "Raw tok/s: " + json.dumps({s: {k: [round(x, 1) for x in xs] for k, xs in v.items()}
                                             for s, v in raw.items()})]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
