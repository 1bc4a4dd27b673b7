#!/usr/bin/env bash
# LeakSanitizer over the library without an instrumented build: LSan's runtime is preloaded into
# the C++ session and concurrency tests (test_load_tiny: about 24 mixed text-to-image,
# image-to-image and batched generations, sequential and from 4 threads) and reports at exit every
# allocation never freed. Fails on any report with a glmimage frame in its allocation stack.
# (The Python soak cannot be checked this way: LSan considers at most 5000 leaks, and the Python
# interpreter's own never-freed objects alone exceed that.) About 5 minutes: full stack unwinding.
#   tools/lsan_check.sh [BUILD_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build}"
LSAN="$(gcc -print-file-name=liblsan.so)"
[ -f "$LSAN" ] || { echo "lsan_check: no liblsan.so (gcc's LeakSanitizer runtime)" >&2; exit 2; }
log="$(mktemp "${TMPDIR:-/tmp}/glmi_lsan.XXXXXX")"
LD_PRELOAD="$LSAN" LSAN_OPTIONS=exitcode=0:fast_unwind_on_malloc=0:malloc_context_size=40 \
  "$BUILD/tests/test_load_tiny" --gtest_filter='Concurrency*:Session*' >/dev/null 2>"$log"
status=0
python3 - "$log" <<'PY' || status=$?
import re, sys
text = open(sys.argv[1]).read()
reports = [b for b in re.split(r"\n(?=(?:Direct|Indirect) leak of)", text) if " leak of " in b]
ours = [b for b in reports if "glmimage" in b]
print(f"lsan_check: {len(reports)} leak reports at exit, {len(ours)} with a glmimage frame")
for b in ours[:5]:
    print(b[:3000])
sys.exit(1 if ours else 0)
PY
rm -f "$log"
exit $status
