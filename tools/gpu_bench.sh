#!/usr/bin/env bash
# GLM-Image at the real size on one CUDA GPU, ours against the reference, in one prepared run on a
# bare GPU machine (the device tool's: no network, its own CUDA torch). Prints JSON lines; the last
# one ("bench": "gpu_summary") holds every figure.
#
#   here:   bash tools/gpu_bench_prepare.sh    # once: .whl/ (pinned reference wheels) and .gpu_deps/
#                                              # (nlohmann-json + PCRE2 headers/libs), both git-ignored
#   there:  bash tools/gpu_bench.sh            # carry .whl and .gpu_deps
#
# Stages (each skipped when its output is already there, so a second call on a warm machine goes on
# where the first stopped): build (against that machine's torch), the real-size random checkpoint,
# the tiny CUDA-vs-CPU check (fp32, the same prior tokens: images within 1 level), ours at SIZE x SIZE
# and STEPS steps in resident and staged residency (the AR decode as a CUDA graph; if the capture
# fails, the run says so and is made again with the eager decode), the reference (diffusers 0.39 +
# transformers 5.24) on the same checkpoint and request, then ours resident with the eager AR
# decode and 2 steps (ar_eager: what the graph gains), then ours resident, decoder only, 4 steps,
# with the CFG passes apart (cfg_apart: what one joint forward gains; dit_s_per_step to compare).
# Environment: SIZE (1024), STEPS (50), LAYERS (real), CKPT (/tmp/glmi_real), QUANTIZE (none),
#              SKIP_REFERENCE=1, STAGES ("build checkpoint tiny resident staged reference ar_eager cfg_apart"),
#              DEVICE (cuda), THREADS (8).
# A rehearsal of the whole flow on a CPU machine (the graph decode then fails and the eager one
# runs, as the fallback would on a GPU; the tiny check says there is no GPU):
#   DEVICE=cpu THREADS=2 LAYERS=1 SIZE=256 STEPS=2 bash tools/gpu_bench.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SIZE="${SIZE:-1024}"
STEPS="${STEPS:-50}"
CKPT="${CKPT:-/tmp/glmi_real}"
QUANTIZE="${QUANTIZE:-none}"
DEVICE="${DEVICE:-cuda}"
THREADS="${THREADS:-8}"
STAGES="${STAGES:-build checkpoint tiny resident staged reference ar_eager cfg_apart}"
LOG="${OUT:-/tmp}/gpu_bench.jsonl"
: >"$LOG"
want() { [[ " $STAGES " == *" $1 "* ]]; }
stamp() { echo "== $(date +%T) $*" >&2; }

# The pinned reference, carried as wheels (the machine's own transformers is another version).
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/glmi_site .whl/*.whl
  export PYTHONPATH="/tmp/glmi_site${PYTHONPATH:+:$PYTHONPATH}"
fi

if want build; then
  stamp build
  TORCH_CMAKE="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  PREFIX="$TORCH_CMAKE"
  if [ -d .gpu_deps/usr ]; then
    PREFIX="$TORCH_CMAKE;$ROOT/.gpu_deps/usr"
    export LD_LIBRARY_PATH="$ROOT/.gpu_deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  fi
  PYBIND="$(python3 -c 'import pybind11; print(pybind11.get_cmake_dir())' 2>/dev/null || true)"
  [ -n "$PYBIND" ] && PREFIX="$PREFIX;$PYBIND"
  # LibTorch's CMake config wants libnvrtc from the CUDA toolkit; a toolkit assembled from NVIDIA's
  # pip wheels may lack it there (seen in a rehearsal: "CUDA_nvrtc_LIBRARY ... NOTFOUND"). The
  # copy torch itself loads, in the nvidia wheels beside it, is the one to link.
  NVRTC="$(python3 -c 'import glob, os, nvidia
print(next(iter(sorted(p for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "*", "lib", "libnvrtc.so*"))
                       if "builtins" not in p and ".alt." not in p)), ""))' 2>/dev/null || true)"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" -DGLMI_BUILD_TESTS=OFF \
    -DGLMI_BUILD_CLI=OFF -DGLMI_BUILD_PYTHON=ON -DGLMI_BUILD_TESTING_EXT=ON -DPython_EXECUTABLE="$(command -v python3)" \
    ${NVRTC:+-DCUDA_nvrtc_LIBRARY="$NVRTC"} >/dev/null
  cmake --build build -j"$(nproc)" --target glmimage_python glmimage_testing >/dev/null
fi
[ -d .gpu_deps/usr ] && export LD_LIBRARY_PATH="$ROOT/.gpu_deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"

if want checkpoint && [ ! -f "$CKPT/model_index.json" ]; then
  stamp checkpoint
  # One writer process makes about 200 MB/s; its shards are independent, so one process per core.
  python3 tools/make_real_size_checkpoint.py --out "$CKPT" --jobs "$(nproc)" ${LAYERS:+--layers "$LAYERS"} >&2
fi

if want tiny; then
  stamp tiny
  # The Python module once crashed there while the CLI ran: each import order in a fresh
  # interpreter, with the loader's bindings of the C++ stream symbols where one dies.
  python3 tools/import_probe.py | tee -a "$LOG" || true
  python3 tools/gpu_bench_tiny.py | tee -a "$LOG"
fi

ours() {  # ours() RESIDENCY AR_DECODE STEPS
  python3 bench/bench_real_size.py --out "$CKPT" --device "$DEVICE" --size "$SIZE" --steps "$3" --threads "$THREADS" \
    --residency "$1" --ar-decode "$2" --quantize "$QUANTIZE" --image "/tmp/glmi_$1.png"
}
for residency in resident staged; do
  want "$residency" || continue
  stamp "ours $residency"
  ours "$residency" graph "$STEPS" | tee -a "$LOG" ||
    { echo "{\"bench\": \"graph_failed\", \"residency\": \"$residency\"}" | tee -a "$LOG";
      ours "$residency" eager "$STEPS" | tee -a "$LOG"; }
done

if want reference && [ -z "${SKIP_REFERENCE:-}" ]; then
  stamp reference
  python3 bench/bench_real_size.py --out "$CKPT" --device "$DEVICE" --size "$SIZE" --steps "$STEPS" --threads "$THREADS" \
    --side reference | tee -a "$LOG" || echo '{"bench": "reference", "error": "the reference did not run"}' | tee -a "$LOG"
fi

if want ar_eager; then
  stamp "ours resident, eager AR decode"
  { ours resident eager 2 || echo '{"bench": "real_size", "residency": "resident", "error": "the run failed"}'; } |
    sed 's/"residency": "resident"/"residency": "ar_eager"/' | tee -a "$LOG"
fi

if want cfg_apart; then
  stamp "ours resident, decoder only, CFG passes apart"
  { python3 bench/bench_real_size.py --out "$CKPT" --device "$DEVICE" --size "$SIZE" --steps 4 --threads "$THREADS" \
      --residency resident --quantize "$QUANTIZE" --decoder-only --cfg-passes apart --image /tmp/glmi_cfg_apart.png ||
      echo '{"bench": "real_size", "residency": "resident", "error": "the run failed"}'; } |
    sed 's/"residency": "resident"/"residency": "cfg_apart"/' | tee -a "$LOG"
fi

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
joint, apart = summary.get("resident.dit_s_per_step"), summary.get("cfg_apart.dit_s_per_step")
if joint and apart and summary.get("resident.cfg") == "joint":  # joint by default on a GPU, apart on a CPU
    summary["cfg_joint_speedup_dit_step"] = round(apart / joint, 2)
print(json.dumps(summary))
PY
