"""``debate_v0``: N debaters, R rounds, plurality of the last round; Parallel (see
:func:`ccpo_envs.registry.debate_parallel_env`)."""

from ccpo_envs.registry import ENVS

_m = ENVS["debate_v0"]
env, raw_env, parallel_env = _m.env, _m.raw_env, _m.parallel_env
