#!/usr/bin/env bash
# Download, on a machine that reaches PyPI, the wheels tools/gpu_check.sh installs on a GPU
# machine with no package index: gsplat and worldgen's pure-Python dependencies that a CUDA
# PyTorch image usually lacks (torch, numpy, numba, scipy, scikit-image, ... are expected there).
#
#   bash tools/gpu_wheels.sh [DIR] [PYTHON_VERSION]     (default: .whl 3.12)
set -euo pipefail
dir=${1:-.whl}
pyver=${2:-3.12}
mkdir -p "$dir"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$dir" \
  gsplat==1.5.3 plyfile trimesh pygltflib dataclasses-json marshmallow deprecated \
  jsonschema jsonschema-specifications referencing rpds-py pypng
du -sh "$dir"
