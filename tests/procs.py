"""Process-tree helpers for the tests that check every process ccpo starts stops with it (Linux /proc)."""

import os
from pathlib import Path


def descendants(pid):
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for t in os.listdir(f"/proc/{p}/task")
                    for k in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            kids = []
        todo += [k for k in kids if k not in out]
        out.update(kids)
    return out


def alive(pid):
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
