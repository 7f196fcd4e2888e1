"""Does a generating vLLM engine survive being stopped (Ctrl-Z) and continued (``fg``) minutes later?

On CPU vLLM runs its model in a worker process and its engine core waits for each model step with a wall-clock
limit (``VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS``, 300 s in vLLM 0.32). Ctrl-Z stops the whole process group; after
``fg`` the engine core finds the deadline passed and dies. ccpo lifts the limit on CPU
(:func:`ccpo_agents.vllm_backend.cpu_engine_env`). This probe runs one engine per setting in its own process
group (a tiny random model, generating in a loop), stops the group mid-generation for ``--pause`` seconds, continues
it and reports whether generation went on. The settings run at the same time (they are stopped most of it).

    python -m benchmarks.pause_engine --pause 310 --out benchmarks/measured/<date>/pause_engine.md
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

from benchmarks._report import emit

_CHILD = r"""
import sys, time
from ccpo_agents.testing import build_tiny_model
from ccpo_agents.policy import Request, SamplingConfig
from ccpo_agents.vllm_backend import VLLMPolicy

if __name__ == "__main__":
    pol = VLLMPolicy(str(build_tiny_model(sys.argv[1])), ["agent_0"], max_model_len=512, enable_lora=False)
    reqs = [Request("agent_0", f"count {i}") for i in range(64)]
    sp = SamplingConfig(temperature=1.0, max_tokens=200)
    pol.generate(reqs, sp)  # warm-up: kernels compiled before anything is stopped
    print("READY", flush=True)
    t0, n = time.monotonic(), 0
    try:
        while time.monotonic() - t0 < float(sys.argv[2]):
            pol.generate(reqs, sp)
            n += 1
            print(f"CALL {n} {time.monotonic() - t0:.0f}", flush=True)
        print(f"DONE {n}", flush=True)
    except Exception as e:
        print(f"DIED {type(e).__name__}", flush=True)
"""

#: name -> environment added for the child (ccpo's default sets nothing: cpu_engine_env applies inside).
SETTINGS = {"ccpo default": {}, "vLLM's default (300 s)": {"VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "300"}}


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pause", type=int, default=310, help="seconds the engine's process group stays stopped")
    p.add_argument("--before", type=int, default=20, help="seconds of generation before the stop")
    p.add_argument("--after", type=int, default=60, help="seconds of generation wanted after the continue")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)

    from benchmarks._report import cpu_description

    tmp = tempfile.mkdtemp(prefix="ccpo_pause_")
    script = os.path.join(tmp, "child.py")  # a file, not -c: vLLM spawns its processes from the main module
    with open(script, "w") as f:
        f.write(_CHILD)
    budget = args.before + args.pause + args.after
    procs = {}
    for i, (name, extra) in enumerate(SETTINGS.items()):
        procs[name] = subprocess.Popen(
            [sys.executable, script, os.path.join(tmp, f"model{i}"), str(budget)], env=dict(os.environ, **extra),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    lines_of: dict[str, list[str]] = {}
    try:
        for name, proc in procs.items():  # both warm before either is stopped
            for line in proc.stdout:
                if line.startswith("READY"):
                    break
            else:
                raise RuntimeError(f"{name}: the engine did not start")
        time.sleep(args.before)
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGSTOP)
        time.sleep(args.pause)
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGCONT)
        for name, proc in procs.items():
            lines_of[name] = [ln.strip() for ln in proc.stdout]
            proc.wait(timeout=budget + 600)
    finally:
        for proc in procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
    rows = ["| setting | calls finished | calls finished after the continue | outcome |", "|---|---|---|---|"]
    for name, lines in lines_of.items():
        calls = [ln.split() for ln in lines if ln.startswith("CALL ")]
        after = sum(1 for c in calls if float(c[2]) > args.before + args.pause)
        end = next((ln for ln in lines if ln.startswith(("DONE", "DIED"))), "no result (killed)")
        rows.append(f"| {name} | {len(calls)} | {after} | {end} |")
    text = "\n".join([f"# A generating vLLM engine stopped for {args.pause} s and continued, on {cpu_description()}",
                      "", f"Tiny random Qwen2, 64 requests x 200 tokens per call in a loop; the process group is "
                      f"stopped {args.before} s into the loop (kernels already compiled) and continued "
                      f"{args.pause} s later.", ""] + rows)
    return emit(text + "\n", args.out)


if __name__ == "__main__":
    main()
