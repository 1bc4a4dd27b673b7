#!/usr/bin/env python3
"""The CMake arguments that let a CUDA LibTorch's config find its CUDA toolkit, printed one per line
(empty where this Python's torch has no CUDA). Used by tools/gpu_bench.sh's build.

LibTorch's config (share/cmake/Caffe2/public/cuda.cmake) looks for the toolkit by the usual names:
nvcc, and the plain library names (libcudart.so, libnvrtc.so). A toolkit assembled from NVIDIA's
pip wheels, as torch's own CUDA wheels pull it in (site-packages/nvidia/cu13/{bin,include,lib}),
has the compiler and headers but only versioned libraries (libcudart.so.13): the configure then
stops at "Could NOT find CUDA (missing: CUDA_CUDART_LIBRARY)". This makes a folder of plain-named
links to those libraries and names it in CMAKE_LIBRARY_PATH; where the toolkit has lib/ but no
lib64/ (nvcc's profile links from lib64), it also hands nvcc the lib/ folder. Both layouts were
configured here: a /usr/local/cuda-13.0 whose lib/ lacks libnvrtc.so, and torch 2.11's wheels alone.

Older configs (torch 2.5 and 2.6) look for the NVTX3 headers with find_path(nvtx3_dir ...) in the
consuming project's own source tree, and failing that link CUDA::nvToolsExt, a library CUDA 12.9
and later no longer ship: "The link interface of target torch::nvtoolsext contains
CUDA::nvToolsExt but the target was not found". Where the config does that and the toolkit has the
headers, nvtx3_dir names them (find_path keeps a value already set; configured here: torch 2.5.1
and 2.6.0, +cu124, with the CUDA 13.0 toolkit).

    python3 tools/cuda_cmake_args.py SHIM_DIR
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
from pathlib import Path


def nvcc_candidates() -> list[str]:
    """Where nvcc is looked for, in order: CUDA_HOME / CUDA_PATH, /usr/local/cuda, PATH, NVIDIA's wheels."""
    found = [os.path.join(os.environ[v], "bin", "nvcc") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    found += ["/usr/local/cuda/bin/nvcc", shutil.which("nvcc") or ""]
    try:
        import nvidia

        found += sorted(p for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "*", "bin", "nvcc")))
    except ImportError:
        pass
    return [c for c in found if c]


def find_nvcc(candidates: list[str] | None = None) -> Path | None:
    """The first candidate that is an nvcc binary. A wrapper script (e.g. /usr/local/bin/nvcc that
    execs the toolkit's) is passed over: the toolkit's root is the folder above the binary's bin/."""
    for c in nvcc_candidates() if candidates is None else candidates:
        if os.access(c, os.X_OK):
            with open(c, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    return Path(c).resolve()
    return None


def library_dirs(root: Path) -> list[Path]:
    """The toolkit's library folders, and those of NVIDIA's wheels beside torch (torch loads those)."""
    dirs = [root / "lib64", root / "lib"]
    try:
        import nvidia

        dirs += [Path(p) for d in nvidia.__path__ for p in sorted(glob.glob(os.path.join(d, "*", "lib")))]
    except ImportError:
        pass
    seen, out = set(), []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def link_plain_names(dirs: list[Path], shim: Path) -> list[str]:
    """shim/libX.so -> the first libX.so.N found, for each library that no folder has by its plain name."""
    shim.mkdir(parents=True, exist_ok=True)
    present = {f.name for d in dirs for f in d.glob("lib*.so")} | {f.name for f in shim.glob("lib*.so")}
    made = []
    for d in dirs:
        for lib in sorted(d.glob("lib*.so.*")):
            m = re.fullmatch(r"(lib[^.]+)\.so\.[0-9.]+", lib.name)
            if not m or "builtins" in lib.name:  # libnvrtc-builtins is loaded by nvrtc itself
                continue
            plain = m.group(1) + ".so"
            if plain not in present:
                (shim / plain).symlink_to(lib)
                present.add(plain)
                made.append(plain)
    return made


def nvtx_args(torch_cuda_cmake: Path, root: Path) -> list[str]:
    """nvtx3_dir: the toolkit's NVTX3 header folder, for a LibTorch config that looks for it."""
    try:
        asks = "nvtx3_dir" in torch_cuda_cmake.read_text()
    except OSError:
        return []
    headers = root / "include"
    if not asks or not (headers / "nvtx3").is_dir():
        return []
    return [f"-Dnvtx3_dir={headers}"]


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    import torch

    if torch.version.cuda is None:
        return 0  # a CPU LibTorch: its config looks for no toolkit
    nvcc = find_nvcc()
    if nvcc is None:
        print(f"cuda_cmake_args: torch {torch.__version__} has CUDA {torch.version.cuda}, but no nvcc was found "
              "(PATH, CUDA_HOME, /usr/local/cuda, NVIDIA's wheels)", file=sys.stderr)
        return 1
    root = nvcc.parent.parent
    shim = Path(sys.argv[1]).resolve()
    made = link_plain_names(library_dirs(root), shim)
    print(f"cuda_cmake_args: nvcc {nvcc}; plain-named links made for {', '.join(made) or 'none'}", file=sys.stderr)
    print(f"-DCUDA_TOOLKIT_ROOT_DIR={root}")
    print(f"-DCMAKE_CUDA_COMPILER={nvcc}")
    print(f"-DCMAKE_LIBRARY_PATH={shim}")
    for arg in nvtx_args(Path(torch.__file__).parent / "share/cmake/Caffe2/public/cuda.cmake", root):
        print(arg)
    if not (root / "lib64").is_dir() and (root / "lib").is_dir():
        # nvcc's own profile links from TOP/lib64; the wheels' layout has lib/ only, and CMake's
        # first test of the CUDA compiler (enable_language) would fail to find -lcudart_static.
        print(f"-DCMAKE_CUDA_FLAGS=-L{root / 'lib'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
