"""Env construction: ``make(name, ...)`` and the PettingZoo-style modules ``dyad_v0`` / ``vote_v0``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import parallel_to_aec, turn_based_aec_to_parallel

from ccpo_envs.env import TeamAECEnv, TeamParallelEnv, TextActionWrapper
from ccpo_envs.sources import TaskSource, make_source
from ccpo_envs.topology import Topology, dyad, vote

_ENV_KEYS = ("max_message_chars", "max_observation_chars", "max_action_chars", "render_mode", "truncation")


def resolve_source(source: str | TaskSource = "math", split: str = "train", seed: int = 0, size: int | None = None,
                   **source_kwargs: Any) -> TaskSource:
    """A :class:`TaskSource` from a name (see :func:`~ccpo_envs.sources.make_source`) or an existing source."""
    if isinstance(source, str):
        return make_source(source, split=split, seed=seed, size=size, **source_kwargs)
    if source_kwargs:
        raise TypeError(f"source is already built; unexpected arguments {sorted(source_kwargs)}")
    return source


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    env_kw = {k: kwargs.pop(k) for k in _ENV_KEYS if k in kwargs}
    return env_kw, kwargs


def dyad_topology(counterfactual: bool = True, labels: dict[str, str] | None = None, template: str = "v1"
                  ) -> Topology:
    topo = dyad(labels, template)
    if not counterfactual:
        topo = Topology(topo.name, topo.stages, topo.sees, topo.aggregator, (), topo.labels, topo.render)
    return topo


def dyad_raw_env(counterfactual: bool = True, labels: dict[str, str] | None = None, template: str = "v1",
                 **kwargs: Any) -> TeamAECEnv:
    """The Think -> Reason dyad, AEC, unwrapped.

    Args:
        counterfactual: play the "thinker removed" turn (``reasoner_0`` answers the bare question) at the end.
        labels: heading of the thinker's message in the reasoner's prompt (default ``Instruction``).
        template: ``v1`` or ``v2`` (the released recipe's solver turn; see :func:`~ccpo_envs.topology.dyad`).
        **kwargs: ``source``, ``split``, ``seed``, ``size`` (and source options) for the tasks; env options
            ``max_message_chars``, ``max_observation_chars``, ``max_action_chars``, ``render_mode``,
            ``truncation`` (``episode``, ``turn`` or ``off``; see :mod:`ccpo_envs.env`).
    """
    env_kw, src_kw = _split_kwargs(kwargs)
    return TeamAECEnv(dyad_topology(counterfactual, labels, template), resolve_source(**src_kw), **env_kw)


def vote_parallel_env(n: int = 3, tie_rule: str = "expected", **kwargs: Any) -> TeamParallelEnv:
    """The N-voter plurality vote, Parallel, unwrapped. Arguments as :func:`dyad_raw_env` plus ``n``, ``tie_rule``."""
    env_kw, src_kw = _split_kwargs(kwargs)
    return TeamParallelEnv(vote(n, tie_rule), resolve_source(**src_kw), **env_kw)


class _EnvModule:
    """PettingZoo-style constructors for one registered env."""

    def __init__(self, name: str, native: str, build: Callable[..., Any]):
        self.name, self.native, self._build = name, native, build

    def raw_env(self, **kwargs: Any):
        """The AEC env without wrappers (for the vote: PettingZoo's ``parallel_to_aec`` of the native env)."""
        env = self._build(**kwargs)
        return env if self.native == "aec" else TextActionWrapper(parallel_to_aec(env))

    def env(self, **kwargs: Any):
        """The AEC env with PettingZoo's order-enforcing wrapper."""
        if self.native == "aec":
            return wrappers.OrderEnforcingWrapper(self._build(**kwargs))
        return TextActionWrapper(parallel_to_aec(self._build(**kwargs)))

    def parallel_env(self, **kwargs: Any):
        """The Parallel env (for the dyad: PettingZoo's ``turn_based_aec_to_parallel``)."""
        if self.native == "parallel":
            return self._build(**kwargs)
        return turn_based_aec_to_parallel(self.env(**kwargs))


ENVS: dict[str, _EnvModule] = {
    "dyad_v0": _EnvModule("dyad_v0", "aec", dyad_raw_env),
    "vote_v0": _EnvModule("vote_v0", "parallel", vote_parallel_env),
}


def register_env(name: str, native: str, build: Callable[..., Any]) -> None:
    """Register a plug-in env: ``build(**kwargs)`` returns a native ``TeamAECEnv``/``TeamParallelEnv`` (or any
    PettingZoo env); ``native`` is ``"aec"`` or ``"parallel"``."""
    if native not in ("aec", "parallel"):
        raise ValueError(f"native={native!r}: use 'aec' or 'parallel'")
    ENVS[name] = _EnvModule(name, native, build)


def make(name: str, api: str | None = None, **kwargs: Any):
    """Build a registered env: ``make("dyad_v0", source="math", seed=0)``.

    Args:
        name: a key of :data:`ENVS` (``dyad_v0``, ``vote_v0`` or one you registered).
        api: ``"aec"``, ``"parallel"`` or ``None`` for the env's native API.
        **kwargs: passed to the env builder (see :func:`dyad_raw_env`, :func:`vote_parallel_env`).
    """
    if name not in ENVS:
        raise ValueError(f"unknown env {name!r}; registered: {sorted(ENVS)}")
    mod = ENVS[name]
    api = api or mod.native
    if api == "aec":
        return mod.env(**kwargs)
    if api == "parallel":
        return mod.parallel_env(**kwargs)
    raise ValueError(f"api={api!r}: use 'aec', 'parallel' or None")


#: The registered envs the trainer can build a team from, with the options below.
TRAINABLE_ENVS = ("dyad_v0", "vote_v0")


def team_env_options(name: str, *, counterfactual: bool, truncation: str, template: str = "v1", n: int = 3,
                     tie_rule: str = "expected") -> dict[str, Any]:
    """The constructor options of a trainable env, from settings common to all (the dyad reads ``counterfactual``
    and ``template``; the vote ``n`` and ``tie_rule``; both ``truncation``)."""
    if name == "dyad_v0":
        return {"counterfactual": counterfactual, "truncation": truncation, "template": template}
    return {"n": n, "tie_rule": tie_rule, "truncation": truncation}


def team_agent_ids(name: str, n: int = 3) -> list[str]:
    """``possible_agents`` of a trainable env without building one (no task source is loaded)."""
    return list(dyad().agents if name == "dyad_v0" else vote(n).agents)
