#!/usr/bin/env bash
# The main job on the embedded default model: build only what it runs (scripts/setup.sh
# --no-reference --cli-only: no Python reference, no tests, no Python module), then generate one image from a prompt with models/tiny and
# write it as a PNG. Extra arguments go to `glmimage generate` (e.g. -o other.png --seed 3).
#
# Environment: BUILD_DIR (default build); the image goes to $BUILD_DIR/demo.png (ignored by git).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
"$ROOT/scripts/setup.sh" --no-reference --cli-only

PROMPT='A poster that says "GLM-Image", bold red letters on a white background'
echo "== glmimage: text-to-image with the embedded tiny checkpoint (models/tiny)"
echo "   prompt: $PROMPT"
# 256x256 and 8 steps keep it to seconds on a CPU; the real model's defaults are 1024 and 50.
# The tool prints the files it wrote on stdout.
written="$("$BUILD_DIR/glmimage" generate "$PROMPT" --model models/tiny --height 256 --width 256 \
  --steps 8 --seed 42 -o "$BUILD_DIR/demo.png" "$@")"
while IFS= read -r f; do
  case "$f" in /*) ;; *) f="$ROOT/$f" ;; esac
  echo "== wrote $f"
done <<<"$written"
cat <<'NOTE'
   models/tiny has RANDOM weights: it exists to exercise every code path of the real model,
   so the picture is noise. The prompt and settings are stored in the PNG's text chunks.
   Real images need the real checkpoint (zai-org/GLM-Image, about 36 GB), for example:
     build/glmimage --model /path/to/GLM-Image --device cuda --dtype bfloat16 "your prompt" -o out.png
NOTE
