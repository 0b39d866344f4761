#!/usr/bin/env bash
# Set up everything fixnorm_mm needs on a fresh CPU machine (Python 3.11), into the
# active Python (use a venv if you want isolation).
#
# mmcv 2.1.0 has no wheel for torch 2.14, so it is built from source with its ops
# (mmdet and mmseg import mmcv.ops). Its setup.py asks for -std=c++17 while torch
# 2.14's headers need C++20, so the sdist is patched before building. The built
# wheel is cached in $FIXNORM_WHEEL_CACHE (default ~/.cache/fixnorm_mm/wheels):
# the first build takes ~15 minutes on 2 cores, a later install takes seconds.
set -euo pipefail
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${FIXNORM_WHEEL_CACHE:-$HOME/.cache/fixnorm_mm/wheels}
mkdir -p "$CACHE"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

# 1. torch/torchvision from this machine's disk, build tooling mmcv needs.
pip_install 'torch==2.14.1' 'torchvision==0.29.1' 'numpy<2' 'setuptools>=77,<81' wheel ninja

# 2. mmcv 2.1.0 with ops, built once and cached.
MMCV_WHEEL=$(ls "$CACHE"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$MMCV_WHEEL" ]; then
  BUILD=$(mktemp -d)
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
      'mmcv==2.1.0' -d "$BUILD"
  tar -xzf "$BUILD"/mmcv-2.1.0.tar.gz -C "$BUILD"
  sed -i 's/-std=c++17/-std=c++20/g' "$BUILD"/mmcv-2.1.0/setup.py
  pip_install 'mmengine==0.10.7'   # mmcv's setup imports nothing of it, its wheel requires it
  (cd "$BUILD"/mmcv-2.1.0 && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
      "$PY" -m pip wheel --disable-pip-version-check -q --no-build-isolation --no-deps . -w "$CACHE")
  rm -rf "$BUILD"
  MMCV_WHEEL=$(ls "$CACHE"/mmcv-2.1.0-*.whl | head -n1)
fi
pip_install "$MMCV_WHEEL"

# 3. The OpenMMLab task packages and the rest, then this package (editable).
pip_install -r "$HERE/requirements.txt"
# openmim (`mim train fixnorm_mm ...`, tested) without its dependencies: through
# opendatalab/openxlab they would downgrade numpy (to 2.x), setuptools and requests.
# What mim's train/test/search need (click, requests, rich, tabulate, pandas,
# model-index) comes from requirements.txt and the stack.
pip_install --no-deps 'openmim==0.3.9'
# the distribution was called openmmlab-fixnorm before it took the import name
"$PY" -m pip uninstall --disable-pip-version-check -q -y openmmlab-fixnorm 2>/dev/null || true
pip_install --no-build-isolation --no-deps -e "$HERE"
"$PY" -c "import mmcv.ops, mmdet, mmseg, mmpretrain, fixnorm_mm; print('fixnorm_mm environment ready: mmcv', mmcv.__version__)"
