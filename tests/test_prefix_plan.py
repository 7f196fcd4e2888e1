"""The shared-prefix plan of HFTeam.token_logprobs (pure; the log-probs it gives are tested in test_token_logprobs)."""

from hypothesis import given
from hypothesis import strategies as st

from ccpo_agents.prefix_plan import MARGIN, common_prefix, plain_cost, plan, plan_cost

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
