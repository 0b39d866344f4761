#!/usr/bin/env bash
# Distributed training with torchrun, OpenMMLab style (installed: fixnorm-dist-train):
#   tools/dist_train.sh CONFIG NPROC_PER_NODE [train.py args ...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Without a GPU the processes use gloo (see fixnorm_mm/engine/launch.py).
# Every process runs `python -m fixnorm_mm.tools.train` (fixnorm_mm/tools/dist.py).
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# in a source checkout, its fixnorm_mm comes first (as for tools/train.py with PYTHONPATH)
if [ -d "$ROOT/fixnorm_mm" ]; then export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"; fi
exec "${PYTHON:-python}" -m fixnorm_mm.tools.dist train "$@"
