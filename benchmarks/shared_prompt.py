"""One role's policy update with each group's prompt run once against one full sequence per sample, side by side.

The update (:func:`ccpo_algos.update.policy_step`: log-probs, clipped loss, backward, AdamW) on the same batch in one
process, ``HFTeam.share_prompts`` off, on with the rest in one call, on with the rest in length buckets (one
setting per ``--overheads`` value, ``HFTeam.bucket_overhead``), and each micro-batch packed into one sequence
(``HFTeam.pack_limit``), in rotating order: B questions of the training task, chat-templated
as an agent sees them, G completions each of random tokens whose lengths are drawn from ``--min-len..--max-tokens``
(the time depends on the lengths, not on the tokens). The first repeat of each setting warms up and is not counted.
The log-probs of the two settings are compared on the same weights first.

    python -m benchmarks.shared_prompt --out benchmarks/measured/<date>/shared_prompt.md
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from benchmarks._report import emit
from benchmarks._report import cpu_description
from ccpo_agents.prefix_plan import BUCKET_OVERHEAD


def _batch(tokenizer, task: str, system: str, prompts: int, group: int, min_len: int, max_len: int, seed: int):
    import ccpo_envs
    from ccpo_agents.policy import Completion

    src = ccpo_envs.make_source(task, "train", seed=seed, size=prompts)
    rng = random.Random(seed)
    turns = []
    for i in range(prompts):
        ids = tokenizer.apply_chat_template([{"role": "system", "content": system},
                                             {"role": "user", "content": src[i].question}],
                                            add_generation_prompt=True, tokenize=True, return_dict=False)
        for _ in range(group):
            n = rng.randint(min_len, max_len)
            comp = [rng.randrange(100, len(tokenizer) - 100) for _ in range(n)]
            turns.append(Completion("agent_0", "", list(ids), comp, [0.0] * n, "stop"))
    return turns


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--prompts", type=int, default=4, help="questions per update (B)")
    p.add_argument("--group", type=int, default=4, help="completions per question (G)")
    p.add_argument("--min-len", type=int, default=8, help="shortest completion")
    p.add_argument("--max-tokens", type=int, default=32, help="longest completion")
    p.add_argument("--micro-batch", type=int, default=0, help="rows per forward (default: the cpu preset's)")
    p.add_argument("--overheads", type=int, nargs="+", default=[BUCKET_OVERHEAD],
                   help="bucket overheads (token positions per extra forward call) to time, one setting each")
    p.add_argument("--repeats", type=int, default=4, help="rotating repeats per setting (plus one warm-up each)")
    p.add_argument("--out", default=None, help="also write the markdown result here")
    args = p.parse_args(argv)

    import torch

    from ccpo_agents.hf_backend import PACK_LIMIT, HFTeam, LoraSpec
    from ccpo_agents.models import resolve_model
    from ccpo_algos.build import loss_config
    from ccpo_algos.config import preset
    from ccpo_algos.update import policy_step

    cfg = preset("cpu", prompts_per_step=args.prompts, group_size=args.group)
    cfg.micro_batch = args.micro_batch or cfg.micro_batch
    team = HFTeam(resolve_model(args.model), ["agent_0"], LoraSpec(cfg.lora_r, cfg.lora_alpha), dtype=cfg.dtype)
    turns = _batch(team.tokenizer, cfg.task, cfg.answer_prompt, args.prompts, args.group, args.min_len,
                   args.max_tokens, seed=0)
    adv = torch.randn(len(turns), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(team.trainable_parameters("agent_0"), lr=cfg.lr)
    with torch.no_grad():  # a non-identity adapter, as after the first update
        for name, w in team.model.named_parameters():
            if "lora_B" in name:
                w.normal_(0, 0.01, generator=torch.Generator().manual_seed(1))
    settings = [("one full sequence per sample", False, None, 0),
                ("each group's prompt once, rest in one call", True, None, 0)]
    settings += [(f"each group's prompt once, rest in length buckets (overhead {o})", True, o, 0)
                 for o in args.overheads]
    settings += [(f"each group's prompt once, micro-batch packed (limit {PACK_LIMIT})", True, BUCKET_OVERHEAD,
                  PACK_LIMIT)]
    prompts, comps = [t.prompt_ids for t in turns], [t.completion_ids for t in turns]
    lps = []
    with torch.no_grad():
        for _, team.share_prompts, team.bucket_overhead, team.pack_limit in settings:
            lps.append(team.token_logprobs("agent_0", prompts, comps, cfg.micro_batch)[0])
    max_gap = max(float((lp - lps[0]).abs().max()) for lp in lps)

    times: list[list[float]] = [[] for _ in settings]
    for r in range(args.repeats + 1):
        for i in [(j + r) % len(settings) for j in range(len(settings))]:  # rotating order
            _, team.share_prompts, team.bucket_overhead, team.pack_limit = settings[i]
            t0 = time.perf_counter()
            policy_step(team, "agent_0", opt, turns, adv, cfg, loss_config(cfg))
            if r:
                times[i].append(time.perf_counter() - t0)
    mean = [statistics.mean(t) for t in times]
    P = statistics.mean(len(t.prompt_ids) for t in turns)
    C = statistics.mean(len(t.completion_ids) for t in turns)
    lines = [f"# Update step with shared prompts, on {cpu_description()}", "",
             f"Model {args.model}, {cfg.dtype} -> {team.compute_dtype}; {args.prompts} questions x {args.group} "
             f"completions, prompts {P:.0f} tokens (mean), completions {args.min_len}-{args.max_tokens} "
             f"(mean {C:.1f}); micro-batch {cfg.micro_batch}, LoRA r={cfg.lora_r}; `policy_step` (log-probs, loss, "
             "backward, AdamW).", "",
             "| trainer | s/update (mean) | per-sequence / this | repeats | raw s |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {m:.2f} | {mean[0] / m:.2f} | {len(t)} | {[round(x, 2) for x in t]} |"
              for (name, *_), m, t in zip(settings, mean, times)]
    lines += ["", f"Largest log-prob gap to one full sequence per sample on the same weights: {max_gap:.2e} nats."]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
