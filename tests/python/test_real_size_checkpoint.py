"""tools/make_real_size_checkpoint.py without writing gigabytes: the tensor plan (names, shapes, sharding) at
full size and with --layers 1, the configs, the tokenizer with the real ids, and the streaming safetensors
writer on a few small tensors."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from conftest import REPO

import _tokenizer_synth as toksynth
import make_real_size_checkpoint as rs

REAL = REPO / "tests" / "data" / "real-configs"
TINY = REPO / "models" / "tiny"
COMPONENTS = ["vision_language_encoder", "text_encoder", "transformer", "vae"]
REAL_PARAMS = {"vision_language_encoder": 10_114_245_632, "transformer": 6_926_882_880, "vae": 406_100_643,
               "text_encoder": 217_657_472}
LAYER_KEYS = {  # component: [(config path, real count)]
    "vision_language_encoder": [(("text_config", "num_hidden_layers"), 40), (("vision_config", "depth"), 40)],
    "text_encoder": [(("num_layers",), 12)],
    "transformer": [(("num_layers",), 30)],
    "vae": [],
}


@pytest.fixture(scope="module")
def full():
    return rs.make_plan()


@pytest.fixture(scope="module")
def one():
    return rs.make_plan(layers=1)


def _manifest(comp):
    return json.loads((REPO / "models" / "manifests" / f"{comp}.json").read_text())


def _get(d, path):
    for k in path:
        d = d[k]
    return d


def test_full_plan_is_the_manifests(full):
    assert list(full) == COMPONENTS
    for comp in COMPONENTS:
        man = _manifest(comp)
        p = full[comp]
        got = [(t["name"], t["shape"], t["dtype"]) for t in p["tensors"]]
        assert got == [(t["name"], t["shape"], t["dtype"]) for t in man["tensors"]], comp
        assert p["num_parameters"] == man["num_parameters"] == REAL_PARAMS[comp], comp
        assert len(p["tensors"]) == man["num_tensors"]
        assert p["total_bytes"] == 2 * REAL_PARAMS[comp]
        assert p["class"] == man["class"]
        assert not p["config_changed"] and p["config"] == json.loads((REAL / comp / "config.json").read_text())


def test_full_sharding(full):
    expect_shards = {"vision_language_encoder": 5, "transformer": 3, "text_encoder": 1, "vae": 1}
    for comp in COMPONENTS:
        p = full[comp]
        stem = "model" if p["library"] == "transformers" else "diffusion_pytorch_model"
        k = len(p["shards"])
        assert k == expect_shards[comp], comp
        assert all(s["bytes"] <= rs.SHARD_BYTES for s in p["shards"])
        if k == 1:
            assert p["shards"][0]["file"] == f"{stem}.safetensors" and p["index"] is None and p["index_file"] is None
            continue
        assert [s["file"] for s in p["shards"]] == [f"{stem}-{i:05d}-of-{k:05d}.safetensors" for i in range(1, k + 1)]
        assert p["index_file"] == f"{stem}.safetensors.index.json"
        idx = p["index"]
        assert idx["metadata"]["total_size"] == p["total_bytes"]
        assert set(idx["weight_map"]) == {t["name"] for t in p["tensors"]}
        for s in p["shards"]:
            assert s["bytes"] >= 0.5e9 or s is p["shards"][-1]  # greedy packing: only the last one is small
            for n in s["tensors"]:
                assert idx["weight_map"][n] == s["file"]
    total = sum(p["total_bytes"] for p in full.values())
    assert 35.0e9 < total < 35.5e9  # ~35.3 GB of bf16


def test_layers_1(one, full):
    for comp in COMPONENTS:
        p, real = one[comp], full[comp]["config"]
        cfg = p["config"]
        for path, n in LAYER_KEYS[comp]:
            assert _get(real, path) == n and _get(cfg, path) == 1, (comp, path)
        # everything else, every width, as in the real config
        flat = json.loads(json.dumps(cfg))
        for path, _ in LAYER_KEYS[comp]:
            d = flat
            for k in path[:-1]:
                d = d[k]
            d[path[-1]] = _get(real, path)
        assert flat == real, comp
        assert p["config_changed"] == bool(LAYER_KEYS[comp])
        # tensors: the manifest's, minus every layer index >= 1, shapes unchanged
        man = {t["name"]: t["shape"] for t in _manifest(comp)["tensors"]}
        names = [t["name"] for t in p["tensors"]]
        for t in p["tensors"]:
            assert man[t["name"]] == t["shape"]
            assert not re.search(r"(layers|blocks|block|transformer_blocks)\.([1-9]\d*)\.", t["name"]) or comp == "vae"
        dropped = set(man) - set(names)
        if comp == "vae":
            assert not dropped and p["num_parameters"] == REAL_PARAMS["vae"]
        else:
            assert dropped and all(rs.stack_of(comp, n)[1] >= 1 for n in dropped), comp
            assert any(rs.stack_of(comp, n)[1] == 0 for n in names), comp
        assert len(p["shards"]) == 1 and p["index"] is None
    assert "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in {
        t["name"] for t in one["text_encoder"]["tensors"]}
    # per-layer tensor counts: AR decoder 13, vision block 12, T5 block 9 (+ relative bias), DiT block 14
    assert len(one["vision_language_encoder"]["tensors"]) == 1011 - 39 * 13 - 39 * 12
    assert len(one["text_encoder"]["tensors"]) == 111 - 11 * 9
    assert len(one["transformer"]["tensors"]) == 443 - 29 * 14
    assert rs.make_plan(layers=100)["transformer"]["num_parameters"] == REAL_PARAMS["transformer"]
    with pytest.raises(ValueError):
        rs.make_plan(layers=0)


def test_init_specs(full):
    vle = {t["name"]: t["init"] for t in full["vision_language_encoder"]["tensors"]}
    assert vle["model.language_model.norm.weight"] == {"kind": "const", "value": 1.0}
    assert vle["model.language_model.layers.3.self_attn.q_proj.bias"] == {"kind": "const", "value": 0.0}
    assert vle["model.language_model.embed_tokens.weight"] == {"kind": "normal", "std": 0.02}
    assert vle[rs.VQ_CODEBOOK] == {"kind": "normal", "std": 1.0}
    lm = vle["lm_head.weight"]
    assert lm["kind"] == "lm_head" and lm["rows"] == 16384 and lm["scale"] == 64.0
    assert math.isclose(lm["std"] * lm["scale"] * math.sqrt(4096), rs.LM_HEAD_LOGIT_STD)
    q = vle["model.language_model.layers.0.self_attn.q_proj.weight"]["std"]
    o = vle["model.language_model.layers.0.self_attn.o_proj.weight"]["std"]
    assert math.isclose(q, 1 / 64) and math.isclose(o, q / math.sqrt(80))
    dit = {t["name"]: t["init"] for t in full["transformer"]["tensors"]}
    assert math.isclose(dit["transformer_blocks.0.ff.net.2.weight"]["std"], 1 / math.sqrt(16384 * 60))
    assert math.isclose(dit["proj_out.weight"]["std"], 1 / math.sqrt(4096 * 60))
    vae = {t["name"]: t["init"] for t in full["vae"]["tensors"]}
    assert vae["decoder.conv_norm_out.weight"]["value"] == 1.0 and vae["decoder.conv_norm_out.bias"]["value"] == 0.0
    for p in full.values():
        for t in p["tensors"]:
            assert t["init"]["kind"] in ("const", "normal", "lm_head")
            if t["init"]["kind"] == "normal":
                assert 0 < t["init"]["std"] <= 1.0, t["name"]


def test_tokenizer_real_ids():
    from tokenizers import Tokenizer

    vle = json.loads((REAL / "vision_language_encoder" / "config.json").read_text())
    lay = rs.real_token_layout(vle)
    assert lay["special_tokens"]["<|endoftext|>"] == 167841 == vle["text_config"]["pad_token_id"]
    assert lay["special_tokens"]["<|image|>"] == 167855 == vle["image_token_id"]
    assert lay["special_tokens"]["<sop>"] == 167845 and lay["special_tokens"]["<eop>"] == 167846
    assert lay["text_vocab_size"] == 151329 and lay["total_size"] == 167857 <= lay["vocab_size"] == 168064
    tok = Tokenizer.from_str(rs.real_tokenizer_json(lay))
    assert tok.get_vocab_size(with_added_tokens=True) == 167857
    assert tok.token_to_id("<|dit_token_16384|>") == 16384 and tok.token_to_id("<|dit_token_16511|>") == 16511
    ids = tok.encode('<|dit_token_16384|><|image|><|dit_token_16385|>a sign "OPEN"').ids
    assert ids[:3] == [16384, 167855, 16385]
    n_text = toksynth.layout(16512)["text_vocab_size"]  # the learned BPE part (bytes + merges)
    assert all(16512 <= i < 16512 + n_text for i in ids[3:])  # real BPE tokens, never a filler
    # the other processor files are the synth helpers' with the real codebook, equal to the real file
    assert toksynth.tokenizer_config(16384) == json.loads((REAL / "processor" / "tokenizer_config.json").read_text())


def test_generation_config_keys():
    vle = json.loads((REAL / "vision_language_encoder" / "config.json").read_text())
    g = rs.generation_config(vle)
    assert set(g) == set(json.loads((TINY / "vision_language_encoder" / "generation_config.json").read_text()))
    assert g["eos_token_id"] == 16385 and g["pad_token_id"] == 167841


def test_write_configs_layout(tmp_path, one):
    rs.write_configs(tmp_path, one)
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    tiny_files = {p.relative_to(TINY).as_posix() for p in TINY.rglob("*") if p.is_file()}
    assert files == {f for f in tiny_files if not f.endswith(".safetensors")}
    assert (tmp_path / "model_index.json").read_bytes() == (REAL / "model_index.json").read_bytes()
    cfg = json.loads((tmp_path / "vision_language_encoder" / "config.json").read_text())
    assert cfg["text_config"]["num_hidden_layers"] == 1 and cfg["vision_config"]["depth"] == 1
    assert cfg["text_config"]["hidden_size"] == 4096
    assert json.loads((tmp_path / "transformer" / "config.json").read_text())["num_layers"] == 1
    assert json.loads((tmp_path / "text_encoder" / "config.json").read_text())["num_layers"] == 1
    assert (tmp_path / "vae" / "config.json").read_bytes() == (REAL / "vae" / "config.json").read_bytes()
    for f in ["scheduler/scheduler_config.json", "processor/preprocessor_config.json"]:
        assert (tmp_path / f).read_bytes() == (REAL / f).read_bytes()
    for f in ["tokenizer/added_tokens.json", "tokenizer/tokenizer_config.json"]:
        assert (tmp_path / f).read_bytes() == (TINY / f).read_bytes()
    assert "<|dit_token_16384|><|image|><|dit_token_16385|>" in (tmp_path / "processor" / "chat_template.jinja").read_text()


def test_streaming_writer(tmp_path, monkeypatch):
    from safetensors import safe_open

    monkeypatch.setattr(rs, "CHUNK_ELEMS", 1000)  # several chunks per tensor
    specs = [
        ("a.norm.weight", [300], {"kind": "const", "value": 1.0}),
        ("a.bias", [7], {"kind": "const", "value": 0.0}),
        ("b.weight", [50, 61], {"kind": "normal", "std": 0.5}),
        ("lm_head.weight", [40, 64], {"kind": "lm_head", "std": 0.01, "rows": 32, "scale": 64.0}),
    ]
    tensors = [{"name": n, "shape": s, "dtype": "BF16", "nbytes": 2 * math.prod(s), "init": i} for n, s, i in specs]
    paths = []
    for k, seed in enumerate([3, 3, 4]):
        p = tmp_path / f"m{k}.safetensors"
        size = rs.write_safetensors(p, "vision_language_encoder", tensors, seed, rs._Buffers())
        hlen = int.from_bytes(p.read_bytes()[:8], "little")
        assert hlen % 8 == 0 and size == 8 + hlen + sum(t["nbytes"] for t in tensors)
        paths.append(p)
    assert paths[0].read_bytes() == paths[1].read_bytes()  # deterministic
    assert paths[0].read_bytes() != paths[2].read_bytes()  # seed matters
    with safe_open(str(paths[0]), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert list(f.keys()) == sorted(n for n, _, _ in specs)
        t = {n: f.get_tensor(n) for n in f.keys()}
    assert all(v.dtype == torch.bfloat16 for v in t.values())
    assert torch.equal(t["a.norm.weight"], torch.ones(300, dtype=torch.bfloat16))
    assert torch.equal(t["a.bias"], torch.zeros(7, dtype=torch.bfloat16))
    b = t["b.weight"].float()
    assert list(b.shape) == [50, 61] and 0.45 < b.std().item() < 0.55
    lm = t["lm_head.weight"].float()
    assert torch.all(lm[32:] == 0) and 0.5 < lm[:32].std().item() < 0.8  # 0.01 * 64
    # a tensor's bytes do not depend on which other tensors share its file
    alone = tmp_path / "alone.safetensors"
    rs.write_safetensors(alone, "vision_language_encoder", tensors[2:3], 3, rs._Buffers())
    with safe_open(str(alone), "pt") as f:
        assert torch.equal(f.get_tensor("b.weight"), t["b.weight"])


def _shrunk(plan: dict) -> dict:
    """The plan with every tensor cut to at most 3 along each axis: the same files and names, bytes instead of GB."""
    for p in plan.values():
        for t in p["tensors"]:
            t["shape"] = [min(d, 3) for d in t["shape"]]
            t["nbytes"] = 2 * math.prod(t["shape"])
            if t["init"]["kind"] == "lm_head":
                t["init"]["rows"] = min(t["init"]["rows"], t["shape"][0])
    return plan


def test_parallel_jobs_write_the_same_bytes(tmp_path, monkeypatch):
    """--jobs N: the shards written by N processes are the files one process writes."""
    real_plan = rs.make_plan
    monkeypatch.setattr(rs, "make_plan", lambda layers=None, shard_bytes=rs.SHARD_BYTES: _shrunk(
        real_plan(layers, shard_bytes)))
    files = {}
    for jobs in (1, 3):
        out = tmp_path / f"jobs{jobs}"
        rs.build(out, layers=1, jobs=jobs, log=lambda *a, **k: None)
        files[jobs] = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    weights = [f for f in files[1] if f.endswith(".safetensors")]
    assert len(weights) == sum(len(p["shards"]) for p in rs.make_plan(1).values()) > 3
    assert files[3] == files[1]


def test_a_failed_job_fails_the_build(tmp_path, monkeypatch):
    """A shard whose worker raises ends the build with that error and leaves nothing behind."""
    real_plan = rs.make_plan

    def broken(layers=None, shard_bytes=rs.SHARD_BYTES):
        plan = _shrunk(real_plan(layers, shard_bytes))
        normal = next(t for t in plan["transformer"]["tensors"] if t["init"]["kind"] == "normal")
        del normal["init"]["std"]  # the worker writing its shard raises KeyError
        return plan

    monkeypatch.setattr(rs, "make_plan", broken)
    with pytest.raises(KeyError, match="std"):
        rs.build(tmp_path / "out", layers=1, jobs=2, log=lambda *a, **k: None)
    assert list(tmp_path.iterdir()) == []



def test_help_and_print_plan(capsys):
    with pytest.raises(SystemExit) as e:
        rs.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ["--out", "--layers", "--seed", "--shard-gb", "--print-plan", "noise"]:
        assert word in out
    assert rs.main(["--print-plan", "--layers", "2"]) == 0
    out = capsys.readouterr().out
    assert "AR text decoder 2/40 layers" in out and "DiT 2/30 layers" in out
