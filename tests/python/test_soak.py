"""A short soak in CI (the full one: `python3 tools/soak.py --count 200`): consecutive mixed
generations in one process must not grow the anonymous memory after warm-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_memory_stays_flat_over_consecutive_generations():
    res = subprocess.run([sys.executable, str(REPO / "tools" / "soak.py"), "--count", "64", "--warmup", "16"],
                         capture_output=True, text=True, timeout=300)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"soak: {result}")
    assert res.returncode == 0, result  # slope within max_slope_kib
    assert result["count"] == 64 and result["slope_kib_per_generation"] <= 16
