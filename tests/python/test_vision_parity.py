"""Condition-image tokenization against the reference: the image processor (GLM smart_resize,
PIL bicubic, rescale/normalize, patch layout), the ViT vision encoder and the VQ ids, on the
embedded tiny checkpoint. The reference is transformers' GlmImageForConditionalGeneration and
its image processor (the PIL backend here: torchvision is not installed), called in each test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from parity import record, record_exact

import glmimage
import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

TINY = REPO / "models" / "tiny"

# (height, width): the sizes the task names, plus the transposed clamp case.
SIZES = [(512, 768), (1024, 1024), (700, 1300), (600, 600), (3000, 800), (800, 3000)]


def make_image(h: int, w: int, seed: int) -> np.ndarray:
    """RGB uint8: smooth gradients (real resampling work) plus noise (no flat regions)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), ((x + y) * 3) % 256], -1)
    return np.clip(base + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pipe():
    return glmimage.Pipeline.from_pretrained(str(TINY), dtype="auto")


@pytest.fixture(scope="module")
def ref_processor():
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(str(TINY / "processor"))


@pytest.fixture(scope="module")
def ref_model():
    from transformers import GlmImageForConditionalGeneration

    return GlmImageForConditionalGeneration.from_pretrained(str(TINY / "vision_language_encoder")).eval()


def ref_preprocess(processor, images):
    out = processor(images=[Image.fromarray(a) for a in images], return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def ref_token_ids(model, pixel_values, grids):
    """As the reference model's own prefill does: get_image_features -> pooler_output (in
    transformers 5.24 a list of per-image [hidden, gh, gw]) -> get_image_tokens."""
    with torch.no_grad():
        feats = model.get_image_features(pixel_values, grids)
        return feats, model.get_image_tokens(feats.pooler_output, grids)


@pytest.mark.parity
def test_smart_resize_rule():
    from transformers.models.glm_image.image_processing_pil_glm_image import smart_resize

    sizes = [(h, w) for h in (16, 17, 31, 100, 255, 511, 512, 513, 700, 1000, 1023, 1024, 1300, 2047, 2048, 4000)
             for w in (16, 40, 200, 512, 777, 1024, 1536, 2049, 3000, 4096)]
    # Rounding ties: h2 * scale / 16 lands exactly on .5 (round half to even must pick 16, 18, ...).
    sizes += [(1048, 1048), (1072, 1072), (1040, 1040), (1056, 600)]
    ours, ref = [], []
    for h, w in sizes:
        if max(h, w) / min(h, w) > 4:
            continue
        ours.append(_testing.smart_resize(h, w, 16, 512 * 512, 2048 * 2048))
        ref.append(smart_resize(h, w, 16, 512 * 512, 2048 * 2048))
    entry = record_exact("image_smart_resize", torch.tensor(ours), torch.tensor(ref), cases=len(ours))
    assert entry["ok"]


@pytest.mark.parity
def test_bicubic_matches_pil():
    rng = np.random.default_rng(7)
    # (in_h, in_w, out_h, out_w): up/down, one axis only, and both sides of Pillow's pass
    # order rule (vertical first iff the height loses more than twice the width's pixels).
    cases = [(3000, 800, 1024, 272), (800, 3000, 272, 1024), (37, 20, 464, 256), (64, 64, 64, 64), (50, 40, 50, 17),
             (50, 40, 19, 40), (300, 200, 280, 190), (300, 200, 279, 190), (300, 200, 281, 190), (237, 263, 32, 24)]
    for _ in range(24):
        h, w, th, tw = (int(v) for v in rng.integers(1, 200, 4))
        cases.append((h, w, th, tw))
    worst = 0
    for h, w, th, tw in cases:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = torch.from_numpy(np.asarray(Image.fromarray(a).resize((tw, th), Image.BICUBIC)).copy())
        ours = _testing.vision_resize_bicubic(torch.from_numpy(a), th, tw)
        entry = record_exact(f"image_bicubic_{h}x{w}_to_{th}x{tw}", ours, ref)
        assert entry["ok"], entry
        worst = max(worst, entry["max_abs_diff"])
    assert worst == 0


@pytest.mark.parity
def test_lanczos_matches_pil():
    """The decoder's copy of a condition image is resized like diffusers' VaeImageProcessor does
    it: PIL LANCZOS on uint8 (to sides floored to multiples of 16)."""
    rng = np.random.default_rng(11)
    cases = [(520, 776, 512, 768), (1000, 700, 992, 688), (37, 20, 464, 256), (300, 200, 279, 190),
             (300, 200, 281, 190), (50, 40, 19, 40)]
    for _ in range(16):
        h, w, th, tw = (int(v) for v in rng.integers(1, 200, 4))
        cases.append((h, w, th, tw))
    for h, w, th, tw in cases:
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = torch.from_numpy(np.asarray(Image.fromarray(a).resize((tw, th), Image.LANCZOS)).copy())
        ours = _testing.vision_resize_lanczos(torch.from_numpy(a), th, tw)
        assert record_exact(f"image_lanczos_{h}x{w}_to_{th}x{tw}", ours, ref)["ok"]


@pytest.mark.parity
def test_image_preprocess(pipe, ref_processor):
    images = [make_image(h, w, i) for i, (h, w) in enumerate(SIZES)]
    ref_pv, ref_grid = ref_preprocess(ref_processor, images)
    pv, grid = _testing.vision_preprocess(pipe, [torch.from_numpy(a) for a in images])
    assert pv.dtype == torch.float32
    e1 = record_exact("image_preprocess_grids", grid, ref_grid)
    # Bit-exact: PIL's fixed-point bicubic and the float64 -> float32 rescale are reproduced.
    e2 = record("image_preprocess", pv, ref_pv, atol=0.0, images=len(images))
    assert e1["ok"] and e2["ok"]


@pytest.mark.parity
def test_image_preprocess_grey_and_rgba(pipe, ref_processor):
    """The reference converts to RGB first: grey is replicated, alpha composited onto white."""
    grey = make_image(520, 530, 40)[..., 0]
    rgba = np.concatenate([make_image(530, 520, 41), make_image(530, 520, 42)[..., :1]], -1)
    rgba[:, :8, 3] = 0  # fully transparent and fully opaque columns too
    rgba[:, 8:16, 3] = 255
    ref = ref_processor(images=[Image.fromarray(grey, "L"), Image.fromarray(rgba, "RGBA")], return_tensors="pt")
    pv, grid = _testing.vision_preprocess(pipe, [torch.from_numpy(grey), torch.from_numpy(rgba)])
    e1 = record_exact("image_preprocess_grey_rgba_grids", grid, ref["image_grid_thw"])
    e2 = record("image_preprocess_grey_rgba", pv, ref["pixel_values"], atol=0.0)
    assert e1["ok"] and e2["ok"]


@pytest.mark.parity
def test_vision_features(pipe, ref_processor, ref_model):
    images = [make_image(512, 768, 10), make_image(700, 1300, 11)]
    pv, grids = ref_preprocess(ref_processor, images)  # the reference's own input isolates the encoder
    ref, _ = ref_token_ids(ref_model, pv, grids)
    ours = _testing.vision_encode(pipe, pv, grids)
    entry = record("vision_features", ours, ref.last_hidden_state, atol=1e-5, rtol=1e-4)
    assert entry["ok"]
    # Per image: each image alone gives the same rows (no attention across images).
    n0 = int(grids[0].prod())
    alone = _testing.vision_encode(pipe, pv[n0:], grids[1:])
    entry = record("vision_features_per_image", alone, ref.last_hidden_state[n0:], atol=1e-5, rtol=1e-4)
    assert entry["ok"]


@pytest.mark.parity
def test_vision_vq(pipe, ref_processor, ref_model):
    from diffusers import GlmImagePipeline

    one = [make_image(1024, 1024, 20)]
    two = [make_image(600, 600, 21), make_image(700, 1300, 22)]
    for name, images in (("one", one), ("two", two)):
        pv, grids = ref_preprocess(ref_processor, images)
        _, ref_ids = ref_token_ids(ref_model, pv, grids)
        ids = _testing.vision_token_ids(pipe, pv, grids)
        entry = record_exact(f"vision_vq_{name}", ids, ref_ids, tokens=int(ids.numel()))
        assert entry["ok"] and ids.dtype == torch.int64

        # Raw images end to end (our preprocessing too).
        our_pv, our_grids = _testing.vision_preprocess(pipe, [torch.from_numpy(a) for a in images])
        entry = record_exact(f"vision_vq_{name}_from_pixels", _testing.vision_token_ids(pipe, our_pv, our_grids),
                             ref_ids)
        assert entry["ok"]

        # prior_token_image_ids: the diffusers pipeline's per-image nearest 2x upsampling.
        ref_prior = torch.cat([
            GlmImagePipeline._upsample_token_ids(part, int(g[1]), int(g[2])).squeeze(0)
            for part, g in zip(torch.split(ref_ids, grids.prod(-1).tolist()), grids)
        ])
        entry = record_exact(f"vision_prior_ids_{name}", _testing.vision_upsample_ids_2x(ids, grids), ref_prior)
        assert entry["ok"]


@pytest.mark.parity
def test_vision_vq_bf16(ref_processor):
    from transformers import GlmImageForConditionalGeneration

    ref_model = GlmImageForConditionalGeneration.from_pretrained(
        str(TINY / "vision_language_encoder"), torch_dtype=torch.bfloat16).eval()
    bf16 = glmimage.Pipeline.from_pretrained(str(TINY), dtype="bfloat16")
    images = [make_image(600, 600, 30), make_image(700, 1300, 31)]
    pv, grids = ref_preprocess(ref_processor, images)
    ref, ref_ids = ref_token_ids(ref_model, pv, grids)
    ours = _testing.vision_encode(bf16, pv, grids)
    assert ours.dtype == torch.bfloat16
    # Same ops in the same dtype as the reference; bf16 rounding (8 bits of mantissa) still
    # allows one-ulp differences where kernels accumulate differently.
    scale = float(ref.last_hidden_state.float().abs().max())
    entry = record("vision_features_bf16", ours.float(), ref.last_hidden_state.float(), atol=2e-2 * scale, rtol=2e-2)
    assert entry["ok"]
    ids = _testing.vision_token_ids(bf16, pv, grids)
    agree = float((ids == ref_ids).double().mean())
    # ids can flip on near ties of the bf16 distances; the tiny random codebook has many.
    entry = record("vision_vq_bf16_agreement", torch.tensor([agree]), torch.tensor([1.0]), atol=0.05,
                   agreement=agree, tokens=int(ids.numel()))
    assert entry["ok"]


@pytest.mark.parametrize("shape,dtype,why", [
    ((15, 300, 3), torch.uint8, "too small"),
    ((100, 401, 3), torch.uint8, "aspect ratio"),
    ((0, 64, 3), torch.uint8, "empty"),
    ((64, 64, 2), torch.uint8, "channels"),
    ((64,), torch.uint8, "1-D"),
    ((64, 64, 3), torch.float32, "dtype"),
])
def test_bad_images_raise_value_error(pipe, shape, dtype, why):
    with pytest.raises(ValueError):
        _testing.vision_preprocess(pipe, [torch.zeros(shape, dtype=dtype)])


def test_bad_encoder_inputs_raise_value_error(pipe):
    pv = torch.zeros(16, 768)
    with pytest.raises(ValueError):  # grid says 12 patches, input has 16
        _testing.vision_encode(pipe, pv, torch.tensor([[1, 3, 4]]))
    with pytest.raises(ValueError):  # not (1, gh, gw)
        _testing.vision_encode(pipe, pv, torch.tensor([[2, 2, 4]]))
    with pytest.raises(ValueError):  # wrong row length
        _testing.vision_encode(pipe, torch.zeros(16, 700), torch.tensor([[1, 4, 4]]))
    with pytest.raises(ValueError):
        _testing.vision_preprocess(pipe, [])
