"""``vote_v0``: N-agent plurality vote, Parallel (see :func:`ccpo_envs.registry.vote_parallel_env`)."""

from ccpo_envs.registry import ENVS

_m = ENVS["vote_v0"]
env, raw_env, parallel_env = _m.env, _m.raw_env, _m.parallel_env
