#!/usr/bin/env bash
# Set up (first time) and run the embedded default job: Reuters R8, local Ray, CPU, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
. .venv/bin/activate
batchlabel run jobs/reuters_embed.yaml "$@"
