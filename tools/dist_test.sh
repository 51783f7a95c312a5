#!/usr/bin/env bash
# Distributed testing with torchrun (the dist_test.sh interface of MMDetection and MMSegmentation).
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Works without CUDA too: one CPU process per "GPU", gloo backend.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py options]" >&2
  exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
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
    "$(dirname "$0")/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
