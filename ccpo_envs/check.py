"""``check_env``: one call that checks a text-team env with PettingZoo's own tests plus our text-specific ones.

For plug-in authors::

    from ccpo_envs import check_env
    check_env(lambda: MyTeamEnv(...))     # raises AssertionError naming the failed check
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test
from pettingzoo.utils.conversions import aec_to_parallel, parallel_to_aec, turn_based_aec_to_parallel

from ccpo_envs.env import TextActionWrapper

#: Keys every finished episode must report in ``infos`` (see :mod:`ccpo_envs.env`).
REQUIRED_INFO_KEYS = ("team_answer", "reward_joint", "reward_removed", "answers", "correct", "gold")


def _garbage_actions(seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    return {
        "empty": "",
        "one_megabyte": "x" * (1 << 20),
        "random_unicode": "".join(chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(2000)).encode(
            "utf-8", "replace").decode("utf-8", "replace"),
        "lone_surrogates": "\ud800\udfff answer \\boxed{\ud83d}",
        "unclosed_braces": "\\boxed{" * 5000,
        "hostile_latex": "\\boxed{10^{10^{10^{10^{10}}}}}",
    }


def _as_aec(env_fn: Callable[[], Any]) -> Callable[[], AECEnv]:
    probe = env_fn()
    return env_fn if isinstance(probe, AECEnv) else (lambda: TextActionWrapper(parallel_to_aec(env_fn())))


def _as_parallel(env_fn: Callable[[], Any]) -> Callable[[], ParallelEnv]:
    probe = env_fn()
    if isinstance(probe, ParallelEnv):
        return env_fn
    if probe.metadata.get("is_parallelizable", False):
        return lambda: aec_to_parallel(env_fn())
    return lambda: turn_based_aec_to_parallel(env_fn())


def _play(aec: AECEnv, act: Callable[[str, Any], Any], seed: int) -> dict[str, Any]:
    """Play one AEC episode with ``act(agent, env) -> action``; return the final infos of the first agent."""
    aec.reset(seed=seed)
    final: dict[str, Any] = {}
    for agent in aec.agent_iter(max_iter=10_000):
        _, _, term, trunc, info = aec.last()
        if term or trunc:
            final = final or dict(info)
            aec.step(None)
        else:
            aec.step(act(agent, aec))
    return final


_BAD_ACTIONS = (42, b"bytes", ["list"], 3.5, {"text": "x"})


def _check_bad_action_types(aec_fn: Callable[[], AECEnv], seed: int) -> None:
    """A non-str action raises TypeError, leaves the turn and the observation as they were, and the episode then
    ends exactly as an episode that never saw the bad action."""
    clean = _play(aec_fn(), lambda a, e: f"{a} says \\boxed{{7}}", seed)
    env = aec_fn()
    env.reset(seed=seed)
    bad_iter = iter(_BAD_ACTIONS)
    final: dict[str, Any] = {}
    for agent in env.agent_iter(max_iter=10_000):
        _, _, term, trunc, info = env.last()
        if term or trunc:
            final = final or dict(info)
            env.step(None)
            continue
        bad = next(bad_iter, None)
        if bad is not None:
            before = env.observe(agent)["text"]
            try:
                env.step(bad)
            except TypeError:
                pass
            else:
                raise AssertionError(f"a {type(bad).__name__} action must raise TypeError naming the expected type")
            assert env.agent_selection == agent, "a rejected action changed whose turn it is"
            assert env.observe(agent)["text"] == before, "a rejected action changed the observation"
        env.step(f"{agent} says \\boxed{{7}}")
    assert final.get("reward_joint") == clean.get("reward_joint") and final.get("answers") == clean.get("answers"), (
        "an episode with rejected actions ended differently from the same episode without them")


def _check_bad_action_types_parallel(par_fn: Callable[[], ParallelEnv], seed: int) -> None:
    env = par_fn()
    obs, _ = env.reset(seed=seed)
    agents = list(env.agents)
    for bad in _BAD_ACTIONS:
        actions = {a: bad for a in agents}
        try:
            env.step(actions)
        except TypeError:
            pass
        else:
            raise AssertionError(f"parallel step with a {type(bad).__name__} action must raise TypeError")
        assert list(env.agents) == agents, "a rejected parallel step changed the live agents"


def check_text_contract(env_fn: Callable[[], Any], seed: int = 0) -> None:
    """Text-specific checks: garbage actions are accepted and score in [0, 1]; non-str actions raise TypeError and
    change nothing; every agent answering its gold answer earns reward 1; finished episodes carry the documented infos."""
    aec_fn = _as_aec(env_fn)
    for name, garbage in _garbage_actions(seed).items():
        env = aec_fn()
        info = _play(env, lambda a, e, g=garbage: g, seed)
        for key in REQUIRED_INFO_KEYS:
            assert key in info, f"garbage action {name!r}: final infos lack {key!r}"
        assert 0.0 <= info["reward_joint"] <= 1.0, f"garbage action {name!r}: reward {info['reward_joint']} not in [0,1]"

    _check_bad_action_types(aec_fn, seed)
    if isinstance(env_fn(), ParallelEnv):
        _check_bad_action_types_parallel(env_fn, seed)

    gold: dict[str, str] = {}

    def oracle(agent: str, e: Any) -> str:  # each agent answers its own gold (Task.gold_of: the task's answer
        if agent not in gold:               # unless the task gives each agent its own)
            gold[agent] = e.unwrapped.task.gold_of(agent)
        return f"The answer is \\boxed{{{gold[agent]}}}."

    info = _play(aec_fn(), oracle, seed)
    assert info["reward_joint"] == 1.0, f"every agent answering the gold answer must earn 1, got {info['reward_joint']}"
    for k, r in info["reward_removed"].items():
        assert r in (0.0, 1.0) or 0.0 <= r <= 1.0, f"R_removed[{k}]={r} not in [0,1]"


def check_env(env_fn: Callable[[], Any], num_cycles: int = 50, seed: int = 0, verbose: bool = False) -> None:
    """Run PettingZoo's ``api_test``, ``seed_test``, ``parallel_api_test`` and ``parallel_seed_test`` on the env in
    both APIs (through PettingZoo's own conversions), then :func:`check_text_contract`.

    Args:
        env_fn: builds a fresh env (AEC or Parallel) each call.
        num_cycles: cycles for PettingZoo's tests.
        seed: seed for the text checks.
        verbose: print each stage.
    """
    aec_fn, par_fn = _as_aec(env_fn), _as_parallel(env_fn)
    stages = [
        ("api_test", lambda: api_test(aec_fn(), num_cycles=num_cycles)),
        ("seed_test", lambda: seed_test(aec_fn, num_cycles=num_cycles)),
        ("parallel_api_test", lambda: parallel_api_test(par_fn(), num_cycles=num_cycles)),
        ("parallel_seed_test", lambda: parallel_seed_test(par_fn, num_cycles=num_cycles)),
        ("text_contract", lambda: check_text_contract(env_fn, seed)),
    ]
    for name, run in stages:
        if verbose:
            print(f"check_env: {name}")
        try:
            run()
        except AssertionError as e:
            raise AssertionError(f"check_env: {name} failed: {e}") from e
