"""Quiet logs by default: vLLM's and transformers' INFO lines (vLLM's start-up warnings too) and loading bars off,
other Python warnings once each (third-party deprecations not at all).

``ccpo bench`` / ``ccpo train`` call :func:`quiet_logs` unless ``--verbose`` is given. Values the user already set
in the environment win. Call it before vLLM is imported (its logger reads the environment at import).
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
