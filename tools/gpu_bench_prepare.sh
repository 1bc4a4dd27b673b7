#!/usr/bin/env bash
# Run here (with PyPI and Debian reachable) before tools/gpu_bench.sh goes to a GPU machine that
# reaches nothing: fills .whl/ with the pinned reference's wheels (the GPU image's transformers is
# another version) and pytest's, and .gpu_deps/ with the build's headers and libraries the GPU image lacks
# (nlohmann-json, PCRE2), and keeps both out of git (.git/info/exclude). Carry both.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for d in /.whl/ /.gpu_deps/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude; done
mkdir -p .whl .gpu_deps/debs
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl \
  "$(grep -E '^diffusers==' requirements-reference.txt)" "$(grep -E '^transformers==' requirements-reference.txt)"
# pytest, for the fused kernels' device check (tests/python/test_fused_kernels.py): the GPU image
# may lack it.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform any -d .whl pytest pluggy iniconfig packaging
(cd .gpu_deps/debs && apt-get download nlohmann-json3-dev libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 \
  libpcre2-posix3 >/dev/null)
for f in .gpu_deps/debs/*.deb; do dpkg -x "$f" .gpu_deps; done
rm -rf .gpu_deps/debs .gpu_deps/usr/share/doc
du -sh .whl .gpu_deps
