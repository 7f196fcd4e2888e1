"""Is CPU generation bound by arithmetic? vLLM's throughput per batch size against the matmuls it cannot avoid.

For each batch size, one ``vllm.LLM.generate`` call the way ccpo makes it (prefix cache emptied, a LoRA adapter
active, temperature 1, every request generating exactly ``--max-tokens``) is timed, and its work counted:

* FLOPs: ``2 x N_body`` per token the transformer body processes (prefill tokens not served from the prefix cache,
  plus every decode step) and ``2 x N_head`` per sampled token, where ``N_body`` = parameters outside the
  embedding and ``N_head`` = vocabulary x hidden size (attention over these short contexts is not counted);
* the *matmul floor*: the same linear layers (q/k/v/o, gate/up/down, LM head) at the same numbers of rows, run as
  plain ``torch.nn.functional.linear`` calls in this process with as many threads as cores, i.e. what the
  arithmetic alone costs here with PyTorch's own kernels.

``floor / generate`` near 1 means generation is bound by arithmetic: making it faster needs fewer tokens (or
fewer FLOPs per token), not less overhead.

    python -m benchmarks.generation_roofline --out benchmarks/measured/<date>/generation_roofline.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks._report import emit


def linear_floor_seconds(shapes: list[tuple[int, int]], rows: list[int], repeats: int = 3) -> float:
    """Seconds of ``F.linear`` over every ``(out, in)`` weight in ``shapes`` for each row count in ``rows``
    (median of ``repeats``), i.e. the matmuls of one forward per entry of ``rows``."""
    import torch
    import torch.nn.functional as F

    weights = [torch.randn(o, i) * 0.02 for o, i in shapes]
    inputs = {n: {i: torch.randn(n, i) for _, i in shapes} for n in set(rows)}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for n in rows:
            for w in weights:
                F.linear(inputs[n][w.shape[1]], w)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64], help="requests per call")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens every request generates")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per batch size (median)")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoConfig
    from vllm import SamplingParams, TokensPrompt

    import ccpo_envs
    from benchmarks._report import cpu_description
    from ccpo_agents.hf_backend import HFTeam, LoraSpec
    from ccpo_agents.models import resolve_model
    from ccpo_agents.vllm_backend import VLLMPolicy

    model = resolve_model(args.model)
    cfg = AutoConfig.from_pretrained(model)
    d, f, v, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    layer = [(d, d), (kv, d), (kv, d), (d, d), (f, d), (f, d), (d, f)]  # q, k, v, o, gate, up, down
    n_body, n_head = L * sum(o * i for o, i in layer), v * d

    pol = VLLMPolicy(model, ["reasoner_0"], max_model_len=1024, max_lora_rank=8, dtype="float32")
    team = HFTeam(model, ["reasoner_0"], LoraSpec(r=8, alpha=16))
    with torch.no_grad():
        for prm in team.trainable_parameters("reasoner_0"):
            prm.add_(torch.randn_like(prm) * 0.01)
    pol.load_adapter("reasoner_0", team.save_adapter("reasoner_0", "/tmp/ccpo_roofline_adapter"))
    del team
    src = ccpo_envs.make_source("arith_easy", "eval", size=max(args.batches))
    ids = [pol.formatter.prompt_ids("reasoner_0", src[i].question) for i in range(max(args.batches))]
    torch.set_num_threads(os.cpu_count() or 1)  # the floor with every core, as the engine uses them

    def generate(n: int) -> tuple[float, int, int]:
        params = [SamplingParams(temperature=1.0, max_tokens=args.max_tokens, min_tokens=args.max_tokens,
                                 ignore_eos=True, logprobs=0, seed=i) for i in range(n)]
        pol.llm.reset_prefix_cache()
        t0 = time.perf_counter()
        out = pol.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids[:n]], params, use_tqdm=False,
                               lora_request=[pol.adapters["reasoner_0"]] * n)
        dt = time.perf_counter() - t0
        prefill = sum(len(o.prompt_token_ids) - (o.num_cached_tokens or 0) for o in out)
        return dt, prefill, sum(len(o.outputs[0].token_ids) for o in out)

    generate(min(args.batches))  # warm-up
    lines = [f"# Generation against its matmul floor, on {cpu_description()}", "",
             f"{os.path.basename(model)}, float32, a rank-8 LoRA adapter active, temperature 1, {args.max_tokens} "
             f"tokens per request, prefix cache emptied before each call; median of {args.repeats}. "
             f"N_body = {n_body / 1e6:.1f} M, N_head = {n_head / 1e6:.1f} M parameters.", "",
             "| requests | generate s | tokens/s | prefill tokens computed | GFLOP | GFLOP/s | matmul floor s | "
             "floor / generate |", "|---|---|---|---|---|---|---|---|"]
    for n in args.batches:
        runs = [generate(n) for _ in range(args.repeats)]
        dt = statistics.median(r[0] for r in runs)
        prefill, gen = runs[0][1], runs[0][2]
        flop = 2 * n_body * (prefill + gen - n) + 2 * n_head * gen
        # one prefill forward over the computed prompt tokens, then one decode forward of n rows per later token
        body_rows = [prefill] + [n] * (args.max_tokens - 1)
        floor = linear_floor_seconds(layer * L, body_rows) + linear_floor_seconds([(v, d)], [n] * args.max_tokens)
        lines.append(f"| {n} | {dt:.2f} | {gen / dt:.0f} | {prefill} | {flop / 1e9:.1f} | {flop / 1e9 / dt:.0f} | "
                     f"{floor:.2f} | {floor / dt:.2f} |")
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
