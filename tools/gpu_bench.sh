#!/usr/bin/env bash
# GLM-Image at the real size on one CUDA GPU, ours against the reference, in one prepared run on a
# bare GPU machine (the device tool's: no network, its own CUDA torch). Prints JSON lines; the last
# one ("bench": "gpu_summary") holds every figure.
#
#   here:   bash tools/gpu_bench_prepare.sh    # once: .whl/ (pinned reference wheels) and .gpu_deps/
#                                              # (nlohmann-json + PCRE2 headers/libs), both git-ignored
#   there:  bash tools/gpu_bench.sh            # carry .whl and .gpu_deps
#
# Stages, in this order (each skipped when its output is already there, so a second call on a warm
# machine goes on where the first stopped):
#   build      against that machine's torch; the real-size random checkpoint is written meanwhile,
#              in the background; if the build fails, it is made again without the fused CUDA
#              kernels (the "build" rows say which ran), so the other figures still come;
#   tiny       CUDA against CPU on the tiny checkpoint (fp32, the same prior tokens: images within
#              1 level), and the module's import probe;
#   fused      the fused kernels against the op sequences they replace, on the GPU
#              (tests/python/test_fused_kernels.py: bit for bit, each kernel and the whole AR decoder);
#              if the device's tests fail, every run below takes the op sequences (--unfused) and says
#              so; the CPU's own tests run after them, reported apart (fused_check_cpu);
#   resident   ours at SIZE x SIZE and STEPS steps, weights resident (the AR decode as a CUDA graph;
#              if the capture fails, the run says so and is made again with the eager decode);
#   profile    3 decoder steps and the VAE, then the AR stage at 256² with the static decode, under
#              torch.profiler: the ops by device time, then each product and attention shape's
#              TFLOP/s and GB/s against the card's measured rates, in $OUT/dit_profile.txt and
#              $OUT/ar_profile.txt;
#   unfused    ours resident, 2 steps, every fused kernel off: what they gain per AR token and per
#              DiT step;
#   cfg_apart  ours resident, decoder only, 4 steps, the CFG passes apart: what one joint forward gains;
#   ar_eager   ours resident, 2 steps, the eager AR decode: what the graph gains;
#   i2i        ours resident, 4 steps, image-to-image with one COND x COND condition image: its
#              vision encoding in the prefill, the condition cache, the joint CFG forward with it;
#   fbc        ours resident, decoder only, 4 steps with the First Block Cache at a threshold no
#              residual reaches: what a step costs whose passes run their first block alone;
#   staged     ours at SIZE and STEPS with staged weights (peak memory);
#   reference  diffusers 0.39 + transformers 5.24 on the same checkpoint and request
#              (SKIP_REFERENCE=1 leaves it out).
# The last two were measured already (2026-12-04), so they come last, where a call cut by its time
# limit loses them first. Each stage's seconds go in a "stage_s" row; the build's log in
# $OUT/build.log. The stages can be split over calls on one warm machine, e.g.
#   STAGES="build checkpoint tiny fused resident profile" ... then STAGES="unfused cfg_apart ar_eager i2i fbc staged reference"
# Environment: SIZE (1024), STEPS (50), LAYERS (real), CKPT (/tmp/glmi_real), QUANTIZE (none),
#              COND (SIZE, at least 512: the smallest condition image the model takes),
#              SKIP_REFERENCE=1, STAGES (all of the above, in that order), DEVICE (cuda),
#              THREADS (8), STAGE_TIMEOUT (300 s per run).
# A rehearsal of the whole flow on a CPU machine (the graph decode then fails and the eager one
# runs, as the fallback would on a GPU; the tiny check says there is no GPU):
#   DEVICE=cpu THREADS=2 LAYERS=1 SIZE=256 STEPS=2 bash tools/gpu_bench.sh
# The build stage configures build/ without the C++ tests (GLMI_BUILD_TESTS=OFF): in a working
# checkout, `cmake -S . -B build -DGLMI_BUILD_TESTS=ON` (or scripts/setup.sh) turns them back on.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SIZE="${SIZE:-1024}"
STEPS="${STEPS:-50}"
CKPT="${CKPT:-/tmp/glmi_real}"
QUANTIZE="${QUANTIZE:-none}"
DEVICE="${DEVICE:-cuda}"
THREADS="${THREADS:-8}"
STAGES="${STAGES:-build checkpoint tiny fused resident profile unfused cfg_apart ar_eager i2i fbc staged reference}"
STAGE_TIMEOUT="${STAGE_TIMEOUT:-300}"
RESULTS="${OUT:-/tmp}"
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_bench.jsonl"
: >"$LOG"
want() { [[ " $STAGES " == *" $1 "* ]]; }
stamp() { echo "== $(date +%T) $*" >&2; }
STAGE_START=0
UNFUSED_ALL=()  # (--unfused) once the fused stage finds a kernel that differs on the device
begin() { stamp "$@"; STAGE_START=$SECONDS; }
took() { echo "{\"bench\": \"stage_s\", \"$1\": $((SECONDS - ${2:-$STAGE_START}))}" | tee -a "$LOG"; }
# What the run ran on, first: a figure is only worth its machine.
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader 2>/dev/null ||
    echo "no nvidia-smi"; } | python3 -c 'import json, os, sys
