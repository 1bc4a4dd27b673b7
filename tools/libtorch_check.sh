#!/usr/bin/env bash
# Builds and tests glmimage against another LibTorch release: torch==VERSION from PyPI in a venv of
# its own, in a copy of the working tree (tracked and untracked files; the Python modules are built
# into the source folders, so the main build's stay as they are). PyPI's Linux wheels are CUDA
# builds, whose CMake config wants a CUDA toolkit: tools/cuda_cmake_args.py finds one (no GPU is
# needed). Runs ctest, then the Python suite: with the pinned reference where that release can run
# it (transformers 5.24 and diffusers 0.39 ask for torch >= 2.6), otherwise the tests not marked
# `parity` (those that still build their inputs through the reference are counted, not failed).
# Exits non-zero on a failing test.
#   tools/libtorch_check.sh VERSION [WORK_DIR]     (default /tmp/glmi_torch-VERSION; made again)
# Needs about 6 GB in WORK_DIR (torch and NVIDIA's libraries) and 10-20 minutes on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 1 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
VERSION="$1"
WORK="${2:-/tmp/glmi_torch-$VERSION}"
SRC="$WORK/src"
rm -rf "$WORK"
mkdir -p "$SRC"
(cd "$ROOT" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$SRC"

echo "libtorch_check: torch==$VERSION into $WORK/venv" >&2
python3 -m venv "$WORK/venv"
export PATH="$WORK/venv/bin:$PATH"
pip_install() { python3 -m pip install -q --disable-pip-version-check "$@" >>"$WORK/pip.log" 2>&1; }
pip_install "torch==$VERSION"
# The rest of requirements.txt without its torch pin, then the reference where it runs.
pip_install $(grep -vE '^(#|torch==|$)' "$SRC/requirements.txt")
with_reference=0
if python3 -c 'import sys, torch; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 6))'; then
  pip_install -r "$SRC/requirements-reference.txt"
  with_reference=1
fi
python3 -c 'import torch; print("libtorch_check: torch", torch.__version__, "CUDA", torch.version.cuda)' >&2

mapfile -t CUDA_ARGS < <(python3 "$SRC/tools/cuda_cmake_args.py" "$WORK/cuda-shim")
LAUNCHER=()
command -v ccache >/dev/null 2>&1 && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
  -DPython_EXECUTABLE="$(command -v python3)" -DGLMI_BUILD_PYTHON=ON "${LAUNCHER[@]}" "${CUDA_ARGS[@]}" \
  >"$WORK/configure.log" 2>&1 || { tail -30 "$WORK/configure.log" >&2; exit 1; }
echo "libtorch_check: building in $SRC/build (log $WORK/build.log)" >&2
cmake --build "$SRC/build" -j"$(nproc)" >"$WORK/build.log" 2>&1 || { grep -E "error" "$WORK/build.log" | head -20 >&2; exit 1; }
warnings="$(grep -c "warning:" "$WORK/build.log" || true)"
echo "libtorch_check: built, $warnings compiler warnings" >&2

status=0
ctest --test-dir "$SRC/build" -j2 --output-on-failure >"$WORK/ctest.log" 2>&1 || status=1
grep -E "tests passed|tests failed" "$WORK/ctest.log" >&2 || true
marker=()
[ "$with_reference" = 1 ] || marker=(-m "not parity")
pytest_status=0
(cd "$SRC" && COLUMNS=1000 GLMI_BUILD_DIR="$SRC/build" GLMI_PARITY_LOG="$WORK/parity.jsonl" \
  python3 -m pytest -q -rfEs -p no:cacheprovider "${marker[@]}" tests/python) >"$WORK/pytest.log" 2>&1 ||
  pytest_status=1
tail -1 "$WORK/pytest.log" >&2
# Without the reference, tests that build their inputs through it fail to import it; any other
# failure counts.
no_reference="ModuleNotFoundError: No module named '(transformers|diffusers)"
failures="$(grep -E "^(FAILED|ERROR) " "$WORK/pytest.log" || true)"
if [ "$with_reference" = 0 ]; then
  echo "libtorch_check: $(printf '%s\n' "$failures" | grep -cE "$no_reference" || true) tests need the reference" >&2
  failures="$(printf '%s\n' "$failures" | grep -vE "$no_reference" || true)"
fi
if [ "$pytest_status" != 0 ] && ! grep -qE "^(FAILED|ERROR) " "$WORK/pytest.log"; then
  failures="pytest exited with an error and listed no failing test"
fi
if [ -n "$failures" ]; then
  printf '%s\n' "$failures" >&2
  status=1
fi
if [ "$with_reference" = 1 ]; then
  python3 "$SRC/tools/parity_report.py" --log "$WORK/parity.jsonl" >"$WORK/parity.log" 2>&1 || status=1
  grep '"ok": false' "$WORK/parity.log" >&2 || true
  tail -1 "$WORK/parity.log" >&2
else
  echo "libtorch_check: torch $VERSION cannot run the pinned reference: parity tests left out" >&2
fi
echo "libtorch_check: logs in $WORK" >&2
exit $status
