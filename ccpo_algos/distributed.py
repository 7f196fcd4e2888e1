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
    device: str = "cpu"
    """Where collectives run: this rank's CUDA device under NCCL (it refuses CPU tensors), ``cpu`` under gloo."""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_env() -> "DistContext":
        """Join the process group that ``torchrun`` describes in the environment (if any)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return SINGLE
        nccl = torch.cuda.is_available()
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if nccl else "cpu"
        if nccl:
            torch.cuda.set_device(torch.device(device))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if nccl else "gloo")
        return DistContext(dist.get_rank(), dist.get_world_size(), device)

    def shard(self, items: list) -> list:
        """This rank's contiguous share of ``items`` (``len(items)`` must divide evenly)."""
        n = len(items) // self.world
        return items[self.rank * n:(self.rank + 1) * n]

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows (same shape on every rank), in rank order, on ``t``'s device (the
        collective itself runs on :attr:`device`; bool travels as uint8)."""
        if self.world == 1:
            return t
        x = t.to(self.device, torch.uint8 if t.dtype == torch.bool else t.dtype).contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x)
        return torch.cat(parts).to(t.device, t.dtype)

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Average gradients over ranks (missing gradients count as zero)."""
        if self.world == 1:
            return
        for p in params:  # parameters live on the trainer's device (this rank's GPU under NCCL)
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= self.world

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


SINGLE = DistContext()
