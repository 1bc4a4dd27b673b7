#!/usr/bin/env python3
"""CUDA against CPU on the tiny checkpoint in float32, in one process on the GPU machine: the same
prior tokens (made once, on the CPU) decoded on both devices, t2i and i2i; the uint8 images must
agree within 1 level. The CPU side is the one whose parity with diffusers the tests prove. Then the
AR decode captured as a CUDA graph against the eager decode on the GPU: the same greedy tokens
(sampled ones reported), and the tiny model's decode speed both ways (launch-bound: what the graph
removes). Prints one JSON line; exits 1 past a tolerance. Also runs where there is no GPU (then it
only says so); --device cpu rehearses the comparison there (the CPU against itself, no graph).

    python3 tools/gpu_bench_tiny.py [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "python"), str(REPO / "tests" / "python")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import glmimage  # noqa: E402

TINY = REPO / "models" / "tiny"
TOLERANCE = 1  # levels


def graph_against_eager(gpu, out: dict) -> bool:
    import time

    import glmimage_testing as _testing  # built with the Python module by gpu_bench.sh

    text = torch.randint(80, 656, (12,), generator=torch.Generator().manual_seed(1)).tolist()
    ids = torch.tensor([text + [64]])  # 64: the tiny checkpoint's image start token
    grids = torch.tensor([[1, 8, 8], [1, 4, 4]])
    same_greedy = True
    for name, kw in (("greedy", dict(do_sample=False)),
                     ("sampled", dict(do_sample=True, temperature=8.0, top_k=30, top_p=0.9, seed=5))):
        runs = {}
        for decode in ("eager", "graph"):
            _testing.ar_generate(gpu, ids, grids, decode=decode, **kw)  # warm-up
            torch.cuda.synchronize()
            t = time.perf_counter()
            runs[decode] = _testing.ar_generate(gpu, ids, grids, decode=decode, **kw)
            torch.cuda.synchronize()
            out[f"tiny_{name}_{decode}_tok_s"] = round(runs[decode]["generated"].shape[1] / (time.perf_counter() - t), 1)
        out["graph_path"] = runs["graph"]["decode"]
        equal = bool(torch.equal(runs["eager"]["generated"], runs["graph"]["generated"]))
        out[f"graph_vs_eager_{name}_tokens_equal"] = equal
        if name == "greedy":
            same_greedy = equal
    return same_greedy and out["graph_path"] == "graph"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="the side compared with the CPU (cpu: a rehearsal without a GPU)")
    device = ap.parse_args().device
    if device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"bench": "tiny_cuda_vs_cpu", "skipped": "no CUDA device"}))
        return 0
    cpu = glmimage.Pipeline.from_pretrained(TINY, dtype="float32", device="cpu")
    gpu = glmimage.Pipeline.from_pretrained(TINY, dtype="float32", device=device)
    cond = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    out = {"bench": "tiny_cuda_vs_cpu", "device": device, "tolerance": TOLERANCE}
    ok = True
    for case, image in (("t2i", None), ("i2i", cond)):
        kw = dict(height=64, width=96, num_inference_steps=3, seed=3, progress=False)
        if image is not None:
            kw["image"] = image
        prompt = 'A poster that says "GLM"'
        prior = cpu.generate_prior_tokens(prompt, height=64, width=96, seed=3, progress=False,
                                          **({"image": image} if image is not None else {}))
        a = np.stack([np.asarray(im) for im in cpu(prompt, prior_token_ids=prior, **kw).images]).astype(int)
        b = np.stack([np.asarray(im) for im in gpu(prompt, prior_token_ids=prior, **kw).images]).astype(int)
        gpu_prior = gpu.generate_prior_tokens(prompt, height=64, width=96, seed=3, progress=False,
                                              **({"image": image} if image is not None else {}))
        diff = int(np.abs(a - b).max())
        out[f"{case}_max_abs_diff"] = diff
        same = gpu_prior.prior_token_ids.cpu() == prior.prior_token_ids.cpu()
        out[f"{case}_prior_token_agreement"] = round(same.double().mean().item(), 4)
        ok = ok and diff <= TOLERANCE
    if device == "cuda":
        ok = graph_against_eager(gpu, out) and ok
    out["ok"] = ok
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
