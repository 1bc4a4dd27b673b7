#!/usr/bin/env bash
# Compiles the CUDA-only code (the CUDA graph capture of the AR decode step and the fused decoder
# kernels' C++ side, built where LibTorch has CUDA) against this LibTorch's headers plus the CUDA
# runtime headers from PyPI's NVIDIA wheels, so a CPU-only machine catches what would break the
# GPU build; and the kernels themselves (src/kernels/cuda/*.cu) with nvcc for sm_90, where an nvcc
# is found (PATH, CUDA_HOME, /usr/local/cuda). Nothing is linked or run (that needs a GPU:
# tools/gpu_bench.sh).
#   tools/check_cuda_compile.sh [CACHE_DIR]   (default build/cuda_headers)
# GLMI_CXX_STANDARD: the C++ standard of the build (CMakeLists.txt reads it from LibTorch's ATen.h;
# its ctest passes it), default 17.
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
for src in $(grep -rlE "GLMI_WITH_CUDA_(GRAPHS|KERNELS)" "$ROOT/src" --include=*.cpp); do
  if ${CXX:-c++} -std=c++"${GLMI_CXX_STANDARD:-17}" -fsyntax-only -Wall -Wextra -Werror -DGLMI_WITH_CUDA_GRAPHS=1 \
      -DGLMI_WITH_CUDA_KERNELS=1 \
      -D_GLIBCXX_USE_CXX11_ABI="$ABI" -I"$ROOT/include" -I"$ROOT/src" -I"$CACHE/stub" \
      -isystem "$TORCH_INC" -isystem "$TORCH_INC/torch/csrc/api/include" \
      -isystem "$N/cuda_runtime/include" -isystem "$N/cuda_nvcc/include" -isystem "$N/cuda_cccl/include" "$src"; then
    echo "ok: ${src#"$ROOT"/} compiles with its CUDA side on"
  else
    echo "FAILED: ${src#"$ROOT"/}"; status=1
  fi
done
NVCC="$(command -v nvcc || true)"
for c in "${CUDA_HOME:-}/bin/nvcc" /usr/local/cuda/bin/nvcc; do
  [ -z "$NVCC" ] && [ -x "$c" ] && NVCC="$c"
done
if [ -n "$NVCC" ]; then
  for cu in "$ROOT"/src/kernels/cuda/*.cu; do
    if "$NVCC" -std=c++17 -arch=sm_90 -I"$ROOT/src" -Xcompiler -Wall,-Wextra,-Werror -c "$cu" -o /dev/null; then
      echo "ok: ${cu#"$ROOT"/} compiles with $NVCC (sm_90)"
    else
      echo "FAILED: ${cu#"$ROOT"/} ($NVCC)"; status=1
    fi
  done
else
  echo "skipped: no nvcc here, so src/kernels/cuda/*.cu is compiled only where LibTorch has CUDA"
fi
exit $status
