"""Rollout backends by name (``--backend``): each factory builds a :class:`~ccpo_agents.policy.Backend` from a run's
config. Register your own with :func:`register_backend` (e.g. from a ``--plugins`` module)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def vllm_backend(cfg: Any, model_path: str, roles: list[str], prompts: dict[str, str | None]) -> Any:
    """vLLM in this process: one engine, one LoRA adapter per role (``finetune=full``: one engine per role)."""
    if cfg.finetune == "full":
        from ccpo_agents.full_backend import PerRoleEngines

        return PerRoleEngines(model_path, roles, max_model_len=cfg.max_model_len, seed=cfg.seed,
                              role_prompts=prompts, dtype=cfg.dtype)
    from ccpo_agents.vllm_backend import VLLMPolicy

    return VLLMPolicy(model_path, roles, max_model_len=cfg.max_model_len, max_lora_rank=cfg.lora_r, seed=cfg.seed,
                      role_prompts=prompts, dtype=cfg.dtype)


def server_backend(cfg: Any, model_path: str, roles: list[str], prompts: dict[str, str | None]) -> Any:
    """OpenAI-compatible vLLM servers at ``cfg.endpoints`` (none: one started on 127.0.0.1 with a fresh key)."""
    from ccpo_agents.server_backend import ServerPolicy, VLLMServer

    endpoints = list(cfg.endpoints)
    api_key = os.environ.get(cfg.api_key_env) or None  # remote servers: the key comes from the environment
    if not endpoints:
        server = VLLMServer(model_path, max_model_len=cfg.max_model_len, max_lora_rank=cfg.lora_r,
                            max_loras=len(roles), dtype=cfg.dtype).start()
        endpoints, api_key = [server.url], server.api_key
    return ServerPolicy(endpoints, model_path, roles, cfg.max_model_len, prompts, api_key=api_key)


#: ``name -> factory(cfg, model_path, roles, role_prompts) -> Backend``.
BACKENDS: dict[str, Callable[..., Any]] = {"vllm": vllm_backend, "server": server_backend}


def register_backend(name: str, factory: Callable[..., Any]) -> None:
    """Make ``--backend NAME`` build ``factory(cfg, model_path, roles, role_prompts)``: an object with
    ``generate``, ``load_adapter``, ``use_base``, ``roles`` and ``adapters`` (:class:`ccpo_agents.policy.Backend`)."""
    BACKENDS[name] = factory
