"""The many-runs policy: :class:`~ccpo_agents.stacked_team.StackedTeam` behind the rollout's Policy interface.

Each ``(run, role)`` of a batch of runs owns one stacked adapter; a request names its run
(:attr:`~ccpo_agents.policy.Request.run`) and role, and every request of a rollout wave is served by one forward
pass. Chat templating happens here, as in every backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ccpo_agents.policy import ChatFormatter, Completion, Request, SamplingConfig
from ccpo_agents.stacked_team import Row, StackedTeam


class StackedPolicy:
    """Serves requests from the adapters of a :class:`StackedTeam`.

    Args:
        team: the stacked team.
        roles: the team's agent ids (every run has the same roles).
        runs: how many runs the team holds; adapter of ``(run, role)`` is ``run · len(roles) + roles.index(role)``
            (adapters after these, e.g. critics, are not the policy's).
        role_prompts: system prompts by role kind (``None``: no system message), as the topology's.
    """

    def __init__(self, team: StackedTeam, roles: Sequence[str], runs: int, role_prompts: Mapping[str, str | None]):
        if runs * len(roles) > team.M:
            raise ValueError(f"{runs} runs x {len(roles)} roles need {runs * len(roles)} adapters, the team has "
                             f"{team.M}")
        self.team, self.roles, self.runs = team, list(roles), runs
        self.formatter = ChatFormatter(team.tokenizer, dict(role_prompts))

    def adapter(self, run: int, role: str) -> int:
        return run * len(self.roles) + self.roles.index(role)

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        if sampling.top_p != 1.0:
            raise ValueError("the stacked team samples the full distribution; use top_p = 1")
        rows, prompts = [], []
        for i, r in enumerate(requests):
            ids = self.formatter.prompt_ids(r.role, r.text, r.removed)
            prompts.append(ids)
            for k in range(sampling.n):
                seed = (r.seed if r.seed is not None else i) * 7919 + k
                rows.append(Row(self.adapter(r.run, r.role), tuple(ids), sampling.temperature, seed))
        outs = self.team.generate(rows, sampling.max_tokens)
        res: list[list[Completion]] = []
        for i, r in enumerate(requests):
            res.append([Completion(r.role, self.team.decode(o.completion_ids), prompts[i], o.completion_ids,
                                   o.logprobs, o.finish_reason)
                        for o in outs[i * sampling.n:(i + 1) * sampling.n]])
        return res
