#!/usr/bin/env bash
# The soak (tools/soak.py) under LeakSanitizer without an instrumented build: LSan's runtime is
# preloaded and intercepts every allocation of the process. At exit it reports everything never
# freed; Python and LibTorch keep their static-initialization allocations by design, so only the
# reports with a glmimage frame in their allocation stack count. Exits 1 if there is one.
#   tools/soak_lsan.sh [COUNT]     # default 24 generations (about 80 s)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LSAN="$(gcc -print-file-name=liblsan.so)"
[ -f "$LSAN" ] || { echo "soak_lsan: no liblsan.so (gcc's LeakSanitizer runtime)" >&2; exit 2; }
log="$(mktemp "${TMPDIR:-/tmp}/glmi_lsan.XXXXXX")"
LD_PRELOAD="$LSAN" LSAN_OPTIONS=exitcode=0:fast_unwind_on_malloc=0:malloc_context_size=40 \
  python3 "$ROOT/tools/soak.py" --count "${1:-24}" 2>"$log"
status=0
python3 - "$log" <<'PY' || status=$?
import re, sys
text = open(sys.argv[1]).read()
reports = [b for b in re.split(r"\n(?=(?:Direct|Indirect) leak of)", text) if " leak of " in b]
ours = [b for b in reports if "glmimage" in b]
print(f"soak_lsan: {len(reports)} leak reports at exit, {len(ours)} with a glmimage frame")
for b in ours[:5]:
    print(b[:3000])
sys.exit(1 if ours else 0)
PY
rm -f "$log"
exit $status
