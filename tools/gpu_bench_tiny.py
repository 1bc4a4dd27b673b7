#!/usr/bin/env python3
"""CUDA against CPU on the tiny checkpoint in float32, in one process on the GPU machine: the same
prior tokens (made once, on the CPU) decoded on both devices, t2i and i2i; the uint8 images must
agree within 1 level. The CPU side is the one whose parity with diffusers the tests prove. Prints
one JSON line; exits 1 past the tolerance. Also runs where there is no GPU (then it only says so).

    python3 tools/gpu_bench_tiny.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "python")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import glmimage  # noqa: E402

TINY = REPO / "models" / "tiny"
TOLERANCE = 1  # levels


def main() -> int:
    if not torch.cuda.is_available():
        print(json.dumps({"bench": "tiny_cuda_vs_cpu", "skipped": "no CUDA device"}))
        return 0
    cpu = glmimage.Pipeline.from_pretrained(TINY, dtype="float32", device="cpu")
    gpu = glmimage.Pipeline.from_pretrained(TINY, dtype="float32", device="cuda")
    cond = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    out = {"bench": "tiny_cuda_vs_cpu", "tolerance": TOLERANCE}
    ok = True
    for case, image in (("t2i", None), ("i2i", cond)):
        kw = dict(height=64, width=96, num_inference_steps=3, seed=3, progress=False, output_type="np")
        if image is not None:
            kw["image"] = image
        prompt = 'A poster that says "GLM"'
        prior = cpu.generate_prior_tokens(prompt, height=64, width=96, seed=3, progress=False,
                                          **({"image": image} if image is not None else {}))
        a = cpu(prompt, prior_token_ids=prior, **kw).images.astype(int)
        b = gpu(prompt, prior_token_ids=prior, **kw).images.astype(int)
        gpu_prior = gpu.generate_prior_tokens(prompt, height=64, width=96, seed=3, progress=False,
                                              **({"image": image} if image is not None else {}))
        diff = int(np.abs(a - b).max())
        out[f"{case}_max_abs_diff"] = diff
        out[f"{case}_prior_token_agreement"] = float((np.asarray(gpu_prior) == np.asarray(prior)).mean())
        ok = ok and diff <= TOLERANCE
    out["ok"] = ok
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
