"""The credit gym: team tasks whose true contributions are known, for checking credit rules against the truth.

>>> import ccpo_envs
>>> env = ccpo_envs.make("splitkey_v0", symbols=5)      # Parallel; also "redundant_v0", "freerider_v0",
>>> sig = ccpo_envs.make("signal_v0")                   # "signal_v0" (AEC) and "noisyvote_v0"

Every finished episode reports each agent's true contribution in ``infos["contribution"]`` (leave-one-out and
Shapley values, and how they were obtained; :mod:`ccpo_envs.truth`). The games are described in
:mod:`ccpo_envs.gym.games`.
"""

from ccpo_envs.gym.envs import GYM_ENVS, gym_source
from ccpo_envs.gym.games import GAMES, GymSource
from ccpo_envs.gym.symbols import PASS, SymbolVerifier, alphabet

__all__ = ["GAMES", "GYM_ENVS", "PASS", "GymSource", "SymbolVerifier", "alphabet", "gym_source"]
