"""Tensor manifests (tools/dump_manifest.py): committed files regenerate, real sizes are right, and the
saved-keys rule matches what save_pretrained really writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

import dump_manifest as dm

REAL = REPO / "tests" / "data" / "real-configs"
COMMITTED = REPO / "models" / "manifests"
SHARED_REAL = Path("/work/shared/reference/real-configs")


@pytest.fixture(scope="module")
def real_manifests(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("manifests")
    dm.dump(REAL, out, "BF16")
    return out


def test_regenerates_committed(real_manifests: Path):
    for comp in dm.COMPONENTS:
        committed = COMMITTED / f"{comp}.json"
        assert committed.is_file(), f"missing {committed}: python3 tools/dump_manifest.py"
        assert (real_manifests / f"{comp}.json").read_bytes() == committed.read_bytes(), comp
    assert sorted(p.name for p in COMMITTED.glob("*.json")) == sorted(f"{c}.json" for c in dm.COMPONENTS)


def test_real_sizes(real_manifests: Path):
    m = {c: json.loads((real_manifests / f"{c}.json").read_text()) for c in dm.COMPONENTS}
    assert (m["transformer"]["num_tensors"], m["transformer"]["num_parameters"]) == (443, 6_926_882_880)
    assert m["vae"]["num_parameters"] == 406_100_643
    for c, mm in m.items():
        assert mm["num_tensors"] == len(mm["tensors"])
        names = [t["name"] for t in mm["tensors"]]
        assert names == sorted(names) and len(set(names)) == len(names)
        assert {t["dtype"] for t in mm["tensors"]} == {"BF16"}
    vle = {t["name"]: t["shape"] for t in m["vision_language_encoder"]["tensors"]}
    assert vle["lm_head.weight"] == [16512, 4096]
    assert vle["model.language_model.embed_tokens.weight"] == [168064, 4096]
    assert vle["model.language_model.layers.39.mlp.gate_up_proj.weight"] == [27392, 4096]
    assert vle["model.language_model.layers.0.self_attn.k_proj.bias"] == [256]
    assert vle["model.visual.embeddings.position_embedding.weight"] == [16384, 1536]
    assert vle["model.vqmodel.quantize.embedding.weight"] == [16384, 2048]
    assert not any("rotary_emb" in n for n in vle)  # non-persistent buffers are not saved
    te = {t["name"] for t in m["text_encoder"]["tensors"]}
    assert "shared.weight" in te and "encoder.embed_tokens.weight" not in te  # tied duplicate not saved


def test_real_configs_copy_is_current():
    if not SHARED_REAL.is_dir():
        pytest.skip("shared reference not available")
    ours = sorted(p.relative_to(REAL).as_posix() for p in REAL.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(SHARED_REAL).as_posix() for p in SHARED_REAL.rglob("*") if p.is_file())
    assert ours == theirs
    for f in ours:
        assert (REAL / f).read_bytes() == (SHARED_REAL / f).read_bytes(), f


def _safetensors_entries(path: Path) -> list[tuple[str, list[int], str]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as s:
        return sorted((k, list(s.get_slice(k).get_shape()), s.get_slice(k).get_dtype()) for k in s.keys())


@pytest.mark.parametrize("which,dtype", [("tiny_f32", "F32"), ("tiny_bf16", "BF16")])
def test_checkpoint_matches_own_manifest(request, tmp_path: Path, which: str, dtype: str):
    ckpt: Path = request.getfixturevalue(which)
    res = dm.dump(ckpt, tmp_path, dtype)
    for comp in dm.COMPONENTS:
        files = list((ckpt / comp).glob("*.safetensors"))
        assert len(files) == 1, files
        expected = sorted((t["name"], t["shape"], t["dtype"]) for t in res[comp]["tensors"])
        assert _safetensors_entries(files[0]) == expected, comp
