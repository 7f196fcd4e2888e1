"""HFTeam.token_logprobs against a plain loop (one unpadded sequence per row), with and without prompt sharing.

The shared-prompt path runs each distinct prompt of a micro-batch once and scores its completions against the
cached keys and values; it must give the same log-probs and the same gradients as one full sequence per row.
"""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ccpo_agents.hf_backend import HFTeam
from ccpo_agents.prefix_plan import buckets, pack_plan, packed_length, plan, rest_lengths
from ccpo_agents.policy import Completion
from ccpo_algos.update import prompt_major_order


#: The tiny rows here are a few tokens long: a small per-call overhead, so that both paths and buckets get exercised.
OVERHEAD = 2


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def team(request, tmp_path_factory):
    from ccpo_agents.testing import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp(request.param) / "m", arch=request.param)
    team = HFTeam(str(path), ["thinker_0", "reasoner_0"], dtype="float32", seed=3, bucket_overhead=OVERHEAD,
                  pack_limit=0)  # the padded paths, unless a test packs
    with torch.no_grad():  # a non-identity adapter, so that the adapter's gradients are not trivially zero
        for name, p in team.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return team


def _loop_logprobs(team, role, prompts, comps, temperature, reference=False):
    """Plain loop: each (prompt, completion) as one unpadded sequence, log_softmax(logits / T) at each
    completion token; rows padded with 0 to the longest completion."""
    import contextlib

    team.use(role)
    L = max(1, max(len(c) for c in comps))
    out = torch.zeros(len(prompts), L)
    ctx = team.model.disable_adapter() if reference else contextlib.nullcontext()
    with ctx:
        for i, (p, c) in enumerate(zip(prompts, comps)):
            if not c:
                continue
            logits = team.model(input_ids=torch.tensor([list(p) + list(c)])).logits[0].float()
            for j, tok in enumerate(c):
                out[i, j] = (logits[len(p) - 1 + j] / temperature).log_softmax(-1)[tok]
    return out


def _groups(rng, n_groups, max_group, vocab, empty_ok=True, messages=False):
    """Rows as a team's trainer sees them: one system prefix for all, a question per group, with ``messages`` a
    per-row message after it (another agent's turn), then a completion (0 tokens: a turn cut to nothing)."""
    tok = lambda n: [rng.randrange(4, vocab) for _ in range(n)]  # noqa: E731
    system = tok(rng.randint(0, 6))
    prompts, comps = [], []
    for _ in range(n_groups):
        question = system + tok(rng.randint(1, 8))
        for _ in range(rng.randint(1, max_group)):
            prompts.append(question + (tok(rng.randint(0, 5)) if messages else []))
            comps.append(tok(rng.randint(0 if empty_ok else 1, 7)))
    return prompts, comps


def _grads(team, role):
    return torch.cat([p.grad.flatten() for p in team.trainable_parameters(role)])


@settings(max_examples=12)
@given(seed=st.integers(0, 10_000), micro_batch=st.integers(1, 9), temperature=st.sampled_from([1.0, 0.5]),
       n_groups=st.integers(1, 4), max_group=st.integers(1, 4), messages=st.booleans(),
       overhead=st.sampled_from([None, 0, 2, 16]), pack_limit=st.sampled_from([0, 0, 12, 1024]))
def test_shared_prefix_logprobs_and_grads_match_a_plain_loop(team, seed, micro_batch, temperature, n_groups,
                                                             max_group, messages, overhead, pack_limit):
    """``overhead`` 0 runs every distinct rest length in its own bucket, ``None`` all in one call; ``pack_limit``
    1024 packs every micro-batch (with and without shared prefixes), 12 some, 0 none."""
    rng = random.Random(seed)
    prompts, comps = _groups(rng, n_groups, max_group, len(team.tokenizer), messages=messages)
    role = "thinker_0"
    grads = {}
    team.bucket_overhead, team.pack_limit = overhead, pack_limit
    for share in (True, False):
        team.share_prompts = share
        team.model.zero_grad(set_to_none=True)
        lp, mask = team.token_logprobs(role, prompts, comps, micro_batch, temperature=temperature)
        want = _loop_logprobs(team, role, prompts, comps, temperature).detach()
        assert lp.shape == want.shape
        assert mask.tolist() == [[j < len(c) for j in range(lp.shape[1])] for c in comps]
        torch.testing.assert_close(lp.detach(), want, atol=2e-5, rtol=0)
        if mask.any():
            (lp * torch.linspace(0.5, 1.5, lp.numel()).view_as(lp)).sum().backward()
            grads[share] = _grads(team, role)
    team.share_prompts, team.bucket_overhead, team.pack_limit = True, OVERHEAD, 0
    if grads:
        torch.testing.assert_close(grads[True], grads[False], atol=1e-5, rtol=1e-4)
        assert grads[True].abs().max() > 0


def test_one_group_of_identical_prompts_hand_made(team):
    """Four samples of one prompt, completions of 1, 3, 0 and 5 tokens (a truncated-to-nothing turn included)."""
    p = [10, 11, 12, 13, 14, 15, 16, 17]
    comps = [[20], [21, 22, 23], [], [24, 25, 26, 27, 28]]
    assert plan([p] * 4, comps, overhead=OVERHEAD) == [(7, [0, 1, 2, 3])]  # the shared path is the one under test
    lp, mask = team.token_logprobs("reasoner_0", [p] * 4, comps, micro_batch=8)
    want = _loop_logprobs(team, "reasoner_0", [p] * 4, comps, 1.0)
    torch.testing.assert_close(lp, want, atol=2e-5, rtol=0)
    assert mask.sum(-1).tolist() == [1, 3, 0, 5]


