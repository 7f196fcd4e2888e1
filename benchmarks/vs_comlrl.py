"""Training step time for two agents: ccpo (vLLM rollouts, LoRA per role) against CoMLRL's ``MAGRPOTrainer``, on CPU.

Same base model, same prompts (reasoning-gym arithmetic), same batch (B prompts x G completions per agent), same
completion cap, same LoRA shape, same learning rate, measured one after the other in one run. One "step" is one
optimiser update of *both* agents:

* ccpo: ``dyad_v0`` with shared-reward GRPO and the ``simultaneous`` schedule (thinker, then reasoner; no
  counterfactual turn), vLLM generation, adapters synced into the engine after each update;
* CoMLRL 1.4 MAGRPO: two peft LoRA models (CoMLRL keeps one model object per agent), transformers generation,
  ``rollout_buffer_size = train_batch_size = B`` so each agent updates once per B prompts; its agents answer the
  prompt side by side (``joint_mode="aligned"``) and the team reward scores agent 2's answer.

The topologies differ in one way: ccpo's reasoner reads the thinker's message (a longer prompt). The first step of
each trainer is warm-up and not counted. Needs ``pip install comlrl`` (``.[bench]``; not part of ccpo's own deps).

    python -m benchmarks.vs_comlrl --steps 4 --out results/vs_comlrl.md
"""

from __future__ import annotations

import itertools
import time

from benchmarks._report import ccpo_step_parts, ccpo_step_times, emit, peer_dtype, step_time_parser, step_time_report


def main(argv: list[str] | None = None) -> str:
    args = step_time_parser(__doc__).parse_args(argv)
    try:
        from comlrl.trainers.reinforce.magrpo import MAGRPOConfig, MAGRPOTrainer
    except ImportError as e:
        raise SystemExit("this benchmark needs CoMLRL: pip install comlrl (or pip install -e '.[bench]')") from e
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import ccpo_envs
    from ccpo_agents.hf_backend import LoraSpec
    from ccpo_algos.build import role_prompts

    # ccpo: the dyad, shared-reward GRPO, both agents updated every step
    ccpo_steps, cfg, rows = ccpo_step_times(args, env="dyad_v0", algo="grpo", schedule="simultaneous")
    model = cfg.model

    # CoMLRL MAGRPO: two LoRA agents, same prompts (chat template with the same role prompts), batch and lengths
    src = ccpo_envs.make_source(cfg.task, "train", seed=0, size=args.prompts * args.steps)
    tok = AutoTokenizer.from_pretrained(model)
    tok.padding_side = "left"
    prompts = role_prompts(cfg)

    def formatter(kind: str):
        def fmt(item: dict) -> str:
            msgs = [{"role": "system", "content": prompts[kind]}, {"role": "user", "content": item["question"]}]
            return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return fmt

    def reward(thinker, reasoner, *, batch_items=None):  # keyword-only: CoMLRL counts positional parameters
        return [ccpo_envs.safe_score(src.verifier, r, src[int(it["i"])]) for r, it in zip(reasoner, batch_items)]

    lora = LoraSpec(cfg.lora_r, cfg.lora_alpha).peft_config()
    agents = [get_peft_model(AutoModelForCausalLM.from_pretrained(model, dtype=peer_dtype(cfg)), lora)
              for _ in range(2)]
    mcfg = MAGRPOConfig(num_train_epochs=1, agent_learning_rate=cfg.lr, num_agents=2, num_generations=args.group,
                        max_new_tokens=args.max_tokens, temperature=cfg.temperature, top_p=1.0, top_k=None,
                        num_turns=1, eval_interval=0, rollout_buffer_size=args.prompts,
                        train_batch_size=args.prompts, logging_steps=1)
    data = Dataset.from_list([{"question": src[i].question, "i": i} for i in range(len(src))])
    trainer = MAGRPOTrainer(agents=agents, num_agents=2, tokenizer=tok, train_dataset=data, reward_func=reward,
                            formatters=[formatter("thinker"), formatter("reasoner")], args=mcfg)
    marks = [time.perf_counter()]
    drain = trainer._drain_ready_buffers

    def timed_drain(ready):
        drain(ready)
        if ready:
            marks.append(time.perf_counter())

    trainer._drain_ready_buffers = timed_drain  # one call per B prompts: both agents' updates
    trainer.train()
    comlrl_steps = [b - a for a, b in itertools.pairwise(marks)]

    title = (f"Step time, two agents, CPU: ccpo vs CoMLRL MAGRPO ({args.prompts} prompts x {args.group} "
             f"completions x {args.max_tokens} tokens per agent, LoRA r={cfg.lora_r}, {peer_dtype(cfg)} on both sides)")
    return emit(step_time_report(title, "ccpo (dyad_v0, grpo, simultaneous)", ccpo_steps, "CoMLRL",
                                 "CoMLRL MAGRPOTrainer (2 agents, aligned)", comlrl_steps,
                                 (ccpo_step_parts(rows),)), args.out)


if __name__ == "__main__":
    main()
