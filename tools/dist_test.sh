#!/usr/bin/env bash
# Distributed evaluation with torchrun, OpenMMLab style (installed: fixnorm-dist-test):
#   tools/dist_test.sh CONFIG CHECKPOINT NPROC_PER_NODE [test.py args ...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Every process runs `python -m fixnorm_mm.tools.test` (fixnorm_mm/tools/dist.py).
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -d "$ROOT/fixnorm_mm" ]; then export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"; fi
exec "${PYTHON:-python}" -m fixnorm_mm.tools.dist test "$@"
