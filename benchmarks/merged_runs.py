"""Would a bench's runs be faster in lockstep on one engine? One merged generate call vs one call per run.

The default bench trains six runs one after the other on one engine; a rollout call holds one run's turns (16-48
rows). Decoding on a CPU is bound by reading the weights once per step for a handful of rows
(``generation_roofline``), so more rows per step are the one lever left: running the runs in lockstep would put
every run's turns, each with its own adapters, into one call. This measures that call against the calls it replaces,
side by side in one process, before anyone restructures the trainer for it:

* each run has its own LoRA adapters (rank 16, random non-zero weights) and its own rows (``--runs 2x32``: 2 adapters,
  32 rows, like a CCPO dyad's first stage: the thinker's turns and the reasoner's counterfactual turns);
* *separate*: one call per run, as the bench makes them; *merged*: one call with every run's rows;
* the same requests and per-request seeds in both, every row generating exactly ``--max-tokens`` tokens at the
  training temperature; the two settings alternate, ``--repeats`` times.

It also reports whether the merged call gives each run the tokens and log-probs it gets alone: a bench that merged
runs would make a run's numbers depend on which other runs share its batches.

    python -m benchmarks.merged_runs --out benchmarks/measured/<date>/merged_runs.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from benchmarks._report import emit


def parse_run(text: str) -> tuple[int, int]:
    """``"2x32"`` -> ``(2, 32)``: adapters, rows."""
    try:
        adapters, rows = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a run is ADAPTERSxROWS, e.g. 2x32; got {text!r}") from None
    if adapters < 1 or rows < adapters:
        raise argparse.ArgumentTypeError(f"a run needs >= 1 adapter and >= 1 row per adapter; got {text!r}")
    return adapters, rows


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--runs", type=parse_run, nargs="+",
                   default=[(2, 32)] * 3 + [(3, 48)] * 3,
                   help="ADAPTERSxROWS per run (default: the default bench's six runs' first rollout calls: "
                        "3 dyad runs 2x32, 3 vote runs 3x48)")
    p.add_argument("--max-tokens", type=int, default=48, help="tokens every row generates (the cpu preset's cap)")
    p.add_argument("--temperature", type=float, default=0.5, help="sampling temperature (the cpu preset's)")
    p.add_argument("--repeats", type=int, default=2, help="alternating repeats of both settings")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.max_tokens < 1:
        p.error("--repeats and --max-tokens must be >= 1")

    import torch
    from vllm import SamplingParams, TokensPrompt
    from vllm.lora.request import LoRARequest

    import ccpo_envs
    from benchmarks._report import cpu_description
    from ccpo_agents.hf_backend import HFTeam, LoraSpec
    from ccpo_agents.models import resolve_model
    from ccpo_agents.vllm_backend import VLLMPolicy

    model = resolve_model(args.model)
    first = [sum(a for a, _ in args.runs[:r]) for r in range(len(args.runs))]  # run r's adapters: first[r], ...
    names = [f"voter_{k}" for k in range(sum(a for a, _ in args.runs))]  # one per adapter (names pick the prompt)
    pol = VLLMPolicy(model, names, max_model_len=1024, max_lora_rank=16, dtype="float32")
    team = HFTeam(model, names, LoraSpec(r=16, alpha=32), dtype="float32")
    loras = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for k, name in enumerate(names):
            for prm in team.trainable_parameters(name):
                prm.add_(torch.randn_like(prm) * 0.01)  # an active adapter: LoRA's B starts at 0
            path = team.save_adapter(name, os.path.join(tmp, name))
            pol.load_adapter(name, path)
            loras.append(pol.adapters[name])
        del team
        src = ccpo_envs.make_source("arith_easy", "train", size=max(rows for _, rows in args.runs))
        # run r's rows: its adapters in turn, 4 samples per question, each with its own seed
        per_run: list[list[tuple[list[int], LoRARequest, int]]] = [
            [(pol.formatter.prompt_ids(names[first[r] + i % a], src[i // 4].question), loras[first[r] + i % a],
              1000 * r + i) for i in range(rows)] for r, (a, rows) in enumerate(args.runs)]

        def call(items: list[tuple[list[int], LoRARequest, int]]) -> tuple[float, list[object]]:
            params = [SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens,
                                     min_tokens=args.max_tokens, ignore_eos=True, logprobs=0, seed=s)
                      for _, _, s in items]
            t0 = time.perf_counter()
            out = pol._run([TokensPrompt(prompt_token_ids=ids) for ids, _, _ in items], params,
                           [lr for _, lr, _ in items])  # ccpo's engine call: prefix cache emptied, one batch
            return time.perf_counter() - t0, out

        call(per_run[0])  # warm-up
        sep_t, mer_t, same, rows_all, max_dlp = [], [], 0, 0, 0.0
        for rep in range(args.repeats):
            order = ("separate", "merged") if rep % 2 == 0 else ("merged", "separate")
            for setting in order:
                if setting == "separate":
                    outs, total = [], 0.0
                    for items in per_run:
                        dt, o = call(items)
                        total += dt
                        outs += o
                    sep_t.append(total)
                    alone = outs
                else:
                    dt, merged = call([x for items in per_run for x in items])
                    mer_t.append(dt)
            if rep == 0:  # do the merged call's rows get what each run gets alone?
                for a, b in zip(alone, merged):
                    ta, tb = a.outputs[0].token_ids, b.outputs[0].token_ids
                    rows_all += 1
                    if list(ta) == list(tb):
                        same += 1
                        max_dlp = max([max_dlp] + [abs(x[t].logprob - y[t].logprob)
                                                    for x, y, t in zip(a.outputs[0].logprobs, b.outputs[0].logprobs, ta)])

    n_rows = sum(rows for _, rows in args.runs)
    tokens = n_rows * args.max_tokens
    s, m = statistics.median(sep_t), statistics.median(mer_t)
    layout = " + ".join(f"{a}x{r}" for a, r in args.runs)
    lines = [f"# {len(args.runs)} runs' rollout calls: one per run vs one merged call, on {cpu_description()}", "",
             f"{os.path.basename(model)}, float32, {len(names)} rank-16 LoRA adapters (adapters x rows per run: "
             f"{layout} = {n_rows} rows), temperature {args.temperature}, every row {args.max_tokens} tokens "
             f"({tokens} in all), per-request seeds, prefix cache emptied before each call; settings alternating, "
             f"{args.repeats} repeats, median.", "",
             "| setting | calls | seconds | tokens/s |", "|---|---|---|---|",
             f"| one call per run | {len(args.runs)} | {s:.1f} ({', '.join(f'{x:.1f}' for x in sep_t)}) | "
             f"{tokens / s:.0f} |",
             f"| merged | 1 | {m:.1f} ({', '.join(f'{x:.1f}' for x in mer_t)}) | {tokens / m:.0f} |", "",
             f"Merged / separate time: **{m / s:.2f}x** ({s / m:.2f}x the throughput).", "",
             f"Same sampled tokens in the merged call as alone: {same}/{rows_all} rows; largest |log-prob difference| "
             f"on those rows: {max_dlp:.1e} (0 would mean the engine is batch-invariant here)."]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
