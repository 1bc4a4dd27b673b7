#!/usr/bin/env python3
"""Probe for the Python module's crash on the GPU machine (inside the tokenizer load, on an
ostringstream of a size_t, while the CLI ran): imports glmimage after torch / PIL / numpy in several
orders, each in a fresh interpreter, and loads the tiny checkpoint (both tokenizers). For any order
that dies, it runs the same again under LD_DEBUG=libs,bindings and reports which shared objects
provided the C++ stream / locale symbols (std::locale, num_put, ostream inserters) that glmimage's
libraries bound to, and every libstdc++ the process loaded: two copies of the C++ runtime, or a
library exporting its own statically linked copy, is the usual cause of such a crash. Every run
also lists the std:: symbols of ours that bound anywhere but libstdc++ (there should be none).
Prints one JSON line; exits 1 if any order failed.

    python3 tools/import_probe.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "models" / "tiny"
LIBS = {"torch": "import torch", "PIL": "import PIL.Image", "numpy": "import numpy", "glmimage": "import glmimage"}
ORDERS = [["glmimage"], ["torch", "glmimage"], ["PIL", "numpy", "glmimage"], ["torch", "PIL", "glmimage"]]
STREAM_SYMBOL = re.compile(r"locale|num_put|_M_insert|ostream|basic_ios|ctype")


def script(order: list[str]) -> str:
    lines = [f"import sys; sys.path.insert(0, {str(REPO / 'python')!r})"] + [LIBS[n] for n in order]
    lines += [f"p = glmimage.Pipeline.from_pretrained({str(TINY)!r})", "print('loaded')"]
    return "\n".join(lines)


# One line of LD_DEBUG=bindings: "binding file A [0] to B [0]: normal symbol `NAME' [VERSION]".
BINDING = re.compile(r"binding file (\S+) \[\d+\] to (\S+) \[\d+\]: \w+ symbol `([^']+)'")
# Mangled names in namespace std: std::x (_ZSt, _ZNSt, _ZNKSt), the abbreviations std::ostream
# (So), istream (Si), iostream (Sd), allocator (Sa), basic_string (Sb), string (Ss), and the
# vtables, VTTs, type infos and their names of std classes.
STD_SYMBOL = re.compile(r"_Z(?:T[VTIS])?N?K?S[tiodabs]")
# Our objects: the library, the Python modules, the CLI.
OURS = re.compile(r"(libglmimage\.so[.0-9]*|/_C\.[^/]*\.so|glmimage_testing[^/]*\.so|/glmimage)$")


def run_under_ld_debug(cmd: list[str]) -> tuple[int, str]:
    """Runs cmd with LD_DEBUG=libs,bindings; returns its exit status and the loader's log."""
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, LD_DEBUG="libs,bindings", LD_DEBUG_OUTPUT=os.path.join(d, "ld"))
        rc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300).returncode
        return rc, "".join(p.read_text(errors="replace") for p in Path(d).glob("ld*"))


def foreign_std_bindings(log: str) -> list[str]:
    """The std:: symbols our objects bound to a library other than libstdc++ (or one of ours), as
    'symbol -> library': copies of standard-library code that other libraries export, compiled
    against other headers than ours (CMakeLists.txt links libstdc++ first to avoid them)."""
    found = set()
    for m in BINDING.finditer(log):
        src, dst, sym = m.groups()
        if OURS.search(src) and STD_SYMBOL.match(sym) and not OURS.search(dst) and "libstdc++" not in dst:
            found.add(f"{sym} -> {dst}")
    return sorted(found)


def bindings(order: list[str]) -> dict:
    _, text = run_under_ld_debug([sys.executable, "-c", script(order)])
    loaded = sorted(set(re.findall(r"calling init: (\S*libstdc\+\+\S*)", text)))
    providers: dict[str, int] = {}
    for m in BINDING.finditer(text):
        src, dst, sym = m.groups()
        if "glmimage" in src and STREAM_SYMBOL.search(sym):
            providers[dst] = providers.get(dst, 0) + 1
    return {"libstdcxx_loaded": loaded, "glmimage_stream_symbols_bound_to": providers,
            "std_symbols_bound_elsewhere": foreign_std_bindings(text)}


def main() -> int:
    out: dict = {"bench": "import_probe", "python": sys.version.split()[0]}
    failed = []
    for order in ORDERS:
        name = "-".join(order)
        res = subprocess.run([sys.executable, "-c", script(order)], capture_output=True, text=True, timeout=300)
        ok = res.returncode == 0 and res.stdout.strip().endswith("loaded")
        out[name] = "ok" if ok else f"exit {res.returncode}: {res.stderr.strip()[-300:]}"
        if not ok:
            failed.append(order)
    for order in failed[:2]:
        out["ld_debug_" + "-".join(order)] = bindings(order)
    # Always: where our std:: symbols bound with torch imported first (none but libstdc++ is right).
    out["std_symbols_bound_elsewhere"] = foreign_std_bindings(run_under_ld_debug(
        [sys.executable, "-c", script(["torch", "glmimage"])])[1])
    out["ok"] = not failed
    print(json.dumps(out))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
