"""Full fine-tuning on vLLM: one engine per role, each role's new weights reloaded in place after every update.

The reference recipe trains every role as a full model (lr 1e-6). One engine cannot serve several full models, so
each role gets its own ``vllm.LLM`` (``enable_lora=False``; on a GPU they share it, ``gpu_memory_utilization``
split between them). After an update the trainer writes the role's model folder (:meth:`HFTeam.save_adapter`) and
:meth:`PerRoleEngines.load_adapter` reloads that engine's weights from it (vLLM's ``reload_weights`` worker call:
no engine restart; no cached prompt KV of the old weights is reused, since every call starts with an
empty prefix cache: ``VLLMPolicy._run``). Same interface as :class:`~ccpo_agents.vllm_backend.VLLMPolicy`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ccpo_agents.policy import Completion, Request, SamplingConfig
from ccpo_agents.vllm_backend import on_cpu


class RepackExtension:
    """Mixed into each engine's worker (vLLM's ``worker_extension_cls``), so that ``collective_rpc`` can call it."""

    def repack_cpu_gemms(self) -> int:
        return repack_cpu_gemms(self)


def repack_cpu_gemms(worker: Any) -> int:
    """Rebuild vLLM-CPU's pre-packed GEMM weights from the live ones (in the engine's worker); returns how many.

    On CPU vLLM packs each linear layer's weight for oneDNN once, at load, and reads the packed copy from then on.
    ``reload_weights`` updates the layers it re-materialises, but a layer that keeps its weight and packs a copy
    (the LM head tied to the embedding) kept serving the old one: after a full fine-tuning update the engine
    sampled from a half-updated model (mean |log-prob gap| 0.31 nats on the tiny test model). In bf16 oneDNN
    packing fails on CPUs without native bf16 and vLLM falls back to ``F.linear`` on the live weight, which hid it.
    """
    import torch
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    n = 0
    for module in worker.model_runner.get_model().modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and isinstance(weight, torch.Tensor) and weight.ndim == 2 \
                and weight.numel() and not weight.is_meta:
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            n += 1
    return n


class PerRoleEngines:
    """One in-process vLLM engine per role serving that role's full weights.

    Args:
        model: the base model directory (every role starts from it).
        roles: agent roles.
        gpu_memory_utilization: fraction of GPU memory for all engines together (split evenly).
        Other arguments as :class:`~ccpo_agents.vllm_backend.VLLMPolicy`.
    """

    def __init__(self, model: str, roles: Sequence[str], max_model_len: int = 2048, seed: int = 0,
                 role_prompts: Mapping[str, str | None] | None = None, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.5, engine_kwargs: Mapping[str, Any] | None = None):
        from ccpo_agents.vllm_backend import VLLMPolicy

        if not roles:
            raise ValueError("PerRoleEngines needs at least one role")
        self.base, self.roles = model, list(roles)
        share = gpu_memory_utilization / len(self.roles)
        kw = dict(engine_kwargs or {})
        self._repack = on_cpu()  # oneDNN-packed weights: CPU only
        if self._repack:
            kw.setdefault("worker_extension_cls", f"{__name__}.RepackExtension")
        self.engines = {r: VLLMPolicy(model, [r], max_model_len=max_model_len, seed=seed, role_prompts=role_prompts,
                                      enable_lora=False, dtype=dtype, gpu_memory_utilization=share,
                                      engine_kwargs=kw) for r in self.roles}
        #: What each role should be served with (a model folder, or None for the base); engines catch up lazily,
        #: so restoring this dict (as the untrained-team evaluation does) restores the weights too.
        self.adapters: dict[str, str | None] = {r: None for r in self.roles}
        self._loaded: dict[str, str | None] = {r: None for r in self.roles}

    @property
    def formatter(self) -> Any:
        return self.engines[self.roles[0]].formatter

    @property
    def tokenizer(self) -> Any:
        return self.formatter.tokenizer

    def load_adapter(self, role: str, path: str | os.PathLike) -> None:
        """Serve the full model in ``path`` (written by ``HFTeam.save_adapter``) for ``role`` from now on."""
        if role not in self.engines:
            raise KeyError(f"unknown role {role!r}; these engines serve {self.roles}")
        self.adapters[role] = os.fspath(path)
        self._sync(role, force=True)  # the folder's content is new even when its path is not

    def use_base(self, role: str) -> None:
        """Serve ``role`` with the base model's weights."""
        self.adapters[role] = None
        self._sync(role)

    def _sync(self, role: str, force: bool = False) -> None:
        want = self.adapters[role]
        if force or want != self._loaded[role]:
            llm = self.engines[role].llm
            llm.collective_rpc("reload_weights", kwargs={"weights_path": want or self.base})
            if self._repack:
                llm.collective_rpc("repack_cpu_gemms")
            self._loaded[role] = want

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        out: list[list[Completion] | None] = [None] * len(requests)
        for role in self.roles:
            idx = [i for i, r in enumerate(requests) if r.role == role]
            if idx:
                self._sync(role)
                for i, c in zip(idx, self.engines[role].generate([requests[i] for i in idx], sampling)):
                    out[i] = c
        unknown = sorted({r.role for r, c in zip(requests, out) if c is None})
        if unknown:
            raise KeyError(f"no engine for roles {unknown}; these engines serve {self.roles}")
        return [c for c in out if c is not None]
