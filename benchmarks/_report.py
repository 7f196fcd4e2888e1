"""Shared output of the benchmark scripts: print a markdown report and optionally write it to a file."""

from __future__ import annotations

import os


def emit(text: str, out: str | None) -> str:
    """Print ``text``; also write it to ``out`` (parent folders created) when given. Returns ``text``."""
    print(text)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(text)
    return text
