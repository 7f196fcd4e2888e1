"""The credit gym's tiny models: a word vocabulary per game, teacher demonstrations from real episodes, and a
supervised warm start cached on disk (no download; deterministic from a seed).

``warm_start(env)`` returns a transformers model folder: a tiny Llama fitted to the game's teacher
(:mod:`ccpo_envs.gym.teacher`), whose untrained team succeeds about half the time, so every agent has room to
improve and to get worse. The folder is keyed by everything that shapes it (game, options, teacher accuracy, seed,
model shape, fit budget) and written atomically; a second call reads it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ccpo_agents.models import cache_dir
from ccpo_agents.policy import ChatFormatter
from ccpo_agents.tiny_lm import TinyLMSpec, build_word_lm, supervised_fit
from ccpo_envs import make
from ccpo_envs.gym import PASS, alphabet
from ccpo_envs.gym.teacher import teacher_answer, warm_accuracy
from ccpo_envs.prompts import team_role_prompts

#: Bump when the warm start's recipe changes: cached models of an older recipe are not reused.
RECIPE = 1
#: The gym's model shape: 2 layers, hidden 64 (about 85k parameters).
DEFAULT_SPEC = TinyLMSpec()


def demonstrations(env: str, options: dict[str, Any], accuracy: float, n_tasks: int, seed: int
                   ) -> list[tuple[str, str | None, str, str]]:
    """``(agent, removed, observation text, teacher answer)`` for every turn of ``n_tasks`` episodes (joint and
    counterfactual), played on the real env's train split with the teacher acting."""
    e = make(env, api="aec", split="train", seed=seed, size=n_tasks, **options)
    symbols = alphabet(int(options.get("symbols", 5)))
    rng = np.random.default_rng([seed, 1])
    out = []
    for i in range(n_tasks):
        e.reset(options={"index": i})
        for agent in e.agent_iter(max_iter=1000):
            obs, _, term, trunc, info = e.last()
            if term or trunc:
                e.step(None)
            elif agent in e.unwrapped.acting_turns():
                answer = teacher_answer(obs["text"], symbols, accuracy, rng)
                out.append((agent, info.get("removed"), obs["text"], answer))
                e.step(answer)
            else:
                e.step("")
    return out


def vocabulary(demos: list[tuple[str, str | None, str, str]], symbols: str) -> list[str]:
    """Every word of the demonstrations' observations, the symbols, ``pass`` and the chat roles."""
    words = {w for _, _, text, _ in demos for w in text.split()} | set(symbols) | {PASS, "user", "assistant"}
    return sorted(words)


def warm_start(env: str, options: dict[str, Any] | None = None, seed: int = 0, accuracy: float | None = None,
               spec: TinyLMSpec = DEFAULT_SPEC, n_tasks: int = 400, steps: int = 400, cache: str | Path | None = None
               ) -> Path:
    """The warm-started tiny model of gym env ``env`` (built on first use, then read from the cache)."""
    options = dict(options or {})
    accuracy = warm_accuracy(env) if accuracy is None else float(accuracy)
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy={accuracy}: the teacher's accuracy is a probability in [0, 1]")
    key = {"env": env, "options": options, "accuracy": accuracy, "seed": seed, "spec": asdict(spec),
           "n_tasks": n_tasks, "steps": steps, "recipe": RECIPE}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(cache if cache is not None else cache_dir() / "gym") / f"{env}-{digest}"
    if (out / "warmstart.json").exists():
        return out
    demos = demonstrations(env, options, accuracy, n_tasks, seed)
    symbols = alphabet(int(options.get("symbols", 5)))
    base = build_word_lm(out.parent / f".{out.name}.base", vocabulary(demos, symbols), seed=seed, spec=spec)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    probe = make(env, size=1, **options).unwrapped
    fmt = ChatFormatter(tok, team_role_prompts(probe.topology))
    examples = [(fmt.prompt_ids(agent, text, removed), tok(answer)["input_ids"] + [tok.eos_token_id])
                for agent, removed, text, answer in demos]
    path, losses = supervised_fit(base, examples, out, steps=steps, seed=seed)
    import shutil

    shutil.rmtree(base, ignore_errors=True)
    (path / "warmstart.json").write_text(json.dumps({**key, "examples": len(examples), "first_loss": losses[0],
                                                     "last_loss": losses[-1]}, indent=2))
    return path
