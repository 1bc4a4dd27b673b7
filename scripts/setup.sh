#!/usr/bin/env bash
# Installs what glmimage needs on a fresh Debian machine and builds it. Idempotent: a
# second run only rebuilds what changed.
#
#   scripts/setup.sh                 # everything: build deps, reference, C++ + Python module
#   scripts/setup.sh --no-reference  # without transformers/diffusers (enough for the demo)
#   scripts/setup.sh --no-reference --cli-only  # only what the demo runs: the library and the CLI
#
# Environment: BUILD_DIR (default build), GLMI_CMAKE_ARGS (extra CMake arguments).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
WITH_REFERENCE=1
TARGETS=()
for a in "$@"; do
  case "$a" in
    --no-reference) WITH_REFERENCE=0 ;;
    --cli-only) TARGETS=(--target glmimage_cli) ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# --- Debian packages ---------------------------------------------------------------------
DEB_PKGS=(build-essential libgtest-dev nlohmann-json3-dev libpcre2-dev libstb-dev libjpeg-dev ccache clang)
missing=()
for p in "${DEB_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ! command -v cmake >/dev/null 2>&1; then missing+=(cmake); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Python packages ---------------------------------------------------------------------
# torch first and alone, so no later resolution can pull a multi-GB CUDA build.
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  pip_install torch==2.13.0
fi
reqs=(-r requirements.txt)
[ "$WITH_REFERENCE" = 1 ] && reqs+=(-r requirements-reference.txt)
if ! "$PY" - "$WITH_REFERENCE" <<'PYEOF' 2>/dev/null
import sys, importlib.metadata as md
want = {"numpy": None, "pillow": None, "pytest": None, "safetensors": None, "tokenizers": None, "pybind11": None}
if sys.argv[1] == "1":
    want.update({"transformers": "5.24.0", "diffusers": "0.39.0"})
for name, ver in want.items():
    have = md.version(name)
    if ver and have != ver:
        sys.exit(1)
PYEOF
then
  pip_install "${reqs[@]}"
fi

# --- build ---------------------------------------------------------------------------------
TORCH_CMAKE="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
LAUNCHER=()
command -v ccache >/dev/null 2>&1 && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" \
  -DPython_EXECUTABLE="$(command -v "$PY")" -DGLMI_BUILD_PYTHON=ON "${LAUNCHER[@]}" ${GLMI_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" "${TARGETS[@]}"
echo "setup: built in $BUILD_DIR"
