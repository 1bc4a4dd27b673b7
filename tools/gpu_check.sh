#!/usr/bin/env bash
# On a CUDA machine with PyTorch (CUDA build), CMake and pybind11 installed: builds glmimage
# against that LibTorch and runs tools/gpu_check.py --check REF_DIR. DEPS (optional) is a
# prefix holding headers/libraries the machine lacks (nlohmann_json, PCRE2).
#   tools/gpu_check.sh REF_DIR [DEPS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REF="$1"
DEPS="${2:-}"
TORCH_CMAKE="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
PREFIX="$TORCH_CMAKE"
if [ -n "$DEPS" ]; then
  DEPS="$(cd "$DEPS" && pwd)"
  PREFIX="$TORCH_CMAKE;$DEPS"
  export PKG_CONFIG_PATH="$DEPS/lib/pkgconfig:${PKG_CONFIG_PATH:-}"
  export LD_LIBRARY_PATH="$DEPS/lib:${LD_LIBRARY_PATH:-}"
fi
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
  -DGLMI_BUILD_TESTS=OFF -DGLMI_BUILD_PYTHON=ON -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
time cmake --build build-gpu -j"$(nproc)" --target glmimage_python
python3 tools/gpu_check.py --check "$REF"
