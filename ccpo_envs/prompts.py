"""System prompts that belong to a topology's roles, keyed by role kind (``thinker`` for ``thinker_0``).

SPEC's prompts (``DEFAULT_ROLE_PROMPTS``, the backends' defaults) and the released recipe's (``dyad_v0`` with
``template="v2"``); the trainer picks a set with :func:`team_role_prompts` and hands it to the rollout backend.
"""

from __future__ import annotations

#: SPEC.md's role prompts (from the reference code), used verbatim by default.
THINKER_PROMPT = (
    "You are a math expert specialized in solving mathematical problems, you need to teach a weaker agent with "
    "minimal capability in math how to solve a problem step-by-step. Your task is to provide a high-level solution "
    "plan for the given problem, in order to guide a low-level math solving agent to solve the problem. You can not "
    "directly answer the question. You'll be punished if you include any answer in your response. You need to first "
    "think deeply in mind and output your final instruction."
)
REASONER_PROMPT = (
    "You are a math expert tasked with solving problems step by step. Follow the provided instructions precisely, "
    "showing all reasoning and intermediate steps. Present the final answer within \\boxed{}."
)
#: Default system prompt per role *kind* (the agent id without its ``_<n>`` suffix).
DEFAULT_ROLE_PROMPTS: dict[str, str] = {
    "thinker": THINKER_PROMPT,
    "reasoner": REASONER_PROMPT,
    "voter": REASONER_PROMPT,
    "agent": REASONER_PROMPT,
}

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


def team_role_prompts(template: str = "v1", first: str | None = None, others: str | None = None
                      ) -> dict[str, str | None]:
    """The role prompts of a template (``v1``: SPEC's, ``v2``: the released recipe's), with optional overrides:
    ``first`` for the agent that plans (the dyad's thinker), ``others`` for every agent that answers."""
    p: dict[str, str | None] = dict(RELEASED_ROLE_PROMPTS if template == "v2" else DEFAULT_ROLE_PROMPTS)
    if first is not None:
        p["thinker"] = first
    if others is not None:
        p.update(reasoner=others, voter=others)
    return p
