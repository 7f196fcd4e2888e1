"""Subprocess worker for math-verify equivalence checks (see `ccpo_envs.verify.SymbolicChecker`).

math-verify's own timeouts use SIGALRM (main thread only, whole seconds) and cannot stop C code such as a huge
integer power. Running it in a child process that the parent kills on timeout gives a hard bound from any thread.
Protocol: one JSON object per line on stdin ``{"gold": str, "pred": str}``; one line ``1`` / ``0`` on stdout.
"""

import json
import sys


def main() -> None:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        ok = 0
        try:
            req = json.loads(line)
            # Timeouts off: the parent process owns the time bound (math-verify's own uses SIGALRM).
            gold = parse("\\boxed{" + req["gold"] + "}", [LatexExtractionConfig()], parsing_timeout=None)
            pred = parse(
                "\\boxed{" + req["pred"] + "}",
                [LatexExtractionConfig(), ExprExtractionConfig()],
                parsing_timeout=None,
            )
            ok = int(bool(gold) and bool(pred) and verify(gold, pred, timeout_seconds=None))
        except Exception:  # noqa: BLE001 - any failure of the symbolic checker means "not shown equal"
            ok = 0
        out.write(f"{ok}\n")
        out.flush()


if __name__ == "__main__":
    main()