print(json.dumps({"bench": "machine", "gpu": sys.stdin.read().strip(), "cores": os.cpu_count(), "stages": sys.argv[1]}))' \
  "$STAGES" | tee -a "$LOG"

# The pinned reference, carried as wheels (the machine's own transformers is another version).
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/glmi_site .whl/*.whl
  export PYTHONPATH="/tmp/glmi_site${PYTHONPATH:+:$PYTHONPATH}"
fi

# The checkpoint is written while the build compiles (one writer process per core: each makes
# about 200 MB/s, and its shards are independent); the stages that read it wait for it.
CKPT_PID=""
if want checkpoint && [ ! -f "$CKPT/model_index.json" ]; then
  stamp "checkpoint (in the background, log in $RESULTS/checkpoint.log)"
  rm -rf "$CKPT".tmp-*  # a writer killed with an earlier call leaves its temporary folder (35 GB)
  ( start=$SECONDS
    python3 tools/make_real_size_checkpoint.py --out "$CKPT" --jobs "$(nproc)" ${LAYERS:+--layers "$LAYERS"} \
      >"$RESULTS/checkpoint.log" 2>&1 && took checkpoint "$start" ) &
  CKPT_PID=$!
fi
checkpoint_ready() {
  [ -z "$CKPT_PID" ] && return 0
  if ! wait "$CKPT_PID"; then
    echo '{"bench": "checkpoint", "error": "the writer failed"}' | tee -a "$LOG"; tail -20 "$RESULTS/checkpoint.log" >&2
    exit 1
  fi
  CKPT_PID=""
}

if want build; then
  begin build
  TORCH_CMAKE="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  PREFIX="$TORCH_CMAKE"
  if [ -d .gpu_deps/usr ]; then
    PREFIX="$TORCH_CMAKE;$ROOT/.gpu_deps/usr"
    export LD_LIBRARY_PATH="$ROOT/.gpu_deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  fi
  PYBIND="$(python3 -c 'import pybind11; print(pybind11.get_cmake_dir())' 2>/dev/null || true)"
  [ -n "$PYBIND" ] && PREFIX="$PREFIX;$PYBIND"
  # A CUDA LibTorch's config must find the toolkit by its plain library names, which a toolkit
  # assembled from NVIDIA's pip wheels lacks (tools/cuda_cmake_args.py says why; empty for CPU torch).
  mapfile -t CUDA_ARGS < <(python3 tools/cuda_cmake_args.py build/cuda-plain-names)
  build_with() {  # build_with LOGFILE EXTRA_CMAKE_ARGS...
    local log="$1"
    shift
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" -DGLMI_BUILD_TESTS=OFF \
      -DGLMI_BUILD_CLI=OFF -DGLMI_BUILD_PYTHON=ON -DGLMI_BUILD_TESTING_EXT=ON \
      -DPython_EXECUTABLE="$(command -v python3)" "${CUDA_ARGS[@]}" "$@" >"$log" 2>&1 &&
      cmake --build build -j"$(nproc)" --target glmimage_python glmimage_testing >>"$log" 2>&1
  }
  build_failed() {  # build_failed LOGFILE: its first errors and its end, to stderr
    grep -E -m 20 "error|Error|ERROR" "$1" >&2; tail -15 "$1" >&2
  }
  if build_with "$RESULTS/build.log" -DGLMI_CUDA_KERNELS=ON; then
    kernels="$(grep -m 1 -E "glmimage: (fused CUDA kernels on|no CUDA compiler found)" "$RESULTS/build.log" || true)"
    python3 -c 'import json, sys; print(json.dumps({"bench": "build", "cuda_kernels": sys.argv[1] or "none: no CUDA LibTorch"}))' \
      "${kernels#-- }" | tee -a "$LOG"
  else
    # The fused CUDA kernels are the part of the build never yet compiled on that machine's
    # toolkit: without them every other figure still comes (LibTorch's op sequences run instead,
    # and the fused stage then compares those with themselves), so a failure there costs a
    # rebuild of two files, not the whole GPU call.
    echo '{"bench": "build", "error": "the build failed; again without the fused CUDA kernels; its log is build.log"}' |
      tee -a "$LOG"
    build_failed "$RESULTS/build.log"
    if build_with "$RESULTS/build_no_kernels.log" -DGLMI_CUDA_KERNELS=OFF; then
      echo '{"bench": "build", "cuda_kernels": "off: the build with them failed (build.log)"}' | tee -a "$LOG"
    else
      echo '{"bench": "build", "error": "the build without the fused CUDA kernels failed too; build_no_kernels.log"}' |
        tee -a "$LOG"
      build_failed "$RESULTS/build_no_kernels.log"
      exit 1
    fi
  fi
  took build
fi
[ -d .gpu_deps/usr ] && export LD_LIBRARY_PATH="$ROOT/.gpu_deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"

if want tiny; then
  begin tiny
  # The Python module once crashed there while the CLI ran: each import order in a fresh
  # interpreter, with the loader's bindings of the C++ stream symbols where one dies.
  if ! python3 tools/import_probe.py | tee -a "$LOG"; then
    # Where the module dies, the native stack (cuda-gdb debugs programs without GPU code too; the
    # machine has no gdb) into $OUT/crash_backtrace.txt.
    timeout 120 cuda-gdb -batch -ex run -ex bt -ex "info sharedlibrary" --args python3 -c "import sys
sys.path[:0] = ['python']
import glmimage
glmimage.Pipeline.from_pretrained('models/tiny')" >"$RESULTS/crash_backtrace.txt" 2>&1 || true
    grep -E "^#[0-9]+ " "$RESULTS/crash_backtrace.txt" | head -25 >&2 || true
    # A stopgap so that the figures still come: the system's libstdc++ first in every lookup.
    # Said in the log; the figures of such a run are not the product's as shipped.
    STDCXX="$(ldconfig -p | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')"
    if [ -n "$STDCXX" ] && LD_PRELOAD="$STDCXX" python3 -c "import sys
sys.path[:0] = ['python']
import glmimage
glmimage.Pipeline.from_pretrained('models/tiny')"; then
      export LD_PRELOAD="$STDCXX"
      echo "{\"bench\": \"stopgap\", \"LD_PRELOAD\": \"$STDCXX\"}" | tee -a "$LOG"
    fi
  fi
  timeout "$STAGE_TIMEOUT" python3 tools/gpu_bench_tiny.py --device "$DEVICE" | tee -a "$LOG" ||
    echo '{"bench": "tiny_cuda_vs_cpu", "error": "the check failed or did not finish"}' | tee -a "$LOG"
  took tiny
fi
if want fused; then
  begin "fused kernels against the op sequences"
  # Each comparison writes a JSON row (max abs diff, tolerance 0); the log gets their count, the
  # failed ones and the largest diff. Two runs of the file: the tests of the device's kernels
  # (parametrized by device: `-k` the device's type), which decide whether the runs below use them; then the
  # CPU's own (its loops with their probes against that machine's LibTorch and CPU: the only
  # AVX-512 CPU these tests may meet), reported apart: a CPU loop that differs there says nothing
  # of the device's kernels (and falls back to LibTorch's ops by itself where its probe fails).
  if python3 -c "import pytest" 2>/dev/null; then
    fused_check() {  # fused_check NAME PYTEST_K: runs the selection, logs its row; 0 if pytest passed
      local ok=true
      # The rows through the parity log, not the console's, where pytest's progress dots begin lines.
      : >"$RESULTS/$1_rows.jsonl"
      GLMI_PARITY_LOG="$RESULTS/$1_rows.jsonl" timeout "$STAGE_TIMEOUT" python3 -m pytest -q -s -p no:cacheprovider \
        tests/python/test_fused_kernels.py -k "$2" >"$RESULTS/$1.txt" 2>&1 || ok=false
      python3 -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bad = [r["name"] for r in rows if not r["ok"]]
print(json.dumps({"bench": sys.argv[3], "selection": sys.argv[4], "pytest_passed": sys.argv[2] == "true",
                  "comparisons": len(rows), "failed": bad,
                  "max_abs_diff": max([r["max_abs_diff"] for r in rows] or [None])}))' \
        "$RESULTS/$1_rows.jsonl" "$ok" "$1" "$2" | tee -a "$LOG"
      tail -5 "$RESULTS/$1.txt" >&2
      $ok
    }
    device_type="${DEVICE%%:*}"  # the tests' ids name the device type: cuda:1 -> cuda
    if ! fused_check fused_check "$device_type"; then
      # A kernel that differs from its op sequence there (or kills the process) would make every
      # figure below one of wrong code, or none at all: the runs below take the op sequences
      # instead, and say so. The fused_check rows and fused_check.txt say which kernel.
      UNFUSED_ALL=(--unfused)
      echo '{"bench": "fused_kernels", "state": "off in every run below: the device check failed"}' | tee -a "$LOG"
    fi
    fused_check fused_check_cpu "not $device_type" || true
  else
    # .whl carries pytest (tools/gpu_bench_prepare.sh); without it the tiny stage's CUDA-vs-CPU
    # images are the only check of the kernels on the device, and they stay on.
    echo '{"bench": "fused_check", "error": "pytest is not importable here: the kernels were not checked on the device"}' |
      tee -a "$LOG"
  fi
  took fused
fi
checkpoint_ready

# One run of ours (bench_real_size with the common arguments, then the given ones); its row goes in
# the log tagged TAG (its "residency" key, which names it in the summary). failed TAG logs the row
# of a run that did not finish.
real_size() {  # real_size TAG ARGS...
  local tag="$1"
  shift
  timeout "$STAGE_TIMEOUT" python3 bench/bench_real_size.py --out "$CKPT" --device "$DEVICE" --threads "$THREADS" \
    --quantize "$QUANTIZE" "${UNFUSED_ALL[@]}" "$@" | sed "s/\"residency\": \"[a-z]*\"/\"residency\": \"$tag\"/" | tee -a "$LOG"
}
failed() { echo "{\"bench\": \"real_size\", \"residency\": \"$1\", \"error\": \"the run failed\"}" | tee -a "$LOG"; }

# Ours in one residency (the AR decode as a CUDA graph; if the capture fails, again with the eager one).
ours_in() {  # ours_in RESIDENCY
  want "$1" || return 0
  begin "ours $1"
  local ours=(--size "$SIZE" --steps "$STEPS" --residency "$1" --image "/tmp/glmi_$1.png")
  real_size "$1" "${ours[@]}" --ar-decode graph ||
    { echo "{\"bench\": \"graph_failed\", \"residency\": \"$1\"}" | tee -a "$LOG"
      real_size "$1" "${ours[@]}" --ar-decode eager || failed "$1"; }
  took "$1"
}

ours_in resident
if want profile; then
  begin "ours resident, decoder only, 3 steps under torch.profiler; then the AR stage"
  real_size profiled --size "$SIZE" --steps 3 --residency resident --decoder-only --image /tmp/glmi_profile.png \
    --profile "$RESULTS/dit_profile.txt" || failed profiled
  head -25 "$RESULTS/dit_profile.txt" >&2 || true
  # Then how well each product and attention shape used the card (bench/profile_products.py).
  sed -n '/^== products and attention/,$p' "$RESULTS/dit_profile.txt" | head -14 >&2 || true
  # The AR decode's kernels one by one: the static step (what the graph replays), at 256².
  real_size profiled_ar --size 256 --steps 1 --residency resident --ar-decode static --image /tmp/glmi_profile_ar.png \
    --profile-ar "$RESULTS/ar_profile.txt" || failed profiled_ar
  head -25 "$RESULTS/ar_profile.txt" >&2 || true
  sed -n '/^== products and attention/,$p' "$RESULTS/ar_profile.txt" | head -14 >&2 || true
  took profile
fi

if want unfused && [ ${#UNFUSED_ALL[@]} -eq 0 ]; then
  begin "ours resident, every fused kernel off"
  # auto: the graph decode where the device captures graphs (the resident run's), else eager.
  real_size unfused --size "$SIZE" --steps 2 --residency resident --ar-decode auto --unfused \
    --image /tmp/glmi_unfused.png || failed unfused
  took unfused
fi

if want cfg_apart; then
  begin "ours resident, decoder only, CFG passes apart"
  real_size cfg_apart --size "$SIZE" --steps 4 --residency resident --decoder-only --cfg-passes apart \
    --image /tmp/glmi_cfg_apart.png || failed cfg_apart
  took cfg_apart
fi

if want ar_eager; then
  begin "ours resident, eager AR decode"
  real_size ar_eager --size "$SIZE" --steps 2 --residency resident --ar-decode eager --image /tmp/glmi_ar_eager.png ||
    failed ar_eager
  took ar_eager
fi

if want i2i; then
  begin "ours resident, image-to-image"
  cond="${COND:-$((SIZE < 512 ? 512 : SIZE))}"
  real_size i2i --size "$SIZE" --steps 4 --residency resident --ar-decode auto --condition "$cond" \
    --image /tmp/glmi_i2i.png || failed i2i
  took i2i
fi

if want fbc; then
  begin "ours resident, decoder only, every step after the first from the first-block cache"
  real_size fbc --size "$SIZE" --steps 4 --residency resident --decoder-only --first-block-cache 1e9 \
    --image /tmp/glmi_fbc.png || failed fbc
  took fbc
fi

# Last, what an earlier call measured already (staged: 2026-12-04; the reference's bytes and request
# are the same), so that a call cut by its time limit loses these first.
ours_in staged

if want reference && [ -z "${SKIP_REFERENCE:-}" ]; then
  begin reference
  timeout "$STAGE_TIMEOUT" python3 bench/bench_real_size.py --out "$CKPT" --device "$DEVICE" --size "$SIZE" --steps "$STEPS" --threads "$THREADS" \
    --side reference | tee -a "$LOG" || echo '{"bench": "reference", "error": "the reference did not run"}' | tee -a "$LOG"
  took reference
fi

checkpoint_ready

python3 - "$LOG" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
summary = {"bench": "gpu_summary"}
for r in rows:
    tag = r.get("residency", r.get("bench"))
    for k, v in r.items():
        if k != "bench":
            summary[f"{tag}.{k}" if not k.startswith("ref_") else k] = v
ours, ref = summary.get("resident.total_s"), summary.get("ref_total_s")
if ours and ref:
    summary["speedup_total"] = round(ref / ours, 2)
ours_step, ref_step = summary.get("resident.dit_s_per_step"), summary.get("ref_dit_s_per_step")
if ours_step and ref_step:
    summary["speedup_dit_step"] = round(ref_step / ours_step, 2)
for what in ("ar_s_per_token", "dit_s_per_step"):  # what the fused kernels gain
    fused, unfused = summary.get(f"resident.{what}"), summary.get(f"unfused.{what}")
    if fused and unfused:
        summary[f"fused_speedup_{what}"] = round(unfused / fused, 3)
full, cached = summary.get("resident.dit_s_per_step"), summary.get("fbc.dit_s_per_step")
if full and cached:  # a step served by the first-block cache, against one that ran every block
    summary["fbc_cached_step_of_full"] = round(cached / full, 3)
joint, apart = summary.get("resident.dit_s_per_step"), summary.get("cfg_apart.dit_s_per_step")
if joint and apart and summary.get("resident.cfg") == "joint":  # joint by default on a GPU, apart on a CPU
    summary["cfg_joint_speedup_dit_step"] = round(apart / joint, 2)
print(json.dumps(summary))
PY
