"""`import glmimage` in each order with the libraries a notebook loads first (torch, PIL, numpy),
each in a fresh interpreter, then a tokenizer-loading call (where the Python module once crashed on
the GPU machine's Python while the CLI ran). A crash there is a failed test here, not a dead run.

And where the C++ runtime symbols of our libraries bind: LibTorch's libraries export copies of
standard-library code (libc10 / libtorch_cpu: std::filesystem, exception_ptr, the ostringstream
constructor; torch 2.11's libtorch.so and CUDA's libcufile.so more), compiled against other
headers than ours. Before libstdc++ was put first among glmimage's libraries (CMakeLists.txt),
glmimage's own std::ostringstream constructor ran LibTorch's copy."""

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
    On the GPU machine (Python 3.12, torch 2.11+cu130, the module built there with GCC 13) our calls
    bound to those copies and the module died at import; the library now does its path work on
    POSIX calls (src/core/paths.h), so no std::filesystem symbol is left to bind anywhere."""
    objs = our_shared_objects()
    if not objs:
        pytest.skip(f"no built libraries under {BUILD}")
    for obj in objs:
        undefined = subprocess.run(["nm", "-D", "--undefined-only", str(obj)], capture_output=True, text=True,
                                   check=True).stdout
        fs = [line.split()[-1] for line in undefined.splitlines() if "St10filesystem" in line]
        assert fs == [], f"{obj.name} imports std::filesystem: {fs[:5]}"
