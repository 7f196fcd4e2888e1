"""The credit gym's env builders (registered in :data:`ccpo_envs.registry.ENVS` as ``<game>_v0``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ccpo_envs.env import TeamAECEnv, TeamParallelEnv
from ccpo_envs.gym.games import GAMES, GymSource
from ccpo_envs.topology import Topology

_ENV_KEYS = ("max_message_chars", "max_observation_chars", "max_action_chars", "render_mode", "truncation")
_SOURCE_KEYS = ("split", "seed", "size")


def gym_source(game: str, source: Any = None, **options: Any) -> GymSource:
    """The tasks of ``game``: ``source`` when it is this game's :class:`GymSource` with the same options, a new one
    from ``split``/``seed``/``size`` when it is ``None``; anything else is a ``ValueError`` naming the fix."""
    src_kw = {k: options.pop(k) for k in _SOURCE_KEYS if k in options}
    if source is None or source == f"gym:{game}":
        return GymSource(game, **src_kw, **options)
    if isinstance(source, GymSource) and source.game == game and source.options == options:
        return source
    raise ValueError(f"{game}_v0 makes its own tasks (the credit gym): pass source=None or "
                     f"GymSource({game!r}, ...) with the env's options {options}, not {source!r}")


def gym_builder(game: str, native: str) -> Callable[..., Any]:
    """``build(source=None, counterfactual=True, **options)`` for ``game``: options are the game's (``symbols``;
    the noisy vote's ``n``, ``reliability``, ``tie_rule``), the task stream's (``split``, ``seed``, ``size``) and the
    team env's (``truncation``, ``max_message_chars``, ...). ``counterfactual=False`` drops the removed worlds that
    need generation (the signalling game's blind receiver); the truth is reported either way."""
    topo_fn = GAMES[game][0]
    cls = TeamAECEnv if native == "aec" else TeamParallelEnv

    def build(source: Any = None, counterfactual: bool = True, **kwargs: Any):
        env_kw = {k: kwargs.pop(k) for k in _ENV_KEYS if k in kwargs}
        game_kw = {k: v for k, v in kwargs.items() if k not in _SOURCE_KEYS}
        topo: Topology = topo_fn(**game_kw)
        if not counterfactual and not topo.independent:
            topo = dataclasses.replace(topo, removable=())
        return cls(topo, gym_source(game, source, **kwargs), **env_kw)

    build.__name__ = f"{game}_env"
    build.__doc__ = f"The credit gym's {game} game ({native}); see ccpo_envs.gym.games.{game}.\n\n" + (
        topo_fn.__doc__ or "")
    return build


def gym_tasks(game: str) -> Callable[..., GymSource]:
    """``tasks(split, seed, size, **options)``: the game's task source (what the trainer uses instead of ``--task``);
    team-env options among ``options`` (``truncation``, ``counterfactual``, ...) are ignored."""

    def tasks(split: str = "train", seed: int = 0, size: int = 1000, **options: Any) -> GymSource:
        return GymSource(game, split, seed, size,
                         **{k: v for k, v in options.items() if k not in (*_ENV_KEYS, "counterfactual")})

    return tasks


#: ``env name -> (native API, builder, team settings it reads, its task source)``.
GYM_ENVS = {
    f"{game}_v0": (native, gym_builder(game, native), settings, gym_tasks(game))
    for game, native, settings in (("splitkey", "parallel", ()), ("redundant", "parallel", ()),
                                   ("freerider", "parallel", ()), ("signal", "aec", ()),
                                   ("noisyvote", "parallel", ("n", "tie_rule")))
}
