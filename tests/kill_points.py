"""Run ``ccpo train`` and SIGKILL its whole process group (engine included) at the first moment named by argv[1].

Used by tests/test_trainer.py to kill real runs at the moments a crash is hardest on the run's files:

- ``after-metrics``: a metrics row is written, its checkpoint is not;
- ``checkpoint-write``: every file of the new checkpoint is written into its temporary folder, not yet renamed;
- ``latest-pointer``: the new checkpoint folder is in place, the ``latest`` pointer still names the previous one;
- ``in-step=SECONDS``: SECONDS after the first checkpoint is complete, wherever the next step then is (rollout,
  update or sync). The clock starts inside the run, so how fast the machine is cannot carry the kill past the end.

The kill is a real SIGKILL of the process group, as a machine losing power or the OOM killer would deliver it;
nothing is faked except the moment, which a wrapper around the named function picks.

    python tests/kill_points.py checkpoint-write --resume runs/run
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _die() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _arm(point: str) -> None:
    from ccpo_algos import checkpoint, trainer

    if point.startswith("in-step="):
        delay = float(point.split("=", 1)[1])
        real_save = trainer.save_checkpoint

        def save_then_arm(*a, **k):
            trainer.save_checkpoint = real_save  # only the first checkpoint arms the timer
            out = real_save(*a, **k)
            threading.Timer(delay, _die).start()
            return out
        trainer.save_checkpoint = save_then_arm
    elif point == "after-metrics":  # the trainer calls save_checkpoint right after the step's metrics row
        trainer.save_checkpoint = lambda *a, **k: _die()
    elif point == "checkpoint-write":
        real = checkpoint._fsync_tree

        def fsync_then_die(root):
            real(root)
            _die()
        checkpoint._fsync_tree = fsync_then_die
    elif point == "latest-pointer":
        real_write = checkpoint.atomic_write_text

        def write(path, text):
            if path.name == "latest":
                _die()
            real_write(path, text)
        checkpoint.atomic_write_text = write
    else:
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    _arm(sys.argv[1])
    from ccpo_algos.cli import main

    sys.argv = ["ccpo", "train"] + sys.argv[2:]
    main()
