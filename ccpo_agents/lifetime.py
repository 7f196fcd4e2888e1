"""vLLM's engine processes die with the ccpo process that started them, however it dies.

vLLM runs its engine in child processes (``EngineCore``, and a ``Worker`` under it). When the ccpo process is
SIGKILLed (the OOM killer, ``kill -9``, a lost terminal's process group spared), those children are re-parented to
init and keep running; on CPU they spin on every core. Measured: three orphaned engines of SIGKILLed parents were
still burning CPU minutes later.

Installed into every vLLM process through the ``vllm.general_plugins`` entry point (``pyproject.toml``). It acts
only in processes started under a ccpo process that set ``CCPO_OWNER_PID`` (``VLLMPolicy`` and ``VLLMServer`` do,
to their own pid) and never in that owner itself: there it asks the kernel to SIGKILL the process when its parent
dies (Linux ``PR_SET_PDEATHSIG``), so a dead ccpo takes its EngineCore with it and the EngineCore its Worker.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "CCPO_OWNER_PID"
_PR_SET_PDEATHSIG = 1


def mark_owner(env: dict[str, str] | None = None) -> None:
    """Declare this process the owner of the vLLM processes it is about to start (``env``: a child's env)."""
    (os.environ if env is None else env)[ENV] = str(os.getpid())


def tie_to_parent() -> bool:
    """In a process started (directly or not) by a ccpo owner: die when the parent dies. Returns whether it did."""
    owner = os.environ.get(ENV)
    if not owner or owner == str(os.getpid()) or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return False
    if os.getppid() == 1 and owner != "1":  # the parent died before the request: nobody will stop this process
        os._exit(1)
    return True
