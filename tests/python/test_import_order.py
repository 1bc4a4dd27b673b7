"""`import glmimage` in each order with the libraries a notebook loads first (torch, PIL, numpy),
each in a fresh interpreter, then a tokenizer-loading call (where the Python module once crashed on
the GPU machine's Python while the CLI ran). A crash there is a failed test here, not a dead run.

And how our libraries hold the C++ runtime. The GPU machine's crash (native backtrace, 2026-12-04:
ostream::_M_insert<unsigned long> -> codecvt, inside libglmimage.so, under BpeTokenizer loading)
was a static copy of libstdc++ linked into libglmimage.so by that machine's toolchain (by all
signs one whose own folder holds libstdc++.a and no libstdc++.so), running beside the system's shared libstdc++.so.6 that LibTorch uses. Also where the
C++ runtime symbols of our libraries bind: LibTorch's libraries export copies of standard-library
code (libc10 / libtorch_cpu: std::filesystem, exception_ptr, the ostringstream constructor; torch
2.11's libtorch.so and CUDA's libcufile.so more), compiled against other headers than ours."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from import_probe import foreign_std_bindings, run_under_ld_debug  # tools/, on the path (conftest)

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny"
BUILD = Path(os.environ.get("GLMI_BUILD_DIR", REPO / "build"))
LIBS = {"torch": "import torch", "PIL": "import PIL.Image", "numpy": "import numpy"}


@pytest.mark.parametrize("order", [list(p) + ["glmimage"] for p in itertools.permutations(LIBS, 2)]
                         + [["glmimage", "PIL", "numpy"], ["PIL", "glmimage", "torch"]],
                         ids=lambda o: "-".join(o))
def test_import_order(order):
    lines = [f"import sys; sys.path.insert(0, {str(REPO / 'python')!r})"]
    lines += [LIBS.get(name, "import glmimage") for name in order]
    lines += [f"p = glmimage.Pipeline.from_pretrained({str(TINY)!r})",  # loads both tokenizers
              "out = p('A sign \"OPEN\"', height=64, width=64, num_inference_steps=1, progress=False)",
              "print(out.images[0].size)"]
    res = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.strip() == "(64, 64)"


@pytest.mark.parametrize("first", ["glmimage", "torch"])
def test_module_binds_the_cxx_runtime_to_libstdcxx(first):
    lines = [f"import sys; sys.path.insert(0, {str(REPO / 'python')!r})", "import torch" if first == "torch" else "",
             "import glmimage", f"glmimage.Pipeline.from_pretrained({str(TINY)!r})"]
    rc, log = run_under_ld_debug([sys.executable, "-c", "\n".join(lines)])
    assert rc == 0
    foreign = foreign_std_bindings(log)
    assert foreign == [], "\n".join(foreign)


def test_cli_binds_the_cxx_runtime_to_libstdcxx():
    if not (BUILD / "glmimage").exists():
        pytest.skip(f"no CLI at {BUILD / 'glmimage'}")
    rc, log = run_under_ld_debug([str(BUILD / "glmimage"), "info", str(TINY)])
    assert rc == 0
    foreign = foreign_std_bindings(log)
    assert foreign == [], "\n".join(foreign)


def our_shared_objects() -> list[Path]:
    objs = sorted(BUILD.glob("libglmimage.so*")) + sorted((REPO / "python" / "glmimage").glob("_C*.so"))
    objs += sorted((REPO / "tests" / "python").glob("glmimage_testing*.so"))
    return [p for p in objs if not p.is_symlink()]


def test_libraries_import_no_std_filesystem():
    """LibTorch's libraries export their own std::filesystem functions, built with their toolchain.
    On the GPU machine (Python 3.12, torch 2.11+cu130, the module built there with GCC 13.3) our
    calls bound to those copies (LD_DEBUG); the library now does its path work on POSIX calls
    (src/core/paths.h), so no std::filesystem symbol is left to bind anywhere."""
    objs = our_shared_objects()
    if not objs:
        pytest.skip(f"no built libraries under {BUILD}")
    for obj in objs:
        undefined = subprocess.run(["nm", "-D", "--undefined-only", str(obj)], capture_output=True, text=True,
                                   check=True).stdout
        fs = [line.split()[-1] for line in undefined.splitlines() if "St10filesystem" in line]
        assert fs == [], f"{obj.name} imports std::filesystem: {fs[:5]}"


def test_libraries_carry_no_copy_of_the_cxx_runtime():
    """The C++ runtime is linked shared, and first. With the GPU machine's GCC (13.3 in /opt/gcc;
    by all signs its folder holds libstdc++.a and no libstdc++.so) -lstdc++ copied the runtime's
    stream and locale code into libglmimage.so: a second C++ runtime beside the system's
    libstdc++.so.6 that LibTorch uses, and the module died in its first `ostringstream << size_t`
    (native backtrace: ostream::_M_insert<unsigned long> -> codecvt inside libglmimage.so).
    CMakeLists.txt now links the shared runtime by its path; the local toolchain was rebuilt here
    with -L to a folder holding only libstdc++.a (copy before, none after)."""
    objs = our_shared_objects()
    if not objs:
        pytest.skip(f"no built libraries under {BUILD}")
    runtime_only = ("_ZNSt6locale7classicEv", "read_utf8_code_point", "_ZNSt8ios_base4InitC1Ev")
    for obj in objs:
        symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True).stdout or \
            subprocess.run(["nm", "-D", str(obj)], capture_output=True, text=True, check=True).stdout
        copied = [line.split()[-1] for line in symbols.splitlines()
                  if len(line.split()) == 3 and line.split()[1] in "TtWw" and any(n in line for n in runtime_only)]
        assert copied == [], f"{obj.name} carries a copy of the C++ runtime: {copied[:3]}"
        dynamic = subprocess.run(["readelf", "-d", str(obj)], capture_output=True, text=True, check=True).stdout
        needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
        assert needed and needed[0] == "libstdc++.so.6", f"{obj.name} needs {needed[:3]} first"
