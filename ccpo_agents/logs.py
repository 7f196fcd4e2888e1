"""Quiet logs by default: vLLM's and transformers' INFO lines (vLLM's start-up warnings too) and loading bars off,
other Python warnings once each (third-party deprecations not at all).

``ccpo bench`` / ``ccpo train`` call :func:`quiet_logs` unless ``--verbose`` is given. Values the user already set
in the environment win. Call it before vLLM is imported (its logger reads the environment at import).

vLLM's engine runs in processes it *spawns*: they inherit the environment, not this process's logging set-up, and
they import vLLM modules that warn before vLLM configures its loggers there (on CPU: "Triton is installed, but
doesn't include CPU backend", twice). A spawned process imports the parent's main module first (the ``ccpo``
script imports ``ccpo_algos.cli``, which imports this module), so importing this module applies the quiet setting in
such a process too (:func:`quiet_spawned_process`).
"""

from __future__ import annotations

import logging
import os
import warnings


def quiet_logs(verbose: bool = False) -> None:
    """Keep warnings a user can act on (once each) and errors; hide INFO logs and model-loading progress bars."""
    if verbose:
        return
    os.environ.setdefault("CCPO_QUIET", "1")  # engines skip their weight-loading bars
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM's CPU warnings are start-up notes, not actions
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # PyTorch's C++ warnings in the engine's processes (on CPU: "NUMA binding: Using MEMBIND policy ..."): notes
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    # third-party deprecations in the engine's spawned processes too (they inherit the environment, not filters)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
    warnings.filterwarnings("once")
    for category in (DeprecationWarning, FutureWarning):  # third-party deprecations: nothing for a user to do
        warnings.filterwarnings("ignore", category=category)
    for name in ("transformers", "datasets", "torch.distributed", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # vLLM configures its loggers only when an engine starts; a module that warns at import (e.g. "Triton is
    # installed, but doesn't include CPU backend") would reach Python's last-resort handler before that
    logging.getLogger("vllm").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def quiet_spawned_process() -> None:
    """In a process started with ``CCPO_QUIET=1`` (a vLLM engine process of a quiet run): vLLM's warnings off before
    any vLLM module is imported; its errors still show."""
    if os.environ.get("CCPO_QUIET") == "1":
        logging.getLogger("vllm").setLevel(logging.ERROR)


quiet_spawned_process()
