#!/usr/bin/env python3
"""Runs every parity comparison between glmimage and the reference (transformers +
diffusers) and prints one JSON line per comparison:

    {"name": ..., "max_abs_diff": ..., "tolerance": ..., "ok": ...}

Exit status is non-zero if any comparison fails, or if none ran. Needs a build with the
Python module (scripts/setup.sh does it). Comparisons are the pytest tests marked
`parity`; they log through tests/python/parity.py. Usage:

    python3 tools/parity_report.py [-k EXPR]    # EXPR selects comparisons as pytest -k does
    python3 tools/parity_report.py --log FILE   # what a pytest run with GLMI_PARITY_LOG=FILE
                                                # recorded, without running the tests again
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", default=None, help="pytest -k expression to select comparisons")
    ap.add_argument("--log", type=Path, help="report this GLMI_PARITY_LOG file of an earlier pytest run")
    args = ap.parse_args()

    if args.log:
        # The run that wrote it has already passed or failed on its own; this only reports.
        entries = [json.loads(line) for line in args.log.read_text().splitlines()] if args.log.exists() else []
        return report(entries, None)

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "parity.jsonl"
        env = dict(os.environ, GLMI_PARITY_LOG=str(log))
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "parity", "-p", "no:randomly"]
        if args.k:
            cmd += ["-k", args.k]
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return report(entries, proc)


def report(entries: list, proc) -> int:
    for e in entries:
        print(json.dumps({k: e[k] for k in ("name", "max_abs_diff", "tolerance", "ok")}))
    failed = [e["name"] for e in entries if not e["ok"]]
    summary = f"parity: {len(entries) - len(failed)} passed, {len(failed)} failed"
    print(summary, file=sys.stderr)
    if proc is not None and proc.returncode != 0:
        sys.stderr.write(proc.stdout[-6000:])
        print("parity: the comparison tests themselves failed (see above)", file=sys.stderr)
        return 1
    if not entries:
        print("parity: no comparison ran", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
