#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer over the whole library: the hand-written CPU
# kernels (gemv, the fused norms, rotary and modulations, the layout copies, the CUDA kernels'
# emulated launches), the models and the pipeline, where the `sanitize` ctest label covers only the
# torch-free IO layer and tokenizers. Builds the working tree (tracked and untracked files, not
# build outputs) in WORK_DIR with both sanitizers on our code (LibTorch stays uninstrumented), then
# runs the C++ unit and model tests and the Python suite with the sanitizers' runtimes preloaded.
# Fails on a failing test or any sanitizer report. About 22 minutes on 2 cores (build 10, tests 12).
#   tools/asan_check.sh [WORK_DIR]     (default /tmp/glmi_asan; removed and made again)
# Two Python tests measure what ASan itself changes, and are left out: the module's link order
# (libasan must come first) and the soak's memory slope (ASan holds freed memory in quarantine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-/tmp/glmi_asan}"
SRC="$WORK/src"
rm -rf "$WORK"
mkdir -p "$SRC"
# A copy, not the tree itself: the Python modules are built into the source folders.
(cd "$ROOT" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$SRC"

SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
PREFIX="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
PYBIND="$(python3 -c 'import pybind11; print(pybind11.get_cmake_dir())')"
cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$PREFIX;$PYBIND" \
  -DGLMI_BUILD_PYTHON=ON -DGLMI_BUILD_TESTING_EXT=ON -DGLMI_SANITIZE_TESTS=OFF -DCMAKE_CXX_FLAGS="$SAN" \
  -DCMAKE_EXE_LINKER_FLAGS="$SAN" -DCMAKE_SHARED_LINKER_FLAGS="$SAN" -DCMAKE_MODULE_LINKER_FLAGS="$SAN" \
  -DPython_EXECUTABLE="$(command -v python3)" >"$WORK/configure.log" 2>&1
echo "asan_check: building in $SRC/build (log $WORK/build.log)" >&2
cmake --build "$SRC/build" -j"$(nproc)" >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; exit 1; }

export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
# The executables link the runtimes themselves. test_cuda_compile compiles, it runs nothing.
ctest --test-dir "$SRC/build" -L "unit|model" -E test_cuda_compile --output-on-failure >"$WORK/ctest.log" 2>&1 ||
  status=1
grep -E "tests passed|tests failed" "$WORK/ctest.log" >&2 || true
# Python is not instrumented: the runtimes are preloaded before it loads our modules. Capture at
# the sys level only: a report ends the process, and an fd-level capture of stderr died with it
# (a UBSan report inside a test left only a cut-off line of dots in pytest.log).
(cd "$SRC" && LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
  python3 -m pytest -q -p no:cacheprovider --capture=sys tests/python \
  --deselect tests/python/test_import_order.py::test_libraries_carry_no_copy_of_the_cxx_runtime \
  --deselect tests/python/test_soak.py::test_memory_stays_flat_over_consecutive_generations) \
  >"$WORK/pytest.log" 2>&1 || status=1
tail -1 "$WORK/pytest.log" >&2
reports="$(cat "$WORK/ctest.log" "$WORK/pytest.log" | grep -cE "ERROR: AddressSanitizer|runtime error:" || true)"
echo "asan_check: $reports sanitizer reports; logs in $WORK" >&2
[ "$reports" -eq 0 ] || status=1
exit $status
