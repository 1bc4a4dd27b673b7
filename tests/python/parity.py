"""Recording parity comparisons: every comparison prints one JSON line with its max abs diff
and, when GLMI_PARITY_LOG is set, appends it to that file (tools/parity_report.py reads it)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch


def record(name: str, got: torch.Tensor, ref: torch.Tensor, atol: float, rtol: float = 0.0, **extra) -> dict:
    """Compares `got` with `ref` elementwise: ok iff |got - ref| <= atol + rtol * |ref| everywhere
    (and the shapes agree). Logs the result and returns it; the caller asserts on "ok"."""
    entry = {"name": name}
    if tuple(got.shape) != tuple(ref.shape):
        entry.update(max_abs_diff=float("inf"), tolerance=atol, ok=False,
                     detail=f"shape {tuple(got.shape)} vs reference {tuple(ref.shape)}")
    else:
        g, r = got.detach().double(), ref.detach().double()
        diff = (g - r).abs()
        max_abs = float(diff.max()) if diff.numel() else 0.0
        ok = bool((diff <= atol + rtol * r.abs()).all()) if diff.numel() else True
        entry.update(max_abs_diff=max_abs, tolerance=atol, ok=ok)
        if rtol:
            entry["rtol"] = rtol
    entry.update(extra)
    line = json.dumps(entry)
    print(line)
    path = os.environ.get("GLMI_PARITY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
    return entry


def record_exact(name: str, got, ref, **extra) -> dict:
    """For integer outputs (token ids, masks, uint8 pixels): equal or not, max abs diff shown."""
    g = torch.as_tensor(got).long()
    r = torch.as_tensor(ref).long()
    return record(name, g, r, atol=0.0, **extra)


def levels(images) -> np.ndarray:
    """diffusers' output_type="np" images (float32 [N, H, W, 3] in [0, 1], from either side) as
    the 8-bit levels its "pil" output rounds them to: (x * 255).round() as uint8."""
    x = np.asarray(images)
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[-1] == 3, (x.dtype, x.shape)
    return (x * 255).round().astype(np.uint8)
