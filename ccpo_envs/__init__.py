"""ccpo_envs: reasoning tasks with verifiers, as PettingZoo environments with counterfactual episodes.

No torch here: ``import ccpo_envs`` works with only the core dependencies installed.

>>> import ccpo_envs
>>> env = ccpo_envs.make("dyad_v0", source="arith_easy", size=10)   # AEC
>>> par = ccpo_envs.make("vote_v0", n=3)                             # Parallel
>>> deb = ccpo_envs.make("debate_v0", n=3, rounds=2)                 # Parallel, one round per step
"""

from ccpo_envs.aggregate import Outcome, answer_of, group_answers, plurality
from ccpo_envs.check import check_env
from ccpo_envs.env import PendingTurn, PlannedTurn, TeamAECEnv, TeamParallelEnv
from ccpo_envs.episode import TRUNCATION_RULES, TruncatedMessage
from ccpo_envs.outcome import EpisodeOutcome
from ccpo_envs.registry import ENVS, TEAM_SETTINGS, make, register_env, resolve_source, without_removals
from ccpo_envs.sources import (
    HUB_SPECS,
    RG_SETS,
    HubSource,
    ListSource,
    MixtureSource,
    ReasoningGymSource,
    TaskSource,
    make_source,
    register_source,
    split_of,
    task_verifier,
)
from ccpo_envs.task import Task
from ccpo_envs.topology import Topology, Turn, chain, debate, downstream, downstream_slots, dyad, turn_plan, vote
from ccpo_envs.verify import (
    ChoiceVerifier,
    MathVerifier,
    ReasoningGymVerifier,
    Verifier,
    extract_answer,
    extract_boxed,
    extract_choice,
    math_equal,
    safe_score,
)

__all__ = [
    "ENVS",
    "EpisodeOutcome",
    "HUB_SPECS",
    "RG_SETS",
    "TEAM_SETTINGS",
    "TRUNCATION_RULES",
    "ChoiceVerifier",
    "HubSource",
    "ListSource",
    "MathVerifier",
    "MixtureSource",
    "Outcome",
    "PendingTurn",
    "PlannedTurn",
    "ReasoningGymSource",
    "ReasoningGymVerifier",
    "Task",
    "TaskSource",
    "TeamAECEnv",
    "TeamParallelEnv",
    "Topology",
    "TruncatedMessage",
    "Turn",
    "Verifier",
    "answer_of",
    "chain",
    "check_env",
    "debate",
    "downstream",
    "downstream_slots",
    "dyad",
    "extract_answer",
    "extract_boxed",
    "extract_choice",
    "group_answers",
    "make",
    "make_source",
    "math_equal",
    "plurality",
    "register_env",
    "register_source",
    "resolve_source",
    "safe_score",
    "split_of",
    "task_verifier",
    "turn_plan",
    "vote",
    "without_removals",
]
