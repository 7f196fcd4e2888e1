"""System prompts that belong to a topology's roles, keyed by role kind (``thinker`` for ``thinker_0``).

SPEC's prompts (``DEFAULT_ROLE_PROMPTS``, the backends' defaults) and the released recipe's (``dyad_v0`` with
``template="v2"``); the trainer picks a set with :func:`team_role_prompts` and hands it to the rollout backend.
"""

from __future__ import annotations

from typing import Any

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
DEBATER_PROMPT = (
    "You are a math expert debating a problem with other agents. Solve it step by step. If other agents' answers are "
    "shown, check their reasoning critically and keep or change your answer on the merits. Present the final answer "
    "within \\boxed{}."
)
#: Default system prompt per role *kind* (the agent id without its ``_<n>`` suffix).
DEFAULT_ROLE_PROMPTS: dict[str, str] = {
    "thinker": THINKER_PROMPT,
    "reasoner": REASONER_PROMPT,
    "voter": REASONER_PROMPT,
    "agent": REASONER_PROMPT,
    "debater": DEBATER_PROMPT,
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


def team_role_prompts(topology: Any, template: str = "v1", first: str | None = None, others: str | None = None
                      ) -> dict[str, str | None]:
    """The system prompts of a team, keyed by role kind and agent id (exact ids win; see
    :meth:`ccpo_agents.policy.ChatFormatter.system_prompt`).

    In order: the template's prompts by kind (``v1``: SPEC's, ``v2``: the released recipe's), the topology's own
    ``prompts``, the answering prompt (box the final answer) for any kind still without one, then the overrides:
    ``first`` for each agent that only advises (it does not speak in the last stage: the dyad's thinker),
    ``others`` for each agent that answers (it speaks in the last stage: reasoner, voters, debaters).
    """
    p: dict[str, str | None] = dict(RELEASED_ROLE_PROMPTS if template == "v2" else DEFAULT_ROLE_PROMPTS)
    p.update(topology.prompts)
    answering = p["reasoner/removed"] if template == "v2" else p["reasoner"]
    for a in topology.agents:
        kind = role_kind(a)
        if a not in p and kind not in p:
            p[kind] = answering
    last = set(topology.stages[-1])
    for a in topology.agents:
        override = others if a in last else first
        if override is not None:
            p[a] = override
    return p


def role_kind(agent: str) -> str:
    """``thinker_0`` -> ``thinker`` (the agent id without a ``_<n>`` suffix)."""
    head, _, tail = agent.rpartition("_")
    return head if head and tail.isdigit() else agent
