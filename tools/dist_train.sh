#!/usr/bin/env bash
# Distributed training with torchrun (the dist_train.sh interface of MMDetection and MMSegmentation;
# detection and segmentation configs alike). dist_test.sh runs this script with DIST_TOOL=test.py.
#   bash tools/dist_train.sh CONFIG GPUS [tools/train.py options]
# Works without CUDA too: one CPU process per "GPU", gloo backend.
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as in MMDetection.
# LOG_DIR=DIR keeps each process's own stdout/stderr under DIR (torchrun --log-dir), besides the
# console: where to look when one rank fails and torchrun only reports its exit signal.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash tools/dist_train.sh CONFIG GPUS [tools/train.py options]" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
LOG_ARGS=()
if [ -n "${LOG_DIR:-}" ]; then LOG_ARGS=(--log-dir "$LOG_DIR" --tee 3); fi

PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$GPUS" \
    --master_port="${PORT:-29500}" \
    ${LOG_ARGS[@]+"${LOG_ARGS[@]}"} \
    "$(dirname "$0")/${DIST_TOOL:-train.py}" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
