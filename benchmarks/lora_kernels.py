"""vLLM's CPU LoRA path against ccpo's (``ccpo_agents/cpu_lora.py``), side by side in one run, on a training batch.

Three settings, one engine each in its own child process (one engine at a time), alternating order: vLLM's own
PyTorch-native LoRA ops (``CCPO_CPU_LORA=native``), ccpo's grouped LoRA layer (``grouped``, the CPU default), and
the bare base model (no adapter: the floor). Every call is what a rollout does: ``VLLMPolicy.generate`` on
``--prompts`` questions x ``--group`` samples at T = 1 with per-request seeds, one role, a rank-16 adapter (random,
non-zero). The token ids of native and grouped are compared too: the same product with another order of float
additions, so they agree except where a rounding difference flips a sampled token.

    python -m benchmarks.lora_kernels --out benchmarks/measured/<date>/lora_kernels.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

from benchmarks._report import emit, run_child
from benchmarks._report import cpu_description

_CHILD = r"""
import json, sys, time
import ccpo_envs
from ccpo_agents.policy import Request, SamplingConfig
from ccpo_agents.vllm_backend import VLLMPolicy
model, adapter, prompts, group, max_tokens, repeats = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
pol = VLLMPolicy(model, ["agent_0"], max_model_len=1024, max_lora_rank=16, dtype="float32")
if adapter != "-":
    pol.load_adapter("agent_0", adapter)
src = ccpo_envs.make_source("arith_easy", "train", size=prompts)
reqs = [Request("agent_0", src[i].question, seed=i) for i in range(prompts)]
sp = SamplingConfig(temperature=1.0, max_tokens=max_tokens, n=group)
out = pol.generate(reqs, sp)  # warm-up
res = {"seconds": [], "tokens": [sum(len(c.completion_ids) for cs in out for c in cs)],
       "ids": [c.completion_ids for cs in out for c in cs]}
for _ in range(repeats):
    t0 = time.perf_counter()
    pol.generate(reqs, sp)
    res["seconds"].append(time.perf_counter() - t0)
print("RESULT " + json.dumps(res))
"""

SETTINGS = {"native": ("native", True), "grouped": ("grouped", True), "base model": ("grouped", False)}


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--rounds", type=int, default=2, help="engine starts per setting (alternating order)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per engine (after one warm-up call)")
    p.add_argument("--prompts", type=int, default=4, help="questions per call (B)")
    p.add_argument("--group", type=int, default=4, help="samples per question (G)")
    p.add_argument("--max-tokens", type=int, default=32, help="completion cap")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)

    import torch

    from ccpo_agents.hf_backend import HFTeam, LoraSpec
    from ccpo_agents.models import resolve_model

    model = resolve_model(args.model)
    team = HFTeam(model, ["agent_0"], LoraSpec(r=16, alpha=32))
    with torch.no_grad():  # a trained-looking adapter: lora_B != 0
        g = torch.Generator().manual_seed(0)
        for prm in team.trainable_parameters("agent_0"):
            prm.add_(torch.randn(prm.shape, generator=g) * 0.01)
    adapter = str(team.save_adapter("agent_0", tempfile.mkdtemp(prefix="ccpo_lora_kernels_") + "/agent_0"))
    del team

    res: dict[str, dict[str, list]] = {k: {"seconds": [], "tokens": [], "ids": []} for k in SETTINGS}
    names = list(SETTINGS)
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            kernels, with_adapter = SETTINGS[name]
            out = run_child(_CHILD, model, adapter if with_adapter else "-", args.prompts, args.group,
                            args.max_tokens, args.repeats, env={"CCPO_CPU_LORA": kernels})
            res[name]["seconds"].append(out["seconds"])
            res[name]["tokens"].append(out["tokens"][0])
            res[name]["ids"].append(out["ids"])
    med = {k: statistics.median(s for run in v["seconds"] for s in run) for k, v in res.items()}
    same = [a == b for ra, rb in zip(res["native"]["ids"], res["grouped"]["ids"]) for a, b in zip(ra, rb)]
    lines = [f"# vLLM CPU LoRA: vLLM's native ops vs ccpo's grouped layer ({args.prompts} questions x {args.group} "
             f"samples x <= {args.max_tokens} tokens, rank-16 adapter), {cpu_description()}", "",
             f"Model: {args.model}, float32; {args.rounds} engines x {args.repeats} timed calls per setting, "
             "alternating.", "",
             "| setting | seconds per call (median) | tokens per call | vs native | adapter cost over the base model |",
             "|---|---|---|---|---|"]
    for k in names:
        extra = (f"{med[k] - med['base model']:+.2f} s" if k != "base model" else "-")
        lines.append(f"| {k} | {med[k]:.2f} | {statistics.mean(res[k]['tokens']):.0f} | "
                     f"{med[k] / med['native']:.2f}x | {extra} |")
    lines += ["", f"Completions identical between native and grouped: {sum(same)} of {len(same)}.", "",
              "Raw seconds: " + json.dumps({k: [[round(x, 2) for x in run] for run in v["seconds"]]
                                            for k, v in res.items()})]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
