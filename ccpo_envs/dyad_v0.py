"""``dyad_v0``: Think -> Reason, AEC (see :func:`ccpo_envs.registry.dyad_raw_env`)."""

from ccpo_envs.registry import ENVS

_m = ENVS["dyad_v0"]
env, raw_env, parallel_env = _m.env, _m.raw_env, _m.parallel_env
