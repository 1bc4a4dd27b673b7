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
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny"
BUILD = Path(os.environ.get("GLMI_BUILD_DIR", REPO / "build"))
LIBS = {"torch": "import torch", "PIL": "import PIL.Image", "numpy": "import numpy"}
# One line of LD_DEBUG=bindings: "binding file A [0] to B [0]: normal symbol `NAME' [VERSION]".
BINDING = re.compile(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: \w+ symbol `([^']+)'")
# Mangled names in namespace std: std::x (_ZSt, _ZNSt, _ZNKSt), the abbreviations std::ostream
# (So), istream (Si), iostream (Sd), allocator (Sa), basic_string (Sb), string (Ss), and the
# vtables, VTTs, type infos and their names of std classes.
STD_SYMBOL = re.compile(r"_Z(?:T[VTIS])?N?K?S[tiodabs]")
OURS = re.compile(r"(libglmimage\.so|/_C\.[^/]*\.so|glmimage_testing[^/]*\.so|/glmimage)$")


def foreign_std_bindings(cmd: list[str]) -> tuple[int, list[str]]:
    """Runs cmd under LD_DEBUG=bindings; returns its exit status and the std:: symbols our objects
    bound to a library other than libstdc++ (or themselves), as 'symbol -> library'."""
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=os.path.join(d, "ld"))
        rc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300).returncode
        foreign = set()
        for log in Path(d).iterdir():
            for m in BINDING.finditer(log.read_text(errors="replace")):
                src, dst, sym = m.groups()
                if OURS.search(src) and STD_SYMBOL.match(sym) and not OURS.search(dst) and "libstdc++" not in dst:
                    foreign.add(f"{sym} -> {dst}")
    return rc, sorted(foreign)


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
    rc, foreign = foreign_std_bindings([sys.executable, "-c", "\n".join(lines)])
    assert rc == 0
    assert foreign == [], "\n".join(foreign)


def test_cli_binds_the_cxx_runtime_to_libstdcxx():
    if not (BUILD / "glmimage").exists():
        pytest.skip(f"no CLI at {BUILD / 'glmimage'}")
    rc, foreign = foreign_std_bindings([str(BUILD / "glmimage"), "info", str(TINY)])
    assert rc == 0
    assert foreign == [], "\n".join(foreign)
