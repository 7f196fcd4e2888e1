#!/usr/bin/env bash
# Set up (idempotent, see scripts/setup.sh) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${CCPO_VENV:-.venv}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
set +e
# --durations: the slowest tests, printed last, so a suite creeping past CI's 30-minute target shows where
"$VENV/bin/python" -m pytest -q --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then  # pytest: no tests collected
    echo "no tests collected"
    rc=0
fi
exit "$rc"
