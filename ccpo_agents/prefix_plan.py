"""Which rows of a log-prob batch share a prompt prefix, and how long: the plan :meth:`HFTeam.token_logprobs` runs.

Scoring ``(prompt, completion)`` rows one full sequence each recomputes what rows have in common: a GRPO group's G
samples share their whole prompt, and a team's agents share the system prompt and question and differ by a message
in the middle. With a plan, each cluster's shared prefix runs once (its keys and values cached, with grad), then
every row's rest of prompt + completion runs against its cluster's prefix. Pure Python, no torch.

Cost model: token positions computed, padding included (on a CPU a padded position costs as much as a real one):
one full sequence per row costs ``N * (max |p| + max |c|)``; a plan costs ``n_clusters * max K`` for the prefixes
plus ``N * max(|p| - K + |c|)`` for the rest. Candidates: rows in lexicographic prompt order, cut wherever two
neighbours share fewer than ``t`` tokens, for every ``t`` that occurs (every row alone, every GRPO group, every
question, everything that shares a system prompt, ...). A prefix keeps at least a prompt's last token out, so that
every logit comes from the second pass.
"""

from __future__ import annotations

from typing import Sequence

#: A plan must cost at most this fraction of one full sequence per row (the second forward call has a fixed cost).
MARGIN = 0.9


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def plain_cost(prompts: Sequence[Sequence[int]], comps: Sequence[Sequence[int]]) -> int:
    """Token positions of one left-padded prompt + right-padded completion per row."""
    return len(prompts) * (max(len(p) for p in prompts) + max(1, max(len(c) for c in comps)))


def plan_cost(prompts: Sequence[Sequence[int]], comps: Sequence[Sequence[int]],
              clusters: Sequence[tuple[int, Sequence[int]]]) -> int:
    """Token positions of the two passes of ``clusters`` (``(prefix length, rows)`` each), counted as
    :func:`plain_cost` counts them (a completion's last token included, though neither path needs its logit)."""
    rest = max(len(prompts[r]) - k + max(len(comps[r]), 1) for k, rows in clusters for r in rows)
    return len(clusters) * max(k for k, _ in clusters) + len(prompts) * rest


def plan(prompts: Sequence[Sequence[int]], comps: Sequence[Sequence[int]], margin: float = MARGIN
         ) -> list[tuple[int, list[int]]] | None:
    """The cheapest shared-prefix plan for these rows: ``[(K, rows), ...]`` (every row in one cluster, the rows of a
    cluster share their first ``K >= 1`` tokens, ``K < |p|`` for each), or ``None`` where one full sequence per row
    costs less than ``margin`` times more (or a prompt is shorter than 2 tokens)."""
    if len(prompts) < 2 or min(len(p) for p in prompts) < 2:
        return None
    order = sorted(range(len(prompts)), key=lambda r: (list(prompts[r]), r))
    shared = [common_prefix(prompts[a], prompts[b]) for a, b in zip(order, order[1:])]
    best, best_cost = None, margin * plain_cost(prompts, comps)
    for t in sorted({s for s in shared if s >= 1}) + [None]:  # None: every row alone
        clusters, start = [], 0
        for i in range(1, len(order) + 1):
            if i == len(order) or t is None or shared[i - 1] < t:
                rows = order[start:i]
                k = min([len(prompts[r]) - 1 for r in rows] + shared[start:i - 1])
                clusters.append((k, rows))
                start = i
        cost = plan_cost(prompts, comps, clusters)
        if cost < best_cost:
            best, best_cost = clusters, cost
    return best
