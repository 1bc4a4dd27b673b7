"""Diffusion decoder speed and memory: glmimage's C++ decoder (glmimage._C._testing.decode) against
diffusers GlmImagePipeline(prior_token_ids=...), same prompt, prior tokens, size, steps, guidance,
seed and thread count, on the `small` preset checkpoint built in a temp dir (or --model DIR).

Each side runs in its own subprocess (so peak RSS is its own), best of --repeats after a warm-up;
the images are checked equal (within 1 level) before the timings are trusted. Prints one JSON line.

    python3 bench/bench_decoder.py [--size 256] [--steps 8] [--threads 2] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "python"), str(REPO / "tools"), str(REPO / "tests" / "python")]  # + glmimage_testing

PROMPT = 'A poster that says "GLM-Image" and “你好世界” in bold letters'


def run_side(args) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    h = w = args.size
    codebook = json.loads((Path(args.model) / "transformer" / "config.json").read_text())[
        "prior_vq_quantizer_codebook_size"]
    prior = torch.randint(0, codebook, (1, (h // 16) * (w // 16)), generator=torch.Generator().manual_seed(3))
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    if args.side == "ours":
        import glmimage
        import glmimage_testing as _testing

        pipe = glmimage.Pipeline.from_pretrained(args.model, dtype=args.dtype)

        def once():
            return _testing.decode(pipe, prior, [PROMPT], h, w, steps=args.steps, guidance=1.5, seed=7).numpy()
    else:
        from diffusers import GlmImagePipeline

        pipe = GlmImagePipeline.from_pretrained(args.model, torch_dtype=dtype)
        pipe.set_progress_bar_config(disable=True)

        def once():
            with torch.inference_mode():
                out = pipe(prompt=PROMPT, prior_token_ids=prior, height=h, width=w, num_inference_steps=args.steps,
                           guidance_scale=1.5, generator=torch.Generator().manual_seed(7), output_type="pil")
            return np.stack([np.array(im) for im in out.images])

    img = once()  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        img = once()
        best = min(best, time.perf_counter() - t0)
    np.save(args.out, img)
    print(json.dumps({"seconds": best, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint dir (default: build the small preset)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--side", choices=["ours", "ref"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        run_side(args)
        return 0

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            import make_tiny_checkpoint as mk

            model = str(mk.build(Path(tmp) / "small", "small", args.dtype, 0))
        res = {}
        for side in ("ref", "ours"):
            out = Path(tmp) / f"{side}.npy"
            cmd = [sys.executable, __file__, "--side", side, "--out", str(out), "--model", model,
                   "--size", str(args.size), "--steps", str(args.steps), "--threads", str(args.threads),
                   "--repeats", str(args.repeats), "--dtype", args.dtype]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            res[side] = json.loads(line)
            res[side]["image"] = np.load(out)
        diff = int(np.abs(res["ours"]["image"].astype(int) - res["ref"]["image"].astype(int)).max())
    print(json.dumps({
        "bench": "decoder", "size": args.size, "steps": args.steps, "threads": args.threads, "dtype": args.dtype,
        "ours_s": round(res["ours"]["seconds"], 4), "ref_s": round(res["ref"]["seconds"], 4),
        "speedup": round(res["ref"]["seconds"] / res["ours"]["seconds"], 3),
        "ours_peak_rss_mb": round(res["ours"]["peak_rss_mb"], 1), "ref_peak_rss_mb": round(res["ref"]["peak_rss_mb"], 1),
        "max_pixel_diff": diff,
    }))
    return 0 if diff <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
