"""Per-component placement and staged residency (LoadOptions.components / residency) on the tiny
checkpoint: a staged pipeline gives exactly the resident pipeline's images, and between stages its
weights are the zero-copy views of the files again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import glmimage
import glmimage_testing
from parity import levels

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny"
FAST = dict(height=64, width=64, num_inference_steps=2, progress=False, output_type="np")
FOLDERS = ("vision_language_encoder", "text_encoder", "transformer", "vae")


@pytest.fixture(scope="module")
def resident():
    return glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16")


@pytest.fixture(scope="module")
def staged():
    return glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16", residency="staged")


def condition():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8))


def rests_as_file_views(pipe) -> bool:
    # tiny is stored in float32; the compute dtype is bfloat16: at rest every tensor is the file's own.
    return all(t.dtype != torch.bfloat16 for f in FOLDERS for t in glmimage_testing.state_dict(pipe, f).values())


def test_staged_reports_itself(staged):
    assert {(c.folder, c.residency, c.dtype) for c in staged.components} == {(f, "staged", "BF16") for f in FOLDERS}
    assert "(staged)" in staged.summary()
    assert rests_as_file_views(staged)


def test_qkv_fused_only_where_weights_are_copies(resident, staged):
    """q/k/v run as one matmul where the weights are copies anyway (here: cast to bf16), never over
    zero-copy file views (float32 as stored) or staged weights. The staged (unfused) pipeline's
    images equal the resident (fused) one's in the tests below, so fusing changes no pixel."""
    import json

    layers = {"vision_language_encoder": json.loads((TINY / "vision_language_encoder" / "config.json").read_text())[
        "text_config"]["num_hidden_layers"], "text_encoder": 0, "vae": 0,
        "transformer": json.loads((TINY / "transformer" / "config.json").read_text())["num_layers"]}
    assert {c.folder: c.fused for c in resident.components} == layers  # one group per layer
    assert all(c.fused == 0 for c in staged.components)
    as_stored = glmimage.Pipeline.from_pretrained(TINY, dtype="float32")
    assert all(c.fused == 0 for c in as_stored.components)
    assert f"{layers['transformer']} q/k/v fused" in resident.summary()


@pytest.mark.parametrize("case", ["t2i", "i2i", "batch2"])
def test_staged_images_equal_resident(resident, staged, case):
    args = dict(FAST, seed=11)
    prompt = 'A sign that says "OPEN"'
    if case == "i2i":
        args["image"] = condition()
    if case == "batch2":
        prompt = [prompt, "a red square"]
    want = resident(prompt, **args).images
    got = staged(prompt, **args).images
    diff = float(np.abs(got - want).max())  # output_type "np": the float images, before 8-bit rounding
    print(f"staged_vs_resident_{case}: max abs diff {diff} (tolerance 0)")
    assert diff == 0
    assert rests_as_file_views(staged)


@pytest.mark.parametrize("case", ["t2i", "i2i"])
def test_staged_ar_places_only_what_the_stage_reads(staged, case):
    """Staged, the AR model is placed in parts: during token generation its text decoder is on the
    device (here: cast to bf16), while the vision encoder and VQ stay file views (float32 as stored),
    for image-to-image too (they ran before generation and were released)."""
    seen = []

    def look(stage, step, total):
        if stage == "ar" and step == 1:
            sd = glmimage_testing.state_dict(staged, "vision_language_encoder")
            seen.append({k: sd[k].dtype for k in ("model.language_model.layers.0.self_attn.q_proj.weight",
                                                  "model.language_model.embed_tokens.weight",
                                                  "model.visual.blocks.0.attn.qkv.weight")})

    kw = dict(height=64, width=64, seed=4, progress=False, callback=look)
    if case == "i2i":
        kw["image"] = condition()
    staged.generate_prior_tokens('A sign that says "OPEN"', **kw)
    assert seen == [{"model.language_model.layers.0.self_attn.q_proj.weight": torch.bfloat16,
                     "model.language_model.embed_tokens.weight": torch.bfloat16,  # on the host, in bf16
                     "model.visual.blocks.0.attn.qkv.weight": torch.float32}]
    assert rests_as_file_views(staged)


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_staged_quantized_equals_resident_quantized(fmt, load_quantized):
    """Quantized weights are made once at load and travel with their stage; everything else still
    rests in the file. The images equal the resident quantized pipeline's."""
    res = load_quantized(TINY, fmt, dtype="bfloat16")
    stg = load_quantized(TINY, fmt, dtype="bfloat16", residency="staged")
    assert [c.quantized for c in stg.components] == [c.quantized for c in res.components]
    args = dict(FAST, seed=5)
    want, got = res('A sign that says "OPEN"', **args), stg('A sign that says "OPEN"', **args)
    assert np.array_equal(got.prior_token_ids, want.prior_token_ids)
    diff = float(np.abs(got.images - want.images).max())
    print(f"staged_vs_resident_{fmt}: max abs diff {diff} (tolerance 0)")
    assert diff == 0
    # At rest: the quantized weights are the load-time ones, every other tensor the file's view.
    sd = glmimage_testing.state_dict(stg, "transformer")
    quantized = {k for k, t in sd.items() if t.dtype in (torch.int8, torch.float8_e4m3fn)}
    assert "transformer_blocks.0.attn1.to_q.weight" in quantized
    assert all(t.dtype == torch.float32 for k, t in sd.items() if k not in quantized)


