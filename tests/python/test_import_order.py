"""`import glmimage` in each order with the libraries a notebook loads first (torch, PIL, numpy),
each in a fresh interpreter, then a tokenizer-loading call (where the Python module once crashed on
the GPU machine's Python while the CLI ran). A crash there is a failed test here, not a dead run."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny"
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
