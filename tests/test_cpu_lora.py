"""The grouped CPU LoRA ops compute exactly what vLLM's PyTorch-native ops compute (per-token weight gather)."""

import os
import subprocess
import sys

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ccpo_agents import cpu_lora


def _reference(x, w, idx, dtype):  # vLLM's op: one copied matrix per token
    sel = w[idx].to(dtype)
    if sel.dim() == 4:
        sel = sel.squeeze(1)
    return torch.einsum("bi, boi -> bo", x.to(dtype), sel)


@given(tokens=st.integers(1, 40), slots=st.integers(1, 4), rank=st.sampled_from([1, 4, 8]),
       hidden=st.sampled_from([8, 32]), four_d=st.booleans(), seed=st.integers(0, 10_000))
def test_grouped_matches_per_token_gather(tokens, slots, rank, hidden, four_d, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(slots, 1, rank, hidden, generator=g) if four_d else torch.randn(slots, rank, hidden, generator=g)
    x = torch.randn(tokens, hidden, generator=g)
    idx = torch.randint(-1, slots, (tokens,), generator=g)  # -1 (no adapter) indexes the last slot, as in vLLM
    got = cpu_lora.grouped_lora_matmul(x, w, idx, torch.float32)
    assert torch.allclose(got, _reference(x, w, idx, torch.float32), atol=1e-5, rtol=1e-5)


def test_ops_keep_vllms_output_contract():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 1, 4, 16, generator=g), torch.randn(3, 1, 24, 4, generator=g)
    x, idx = torch.randn(10, 16, generator=g), torch.tensor([0, 2, 2, 1, 0, 0, 1, 2, 2, 0])
    mid = torch.zeros(10, 4)
    cpu_lora.bgmv_shrink(x, a, mid, idx, scaling=0.5)
    assert torch.allclose(mid, 0.5 * _reference(x, a, idx, torch.float32), atol=1e-5)
    out = torch.ones(10, 30)
    cpu_lora.bgmv_expand_slice(mid, b, out, idx, 3, 24, add_inputs=True)
    assert torch.allclose(out[:, 3:27], 1 + _reference(mid, b, idx, torch.float32), atol=1e-5)
    assert torch.equal(out[:, :3], torch.ones(10, 3)) and torch.equal(out[:, 27:], torch.ones(10, 3))
    full = torch.zeros(10, 24)
    cpu_lora.bgmv_expand(mid, b, full, idx, add_inputs=False)
    assert torch.allclose(full, _reference(mid, b, idx, torch.float32), atol=1e-5)


def _loop_lora_linear(y, x, lora_a, lora_b, scale, slices, idx):
    """Plain loop over tokens and slices, from the semantics in vLLM's ``add_lora_linear`` docstring (slot -1: no
    adapter, as vLLM documents it and its GPU kernels do)."""
    y = y.clone()
    for t in range(x.shape[0]):
        s = int(idx[t])
        if s < 0:
            continue
        offset = 0
        for a, b, size in zip(lora_a, lora_b, slices):
            a_s, b_s = a[s].reshape(a.shape[-2:]), b[s].reshape(b.shape[-2:])
            h = [scale * sum(float(x[t, i]) * float(a_s[k, i]) for i in range(x.shape[1])) for k in range(a_s.shape[0])]
            for o in range(size):
                y[t, offset + o] += sum(h[k] * float(b_s[o, k]) for k in range(a_s.shape[0]))
            offset += size
    return y


@settings(max_examples=40, deadline=None)
@given(tokens=st.integers(1, 12), slots=st.integers(1, 3), slices=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       rank=st.sampled_from([1, 4]), hidden=st.sampled_from([3, 8]), four_d=st.booleans(),
       no_adapter=st.booleans(), seed=st.integers(0, 10_000))
def test_lora_linear_matches_a_plain_loop(tokens, slots, slices, rank, hidden, four_d, no_adapter, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (lambda *d: (slots, 1, *d)) if four_d else (lambda *d: (slots, *d))
    lora_a = [torch.randn(*shape(rank, hidden), generator=g) for _ in slices]
    lora_b = [torch.randn(*shape(size, rank), generator=g) for size in slices]
    x, y = torch.randn(tokens, hidden, generator=g), torch.randn(tokens, sum(slices), generator=g)
    idx = torch.randint(-1 if no_adapter else 0, slots, (tokens,), generator=g)
    want = _loop_lora_linear(y, x, lora_a, lora_b, 0.5, slices, idx)
    got = y.clone()
    cpu_lora.lora_linear(got, x, lora_a, lora_b, 0.5, slices, cpu_lora.token_groups(idx))
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_token_groups_leave_out_tokens_without_an_adapter():
    assert cpu_lora.token_groups(torch.tensor([2, 2, 2])) == [(2, None)]
    assert cpu_lora.token_groups(torch.tensor([-1, -1])) == []
    groups = cpu_lora.token_groups(torch.tensor([1, -1, 0, 1]))
    assert [(s, r.tolist()) for s, r in groups] == [(0, [2]), (1, [0, 3])]


def test_lora_linear_sees_an_adapter_written_into_a_slot_in_place():
    """vLLM loads a new adapter by copying into the stacked tensors' slot; the cached layout must follow."""
    g = torch.Generator().manual_seed(0)
    lora_a, lora_b = [torch.randn(2, 1, 4, 8, generator=g)], [torch.randn(2, 1, 6, 4, generator=g)]
    x, idx = torch.randn(5, 8, generator=g), torch.tensor([1, 1, 1, 1, 1])
    first = torch.zeros(5, 6)
    cpu_lora.lora_linear(first, x, lora_a, lora_b, 1.0, [6], cpu_lora.token_groups(idx))
    lora_a[0][1, 0].copy_(torch.randn(4, 8, generator=g))  # as vLLM's set_lora does
    lora_b[0][1, 0].copy_(torch.randn(6, 4, generator=g))
    second = torch.zeros(5, 6)
    cpu_lora.lora_linear(second, x, lora_a, lora_b, 1.0, [6], cpu_lora.token_groups(idx))
    assert torch.allclose(second, _loop_lora_linear(torch.zeros(5, 6), x, lora_a, lora_b, 1.0, [6], idx), atol=1e-4)
    assert not torch.allclose(first, second)


def test_plugin_is_opt_in_and_swaps_vllms_cpu_ops():
    code = ("import os, sys; from ccpo_agents import cpu_lora; from vllm.lora.punica_wrapper import punica_cpu as p; "
            "from vllm.lora.ops.torch_ops import lora_ops as o; "
            "done = cpu_lora.install(); "
            "print(done, p.bgmv_shrink is cpu_lora.bgmv_shrink, o.bgmv_expand is cpu_lora.bgmv_expand, "
            "p.PunicaWrapperCPU.add_lora_linear is cpu_lora._add_lora_linear)")
    for value, expect in (("grouped", "True True True True"), ("native", "False False False False")):
        env = dict(os.environ, CCPO_CPU_LORA=value)
        out = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=300)
        assert out.stdout.strip().splitlines()[-1] == expect, out.stderr[-2000:]
