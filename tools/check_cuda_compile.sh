#!/usr/bin/env bash
# Compiles the CUDA-only code (the CUDA graph capture of the AR decode step, built where LibTorch
# has CUDA) against this LibTorch's headers plus the CUDA runtime headers from PyPI's NVIDIA
# wheels, so a CPU-only machine catches what would break the GPU build. Syntax and types only:
# nothing is linked or run (that needs a GPU: tools/gpu_bench.sh).
#   tools/check_cuda_compile.sh [CACHE_DIR]   (default build/cuda_headers)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${1:-$ROOT/build/cuda_headers}"
PY="${PYTHON:-python3}"
TORCH_INC="$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "include"))')"
mkdir -p "$CACHE"
if [ ! -f "$CACHE/.done" ]; then
  # cudart's headers, nvcc's crt/ headers they include, and CCCL's nv/target.
  "$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$CACHE/wheels" \
    nvidia-cuda-runtime-cu12 nvidia-cuda-nvcc-cu12 nvidia-cuda-cccl-cu12
  for w in "$CACHE"/wheels/*.whl; do "$PY" -m zipfile -e "$w" "$CACHE/x"; done
  # Generated only in CUDA builds of LibTorch; the CPU wheel's headers lack it.
  mkdir -p "$CACHE/stub/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' >"$CACHE/stub/c10/cuda/impl/cuda_cmake_macros.h"
  touch "$CACHE/.done"
fi
N="$CACHE/x/nvidia"
ABI="$("$PY" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
status=0
for src in $(grep -rl "GLMI_WITH_CUDA_GRAPHS" "$ROOT/src" --include=*.cpp); do
  if ${CXX:-c++} -std=c++17 -fsyntax-only -Wall -Wextra -Werror -DGLMI_WITH_CUDA_GRAPHS=1 \
      -D_GLIBCXX_USE_CXX11_ABI="$ABI" -I"$ROOT/include" -I"$ROOT/src" -I"$CACHE/stub" \
      -isystem "$TORCH_INC" -isystem "$TORCH_INC/torch/csrc/api/include" \
      -isystem "$N/cuda_runtime/include" -isystem "$N/cuda_nvcc/include" -isystem "$N/cuda_cccl/include" "$src"; then
    echo "ok: ${src#"$ROOT"/} compiles with CUDA graphs on"
  else
    echo "FAILED: ${src#"$ROOT"/}"; status=1
  fi
done
exit $status
