"""Soak: many consecutive generations in one process (tiny checkpoint, mixed text-to-image,
image-to-image and batch sizes), resident memory sampled from /proc after each. Prints one JSON
line: count, RSS and anonymous memory after warm-up and at the end, and the least-squares slope of
RssAnon over the generations after warm-up (KiB per generation, sampled once per cycle). Exits 1 if the slope exceeds
--max-slope-kib (a leak grows it; allocator noise stays near 0).

    python3 tools/soak.py --count 200          # the full soak (outside CI, about a minute)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "python")]


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def slope(ys: list[float]) -> float:
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--max-slope-kib", type=float, default=16.0)
    args = ap.parse_args()

    import numpy as np
    import torch

    import glmimage

    libc = ctypes.CDLL("libc.so.6")
    torch.set_num_threads(1)
    glmimage.set_num_threads(1)
    pipe = glmimage.Pipeline.from_pretrained(REPO / "models" / "tiny")
    rng = np.random.default_rng(0)
    cond = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    anon, t0 = [], time.perf_counter()
    for i in range(args.count):
        kind = i % 4
        kw = dict(height=64, width=64 if kind != 3 else 96, num_inference_steps=2, seed=i, progress=False,
                  output_type="np")
        if kind == 0:
            pipe('A sign that says "OPEN"', **kw)
        elif kind == 1:
            pipe("make it red", image=cond, **kw)
        elif kind == 2:
            pipe(['A mug "Good morning"', "a red square"], num_images_per_prompt=2, **kw)
        else:
            pipe.generate_prior_tokens("a tree", height=64, width=96, seed=i, progress=False)
        # Sampled once per cycle of the four kinds, always after the same one: each kind leaves the
        # allocator's caches at its own level, so per-call samples would mostly measure which ran last.
        # malloc_trim first: returns the allocator's free pages, so what is left is what is held.
        if kind == 3:
            libc.malloc_trim(0)
            anon.append(proc_status_kib("RssAnon"))
    after = anon[args.warmup // 4:]
    result = {
        "bench": "soak", "count": args.count, "warmup": args.warmup, "seconds": round(time.perf_counter() - t0, 1),
        "rss_anon_kib_after_warmup": after[0] if after else None, "rss_anon_kib_end": anon[-1],
        "vm_hwm_kib": proc_status_kib("VmHWM"),
        "slope_kib_per_generation": round(slope(after) / 4, 2), "max_slope_kib": args.max_slope_kib,
    }
    print(json.dumps(result))
    return 0 if result["slope_kib_per_generation"] <= args.max_slope_kib else 1


if __name__ == "__main__":
    sys.exit(main())
