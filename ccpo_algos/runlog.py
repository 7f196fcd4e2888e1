"""A run's log: ``metrics.jsonl`` (fsynced row per step, trimmed atomically on resume), TensorBoard, W&B."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from ccpo_algos.checkpoint import atomic_write_text
from ccpo_algos.config import TrainConfig


def _rows_upto(path: Path, step: int) -> list[str]:
    """The metrics lines of steps <= ``step``; a torn last line (the run was killed while writing it) is dropped."""
    keep = []
    for ln in path.read_text().splitlines():
        try:
            if ln and json.loads(ln)["step"] <= step:
                keep.append(ln)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return keep


class RunLogger:
    """metrics.jsonl (always), TensorBoard and W&B (optional)."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, resume_step: int, resumed: bool = False):
        self.path = run_dir / "metrics.jsonl"
        if resumed and self.path.exists():  # drop rows after the checkpoint (even step 0): they are recomputed
            atomic_write_text(self.path, "".join(ln + "\n" for ln in _rows_upto(self.path, resume_step)))
        self.tb = self.wb = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: TensorBoard hides the killed run's events from the resumed step on
                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resumed else None)
            except ImportError:
                warnings.warn("tensorboard is not installed; logging to metrics.jsonl only")
        if cfg.wandb:
            import wandb

            self.wb = wandb.init(project="ccpo", name=run_dir.name, config=cfg.to_dict(), dir=str(run_dir))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wb is not None:
            self.wb.log(metrics, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of a run's metrics.jsonl."""
    return [json.loads(ln) for ln in Path(run_dir, "metrics.jsonl").read_text().splitlines() if ln.strip()]
