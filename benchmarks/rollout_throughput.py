"""Rollout throughput of the policy layer against raw ``vllm.LLM.generate`` and the transformers backend.

Same engine, same prompts (chat-templated token ids), same sampling, measured side by side in one process with
alternating repeats. Goal: the policy layer adds <= 5 % over raw vLLM.

    python -m benchmarks.rollout_throughput --model embedded --out results/rollout_throughput.md
"""

from __future__ import annotations

from benchmarks._report import emit

import argparse
import os
import statistics
import time


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--prompts", type=int, default=32, help="prompts per batch")
    p.add_argument("--max-tokens", type=int, default=64, help="completion tokens per prompt")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats of each measurement")
    p.add_argument("--hf-prompts", type=int, default=8, help="prompts for the (slow) transformers backend (0: skip it)")
    p.add_argument("--lora", action="store_true", help="serve a (random) LoRA adapter for the role")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)

    from vllm import SamplingParams, TokensPrompt

    import ccpo_envs
    from ccpo_agents.hf_backend import HFTeam, LoraSpec
    from ccpo_agents.models import resolve_model
    from ccpo_agents.policy import Request, SamplingConfig
    from ccpo_agents.vllm_backend import VLLMPolicy

    model = resolve_model(args.model)
    src = ccpo_envs.make_source("arith_easy", "eval", size=args.prompts)
    reqs = [Request("reasoner_0", src[i].question) for i in range(args.prompts)]
    pol = VLLMPolicy(model, ["reasoner_0"], max_model_len=1024, max_lora_rank=8)
    team = HFTeam(model, ["reasoner_0"], LoraSpec(r=8, alpha=16))
    if args.lora:
        import torch

        with torch.no_grad():
            for prm in team.trainable_parameters("reasoner_0"):
                prm.add_(torch.randn_like(prm) * 0.01)
        pol.load_adapter("reasoner_0", team.save_adapter("reasoner_0", "/tmp/ccpo_bench_adapter"))
    sampling = SamplingConfig(temperature=1.0, max_tokens=args.max_tokens)
    ids = [pol.formatter.prompt_ids(r.role, r.text) for r in reqs]

    def raw() -> int:
        params = [SamplingParams(temperature=1.0, max_tokens=args.max_tokens, logprobs=0, seed=i)
                  for i in range(len(ids))]
        out = pol.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params, use_tqdm=False,
                               lora_request=[pol.adapters["reasoner_0"]] * len(ids))
        return sum(len(o.outputs[0].token_ids) for o in out)

    def layer() -> int:
        out = pol.generate([Request(r.role, r.text, seed=i) for i, r in enumerate(reqs)], sampling)
        return sum(len(c.completion_ids) for o in out for c in o)

    raw()  # warm-up
    rates: dict[str, list[float]] = {"raw vllm.LLM.generate": [], "ccpo VLLMPolicy.generate": []}
    for _ in range(args.repeats):
        for name, fn in (("raw vllm.LLM.generate", raw), ("ccpo VLLMPolicy.generate", layer)):
            t0 = time.perf_counter()
            n = fn()
            rates[name].append(n / (time.perf_counter() - t0))
    if args.hf_prompts > 0:  # 0: skip the (slow) transformers row
        t0 = time.perf_counter()
        hf = team.generate_ids("reasoner_0", ids[: args.hf_prompts], args.max_tokens)
        rates["transformers HFTeam.generate_ids"] = [sum(len(x) for x in hf) / (time.perf_counter() - t0)]

    base = statistics.median(rates["raw vllm.LLM.generate"])
    lines = [f"# Rollout throughput ({os.path.basename(model)}, {args.prompts} prompts x {args.max_tokens} tokens, "
             f"LoRA {'on' if args.lora else 'off'}, {args.repeats} alternating repeats)", "",
             "| backend | tokens/s (median) | relative to raw vLLM |", "|---|---|---|"]
    for name, r in rates.items():
        med = statistics.median(r)
        lines.append(f"| {name} | {med:.1f} | {med / base:.3f} |")
    overhead = 1 - statistics.median(rates["ccpo VLLMPolicy.generate"]) / base
    lines += ["", f"Policy-layer overhead over raw vLLM: {100 * overhead:.1f} % (goal <= 5 %)."]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
