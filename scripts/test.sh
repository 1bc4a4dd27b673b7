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
python3 -m pytest -q

echo "== parity report"
python3 tools/parity_report.py
