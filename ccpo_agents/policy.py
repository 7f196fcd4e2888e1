"""The policy interface: chat prompts per agent role in, completions with tokens and behaviour log-probs out.

Backends (:mod:`ccpo_agents.vllm_backend`, :mod:`ccpo_agents.server_backend`, :mod:`ccpo_agents.hf_backend`,
:mod:`ccpo_agents.scripted`) all implement :class:`Policy`. Chat templating happens here, at the backend boundary:
the env speaks text, the trainer speaks tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from ccpo_envs.prompts import DEFAULT_ROLE_PROMPTS, role_kind  # the topology's prompts live with the envs


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are sampled.

    Attributes:
        temperature: sampling temperature (0: greedy).
        top_p: nucleus sampling mass.
        max_tokens: completion length cap; a completion that hits it finishes with ``length``.
        n: completions per prompt.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    n: int = 1

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1 or self.n < 1:
            raise ValueError(f"max_tokens and n must be >= 1, got {self.max_tokens}, {self.n}")


@dataclass
class Completion:
    """One sampled completion.

    Attributes:
        role: the agent/role that produced it (selects the adapter).
        text: decoded completion text.
        prompt_ids: chat-templated prompt token ids.
        completion_ids: generated token ids (including the stop token if one was generated).
        logprobs: behaviour log-prob of each completion token under the sampling distribution,
            ``log_softmax(logits / T)`` at the request's temperature (vLLM ``processed_logprobs``).
        finish_reason: ``stop`` (ended normally) or ``length`` (truncated; also for prompts that did not fit).
    """

    role: str
    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    finish_reason: str

    @property
    def finished(self) -> bool:
        return self.finish_reason == "stop"


@dataclass(frozen=True)
class Request:
    """A prompt for one role: the user text (an env observation); the system prompt comes from the role.

    ``seed`` (optional) fixes this request's sampling, so rollouts do not depend on the engine's history (exact
    resume); backends without per-request seeds ignore it. ``removed`` names the removed agent when this is a
    counterfactual re-run (it selects a ``<kind>/removed`` system prompt where one is defined). ``question`` is the
    bare task question (scripted policies read it; model backends use only ``text``). ``run`` says which run of a
    batch of runs asks (a many-runs backend serves each run its own adapters; 0 for a single run, which every other
    backend ignores).
    """

    role: str
    text: str
    seed: int | None = None
    removed: str | None = None
    question: str | None = None
    run: int = 0


class Policy(Protocol):
    """Anything that turns role prompts into completions (scripted policies too)."""

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        """``sampling.n`` completions for each request, in request order."""


class Backend(Policy, Protocol):
    """A rollout backend the trainer can drive: a :class:`Policy` that serves one adapter (or model) per role on a
    shared base. ``VLLMPolicy``, ``ServerPolicy`` and ``PerRoleEngines`` implement it; ``ccpo_algos.backends``
    registers them by name.

    Attributes:
        roles: the roles it serves.
        adapters: what each role is served with now (``None``: the bare base model).
    """

    roles: list[str]
    adapters: dict[str, Any]

    def load_adapter(self, role: str, path: Any) -> Any:
        """Serve the adapter saved in ``path`` for ``role`` from now on; release the version it replaces."""

    def use_base(self, role: str) -> None:
        """Serve ``role`` from the bare base model and release its adapter (same meaning in every backend)."""


@dataclass
class ChatFormatter:
    """Builds prompt token ids with the tokenizer's chat template and the role's system prompt.

    Attributes:
        tokenizer: a transformers tokenizer with a chat template.
        role_prompts: system prompt per role kind or per exact role; ``None`` values mean no system message.
    """

    tokenizer: Any
    role_prompts: Mapping[str, str | None] = field(default_factory=lambda: dict(DEFAULT_ROLE_PROMPTS))
    _cache: dict[tuple[str, str, str | None], tuple[int, ...]] = field(default_factory=dict, repr=False)
    CACHE_SIZE = 4096  # prompts templated once per step, not once per sample (GRPO asks G times per prompt)

    def system_prompt(self, role: str, removed: str | None = None) -> str | None:
        """The exact role's prompt, else its kind's; for a counterfactual re-run a ``/removed`` key wins."""
        keys = [role, role_kind(role)]
        if removed is not None:
            keys = [f"{k}/removed" for k in keys] + keys
        return next((self.role_prompts[k] for k in keys if k in self.role_prompts), None)

    def messages(self, role: str, text: str, removed: str | None = None) -> list[dict[str, str]]:
        sys_prompt = self.system_prompt(role, removed)
        msgs = [{"role": "system", "content": sys_prompt}] if sys_prompt else []
        return msgs + [{"role": "user", "content": text}]

    def prompt_ids(self, role: str, text: str, removed: str | None = None) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"prompt text for {role} must be a str, got {type(text).__name__}")
        key = (role, text, removed)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            hit = self._cache[key] = tuple(self._template(role, text, removed))
        return list(hit)

    def _template(self, role: str, text: str, removed: str | None) -> list[int]:
        ids = self.tokenizer.apply_chat_template(self.messages(role, text, removed), add_generation_prompt=True,
                                                 tokenize=True)
        if hasattr(ids, "input_ids") or isinstance(ids, dict):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        ids = list(ids)
        if not ids:
            raise ValueError(f"the chat template produced an empty prompt for {role}; check the tokenizer")
        return ids


def overflow_completion(role: str, prompt_ids: list[int]) -> Completion:
    """The completion given for a prompt that does not fit the context: empty, finished by ``length``."""
    return Completion(role, "", prompt_ids, [], [], "length")
