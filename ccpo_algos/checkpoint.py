"""Checkpoints: adapters (peft safetensors), optimisers, schedulers, credit statistics, RNG states, step.

Written atomically (a temporary folder, its files and itself fsynced, renamed into place, then the ``latest``
pointer replaced), so a run killed at any moment leaves either the previous checkpoint or the new one, never a torn
one; temporary folders of killed writes are removed when a run (re)starts. Bounded: the last ``keep`` checkpoints
plus the best on held-out accuracy (``best`` pointer) are kept. Tensors load with ``weights_only=True``; adapters
and the value head load from safetensors.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


STEP_DIR = re.compile(r"^step_\d{6}$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then every folder (deepest first)."""
    dirs = []
    for d, _, files in os.walk(root):
        dirs.append(Path(d))
        for name in files:
            with open(Path(d) / name, "rb+") as f:
                os.fsync(f.fileno())
    for d in reversed(dirs):
        _fsync_dir(d)


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def clean_partial_writes(run_dir: Path) -> list[str]:
    """Remove temporary folders/files that killed checkpoint writes left in ``run_dir/checkpoints``."""
    root = run_dir / "checkpoints"
    gone = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                gone.append(p.name)
        _repair_best(root)
    return gone


def _pointer(root: Path, name: str) -> Path | None:
    """The checkpoint a pointer file names, if it is a well-formed checkpoint folder inside ``root``."""
    ptr = root / name
    if not ptr.is_file():
        return None
    target = ptr.read_text().strip()
    if not STEP_DIR.match(target) or not (root / target / "state.json").is_file():
        raise ValueError(f"{ptr} names {target!r}, which is not a checkpoint of this run; remove the pointer to "
                         "start from an earlier checkpoint or from scratch")
    return root / target


def prune_checkpoints(run_dir: Path, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest checkpoints and the ``best`` one; returns the deleted names."""
    root = run_dir / "checkpoints"
    steps = sorted(p.name for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name))
    protected = set(steps[-keep:]) if keep > 0 else set(steps)
    for name in ("latest", "best"):
        try:
            p = _pointer(root, name)
        except ValueError:
            p = None
        if p is not None:
            protected.add(p.name)
    gone = [n for n in steps if n not in protected]
    for n in gone:
        shutil.rmtree(root / n, ignore_errors=True)
    return gone


def _repair_best(root: Path) -> dict | None:
    """``best.json`` is the record; ``best`` (the pointer) is written after it. A run killed between the two writes
    leaves the pointer behind: point it at the record's step again. Returns the record."""
    rec = root / "best.json"
    if not rec.is_file():
        return None
    best = json.loads(rec.read_text())
    name = f"step_{int(best['step']):06d}"
    ptr = root / "best"
    if (root / name / "state.json").is_file() and (not ptr.is_file() or ptr.read_text().strip() != name):
        atomic_write_text(ptr, name)
    return best


def mark_best(run_dir: Path, step: int, score: float) -> bool:
    """Point ``checkpoints/best`` at ``step`` if ``score`` beats the recorded best; returns whether it did."""
    root = run_dir / "checkpoints"
    best = _repair_best(root)
    if best is not None and score <= best["score"]:
        return False
    atomic_write_text(root / "best.json", json.dumps({"step": step, "score": score}))
    atomic_write_text(root / "best", f"step_{step:06d}")
    return True


def save_checkpoint(run_dir: Path, step: int, team: Any, optimizers: dict, schedulers: dict,
                    credit_state: Any) -> Path:
    """Write ``run_dir/checkpoints/step_<step>`` and point ``run_dir/checkpoints/latest`` at it."""
    from safetensors.torch import save_file

    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:06d}.", dir=root))
    try:
        for role in optimizers:
            if role != "critic":
                team.save_adapter(role, tmp / "adapters" / role)
        if "critic" in optimizers:
            team.save_adapter("critic", tmp / "adapters" / "critic")
            save_file({k: v.detach().contiguous() for k, v in team.value_head.state_dict().items()},
                      str(tmp / "value_head.safetensors"))
        torch.save({"optimizers": {r: o.state_dict() for r, o in optimizers.items()},
                    "schedulers": {r: s.state_dict() for r, s in schedulers.items()},
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}, tmp / "optim.pt")
        state = {"step": step, "credit_state": None if credit_state is None else credit_state.state_dict(),
                 "python_rng": _jsonable(random.getstate()), "numpy_rng": _jsonable(np.random.get_state())}
        (tmp / "state.json").write_text(json.dumps(state))
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(root / "latest", final.name)
    return final


def _jsonable(x: Any) -> Any:
    if isinstance(x, tuple | list):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
    if isinstance(x, np.generic):
        return x.item()
    return x


def _from_jsonable(x: Any) -> Any:
    if isinstance(x, dict) and "__ndarray__" in x:
        return np.array(x["__ndarray__"], dtype=x["dtype"])
    if isinstance(x, list):
        return tuple(_from_jsonable(v) for v in x)
    return x


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``checkpoints/latest`` names (``None`` before the first); ``ValueError`` if the pointer is
    dangling or points outside the run."""
    return _pointer(Path(run_dir) / "checkpoints", "latest")


def load_checkpoint(path: Path, team: Any, optimizers: dict, schedulers: dict) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote; returns ``{"step", "credit_state"}`` (raw dict)."""
    from safetensors.torch import load_file

    for role in optimizers:
        team.load_adapter_weights(role, path / "adapters" / role)
    if "critic" in optimizers:
        team.value_head.load_state_dict(load_file(str(path / "value_head.safetensors"), device=str(team.device)))
    blob = torch.load(path / "optim.pt", weights_only=True, map_location="cpu")  # load_state_dict moves to params
    for r, o in optimizers.items():
        o.load_state_dict(blob["optimizers"][r])
    for r, s in schedulers.items():
        s.load_state_dict(blob["schedulers"][r])
    torch.set_rng_state(blob["torch_rng"])
    if blob.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    state = json.loads((path / "state.json").read_text())
    random.setstate(_from_jsonable(state["python_rng"]))
    np.random.set_state(_from_jsonable(state["numpy_rng"]))
    return state
