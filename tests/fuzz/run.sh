#!/usr/bin/env bash
# Builds the fuzz targets (tests/fuzz/build.sh) and runs each for SECONDS on its committed seed
# corpus (tests/fuzz/corpus/<target>/; new inputs go to a scratch copy, the corpus stays as it
# is). Prints one line per target with its executions; exits non-zero on the first crash, leak
# or sanitizer report (the reproducer is left in the scratch directory it names).
#   tests/fuzz/run.sh 20                    # CI: each target for 20 s
#   tests/fuzz/run.sh 600                   # the long run: 10 minutes each
#   tests/fuzz/run.sh 60 fuzz_image         # one target
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_EACH="${1:-20}"
shift || true
OUT="${FUZZ_BUILD:-$ROOT/build/fuzz}"
[ -n "${FUZZ_NO_BUILD:-}" ] || bash "$ROOT/tests/fuzz/build.sh" "$OUT" >/dev/null
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(cd "$ROOT/tests/fuzz" && ls fuzz_*.cpp | sed 's/\.cpp$//'))
status=0
for t in "${targets[@]}"; do
  work="$(mktemp -d "${TMPDIR:-/tmp}/glmi_fuzz_$t.XXXXXX")"
  cp -r "$ROOT/tests/fuzz/corpus/$t/." "$work/"
  log="$work.log"
  # Leak detection is on for every target, fuzz_image included: when one of stb's checks throws out
  # of the decoder, read_image frees what stb held (StbAllocations in cli/png_writer.cpp).
  if (cd "$work" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$OUT/$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 "$work" >"$log" 2>&1); then
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    echo "fuzz $t: ${SECONDS_EACH}s, $execs executions, no crash"
    rm -rf "$work" "$log"
  else
    echo "fuzz $t: FAILED; log $log, inputs in $work" >&2
    grep -m5 -E "ERROR|runtime error|SUMMARY|Test unit written" "$log" >&2 || tail -20 "$log" >&2
    status=1
  fi
done
exit $status
