"""float32 against bfloat16 on this machine, side by side in one run: the trainer's forward + backward and vLLM's
generation, so that ``--dtype auto`` can be checked against the hardware it runs on.

Trainer: the same 2 x 64-token batch through the same model in both dtypes, alternating repeats in one process.
vLLM: one engine per dtype, each in its own child process (one engine at a time), alternating order. The CPU model
and its bf16 flags are recorded with the result: figures from different CPUs differ by 4x and more.

    python -m benchmarks.dtype_speed --out benchmarks/measured/<date>/dtype_speed.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from benchmarks._report import cpu_description, emit, run_child

_VLLM_CHILD = r"""
import json, sys, time
from ccpo_agents.policy import Request, SamplingConfig
from ccpo_agents.vllm_backend import VLLMPolicy
model, dtype, n, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pol = VLLMPolicy(model, ["agent_0"], max_model_len=1024, enable_lora=False, dtype=dtype)
reqs = [Request("agent_0", f"Count from {i} to {i + 40}, one number per line.") for i in range(n)]
sp = SamplingConfig(temperature=0.0, max_tokens=max_tokens)
pol.generate(reqs[:2], sp)  # warm-up
t0 = time.perf_counter()
out = pol.generate(reqs, sp)
dt = time.perf_counter() - t0
print("RESULT " + json.dumps({"tokens": sum(len(c[0].completion_ids) for c in out), "seconds": dt}))
"""


def trainer_seconds(model: str, repeats: int) -> dict[str, list[float]]:
    """Forward + backward seconds of a 2 x 64-token batch per dtype (alternating, same process)."""
    import torch
    from transformers import AutoModelForCausalLM

    nets = {d: AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, d)) for d in ("float32", "bfloat16")}
    ids = torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(0))
    out: dict[str, list[float]] = {d: [] for d in nets}
    for _ in range(repeats):
        for d, net in nets.items():
            net.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            net(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
            out[d].append(time.perf_counter() - t0)
    return out


def vllm_tokens_per_second(model: str, repeats: int, prompts: int, max_tokens: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for r in range(repeats):
        for d in (("float32", "bfloat16") if r % 2 == 0 else ("bfloat16", "float32")):
            res = run_child(_VLLM_CHILD, model, d, prompts, max_tokens)
            out[d].append(res["tokens"] / res["seconds"])
    return out


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats of each measurement")
    p.add_argument("--prompts", type=int, default=32, help="vLLM prompts per batch")
    p.add_argument("--max-tokens", type=int, default=48, help="vLLM completion tokens per prompt")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)

    from ccpo_agents.hardware import resolve_dtype
    from ccpo_agents.models import resolve_model

    model = resolve_model(args.model)
    tr = trainer_seconds(model, args.repeats + 1)
    tr = {d: v[1:] for d, v in tr.items()}  # the first repeat warms up
    gen = vllm_tokens_per_second(model, args.repeats, args.prompts, args.max_tokens)
    f32, b16 = statistics.mean(tr["float32"]), statistics.mean(tr["bfloat16"])
    g32, g16 = statistics.mean(gen["float32"]), statistics.mean(gen["bfloat16"])
    lines = [f"# float32 vs bfloat16 on {cpu_description()}", "",
             f"Model: {args.model}. `--dtype auto` picks **{resolve_dtype('auto', 'cpu')}** on this CPU.", "",
             "| measurement | float32 | bfloat16 | bf16 / fp32 |", "|---|---|---|---|",
             f"| trainer forward + backward, 2 x 64 tokens (s, mean of {len(tr['float32'])}) | {f32:.2f} | {b16:.2f} | "
             f"{b16 / f32:.2f}x time |",
             f"| vLLM greedy generation, {args.prompts} prompts x {args.max_tokens} tokens (tok/s, mean of "
             f"{len(gen['float32'])}) | {g32:.0f} | {g16:.0f} | {g16 / g32:.2f}x throughput |", "",
             "Raw: trainer s " + json.dumps({d: [round(x, 3) for x in v] for d, v in tr.items()}) +
             "; vLLM tok/s " + json.dumps({d: [round(x, 1) for x in v] for d, v in gen.items()})]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
