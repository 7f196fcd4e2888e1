"""Subprocess worker for math-verify equivalence checks (see `ccpo_envs.verify.SymbolicChecker`).

math-verify's own timeouts use SIGALRM (main thread only, whole seconds) and cannot stop C code such as a huge
integer power. Running it in a child process that the parent kills on timeout gives a hard bound from any thread.
Protocol: one JSON object per line on stdin ``{"gold": str, "pred": str}``; one line ``1`` / ``0`` on stdout.

The worker dies with its parent (Linux parent-death signal, and a check of the parent pid), runs under CPU-time and
address-space limits (``CCPO_MV_CPU_SECONDS``, ``CCPO_MV_MEMORY_BYTES``), and answers ``ready`` only after one
real check has run, so that its first request is as fast as the rest.
"""

import json
import os
import sys


def _tie_to_parent() -> None:
    """SIGKILL this process when its parent dies (a SIGKILLed trainer must not leave a worker burning a core)."""
    parent = int(os.environ.get("CCPO_PARENT_PID", "0"))
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the closed stdin still ends the loop below
    if parent and os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(0)


def _limit_resources() -> None:
    try:
        import resource

        cpu = int(os.environ.get("CCPO_MV_CPU_SECONDS", "3600"))
        mem = int(os.environ.get("CCPO_MV_MEMORY_BYTES", str(4 << 30)))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    except (ImportError, ValueError, OSError):
        pass


def _check(parse, verify, configs, gold: str, pred: str) -> int:
    # Timeouts off: the parent process owns the time bound (math-verify's own uses SIGALRM).
    g = parse("\\boxed{" + gold + "}", configs[:1], parsing_timeout=None)
    p = parse("\\boxed{" + pred + "}", configs, parsing_timeout=None)
    return int(bool(g) and bool(p) and verify(g, p, timeout_seconds=None))


def main() -> None:
    _tie_to_parent()
    _limit_resources()
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    _check(parse, verify, configs, "\\frac{1}{2}", "0.5")  # warm: sympy's first comparison is the slow one
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        ok = 0
        try:
            req = json.loads(line)
            ok = _check(parse, verify, configs, req["gold"], req["pred"])
        except Exception:  # noqa: BLE001 - any failure of the symbolic checker means "not shown equal"
            ok = 0
        out.write(f"{ok}\n")
        out.flush()


if __name__ == "__main__":
    main()
