"""``chain_v0``: a pipeline ``agent_0 -> agent_1 -> agent_2``, AEC (see :func:`ccpo_envs.registry.chain_raw_env`)."""

from ccpo_envs.registry import ENVS

_m = ENVS["chain_v0"]
env, raw_env, parallel_env = _m.env, _m.raw_env, _m.parallel_env
