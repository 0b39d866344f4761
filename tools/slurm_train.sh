#!/usr/bin/env bash
# Training on a Slurm cluster, OpenMMLab style (installed: fixnorm-slurm-train), one task per GPU:
#   [GPUS=8] [GPUS_PER_NODE=8] tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args ...]
# SRUN_ARGS passes extra options to srun (e.g. SRUN_ARGS="--quotatype=auto").
# On CPU-only nodes set GPUS_PER_NODE=0 and NTASKS_PER_NODE: no GPU is requested,
# and the tasks use gloo (see fixnorm_mm/engine/launch.py).
# Every task runs `python -u -m fixnorm_mm.tools.train` (fixnorm_mm/tools/dist.py).
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -d "$ROOT/fixnorm_mm" ]; then export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"; fi
exec "${PYTHON:-python}" -m fixnorm_mm.tools.dist slurm-train "$@"
