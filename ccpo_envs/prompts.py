"""System prompts that belong to a topology's roles, keyed by role kind (``thinker`` for ``thinker_0``).

The dyad's released-recipe template (``dyad_v0`` with ``template="v2"``) goes with these prompts; the trainer hands
them to the rollout backend. (SPEC's v1 prompts are still the backends' defaults in ``ccpo_agents.policy``; moving
them here is part of issue 12.)
"""

from __future__ import annotations

#: The released recipe's prompts (bhai114/ccpo ``CCPO/examples/gspo_trainer/two_model/prompt_templates.py``,
#: ``build_*_chat``). A ``<kind>/removed`` key is the system prompt of that kind's counterfactual re-runs (the
#: solver's solo run has its own).
RELEASED_ROLE_PROMPTS: dict[str, str] = {
    "thinker": ("You are a math thinker. Read the problem carefully and write ONLY the solving thought, key "
                "observations, and the high-level approach. Do NOT compute or reveal the final numerical answer. Do "
                "NOT use a \\boxed{...} expression. Stop right before you would state the final answer."),
    "reasoner": ("You are a math solver. You are given a problem and a thinker's thought. Use the thought as guidance "
                 "to write the final solution and state the final answer in a \\boxed{...} expression on the last "
                 "line."),
    "reasoner/removed": ("You are a math solver. Solve the given problem directly and state the final answer in a "
                         "\\boxed{...} expression on the last line."),
}
RELEASED_ROLE_PROMPTS["voter"] = RELEASED_ROLE_PROMPTS["agent"] = RELEASED_ROLE_PROMPTS["reasoner/removed"]
