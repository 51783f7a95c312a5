#!/usr/bin/env bash
# Distributed testing with torchrun (the dist_test.sh interface of MMDetection and MMSegmentation).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py options]
# Works without CUDA too: one CPU process per "GPU", gloo backend. The environment variables of
# dist_train.sh (NNODES, NODE_RANK, MASTER_ADDR, PORT, LOG_DIR, PYTHON) apply: it does the launch.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py options]" >&2
  exit 2
fi
DIST_TOOL=test.py exec bash "$(dirname "$0")/dist_train.sh" "$1" "$3" "$2" "${@:4}"
