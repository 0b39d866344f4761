#!/usr/bin/env bash
# FixNorm's cost on one CUDA GPU, in one prepared run (about 3 minutes; hard
# limit 5): the rescale against foreach/fused SGD-Nesterov, full ResNet50-D and
# RetinaNet iterations FixNorm vs weight decay in fp32 and AMP fp16, the cost of
# check_finite_interval=1 against 'auto', and a check that skipped fp16 steps
# are not rescaled. Results: docs/results/gpu.md and docs/results/gpu.json.
# Without CUDA it prints "skipped" and exits 0. See benchmarks/gpu.py.
#
#   bash benchmarks/gpu.sh [--out PREFIX] [--skip retinanet ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "benchmarks/gpu.sh: no CUDA device (or no torch) here: skipped, nothing written"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout --signal=INT 300 python benchmarks/gpu.py --device cuda "$@"
