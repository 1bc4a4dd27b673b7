#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs every test: C++ (ctest: unit, sanitizer, model
# loading) and Python (pytest: reference checkpoints, manifests, parity), then prints the
# parity report.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
"$ROOT/scripts/setup.sh"

echo "== C++ tests (ctest)"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j2

echo "== fuzz targets (libFuzzer + ASan/UBSan), 20 s each on their corpus"
bash tests/fuzz/run.sh 20

echo "== Python tests (pytest)"
# The parity comparisons log here as they run, so the report below need not run them again.
case "$BUILD_DIR" in /*) GLMI_PARITY_LOG="$BUILD_DIR/parity.jsonl" ;; *) GLMI_PARITY_LOG="$ROOT/$BUILD_DIR/parity.jsonl" ;; esac
export GLMI_PARITY_LOG
rm -f "$GLMI_PARITY_LOG"
# -rs: each skip's reason in the log (the real-widths parity skips only where neither the disk nor memory
# has room for its checkpoint, and says what it found).
df -h "$ROOT" /dev/shm 2>/dev/null || true
python3 -m pytest -q -rs

echo "== parity report"
python3 tools/parity_report.py --log "$GLMI_PARITY_LOG"
