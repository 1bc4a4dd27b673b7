#!/usr/bin/env bash
# Installs glmimage from an existing build tree into a scratch prefix, then builds the
# standalone consumer examples/cpp against that prefix through find_package(glmimage) only,
# and runs it on the embedded tiny model. Registered with ctest as test_install (label install).
#
#   tests/install/test_install.sh BUILD_DIR [TORCH_DIR]
#
# TORCH_DIR is LibTorch's Torch_DIR (.../share/cmake/Torch); default: the build's cached one.
# The scratch directory is BUILD_DIR/test_install (a fixed path, so ccache can reuse the
# example's object across runs); it is removed when the test passes.
set -euo pipefail

fail() { echo "test_install: FAIL: $*" >&2; exit 1; }

[ $# -ge 1 ] || fail "usage: $0 BUILD_DIR [TORCH_DIR]"
BUILD_DIR="$(cd "$1" && pwd)"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TORCH_DIR="${2:-$(sed -n 's/^Torch_DIR:PATH=//p' "$BUILD_DIR/CMakeCache.txt")}"
[ -f "$TORCH_DIR/TorchConfig.cmake" ] || fail "no TorchConfig.cmake in '$TORCH_DIR'"
# The prefix torch.utils.cmake_prefix_path gives: find_package(Torch) looks in <prefix>/Torch*/.
TORCH_PREFIX="$(cd "$TORCH_DIR/.." && pwd)"

WORK="$BUILD_DIR/test_install"
PREFIX="$WORK/prefix"
rm -rf "$WORK"
mkdir -p "$WORK"

echo "== install into $PREFIX"
cmake --install "$BUILD_DIR" --prefix "$PREFIX" >"$WORK/install.log" || { cat "$WORK/install.log"; fail "cmake --install"; }

# The public headers, and only those: a consumer must build from glmimage.h alone.
headers="$(cd "$PREFIX/include" && find . -type f | sort | tr '\n' ' ')"
[ "$headers" = "./glmimage/errors.h ./glmimage/glmimage.h ./glmimage/options.h " ] ||
  fail "installed headers are '$headers'"
for f in lib/libglmimage.so lib/cmake/glmimage/glmimageConfig.cmake \
         lib/cmake/glmimage/glmimageConfigVersion.cmake lib/cmake/glmimage/glmimageTargets.cmake; do
  [ -e "$PREFIX/$f" ] || fail "missing $f"
done
# The shared library carries its private dependencies; none may leak into the export.
if grep -nE 'glmimage_torchfree|pcre2|nlohmann' "$PREFIX"/lib/cmake/glmimage/glmimageTargets*.cmake; then
  fail "the exported target names a private dependency"
fi

# The installed library and CLI resolve their dependencies on their own (RPATH), and never
# through the build tree. Outputs are captured before matching: with pipefail, a `grep -q`
# that closes the pipe early could make ldd fail.
check_elf() {
  local f="$1" deps rpath
  deps="$(ldd "$f")"
  rpath="$(readelf -d "$f" | grep -E 'R(UN)?PATH' || true)"
  case "$deps" in *"not found"*) echo "$deps"; fail "unresolved libraries in $f" ;; esac
  case "$rpath" in *"$BUILD_DIR"*) echo "$rpath"; fail "$f has the build tree in its RPATH" ;; esac
}
# Succeeds when binary $1 loads libglmimage from the installed prefix ($ORIGIN paths show up
# unnormalized, e.g. prefix/bin/../lib, hence the realpath).
loads_installed_lib() {
  local deps lib
  deps="$(ldd "$1")"
  lib="$(printf '%s\n' "$deps" | sed -n 's/^[[:space:]]*libglmimage\.so[^ ]* => \(.*\) (0x.*$/\1/p')"
  if [ -n "$lib" ] && [ "$(dirname "$(realpath "$lib")")" = "$(realpath "$PREFIX/lib")" ]; then return 0; fi
  echo "$deps"
  return 1
}
check_elf "$PREFIX/lib/libglmimage.so"
if [ -x "$BUILD_DIR/glmimage" ]; then
  [ -x "$PREFIX/bin/glmimage" ] || fail "the CLI was built but not installed"
  check_elf "$PREFIX/bin/glmimage"
  loads_installed_lib "$PREFIX/bin/glmimage" ||
    fail "the installed CLI does not load the installed libglmimage"
  "$PREFIX/bin/glmimage" info "$SRC/models/tiny" >"$WORK/cli.log" 2>&1 || { cat "$WORK/cli.log"; fail "installed CLI: info"; }
fi

echo "== configure and build examples/cpp against the prefix"
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# A CUDA LibTorch's config looks for a CUDA toolkit in the consumer too: hand it the toolkit the
# build was configured with (tools/cuda_cmake_args.py's arguments, where the build had them).
cuda_args=()
for var in CUDA_TOOLKIT_ROOT_DIR CMAKE_CUDA_COMPILER CMAKE_LIBRARY_PATH nvtx3_dir; do
  value="$(sed -n "s/^$var:[A-Z]*=//p" "$BUILD_DIR/CMakeCache.txt" | head -n 1)"
  case "$value" in ""|*-NOTFOUND) ;; *) cuda_args+=("-D$var=$value") ;; esac
done
cmake -S "$SRC/examples/cpp" -B "$WORK/example" -DCMAKE_PREFIX_PATH="$PREFIX;$TORCH_PREFIX" \
  "${launcher[@]}" "${cuda_args[@]}" >"$WORK/configure.log" 2>&1 || { cat "$WORK/configure.log"; fail "configuring the example"; }
cmake --build "$WORK/example" -j2 >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; fail "building the example"; }
loads_installed_lib "$WORK/example/glmimage_generate" ||
  fail "the example does not load the installed libglmimage"
# The exported link options put the C++ runtime first among a consumer's libraries, so its
# std:: symbols bind to libstdc++ rather than to LibTorch's copies (CMakeLists.txt says why).
first_needed="$(readelf -d "$WORK/example/glmimage_generate" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | head -n 1)"
[ "$first_needed" = "libstdc++.so.6" ] || fail "the example's first needed library is '$first_needed', not libstdc++.so.6"

echo "== run the example on models/tiny"
OUT="$WORK/out.ppm"
"$WORK/example/glmimage_generate" "$SRC/models/tiny" "$OUT" 'A sign that says "Hi"' || fail "the example exited with $?"
[ -f "$OUT" ] || fail "no output file"
header=$'P6\n64 64\n255\n'
expected_size=$(( ${#header} + 64 * 64 * 3 ))
size=$(stat -c %s "$OUT")
[ "$size" -eq "$expected_size" ] || fail "output is $size bytes, expected $expected_size"
cmp -s <(head -c ${#header} "$OUT") <(printf '%s' "$header") ||
  fail "bad PPM header: $(head -c ${#header} "$OUT" | od -c | head -2)"

# A glmimage::Error must give a message and a non-zero exit.
if "$WORK/example/glmimage_generate" "$WORK/no-such-model" "$WORK/bad.ppm" >"$WORK/bad.log" 2>&1; then
  fail "the example succeeded on a missing model directory"
fi
grep -q '^error: ' "$WORK/bad.log" || { cat "$WORK/bad.log"; fail "no error message for a missing model"; }
[ ! -e "$WORK/bad.ppm" ] || fail "an output file was written after an error"

echo "test_install: OK"
rm -rf "$WORK"
