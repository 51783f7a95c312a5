#!/usr/bin/env bash
# Distributed training on one or more machines with torchrun (the dist_train.sh interface of
# MMDetection and MMSegmentation; detection and segmentation configs alike).
#   bash tools/dist_train.sh CONFIG GPUS [train.py args...]
# Works without CUDA too: one CPU process per "GPU", gloo backend.
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as in MMDetection.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash tools/dist_train.sh CONFIG GPUS [tools/train.py options]" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PY=${PYTHON:-python}
# LOG_DIR=DIR keeps each process's own stdout/stderr under DIR (torchrun --log-dir), besides the
# console: where to look when one rank fails and torchrun only reports its exit signal.
LOG_ARGS=()
if [ -n "${LOG_DIR:-}" ]; then LOG_ARGS=(--log-dir "$LOG_DIR" --tee 3); fi

PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PY" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    ${LOG_ARGS[@]+"${LOG_ARGS[@]}"} \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
