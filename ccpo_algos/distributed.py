"""Data parallelism under ``torchrun`` (gloo on CPU, nccl on GPU): each rank plays its share of the prompts with
its own rollout backend, credit statistics are computed over the *global* batch (CCPO's EMA statistics are
batch-global), and gradients are averaged across ranks before clipping, so every rank holds the same weights.

Single-process runs use :data:`SINGLE` and pay nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Rank and world size; ``world == 1`` means no process group."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_env() -> "DistContext":
        """Join the process group that ``torchrun`` describes in the environment (if any)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return SINGLE
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return DistContext(dist.get_rank(), dist.get_world_size())

    def shard(self, items: list) -> list:
        """This rank's contiguous share of ``items`` (``len(items)`` must divide evenly)."""
        n = len(items) // self.world
        return items[self.rank * n:(self.rank + 1) * n]

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows (same shape on every rank), in rank order."""
        if self.world == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Average gradients over ranks (missing gradients count as zero)."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


SINGLE = DistContext()
