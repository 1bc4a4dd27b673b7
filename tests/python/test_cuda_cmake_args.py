"""tools/cuda_cmake_args.py, which lets a CUDA LibTorch's CMake config find its toolkit on the GPU
machine (gpu_bench.sh's build): the nvcc it picks and the plain-named library links it makes, on
fake toolkit folders in the two layouts seen (a /usr/local/cuda-13.0 lacking libnvrtc.so; NVIDIA's
pip wheels, lib/ only, every library versioned), and the NVTX3 switch older configs ask for."""

from __future__ import annotations

import shutil
from pathlib import Path

import cuda_cmake_args as cca  # tools/, on the path (conftest)


def fake_toolkit(root: Path, libs: list[str], lib_dir: str = "lib") -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/true", root / "bin" / "nvcc")  # an ELF executable, as the real one is
    (root / lib_dir).mkdir()
    for name in libs:
        (root / lib_dir / name).write_bytes(b"")
    return root


def test_wrapper_scripts_are_passed_over(tmp_path):
    kit = fake_toolkit(tmp_path / "cuda-13.0", ["libcudart.so", "libcudart.so.13"])
    wrapper = tmp_path / "wrap" / "bin" / "nvcc"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f"#!/bin/sh\nexec {kit / 'bin' / 'nvcc'} \"$@\"\n")
    wrapper.chmod(0o755)
    missing = tmp_path / "none" / "bin" / "nvcc"
    assert cca.find_nvcc([str(missing), str(wrapper), str(kit / "bin" / "nvcc")]) == (kit / "bin" / "nvcc").resolve()
    assert cca.find_nvcc([str(wrapper)]) is None


def test_plain_names_linked_only_where_missing(tmp_path):
    kit = fake_toolkit(tmp_path / "cuda", ["libcudart.so", "libcudart.so.13", "libnvrtc.so.13",
                                           "libnvrtc-builtins.so.13.0", "libcublas.so.13"])
    shim = tmp_path / "shim"
    made = cca.link_plain_names([kit / "lib"], shim)
    assert sorted(made) == ["libcublas.so", "libnvrtc.so"]  # libcudart.so is there already
    assert (shim / "libnvrtc.so").resolve() == (kit / "lib" / "libnvrtc.so.13").resolve()
    assert not (shim / "libnvrtc-builtins.so").exists()  # nvrtc loads its builtins itself
    assert cca.link_plain_names([kit / "lib"], shim) == []  # a second run adds nothing


def test_wheel_layout_gets_its_lib_folder(tmp_path, monkeypatch, capsys):
    kit = fake_toolkit(tmp_path / "nvidia" / "cu13", ["libcudart.so.13", "libnvrtc.so.13"])
    monkeypatch.setenv("CUDA_HOME", str(kit))
    monkeypatch.setattr(cca, "find_nvcc", lambda: kit / "bin" / "nvcc")

    class FakeTorch:
        __version__ = "2.11.0+cu130"
        __file__ = str(tmp_path / "torch" / "__init__.py")  # no config there: no NVTX arguments

        class version:
            cuda = "13.0"

    monkeypatch.setitem(cca.sys.modules, "torch", FakeTorch)
    monkeypatch.setattr(cca.sys, "argv", ["cuda_cmake_args.py", str(tmp_path / "shim")])
    assert cca.main() == 0
    args = capsys.readouterr().out.split("\n")
    assert f"-DCUDA_TOOLKIT_ROOT_DIR={kit}" in args
    assert f"-DCMAKE_LIBRARY_PATH={tmp_path / 'shim'}" in args
    assert f"-DCMAKE_CUDA_FLAGS=-L{kit / 'lib'}" in args  # no lib64/: nvcc's profile would miss lib/
    assert (tmp_path / "shim" / "libcudart.so").exists() and (tmp_path / "shim" / "libnvrtc.so").exists()


def test_nvtx_headers_named_only_where_the_config_asks(tmp_path):
    kit = fake_toolkit(tmp_path / "cuda-13.0", ["libcudart.so"])
    (kit / "include" / "nvtx3").mkdir(parents=True)
    old = tmp_path / "old_cuda.cmake"  # torch 2.5's: NVTX3 from the consuming project's own tree
    old.write_text('find_path(nvtx3_dir NAMES nvtx3 PATHS "${PROJECT_SOURCE_DIR}/third_party/NVTX/c/include")\n')
    new = tmp_path / "new_cuda.cmake"  # torch 2.13's names no NVTX at all
    new.write_text("add_library(torch::cudart INTERFACE IMPORTED)\n")
    assert cca.nvtx_args(old, kit) == [f"-Dnvtx3_dir={kit / 'include'}"]
    assert cca.nvtx_args(new, kit) == []
    assert cca.nvtx_args(tmp_path / "absent.cmake", kit) == []
    shutil.rmtree(kit / "include" / "nvtx3")
    assert cca.nvtx_args(old, kit) == []  # a toolkit without the headers: the config's own fallback
