#!/usr/bin/env bash
# The main job on the embedded default model (models/tiny, random weights): for now, load
# it with strict checking and print every component. Needs no Python reference.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/setup.sh" --no-reference
"${BUILD_DIR:-build}/glmimage" info models/tiny "$@"
