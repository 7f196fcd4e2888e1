"""The grouped CPU LoRA ops compute exactly what vLLM's PyTorch-native ops compute (per-token weight gather)."""

import os
import subprocess
import sys

import torch
from hypothesis import given
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


def test_plugin_is_opt_in_and_swaps_vllms_cpu_ops():
    code = ("import os, sys; from ccpo_agents import cpu_lora; from vllm.lora.punica_wrapper import punica_cpu as p; "
            "from vllm.lora.ops.torch_ops import lora_ops as o; "
            "done = cpu_lora.install(); "
            "print(done, p.bgmv_shrink is cpu_lora.bgmv_shrink, o.bgmv_expand is cpu_lora.bgmv_expand)")
    for value, expect in (("grouped", "True True True"), ("native", "False False False")):
        env = dict(os.environ, CCPO_CPU_LORA=value)
        out = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=300)
        assert out.stdout.strip().splitlines()[-1] == expect, out.stderr[-2000:]
