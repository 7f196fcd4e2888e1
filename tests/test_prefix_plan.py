"""The shared-prefix plan of HFTeam.token_logprobs (pure; the log-probs it gives are tested in test_token_logprobs)."""

from hypothesis import given
from hypothesis import strategies as st

from ccpo_agents.prefix_plan import (MARGIN, bucket_cost, buckets, common_prefix, pack_plan, packed_length, plain_cost,
                                     plan, plan_cost, rest_lengths)

_tokens = st.lists(st.integers(0, 3), min_size=0, max_size=6)  # a small alphabet: many shared prefixes


@st.composite
def _rows(draw):
    system = draw(_tokens)
    prompts, comps = [], []
    for _ in range(draw(st.integers(1, 4))):
        question = system + draw(st.lists(st.integers(0, 3), min_size=1, max_size=6))
        for _ in range(draw(st.integers(1, 4))):
            prompts.append(question + draw(_tokens))
            comps.append(draw(st.lists(st.integers(0, 9), max_size=6)))
    return prompts, comps


def _loop_common_prefix(a, b):
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


@given(_rows())
def test_a_plan_partitions_the_rows_into_valid_shared_prefixes_and_saves_work(rows):
    prompts, comps = rows
    clusters = plan(prompts, comps)
    if clusters is None:
        return
    assert sorted(r for _, rs in clusters for r in rs) == list(range(len(prompts)))
    for k, rs in clusters:
        assert all(1 <= k < len(prompts[r]) for r in rs)
        assert all(prompts[r][:k] == prompts[rs[0]][:k] for r in rs)
    cost = plan_cost(prompts, comps, clusters)
    assert cost <= MARGIN * plain_cost(prompts, comps)
    alone = [(len(p) - 1, [r]) for r, p in enumerate(prompts)]
    assert cost <= plan_cost(prompts, comps, alone)
    k_all = min([len(p) - 1 for p in prompts] + [_loop_common_prefix(prompts[0], p) for p in prompts])
    if k_all >= 1:
        assert cost <= plan_cost(prompts, comps, [(k_all, list(range(len(prompts))))])


@given(st.integers(1, 6), st.integers(2, 8), st.integers(2, 6), st.integers(0, 10))
def test_grpo_groups_run_their_prompt_once(n_groups, group, prompt_len, comp_len):
    """B questions x G samples of one length each: shared whenever one prefix per question saves enough, and never
    worse than that."""
    prompts = [[q] + [9] * (prompt_len - 1) for q in range(n_groups) for _ in range(group)]
    comps = [[5] * comp_len for _ in prompts]
    by_group = [(prompt_len - 1, list(range(q * group, (q + 1) * group))) for q in range(n_groups)]
    clusters = plan(prompts, comps)
    if plan_cost(prompts, comps, by_group) < MARGIN * plain_cost(prompts, comps):
        assert clusters is not None
    if clusters is not None:
        assert plan_cost(prompts, comps, clusters) <= plan_cost(prompts, comps, by_group)


def test_rows_with_nothing_in_common_run_as_full_sequences():
    assert plan([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[1], [2], [3]]) is None
    assert plan([[1, 2, 3]], [[1]]) is None  # one row
    assert plan([[1], [1]], [[2], [3]]) is None  # a 1-token prompt leaves no prefix to share


@given(st.lists(st.integers(0, 2), max_size=8), st.lists(st.integers(0, 2), max_size=8))
def test_common_prefix(a, b):
    assert common_prefix(a, b) == _loop_common_prefix(a, b)


def _set_partitions(items):
    """Every partition of ``items`` into non-empty blocks (a plain recursion; Bell(n) of them)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        yield [[first]] + part
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]


@given(st.lists(st.integers(1, 40), min_size=1, max_size=7), st.sampled_from([0, 1, 5, 16, 1000]))
def test_buckets_are_the_cheapest_partition_of_all(lengths, overhead):
    """The dynamic programme over sorted lengths against brute force over every set partition of the rows."""
    groups = buckets(lengths, overhead)
    assert sorted(r for g in groups for r in g) == list(range(len(lengths)))
    brute = min(bucket_cost(lengths, part, overhead) for part in _set_partitions(list(range(len(lengths)))))
    assert bucket_cost(lengths, groups, overhead) == brute
    assert [max(lengths[r] for r in g) for g in groups] == sorted(max(lengths[r] for r in g) for g in groups)


def test_buckets_hand_made():
    assert buckets([], 16) == []
    assert buckets([5, 30, 6, 31], 0) == [[0], [2], [1], [3]]  # no overhead: every length alone
    assert buckets([5, 30, 6, 31], 16) == [[0, 2], [1, 3]]  # 2*6 + 2*31 + 16 = 90 < 4*31 = 124
    assert buckets([5, 30, 6, 31], 1000) == [[0, 2, 1, 3]]  # a call costs more than all the padding
    assert bucket_cost([5, 30, 6, 31], [[0, 2], [1, 3]], 16) == 90


def test_rest_lengths_and_the_bucketed_plan_cost_hand_made():
    """One group of 4 samples, prompt 8 tokens, completions of 1, 3, 0 and 30 tokens, the prompt's first 7 shared:
    each row reruns the prompt's last token and its completion minus its last token."""
    prompts, comps = [[1] * 8] * 4, [[2], [2] * 3, [], [2] * 30]
    clusters = [(7, [0, 1, 2, 3])]
    assert rest_lengths(prompts, comps, clusters) == [1, 3, 1, 30]
    assert plan_cost(prompts, comps, clusters, overhead=None) == 7 + 4 * 30
    assert plan_cost(prompts, comps, clusters, overhead=16) == 7 + 3 * 3 + 30 + 2 * 16  # 3 calls, plain makes 1


@given(_rows())
def test_pack_plan_partitions_validly_and_packs_no_longer_than_any_other_clustering(rows):
    prompts, comps = rows
    prompts = [p or [0] for p in prompts]  # a chat prompt is never empty
    clusters = pack_plan(prompts, comps)
    assert sorted(r for _, rs in clusters for r in rs) == list(range(len(prompts)))
    for k, rs in clusters:
        assert all(0 <= k < len(prompts[r]) for r in rs)
        assert all(prompts[r][:k] == prompts[rs[0]][:k] for r in rs)
    # independent count: every row alone is its full sequence minus the completion's last token
    alone = sum(len(p) + max(len(c) - 1, 0) for p, c in zip(prompts, comps))
    assert packed_length(prompts, comps, [(len(p) - 1, [r]) for r, p in enumerate(prompts)]) == alone
    assert packed_length(prompts, comps, clusters) <= alone
    padded = plan(prompts, comps)
    if padded is not None:
        assert packed_length(prompts, comps, clusters) <= packed_length(prompts, comps, padded)
