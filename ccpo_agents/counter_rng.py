"""A counter-based random number generator on tensors: the noise of a draw depends only on its own
``(seed, counter)``, never on what else is in the batch (JAX's design; vLLM's per-request seeds serve the same end).

So a run sampled inside a batch of many runs draws exactly the tokens it draws alone.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN, _M1, _M2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 (torch shifts arithmetically)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(x: Tensor) -> Tensor:
    """SplitMix64's output function on int64 (wrapping arithmetic): a bijection with good avalanche."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def uniform(seeds: Tensor, counter: int, width: int) -> Tensor:
    """``(N, width)`` uniforms in (0, 1): row ``i`` from ``(seeds[i], counter, column)`` alone."""
    s = splitmix64(seeds.to(torch.int64)[:, None] * 1_000_003 + counter)
    z = splitmix64(s * 65_537 + torch.arange(width, dtype=torch.int64, device=seeds.device)[None, :])
    return (_shr(z, 11).to(torch.float64) + 0.5) / float(1 << 53)


def gumbel(seeds: Tensor, counter: int, width: int) -> Tensor:
    """``(N, width)`` standard Gumbel noise (float64), row by row from ``(seed, counter)``: ``argmax(logits / T +
    noise)`` samples ``softmax(logits / T)`` (the Gumbel-max trick)."""
    return -torch.log(-torch.log(uniform(seeds, counter, width)))