def test_two_questions_with_a_message_between_question_and_answer_hand_made(team):
    """A dyad's second agent: each row's prompt is the question, then the first agent's (different) message."""
    q1, q2 = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [10, 11, 12, 13, 14, 30, 31, 32, 33, 34]
    prompts = [q1 + [40, 41], q1 + [42], q1 + [43, 44, 45], q2 + [46, 47], q2 + [48]]
    comps = [[50, 51], [52], [53, 54, 55], [56], [57, 58]]
    assert plan(prompts, comps, overhead=OVERHEAD) == [(10, [0, 1, 2]), (10, [3, 4])]  # per question
    lp, _ = team.token_logprobs("thinker_0", prompts, comps, micro_batch=8)
    torch.testing.assert_close(lp, _loop_logprobs(team, "thinker_0", prompts, comps, 1.0), atol=2e-5, rtol=0)


def test_length_buckets_of_one_group_hand_made(team):
    """One prompt, completions of 1, 2, 9 and 10 tokens in two buckets against the same cached prefix; log-probs
    and gradients as the plain loop's."""
    p = [10, 11, 12, 13, 14, 15]
    comps = [[20 + j for j in range(n)] for n in (9, 1, 10, 2)]
    assert buckets(rest_lengths([p] * 4, comps, [(5, [0, 1, 2, 3])]), 0) == [[1], [3], [0], [2]]
    assert buckets(rest_lengths([p] * 4, comps, [(5, [0, 1, 2, 3])]), 4) == [[1, 3], [0, 2]]
    team.bucket_overhead = 4
    try:
        team.model.zero_grad(set_to_none=True)
        lp, _ = team.token_logprobs("thinker_0", [p] * 4, comps, micro_batch=8)
        lp.sum().backward()
        got = _grads(team, "thinker_0")
    finally:
        team.bucket_overhead = OVERHEAD
    team.model.zero_grad(set_to_none=True)
    want = _loop_logprobs(team, "thinker_0", [p] * 4, comps, 1.0)
    torch.testing.assert_close(lp.detach(), want.detach(), atol=2e-5, rtol=0)
    want.sum().backward()
    torch.testing.assert_close(got, _grads(team, "thinker_0"), atol=1e-5, rtol=1e-4)


def test_packed_micro_batch_hand_made(team):
    """Two questions in one packed sequence: question 1 with two dyad messages, question 2 with one and a completion
    cut to nothing; a 1-token prompt alone. Log-probs and gradients as the plain loop's; the plan shares each
    question and the result does not depend on the packing."""
    q1, q2 = [10, 11, 12, 13, 14, 15, 16, 17], [10, 11, 12, 30, 31, 32]
    prompts = [q1 + [40, 41], q1 + [42], q2 + [43, 44], q2 + [45], [9]]
    comps = [[50, 51, 52], [53], [54, 55], [], [56, 57]]
    clusters = pack_plan(prompts, comps)
    assert sorted(clusters) == [(0, [4]), (6, [2, 3]), (8, [0, 1])]
    assert packed_length(prompts, comps, clusters) == 8 + (2 + 2) + (1 + 0) + 6 + (2 + 1) + (1 + 0) + (1 + 1)
    team.pack_limit = 1024
    try:
        team.model.zero_grad(set_to_none=True)
        lp, mask = team.token_logprobs("reasoner_0", prompts, comps, micro_batch=8)
        lp.sum().backward()
        got = _grads(team, "reasoner_0")
    finally:
        team.pack_limit = 0
    team.model.zero_grad(set_to_none=True)
    want = _loop_logprobs(team, "reasoner_0", prompts, comps, 1.0)
    torch.testing.assert_close(lp.detach(), want.detach(), atol=2e-5, rtol=0)
    assert mask.sum(-1).tolist() == [3, 1, 2, 0, 2]
    want.sum().backward()
    torch.testing.assert_close(got, _grads(team, "reasoner_0"), atol=1e-5, rtol=1e-4)


def test_reference_logprobs_over_several_micro_batches(team):
    """reference=True (the bare base) over more rows than one micro-batch: the adapter stays off in every one."""
    prompts, comps = _groups(random.Random(7), 3, 3, len(team.tokenizer), empty_ok=False)
    lp, _ = team.token_logprobs("thinker_0", prompts, comps, micro_batch=2, reference=True)
    torch.testing.assert_close(lp, _loop_logprobs(team, "thinker_0", prompts, comps, 1.0, reference=True),
                               atol=2e-5, rtol=0)
    with_adapter, _ = team.token_logprobs("thinker_0", prompts, comps, micro_batch=2)
    assert (with_adapter.detach() - lp).abs().max() > 1e-3  # the adapter is not the identity here


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3), st.integers(0, 5)), max_size=20))
def test_prompt_major_order_keeps_groups_together(rows):
    turns = [Completion("r", "", [7] * n + [g], [1] * m, [0.0] * m, "stop") for g, n, m in rows]
    idx = list(range(len(turns)))
    order = prompt_major_order(turns, idx)
    assert sorted(order) == idx
    seen, last = set(), None
    for e in order:  # each prompt's turns are one contiguous run
        key = tuple(turns[e].prompt_ids)
        assert key == last or key not in seen
        seen.add(key)
        last = key
    assert prompt_major_order(turns, idx[::-1]) == order  # the input order does not matter
