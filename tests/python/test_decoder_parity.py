"""The C++ diffusion decoder (glyph embeddings, seeded latents, condition-image KV cache, Euler
loop with CFG, VAE decode, postprocess) gives diffusers GlmImagePipeline's uint8 images when both
get the same prior tokens, prompts, size, steps, guidance and seed (the AR stage bypassed with
`prior_token_ids=`, as diffusers allows)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import REPO

from parity import levels, record

import glmimage
import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

TINY = REPO / "models" / "tiny"
CODEBOOK = 64


@pytest.fixture(scope="module")
def ref_pipe():
    from diffusers import GlmImagePipeline

    pipe = GlmImagePipeline.from_pretrained(str(TINY))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def ours():
    return glmimage.Pipeline.from_pretrained(str(TINY))


def prior_ids(batch, height, width, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, CODEBOOK, (batch, (height // 16) * (width // 16)), generator=g)


def condition(height, width, seed):
    """A deterministic RGB condition image and its (upsampled) prior ids."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    ids = torch.randint(0, CODEBOOK, ((height // 16) * (width // 16),), generator=g)
    return pixels, ids


def reference_images(pipe, prompts, prior, height, width, steps, guidance, seed, conds=None, n=1):
    kwargs = {}
    if conds:
        kwargs["image"] = [[PIL.Image.fromarray(px.numpy()) for px, _ in per] for per in conds]
        kwargs["prior_token_image_ids"] = [torch.cat([ids for _, ids in per]) for per in conds]
        kwargs["source_image_grid_thw"] = [
            torch.tensor([[1, px.shape[0] // 16, px.shape[1] // 16] for px, _ in per]) for per in conds
        ]
    out = pipe(
        prompt=prompts if len(prompts) > 1 else prompts[0],
        prior_token_ids=prior,
        height=height,
        width=width,
        num_inference_steps=steps,
        guidance_scale=guidance,
        num_images_per_prompt=n,
        generator=torch.Generator().manual_seed(seed),
        output_type="pil",
        **kwargs,
    )
    return torch.from_numpy(np.stack([np.array(im) for im in out.images]))


CASES = {
    "decoder_t2i": dict(prompts=['A poster that says "GLM" and “你好” on it'], height=64, width=96, steps=3),
    "decoder_t2i_noquote": dict(prompts=["a quiet lake at dawn"], height=96, width=64, steps=2),
    "decoder_batch2": dict(prompts=['A sign "OPEN"', "A mug with 'Good morning' and 「早安」 written"],
                           height=64, width=64, steps=3),
    "decoder_i2i_1": dict(prompts=['Make the sign say "SALE"'], height=64, width=64, steps=3,
                          conds=[[(64, 96)]]),
    "decoder_i2i_2": dict(prompts=["Combine both pictures"], height=64, width=96, steps=2,
                          conds=[[(64, 64), (48, 80)]]),
    "decoder_i2i_batch2": dict(prompts=['A card "A"', 'A card "BB"'], height=64, width=64, steps=2,
                               conds=[[(64, 64)], [(64, 64)]]),
}


@pytest.mark.parity
@pytest.mark.parametrize("batch_cfg", [True, False], ids=["batched_cfg", "separate_cfg"])
@pytest.mark.parametrize("name", list(CASES))
def test_decoder_matches_pipeline(ref_pipe, ours, name, batch_cfg):
    case = CASES[name]
    prompts, h, w, steps = case["prompts"], case["height"], case["width"], case["steps"]
    seed, guidance = 1234, 1.5
    prior = prior_ids(len(prompts), h, w, seed=5)
    conds = None
    if "conds" in case:
        conds = [[condition(ch, cw, seed=100 * i + j) for j, (ch, cw) in enumerate(per)]
                 for i, per in enumerate(case["conds"])]
    ref = reference_images(ref_pipe, prompts, prior, h, w, steps, guidance, seed, conds)
    got = _testing.decode(ours, prior, prompts, h, w, steps=steps, guidance=guidance, seed=seed,
                          conditions=conds or [], batch_cfg=batch_cfg)
    entry = record(f"{name}" + ("" if batch_cfg else "_separate_cfg"), got.long(), ref.long(), atol=1.0)
    assert entry["ok"]


@pytest.mark.parity
def test_decoder_images_per_prompt_and_no_cfg(ref_pipe, ours):
    prompts, h, w = ['Two "copies"'], 64, 64
    prior = prior_ids(1, h, w, seed=9)
    for guidance, n in [(1.0, 1), (2.5, 2)]:
        ref = reference_images(ref_pipe, prompts, prior, h, w, 2, guidance, 77, n=n)
        got = _testing.decode(ours, prior, prompts, h, w, steps=2, guidance=guidance, seed=77, images_per_prompt=n)
        assert record(f"decoder_g{guidance}_n{n}", got.long(), ref.long(), atol=1.0)["ok"]


@pytest.mark.parity
def test_glyph_embeddings_match(ref_pipe, ours):
    prompts = ['A sign "OPEN" and \'Café\'', "no quotes", "“你好” and 「世界」 and \"x\""]
    with torch.no_grad():
        ref = ref_pipe._get_glyph_embeds(prompts, max_sequence_length=2048, dtype=torch.float32)
    got = _testing.glyph_embeddings(ours, prompts)
    assert record("glyph_embeddings", got, ref, atol=1e-5, rtol=1e-4)["ok"]


def test_decoder_bad_inputs(ours):
    prior = prior_ids(1, 64, 64, seed=1)
    with pytest.raises(ValueError, match="multiples of 32"):
        _testing.decode(ours, prior, ["x"], 64, 80, steps=1)
    with pytest.raises(ValueError, match="prior_token_ids must have shape"):
        _testing.decode(ours, prior, ["x"], 64, 96, steps=1)
    with pytest.raises(ValueError, match="steps must be"):
        _testing.decode(ours, prior, ["x"], 64, 64, steps=0)
    with pytest.raises(ValueError, match="must lie in"):
        _testing.decode(ours, prior + 1000, ["x"], 64, 64, steps=1)
    with pytest.raises(ValueError, match="no prompt"):
        _testing.decode(ours, prior[:0], [], 64, 64, steps=1)
    px, ids = condition(64, 72, seed=3)
    with pytest.raises(ValueError, match="multiples of 16"):
        _testing.decode(ours, prior, ["x"], 64, 64, steps=1, conditions=[[(px, ids)]])
    px, ids = condition(64, 64, seed=3)
    with pytest.raises(ValueError, match="prior ids"):
        _testing.decode(ours, prior, ["x"], 64, 64, steps=1, conditions=[[(px, ids[:-1])]])


@pytest.mark.parity
def test_decoder_bf16_end_to_end():
    """bf16 weights and activations on both sides (the real checkpoint's dtype): within 1 level
    (the rounding to uint8), as the README states; the same LibTorch kernels run on both sides and
    the fused ones of ours keep their bits (0 levels measured). This test once allowed 8."""
    from diffusers import GlmImagePipeline

    ref_pipe = GlmImagePipeline.from_pretrained(str(TINY), torch_dtype=torch.bfloat16)
    ref_pipe.set_progress_bar_config(disable=True)
    ours_bf16 = glmimage.Pipeline.from_pretrained(str(TINY), dtype="bfloat16")
    prompts, h, w = ['A label "bf16"'], 64, 96
    prior = prior_ids(1, h, w, seed=11)
    ref = reference_images(ref_pipe, prompts, prior, h, w, 3, 1.5, 21)
    got = _testing.decode(ours_bf16, prior, prompts, h, w, steps=3, guidance=1.5, seed=21)
    assert record("decoder_t2i_bf16", got.long(), ref.long(), atol=1.0)["ok"]


def test_reference_images_are_not_degenerate(ref_pipe):
    """The comparison above means something only if the tiny model's pixels vary."""
    prior = prior_ids(1, 64, 96, seed=5)
    img = reference_images(ref_pipe, ['A poster that says "GLM"'], prior, 64, 96, 3, 1.5, 1234)
    frac_clamped = ((img == 0) | (img == 255)).float().mean().item()
    assert img.float().std() > 10 and frac_clamped < 0.5, (img.float().std(), frac_clamped)
    other = reference_images(ref_pipe, ['A poster that says "GLM"'], prior, 64, 96, 3, 1.5, 1235)
    assert (img.long() - other.long()).abs().max() > 1  # the seed matters


@pytest.fixture(scope="module")
def small_bf16(tmp_path_factory):
    """The small preset in bf16 (DiT inner 512, FF 2048), diffusers' pipeline and ours on it."""
    import make_tiny_checkpoint as mk
    from diffusers import GlmImagePipeline

    ckpt = mk.build(tmp_path_factory.mktemp("small_bf16") / "ckpt", "small", "bfloat16", 0)
    ref_pipe = GlmImagePipeline.from_pretrained(str(ckpt), torch_dtype=torch.bfloat16)
    ref_pipe.set_progress_bar_config(disable=True)
    return ref_pipe, glmimage.Pipeline.from_pretrained(str(ckpt), dtype="bfloat16")


SMALL_PROMPTS = {"quoted": 'A poster that says "GLM-Image" and “你好世界” in bold letters',
                 "no_quote": "a quiet lake at dawn"}


def small_prior_and_reference(ref_pipe, size, prompt):
    codebook = ref_pipe.transformer.config.prior_vq_quantizer_codebook_size
    prior = torch.randint(0, codebook, (1, (size // 16) ** 2), generator=torch.Generator().manual_seed(3))
    ref = reference_images(ref_pipe, [prompt], prior, size, size, 2, 1.5, 7)
    return prior, ref


@pytest.mark.parity
@pytest.mark.parametrize("prompt", list(SMALL_PROMPTS))
def test_decoder_bf16_small_preset_equal(small_bf16, prompt):
    """bf16 at the small preset's DiT widths, where oneDNN picks its products' kernels by shape as at
    the real size: the images must equal diffusers' within 1 level (the rounding to uint8). The tiny
    widths do not tell such choices apart: one FF call over both streams' tokens (instead of the
    reference's one call per stream) passed the tiny test with 0 levels and moved these images by
    10 (checked); both CFG passes in one batch, once the CPU default, moved the unquoted prompt's
    by 8 on an AVX-512 Xeon (the doubled row count took other kernels at 256x256), so a CPU with
    oneDNN's bf16 kernels runs them apart; where those kernels keep a row's bits from 12 rows up
    (kernels::products_keep_row_bits: an AVX-512 EPYC without AMX), the quoted prompt's glyph rows
    join the image rows' feed-forward call, which this test holds to diffusers. On a CPU that
    computes bf16 products in float32 (MKL's sgemm: the same rule) the default is one forward
    over both passes, with the glyph rows in the image rows' feed-forward call: this test then
    holds that path to diffusers (run with its products computed as ours)."""
    ref_pipe, ours = small_bf16
    prior, ref = small_prior_and_reference(ref_pipe, 256, SMALL_PROMPTS[prompt])
    got = _testing.decode(ours, prior, [SMALL_PROMPTS[prompt]], 256, 256, steps=2, guidance=1.5, seed=7)
    assert record(f"decoder_t2i_bf16_small_{prompt}", got.long(), ref.long(), atol=1.0)["ok"]


@pytest.mark.parity
@pytest.mark.parametrize("prompt", list(SMALL_PROMPTS))
def test_decoder_bf16_small_preset_batched_cfg(small_bf16, prompt):
    """Both CFG passes in one forward (the default on a GPU; the quoted prompt's texts differ in
    length, so the DiT runs two text groups) at 512x512, where oneDNN computes the doubled row count
    with the same kernels as the separate passes: equal to diffusers within 1 level, so the grouping
    itself (row order, modulation rows, per-group attention) adds nothing. At 256x256 the kernels
    differed on an AVX-512 Xeon and the images parted by 8-9 levels after 2 steps (measured), which
    is one reason the CPU keeps the passes apart where oneDNN's bf16 kernels run."""
    ref_pipe, ours = small_bf16
    prior, ref = small_prior_and_reference(ref_pipe, 512, SMALL_PROMPTS[prompt])
    got = _testing.decode(ours, prior, [SMALL_PROMPTS[prompt]], 512, 512, steps=2, guidance=1.5, seed=7,
                          batch_cfg=True)
    assert record(f"decoder_t2i_bf16_small_512_batched_cfg_{prompt}", got.long(), ref.long(), atol=1.0)["ok"]


SCHEDULES = {
    # diffusers' own arguments: timesteps set the step count (and sigma = t / 1000), truncated to
    # integers; sigmas alone (before the shift) need one per step; both together.
    "timesteps": dict(timesteps=[999.7, 750, 400.2, 90]),
    "sigmas": dict(sigmas=[1.0, 0.7, 0.35, 0.1], num_inference_steps=4),
    "both": dict(timesteps=[1000, 800, 500], sigmas=[0.95, 0.6, 0.2]),
}


@pytest.mark.parity
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_decoder_custom_schedules(ref_pipe, ours, name):
    """Custom timesteps / sigmas through the public call give diffusers' images, and move them
    from the default schedule's (so the arguments reach the loop)."""
    kwargs = SCHEDULES[name]
    prompt, h, w = 'A poster that says "GLM"', 64, 96
    prior = prior_ids(1, h, w, seed=5)
    ref = ref_pipe(prompt=prompt, prior_token_ids=prior, height=h, width=w, guidance_scale=1.5,
                   generator=torch.Generator().manual_seed(1234), output_type="np", **kwargs).images
    ref = torch.from_numpy(levels(ref))
    got = torch.from_numpy(levels(ours(prompt, prior_token_ids=prior, height=h, width=w, guidance_scale=1.5,
                                       seed=1234, output_type="np", progress=False, **kwargs).images))
    assert record(f"decoder_schedule_{name}", got.long(), ref.long(), atol=1.0)["ok"]
    steps = len(kwargs.get("timesteps", kwargs.get("sigmas")))
    default = levels(ours(prompt, prior_token_ids=prior, height=h, width=w, guidance_scale=1.5, seed=1234,
                          num_inference_steps=steps, output_type="np", progress=False).images)
    assert np.abs(default.astype(int) - got.numpy().astype(int)).max() > 1


# The float images' tolerance per dtype: float32 as the latents'; bf16 half a bf16 step in
# [0.5, 1) (the VAE computes in bf16 there, so its de-normalized values are bf16 values too).
FLOAT_IMAGE_ATOL = {"float32": 1e-5, "bfloat16": 2.0**-9}


@pytest.mark.parity
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_decoder_float_outputs_as_diffusers(ref_pipe, ours, dtype):
    """output_type "np" and "pt" as diffusers gives them: the VAE's images de-normalized to [0, 1]
    before any 8-bit rounding, "np" float32 [N, H, W, 3], "pt" [N, 3, H, W] in the VAE's dtype."""
    from diffusers import GlmImagePipeline

    if dtype == "bfloat16":
        ref_pipe = GlmImagePipeline.from_pretrained(str(TINY), torch_dtype=torch.bfloat16)
        ref_pipe.set_progress_bar_config(disable=True)
        ours = glmimage.Pipeline.from_pretrained(str(TINY), dtype="bfloat16")
    prompt, h, w = 'A poster that says "GLM"', 64, 96
    call = dict(prior_token_ids=prior_ids(1, h, w, seed=5), height=h, width=w, num_inference_steps=3,
                guidance_scale=1.5, num_images_per_prompt=2)
    for output_type in ("np", "pt"):
        ref = ref_pipe(prompt=prompt, generator=torch.Generator().manual_seed(9), output_type=output_type,
                       **call).images
        got = ours(prompt, seed=9, output_type=output_type, progress=False, **call).images
        if output_type == "np":
            assert isinstance(got, np.ndarray) and got.dtype == ref.dtype == np.float32
            got, ref = torch.from_numpy(got), torch.from_numpy(ref)
        else:
            assert got.dtype == ref.dtype and got.device.type == "cpu"
        assert got.shape == ref.shape == ((2, h, w, 3) if output_type == "np" else (2, 3, h, w))
        assert record(f"decoder_output_{output_type}_{dtype}", got.float(), ref.float(),
                      atol=FLOAT_IMAGE_ATOL[dtype])["ok"]
        assert not torch.equal(got.float() * 255, (got.float() * 255).round())  # not 8-bit levels


@pytest.mark.parity
def test_attention_kwargs_as_diffusers(ref_pipe, ours):
    """diffusers' attention_kwargs: its GlmImageAttnProcessor takes none of them, so diffusers warns
    and gives the same images; glmimage warns and gives those images too. The names diffusers'
    block passes its processor itself fail on both sides."""
    import warnings

    prompt = 'A poster that says "GLM"'
    call = dict(prior_token_ids=prior_ids(1, 64, 64, seed=5), height=64, width=64, num_inference_steps=2,
                guidance_scale=1.5, output_type="np")
    given = {"scale": 0.5, "ip_adapter_image": None}
    plain = ref_pipe(prompt=prompt, generator=torch.Generator().manual_seed(3), **call).images
    ref = ref_pipe(prompt=prompt, generator=torch.Generator().manual_seed(3), attention_kwargs=given, **call).images
    assert np.array_equal(plain, ref)  # the reference ignores them
    with pytest.warns(UserWarning, match=r"attention_kwargs \['ip_adapter_image', 'scale'\] .* ignored"):
        got = ours(prompt, seed=3, attention_kwargs=given, progress=False, **call).images
    assert record("decoder_attention_kwargs", torch.from_numpy(got), torch.from_numpy(ref), atol=1e-5)["ok"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to ignore, nothing said
        for empty in (None, {}):
            ours(prompt, seed=3, attention_kwargs=empty, progress=False, **call)
    with pytest.raises(TypeError, match="multiple values"):
        ref_pipe(prompt=prompt, attention_kwargs={"kv_cache": None}, **call)
    for bad, says in [({"kv_cache": None}, "kv_cache"), ({"attention_mask": None}, "attention_mask"),
                      ([("scale", 1.0)], "dict or None")]:
        with pytest.raises(ValueError, match=says):
            ours(prompt, attention_kwargs=bad, progress=False, **call)


def test_decoder_custom_schedules_are_checked(ours):
    prior = prior_ids(1, 64, 64, seed=5)
    call = dict(prior_token_ids=prior, height=64, width=64, progress=False)
    for kwargs, says in [(dict(sigmas=[1.0, 0.5], num_inference_steps=3), "steps must be 2"),
                         (dict(timesteps=[1000, float("nan")]), "finite numbers in \\[0, 1e\\+?0?9\\]"),
                         (dict(timesteps=[1000, -1]), "timesteps must be finite"),
                         (dict(sigmas=[1.0, -0.5], num_inference_steps=2), "sigmas must be finite numbers >= 0"),
                         (dict(sigmas=[[1.0]], num_inference_steps=1), "1-D"),
                         (dict(timesteps=[]), "non-empty"),
                         (dict(timesteps="abc"), "timesteps")]:
        with pytest.raises(ValueError, match=says):
            ours(["x"], **call, **kwargs)


@pytest.mark.parity
@pytest.mark.parametrize("dtype, latents_dtype", [("float32", torch.float32), ("bfloat16", torch.float32),
                                                   ("bfloat16", torch.bfloat16)])
def test_decoder_given_latents(ref_pipe, ours, dtype, latents_dtype):
    """diffusers' latents= through the public call: the same images as diffusers given the same
    tensor, also float32 latents in a bf16 pipeline (diffusers keeps them float32 into its first
    Euler step: a start rounded to bf16 first moved this image, see the last assertion)."""
    from diffusers import GlmImagePipeline

    if dtype == "bfloat16":
        ref_pipe = GlmImagePipeline.from_pretrained(str(TINY), torch_dtype=torch.bfloat16)
        ref_pipe.set_progress_bar_config(disable=True)
        ours = glmimage.Pipeline.from_pretrained(str(TINY), dtype="bfloat16")
    prompt, h, w, n = 'A poster that says "GLM"', 64, 96, 2
    prior = prior_ids(1, h, w, seed=5)
    latents = torch.randn(n, 4, h // 8, w // 8, generator=torch.Generator().manual_seed(80)).to(latents_dtype)
    call = dict(prior_token_ids=prior, height=h, width=w, num_inference_steps=3, guidance_scale=1.5,
                num_images_per_prompt=n, output_type="np")
    ref = ref_pipe(prompt=prompt, latents=latents.clone(), **call).images
    ref = torch.from_numpy(levels(ref))
    got = torch.from_numpy(levels(ours(prompt, latents=latents, progress=False, **call).images))
    assert record(f"decoder_latents_{dtype}_{str(latents_dtype)[6:]}", got.long(), ref.long(), atol=1.0)["ok"]
    seeded = levels(ours(prompt, seed=8, progress=False, **call).images)
    assert np.abs(seeded.astype(int) - got.numpy().astype(int)).max() > 1  # the latents were used
    if dtype == "bfloat16" and latents_dtype == torch.float32:
        rounded = levels(ours(prompt, latents=latents.to(torch.bfloat16), progress=False, **call).images)
        assert np.abs(rounded.astype(int) - got.numpy().astype(int)).max() > 0


def test_decoder_given_latents_are_checked(ours):
    prior = prior_ids(1, 64, 96, seed=5)
    call = dict(prior_token_ids=prior, height=64, width=96, progress=False)
    for latents, says in [(torch.zeros(1, 4, 12, 8), r"needs shape \[1, 4, 8, 12\]"),  # height and width swapped
                          (torch.zeros(2, 4, 8, 12), r"needs shape \[1, 4, 8, 12\]"),
                          (torch.zeros(4, 8, 12), "4-D shape"),
                          (torch.full((1, 4, 8, 12), float("nan")), "latents must be finite"),
                          (torch.zeros(1, 4, 8, 12, dtype=torch.float64), "float32, bfloat16 or float16"),
                          (torch.zeros(1, 4, 8, 12, dtype=torch.int64), "floating-point"),
                          ([[0.0]], "tensor or array")]:
        with pytest.raises(ValueError, match=says):
            ours(["x"], latents=latents, **call)


@pytest.mark.parity
def test_decoder_crop_conditioning(ref_pipe, ours):
    """diffusers' crops_coords_top_left through the public call: its images, and not the uncropped
    ones (the argument reaches the DiT's condition embedding)."""
    prompt, h, w = 'A poster that says "GLM"', 64, 96
    prior = prior_ids(1, h, w, seed=5)
    call = dict(prior_token_ids=prior, height=h, width=w, num_inference_steps=3, guidance_scale=1.5,
                output_type="np")
    ref = ref_pipe(prompt=prompt, crops_coords_top_left=(48, 320), generator=torch.Generator().manual_seed(4),
                   **call).images
    ref = torch.from_numpy(levels(ref))
    got = torch.from_numpy(levels(ours(prompt, crops_coords_top_left=(48, 320), seed=4, progress=False,
                                       **call).images))
    assert record("decoder_crop_48_320", got.long(), ref.long(), atol=1.0)["ok"]
    uncropped = levels(ours(prompt, seed=4, progress=False, **call).images)
    assert np.abs(uncropped.astype(int) - got.numpy().astype(int)).max() > 1
    for bad, says in [((-1, 0), r"in \[0, 1e6\]"), ((0, 10**7), r"in \[0, 1e6\]"), ((1, 2, 3), "pair"),
                      ((0.5, 0), "integer")]:
        with pytest.raises(ValueError, match=says):
            ours(prompt, crops_coords_top_left=bad, progress=False, **call)