def test_diffusers_load_names():
    """from_pretrained takes diffusers' torch_dtype= and device_map=; a dict torch_dtype gives each
    component the dtype diffusers' own from_pretrained gives it from that dict."""
    from diffusers import GlmImagePipeline

    def dtypes(pipe):
        return {c.folder: c.dtype for c in pipe.components}

    plain = glmimage.Pipeline.from_pretrained(TINY, torch_dtype=torch.bfloat16, device_map="cpu")
    assert set(dtypes(plain).values()) == {"BF16"} and {c.device for c in plain.components} == {"cpu"}
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
    for per_component in ({"transformer": torch.bfloat16, "vae": torch.float16},
                          {"default": torch.bfloat16, "vae": torch.float32}):
        ref = GlmImagePipeline.from_pretrained(str(TINY), torch_dtype=per_component)
        want = {f: names[getattr(ref, f).dtype] for f in FOLDERS}
        got = dtypes(glmimage.Pipeline.from_pretrained(TINY, torch_dtype=per_component))
        print(f"torch_dtype {per_component}: ours {got}, diffusers {want}")
        assert got == want and len(set(got.values())) > 1
    for kwargs, says in [(dict(dtype="float32", torch_dtype=torch.bfloat16), "not both"),
                         (dict(device="cuda", device_map="cpu"), "not both"),
                         (dict(device_map="balanced"), "one device"),
                         (dict(torch_dtype={"vae": torch.float16}, components={"vae": {"dtype": "float32"}}),
                          "given in both torch_dtype and components"),
                         (dict(torch_dtype={"unet": torch.float16}), "unknown component"),
                         (dict(torch_dtype="int8"), "unknown dtype")]:
        with pytest.raises(ValueError, match=says):
            glmimage.Pipeline.from_pretrained(TINY, **kwargs)


def test_component_overrides():
    p = glmimage.Pipeline.from_pretrained(TINY, dtype="float32", components={"vae": {"dtype": "bfloat16"},
                                                                            "text_encoder": {"residency": "staged"}})
    got = {c.folder: (c.dtype, c.residency) for c in p.components}
    assert got == {"vision_language_encoder": ("F32", "resident"), "text_encoder": ("F32", "staged"),
                   "transformer": ("F32", "resident"), "vae": ("BF16", "resident")}
    # Only the VAE differs from the all-float32 pipeline: the same prior tokens, a close image.
    full = glmimage.Pipeline.from_pretrained(TINY, dtype="float32")
    a, b = p("x", seed=2, **FAST), full("x", seed=2, **FAST)
    assert np.array_equal(a.prior_token_ids, b.prior_token_ids)
    diff = np.abs(levels(a.images).astype(int) - levels(b.images).astype(int))
    print(f"vae_bf16_vs_fp32: max abs diff {diff.max()}, mean {diff.mean():.3f} levels")
    assert diff.mean() < 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(residency="offloaded"), "residency"),
    (dict(components={"unet": {"dtype": "float32"}}), "unknown component"),
    (dict(components={"vae": {"precision": "float32"}}), "unknown key"),
    (dict(components={"vae": {"device": "tpu"}}), "device"),
])
def test_bad_placement_is_a_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        glmimage.Pipeline.from_pretrained(TINY, **kwargs)
