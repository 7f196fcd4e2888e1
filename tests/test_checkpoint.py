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
    from ccpo_algos.runlog import RunLogger, read_metrics

    cfg = preset(None, tensorboard=False)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2, 3)))
    RunLogger(tmp_path, cfg, resume_step=2, resumed=True).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    RunLogger(tmp_path, cfg, resume_step=0, resumed=True).close()
    assert read_metrics(tmp_path) == []


def test_a_torn_metrics_row_is_dropped_on_resume(tmp_path):
    """Killed while writing a row: the half line is dropped, not a JSON error that blocks the resume."""
    from ccpo_algos.config import preset
    from ccpo_algos.runlog import RunLogger, read_metrics

    rows = "".join(json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2))
    (tmp_path / "metrics.jsonl").write_text(rows + '{"step": 3, "x"')
    RunLogger(tmp_path, preset(None, tensorboard=False), resume_step=2, resumed=True).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_best_pointer_left_behind_by_a_kill_is_repaired(tmp_path):
    """best.json is written before the best pointer: a kill between the two leaves the pointer on the older best,
    which the next start (or the next mark) points at the recorded step again, so pruning keeps the true best."""
    root = _fake_checkpoints(tmp_path, [1, 2, 3, 4])
    assert mark_best(tmp_path, 1, 0.5)
    (root / "best.json").write_text(json.dumps({"step": 3, "score": 0.8}))  # killed before the pointer moved
    clean_partial_writes(tmp_path)
    assert (root / "best").read_text() == "step_000003"
    assert not mark_best(tmp_path, 4, 0.7)  # the record, not the stale pointer, is what a new score must beat
    assert prune_checkpoints(tmp_path, keep=1) == ["step_000001", "step_000002"]


def test_resumed_tensorboard_shows_each_step_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ccpo_algos.config import preset
    from ccpo_algos.runlog import RunLogger

    cfg = preset(None, tensorboard=True)
    first = RunLogger(tmp_path, cfg, resume_step=0)
    for s in (1, 2, 3):
        first.log(s, {"x": float(s)})
    first.close()  # killed after step 3's row; the checkpoint is step 2
    again = RunLogger(tmp_path, cfg, resume_step=2, resumed=True)
    again.log(3, {"x": 30.0})
    again.close()
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    assert [(e.step, e.value) for e in ea.Scalars("x")] == [(1, 1.0), (2, 2.0), (3, 30.0)]
