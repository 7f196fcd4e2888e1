"""Checkpoint files: bounded (newest N plus the best), temp folders of killed writes cleaned, pointers validated."""

import json

import pytest

from ccpo_algos.checkpoint import clean_partial_writes, latest_checkpoint, mark_best, prune_checkpoints


def _fake_checkpoints(run, steps):
    root = run / "checkpoints"
    for s in steps:
        (root / f"step_{s:06d}").mkdir(parents=True)
        (root / f"step_{s:06d}" / "state.json").write_text(json.dumps({"step": s}))
    (root / "latest").write_text(f"step_{max(steps):06d}")
    return root


def test_prune_keeps_the_newest_and_the_best(tmp_path):
    root = _fake_checkpoints(tmp_path, [1, 2, 3, 4, 5, 6])
    assert mark_best(tmp_path, 2, 0.7) and not mark_best(tmp_path, 4, 0.6) and not mark_best(tmp_path, 5, 0.7)
    gone = prune_checkpoints(tmp_path, keep=2)
    assert gone == ["step_000001", "step_000003", "step_000004"]
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("step_")) == [
        "step_000002", "step_000005", "step_000006"]
    assert (root / "best").read_text() == "step_000002"
    assert prune_checkpoints(tmp_path, keep=0) == []  # 0: keep everything


def test_partial_writes_are_cleaned_and_pointers_validated(tmp_path):
    root = _fake_checkpoints(tmp_path, [1])
    (root / ".step_000002.abc").mkdir()
    (root / ".latest.xyz").write_text("half")
    assert sorted(clean_partial_writes(tmp_path)) == [".latest.xyz", ".step_000002.abc"]
    assert latest_checkpoint(tmp_path) == root / "step_000001"
    for bad in ("step_000009", "../../etc", "/tmp", "step_1"):
        (root / "latest").write_text(bad)
        with pytest.raises(ValueError, match="not a checkpoint of this run"):
            latest_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path / "nowhere") is None


def test_resume_trims_metric_rows_written_after_the_last_checkpoint(tmp_path):
    """A run killed after a metrics row but before its checkpoint: the rows past the checkpoint go (step 0
    included: killed before the first checkpoint), so the resumed run writes no duplicate rows."""
    from ccpo_algos.config import preset
    from ccpo_algos.trainer import RunLogger, read_metrics

    cfg = preset(None, tensorboard=False)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2, 3)))
    RunLogger(tmp_path, cfg, resume_step=2, resumed=True).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    RunLogger(tmp_path, cfg, resume_step=0, resumed=True).close()
    assert read_metrics(tmp_path) == []
