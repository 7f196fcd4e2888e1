"""Which rows of a log-prob batch share a prompt prefix, and how long: the plan :meth:`HFTeam.token_logprobs` runs.

Scoring ``(prompt, completion)`` rows one full sequence each recomputes what rows have in common: a GRPO group's G
samples share their whole prompt, and a team's agents share the system prompt and question and differ by a message
in the middle. With a plan, each cluster's shared prefix runs once (its keys and values cached, with grad), then
every row's rest of prompt + completion runs against its cluster's prefix. Pure Python, no torch.

Cost model: token positions computed, padding included (on a CPU a padded position costs as much as a real one):
one full sequence per row costs ``N * (max |p| + max |c|)``; a plan costs ``n_clusters * max K`` for the prefixes
plus the rest, ``|p| - K + |c|`` a row, run in length buckets (:func:`buckets`: rows of similar length in one forward
call against the same cached prefixes; each call past the first costs ``overhead`` positions). Candidates: rows in
lexicographic prompt order, cut wherever two neighbours share fewer than ``t`` tokens, for every ``t`` that occurs
(every row alone, every GRPO group, every question, everything that shares a system prompt, ...). A prefix keeps at
least a prompt's last token out, so that every logit comes from the second pass.

Packing (:func:`pack_plan`) puts the prefixes and the rests of a micro-batch into one sequence instead, with a block
attention mask (a rest sees its cluster's prefix and itself): no padding and one forward call, for attention that
grows with the square of the packed length.
"""

from __future__ import annotations

from typing import Iterator, Sequence

#: A plan must cost at most this fraction of one full sequence per row (the second forward call has a fixed cost).
MARGIN = 0.9
#: What one more forward call costs, in token positions: its fixed cost (every layer's ops, forward and backward,
#: whatever the rows) and the smaller matrices' lower efficiency. Fitted on the 2-core EPYC with SmolLM2-135M
#: (``benchmarks.shared_prompt --overheads ...``): ~0.55 s a forward+backward call against ~0.0067 s a position,
#: so about 90 positions; buckets split only where completions of very different lengths (hundreds of tokens) meet.
BUCKET_OVERHEAD = 96


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


def buckets(lengths: Sequence[int], overhead: int = BUCKET_OVERHEAD) -> list[list[int]]:
    """Rows (indices into ``lengths``) split into forward calls, each padded to its longest row, at the least
    :func:`bucket_cost`: rows sorted by length, cut by an exact dynamic programme over the cut points (an optimal
    partition is contiguous in length order). Buckets in increasing length; ``[]`` for no rows."""
    order = sorted(range(len(lengths)), key=lambda r: (lengths[r], r))
    best, cut = [0] + [0] * len(order), [0] * (len(order) + 1)  # best[i]: the first i sorted rows; cut[i]: last start
    for i in range(1, len(order) + 1):
        best[i], cut[i] = min((best[j] + (i - j) * lengths[order[i - 1]] + (overhead if j else 0), j)
                              for j in range(i))
    out, i = [], len(order)
    while i:
        out.append(order[cut[i]:i])
        i = cut[i]
    return out[::-1]


def bucket_cost(lengths: Sequence[int], groups: Sequence[Sequence[int]], overhead: int = BUCKET_OVERHEAD) -> int:
    """Token positions of one forward call per group, padded to its longest row, plus ``overhead`` per call after
    the first."""
    return sum(len(g) * max(lengths[r] for r in g) for g in groups) + overhead * (len(groups) - 1)


def rest_lengths(prompts: Sequence[Sequence[int]], comps: Sequence[Sequence[int]],
                 clusters: Sequence[tuple[int, Sequence[int]]]) -> list[int]:
    """Per row, the positions of its second pass under ``clusters``: rest of prompt + completion minus its last token
    (no logit needed there)."""
    out = [0] * len(prompts)
    for k, rows in clusters:
        for r in rows:
            out[r] = len(prompts[r]) - k + max(len(comps[r]) - 1, 0)
    return out


def plan_cost(prompts: Sequence[Sequence[int]], comps: Sequence[Sequence[int]],
              clusters: Sequence[tuple[int, Sequence[int]]], overhead: int | None = BUCKET_OVERHEAD) -> int:
    """Token positions of the two passes of ``clusters`` (``(prefix length, rows)`` each): the prefixes, padded to
    the longest, then the rest in :func:`buckets`, plus ``overhead`` for each call past the one that
    :func:`plain_cost` makes (``overhead=None``: the rest in one call, no overhead counted)."""
    rest = rest_lengths(prompts, comps, clusters)
    groups = [list(range(len(rest)))] if overhead is None else buckets(rest, overhead)
    return len(clusters) * max(k for k, _ in clusters) + bucket_cost(rest, groups, overhead or 0) + (overhead or 0)


def _candidates(prompts: Sequence[Sequence[int]]) -> Iterator[list[tuple[int, list[int]]]]:
    """Every candidate clustering: rows in lexicographic prompt order, cut wherever two neighbours share fewer than
    ``t`` tokens, for every ``t >= 1`` that occurs, and every row alone; a cluster's ``K`` is what all its rows
    share, at most each prompt's length minus 1."""
    order = sorted(range(len(prompts)), key=lambda r: (list(prompts[r]), r))
    shared = [common_prefix(prompts[a], prompts[b]) for a, b in zip(order, order[1:])]
    for t in sorted({s for s in shared if s >= 1}) + [None]:  # None: every row alone
        clusters, start = [], 0
        for i in range(1, len(order) + 1):
            if i == len(order) or t is None or shared[i - 1] < t:
                rows = order[start:i]
                clusters.append((min([len(prompts[r]) - 1 for r in rows] + shared[start:i - 1]), rows))
                start = i
        yield clusters


def plan(prompts: Sequence[Sequence[int]], comps: Sequence[Sequence[int]], margin: float = MARGIN,
         overhead: int | None = BUCKET_OVERHEAD) -> list[tuple[int, list[int]]] | None:
    """The cheapest shared-prefix plan for these rows: ``[(K, rows), ...]`` (every row in one cluster, the rows of a
    cluster share their first ``K >= 1`` tokens, ``K < |p|`` for each), or ``None`` where one full sequence per row
    costs less than ``margin`` times more (or a prompt is shorter than 2 tokens). ``overhead``: as in
    :func:`plan_cost`."""
    if len(prompts) < 2 or min(len(p) for p in prompts) < 2:
        return None
    best, best_cost = None, margin * plain_cost(prompts, comps)
    for clusters in _candidates(prompts):
        cost = plan_cost(prompts, comps, clusters, overhead)
        if cost < best_cost:
            best, best_cost = clusters, cost
    return best


def packed_length(prompts: Sequence[Sequence[int]], comps: Sequence[Sequence[int]],
                  clusters: Sequence[tuple[int, Sequence[int]]]) -> int:
    """Tokens of one packed sequence: each cluster's prefix once, then each row's rest (:func:`rest_lengths`)."""
    return sum(k for k, _ in clusters) + sum(rest_lengths(prompts, comps, clusters))


def pack_plan(prompts: Sequence[Sequence[int]], comps: Sequence[Sequence[int]]) -> list[tuple[int, list[int]]]:
    """The clustering with the shortest :func:`packed_length` (``K >= 0``: a 1-token prompt shares nothing); rows
    with nothing in common give one cluster each. Prompts must not be empty."""
    if min(len(p) for p in prompts) < 1:
        raise ValueError("a row with an empty prompt has no position that predicts its first token")
    return min(_candidates(prompts), key=lambda c: packed_length(prompts, comps, c))
