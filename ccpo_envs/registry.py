"""Env construction: ``make(name, ...)``, the registry of envs (``dyad_v0``, ``vote_v0``, ``debate_v0``, ``chain_v0``
and plug-ins) and what the trainer needs to build a team from one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import parallel_to_aec, turn_based_aec_to_parallel

from ccpo_envs.env import TeamAECEnv, TeamParallelEnv, TextActionWrapper
from ccpo_envs.gym.envs import GYM_ENVS
from ccpo_envs.sources import ListSource, TaskSource, make_source
from ccpo_envs.topology import Topology, chain, debate, dyad, vote

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


def without_removals(topo: Topology) -> Topology:
    """``topo`` with no counterfactual worlds (for algorithms that use none: no re-runs are generated)."""
    return dataclasses.replace(topo, removable=())


def dyad_topology(counterfactual: bool = True, labels: dict[str, str] | None = None, template: str = "v1"
                  ) -> Topology:
    topo = dyad(labels, template)
    return topo if counterfactual else without_removals(topo)


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


def vote_parallel_env(n: int = 3, tie_rule: str = "expected", counterfactual: bool = True, **kwargs: Any
                      ) -> TeamParallelEnv:
    """The N-voter plurality vote, Parallel, unwrapped. Arguments as :func:`dyad_raw_env` plus ``n``, ``tie_rule``;
    ``counterfactual`` changes nothing (a voter's removal drops its vote: nothing is re-generated)."""
    env_kw, src_kw = _split_kwargs(kwargs)
    return TeamParallelEnv(vote(n, tie_rule), resolve_source(**src_kw), **env_kw)


def debate_parallel_env(n: int = 3, rounds: int = 2, tie_rule: str = "expected", counterfactual: bool = True,
                        **kwargs: Any) -> TeamParallelEnv:
    """SPEC's multi-round debate (see :func:`~ccpo_envs.topology.debate`), Parallel (a round per step), unwrapped.

    Args:
        n: debaters. rounds: rounds (the last one's plurality is the team answer). tie_rule: as the vote's.
        counterfactual: play the "debater k removed" re-runs (rounds after the first, without k).
        **kwargs: as :func:`dyad_raw_env`.
    """
    env_kw, src_kw = _split_kwargs(kwargs)
    topo = debate(n, rounds, tie_rule)
    return TeamParallelEnv(topo if counterfactual else without_removals(topo), resolve_source(**src_kw), **env_kw)


def chain_raw_env(n: int = 3, counterfactual: bool = True, **kwargs: Any) -> TeamAECEnv:
    """A pipeline ``agent_0 -> ... -> agent_{n-1}`` (see :func:`~ccpo_envs.topology.chain`), AEC, unwrapped;
    ``counterfactual``: re-run the agents after each removed one. Other arguments as :func:`dyad_raw_env`."""
    env_kw, src_kw = _split_kwargs(kwargs)
    topo = chain(n)
    return TeamAECEnv(topo if counterfactual else without_removals(topo), resolve_source(**src_kw), **env_kw)


#: Team settings of the trainer's config that a registered env may read (``settings=`` of :func:`register_env`):
#: ``template`` (prompt template), ``n`` (team size, the config's ``team_size``), ``tie_rule`` (plurality ties).
TEAM_SETTINGS = ("template", "n", "tie_rule")


class _EnvModule:
    """PettingZoo-style constructors for one registered env."""

    def __init__(self, name: str, native: str, build: Callable[..., Any], settings: tuple[str, ...] = (),
                 tasks: Callable[..., TaskSource] | None = None):
        bad = [k for k in settings if k not in TEAM_SETTINGS]
        if bad:
            raise ValueError(f"{name}: unknown team settings {bad}; choose from {TEAM_SETTINGS}")
        self.name, self.native, self._build, self.settings = name, native, build, tuple(settings)
        self.tasks = tasks  # envs that make their own tasks (the credit gym): tasks(split, seed, size, **options)

    def raw_env(self, **kwargs: Any):
        """The AEC env without wrappers (for a Parallel-native env: PettingZoo's ``parallel_to_aec`` of it)."""
        env = self._build(**kwargs)
        return env if self.native == "aec" else TextActionWrapper(parallel_to_aec(env))

    def env(self, **kwargs: Any):
        """The AEC env with PettingZoo's order-enforcing wrapper."""
        if self.native == "aec":
            return wrappers.OrderEnforcingWrapper(self._build(**kwargs))
        return TextActionWrapper(parallel_to_aec(self._build(**kwargs)))

    def parallel_env(self, **kwargs: Any):
        """The Parallel env (for an AEC-native env: PettingZoo's ``turn_based_aec_to_parallel``)."""
        if self.native == "parallel":
            return self._build(**kwargs)
        return turn_based_aec_to_parallel(self.env(**kwargs))


#: The env a run trains on unless told otherwise: the paper's two-agent team.
DEFAULT_ENV = "dyad_v0"
#: The paper's parallel team (independent voters, majority answer): SPEC's logic experiment trains it.
VOTE_ENV = "vote_v0"

ENVS: dict[str, _EnvModule] = {
    "dyad_v0": _EnvModule("dyad_v0", "aec", dyad_raw_env, ("template",)),
    "vote_v0": _EnvModule("vote_v0", "parallel", vote_parallel_env, ("n", "tie_rule")),
    "debate_v0": _EnvModule("debate_v0", "parallel", debate_parallel_env, ("n", "tie_rule")),
    "chain_v0": _EnvModule("chain_v0", "aec", chain_raw_env),
    # the credit gym (ccpo_envs.gym): tasks whose true contributions are known
    **{name: _EnvModule(name, native, build, settings, tasks)
       for name, (native, build, settings, tasks) in GYM_ENVS.items()},
}


def register_env(name: str, native: str, build: Callable[..., Any], settings: tuple[str, ...] = (),
                 tasks: Callable[..., TaskSource] | None = None) -> None:
    """Register a plug-in env.

    Args:
        name: the name ``make`` and ``ccpo train --env`` take.
        native: ``"aec"`` or ``"parallel"``: the API ``build`` returns (the other is derived).
        build: ``build(**kwargs)`` returns the native env. ``make`` accepts any PettingZoo env; the trainer needs
            a team env (:class:`~ccpo_envs.TeamAECEnv` / :class:`~ccpo_envs.TeamParallelEnv`) and calls ``build``
            with ``source=`` (a task source), ``truncation=`` and ``counterfactual=`` (whether the algorithm uses
            the "agent removed" worlds; without them build the topology with :func:`without_removals`), the team
            settings named in ``settings`` and the run's ``--env-options``.
        settings: which of :data:`TEAM_SETTINGS` the builder takes from the trainer's config.
        tasks: for an env whose tasks belong to it (the credit gym): ``tasks(split=, seed=, size=, **options)``
            returns its task source, which the trainer uses instead of ``--task`` (``options``: what the env is
            built with, team-env options included, which ``tasks`` ignores).
    """
    if native not in ("aec", "parallel"):
        raise ValueError(f"native={native!r}: use 'aec' or 'parallel'")
    ENVS[name] = _EnvModule(name, native, build, settings, tasks)


def env_tasks(name: str, split: str, seed: int, size: int, **options: Any) -> TaskSource | None:
    """The task source of an env that makes its own tasks (``None`` for an env that takes any source)."""
    mod = ENVS[name]
    return None if mod.tasks is None else mod.tasks(split=split, seed=seed, size=size, **options)


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


def team_env_options(name: str, *, counterfactual: bool, truncation: str, settings: dict[str, Any] | None = None,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options the trainer builds env ``name`` with: ``counterfactual``, ``truncation``, the team settings the
    env reads (from ``settings``, keys of :data:`TEAM_SETTINGS`) and the run's own ``extra`` env options."""
    spec = ENVS[name]
    opts: dict[str, Any] = {"counterfactual": counterfactual, "truncation": truncation}
    opts.update({k: v for k, v in (settings or {}).items() if k in spec.settings})
    opts.update(extra or {})
    return opts


def team_probe(name: str, **options: Any) -> Any:
    """The native env ``name`` built on a one-task source (cheap: no task set is loaded); read its
    ``possible_agents`` and ``topology``. Raises ``TypeError`` for an env the trainer cannot drive."""
    mod = ENVS[name]
    source = (ListSource([{"question": "1 + 1?", "answer": "2"}]) if mod.tasks is None
              else env_tasks(name, "train", 0, 1, **options))
    env = mod._build(source=source, **options)
    if not isinstance(env, (TeamAECEnv, TeamParallelEnv)):
        raise TypeError(f"env {name!r} builds a {type(env).__name__}; the trainer needs a TeamAECEnv or "
                        "TeamParallelEnv (a ccpo_envs.Topology played by the episode engine)")
    return env
