"""End to end: glmimage's Pipeline::generate (AR stage + decoder) against diffusers'
GlmImagePipeline on the tiny checkpoint. Prior tokens must be identical and uint8 images equal
within 1 level. The AR stage runs greedy (the reference patched to do_sample=False: the pipeline
hard-codes sampling) and, separately, sampled with the same seed (token-identical: the same CPU
generator stream and the reference's sampling order)."""

from __future__ import annotations


import numpy as np
import PIL.Image
import pytest
import torch
from conftest import REPO, install_i2i_shim

from parity import levels, record, record_exact

import glmimage
import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

TINY = REPO / "models" / "tiny"


@pytest.fixture(scope="module")
def ref_pipe():
    from diffusers import GlmImagePipeline

    pipe = GlmImagePipeline.from_pretrained(str(TINY))
    pipe.set_progress_bar_config(disable=True)
    install_i2i_shim(pipe)  # the reference's own i2i path needs it with these versions
    vle = pipe.vision_language_encoder
    pipe._orig_generate = vle.generate
    return pipe


@pytest.fixture(scope="module")
def ours():
    return glmimage.Pipeline.from_pretrained(str(TINY))


def set_greedy(pipe, greedy: bool):
    vle = pipe.vision_language_encoder
    orig = pipe._orig_generate
    # The pipeline passes do_sample=True itself, which a functools.partial default would lose to:
    # the override has to win over the caller's keyword.
    vle.generate = (lambda *a, **kw: orig(*a, **dict(kw, do_sample=False))) if greedy else orig


def rgb(h, w, seed):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


CASES = {
    "e2e_t2i": dict(prompts=['A poster that says "GLM" and “你好”'], h=64, w=96),
    "e2e_batch2": dict(prompts=['A sign "OPEN"', "a mug with 'Good morning' written on it, on a wooden table"],
                       h=64, w=64),
    "e2e_i2i_1": dict(prompts=['Make the sign say "SALE"'], h=64, w=64, images=[[(512, 768)]]),
    "e2e_i2i_2": dict(prompts=["Put both pictures side by side"], h=64, w=96, images=[[(512, 512), (512, 512)]]),
    # Sides not multiples of 16: the decoder's copy is floored and Lanczos-resized (520x776 -> 512x768).
    "e2e_i2i_resized": dict(prompts=['A label "50%"'], h=64, w=64, images=[[(520, 776)]]),
}


def run_both(ref_pipe, ours, case, seed, greedy, steps=2):
    prompts, h, w = case["prompts"], case["h"], case["w"]
    arrays = [[rgb(ih, iw, 10 * i + j) for j, (ih, iw) in enumerate(per)] for i, per in enumerate(case.get("images", []))]
    pil = [[PIL.Image.fromarray(a) for a in per] for per in arrays] or None
    set_greedy(ref_pipe, greedy)
    prompt_arg = prompts if len(prompts) > 1 else prompts[0]
    ref_prior, ref_cond, _ = ref_pipe.generate_prior_tokens(
        prompt=prompt_arg, height=h, width=w, image=pil, generator=torch.Generator().manual_seed(seed))
    out = ref_pipe(prompt=prompt_arg, image=(pil if pil is None or len(prompts) > 1 else pil[0]), height=h, width=w,
                   num_inference_steps=steps, guidance_scale=1.5, generator=torch.Generator().manual_seed(seed),
                   output_type="pil")
    ref_imgs = torch.from_numpy(np.stack([np.array(im) for im in out.images]))
    imgs, prior, cond = _testing.generate(
        ours, prompts, [[torch.from_numpy(a) for a in per] for per in arrays], height=h, width=w, steps=steps,
        guidance=1.5, seed=seed, do_sample=not greedy, temperature=1.0, top_p=1.0, top_k=50, keep_in_codebook=False)
    return imgs, prior, cond, ref_imgs, ref_prior, ref_cond


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "sampled"])
def test_e2e_matches_pipeline(ref_pipe, ours, name, greedy):
    imgs, prior, cond, ref_imgs, ref_prior, ref_cond = run_both(ref_pipe, ours, CASES[name], seed=3, greedy=greedy)
    suffix = "" if greedy else "_sampled"
    assert record_exact(f"{name}{suffix}_prior_tokens", prior, ref_prior)["ok"]
    if ref_cond is not None:
        for b, per in enumerate(cond):
            assert record_exact(f"{name}{suffix}_condition_tokens_{b}", torch.cat(per), ref_cond[b])["ok"]
    assert record(f"{name}{suffix}", imgs.long(), ref_imgs.long(), atol=1.0)["ok"]


def test_sampling_depends_on_seed_and_stays_in_codebook(ours):
    # A flat distribution (temperature 20) over the tiny model's vision vocabulary: without the
    # guard the end marker gets sampled inside the grid (a clear error, where the reference would
    # hand short or out-of-codebook ids to the DiT); with it every grid completes.
    kw = dict(height=64, width=64, do_sample=True, temperature=20.0, top_p=1.0, top_k=0)
    a = _testing.generate(ours, ["x 'y'"], seed=1, keep_in_codebook=True, **kw)[1]
    b = _testing.generate(ours, ["x 'y'"], seed=2, keep_in_codebook=True, **kw)[1]
    assert not torch.equal(a, b)
    assert int(a.max()) < 64 and int(b.max()) < 64
    failures = 0
    for seed in range(1, 21):
        _testing.generate(ours, ["x 'y'"], seed=seed, keep_in_codebook=True, **kw)  # never fails
        try:
            _testing.generate(ours, ["x 'y'"], seed=seed, keep_in_codebook=False, **kw)
        except RuntimeError as e:
            assert "grid was complete" in str(e) or "outside the codebook" in str(e)
            failures += 1
    assert failures > 0


def test_condition_image_that_does_not_fit(ours):
    with pytest.raises(ValueError, match="does not fit"):
        _testing.generate(ours, ["x"], [[torch.from_numpy(rgb(256, 384, 0))]], height=64, width=64)
    with pytest.raises(ValueError):
        _testing.generate(ours, ["x"], [[torch.from_numpy(rgb(8, 8, 0))]], height=64, width=64)


@pytest.mark.parity
@pytest.mark.parametrize("name", ["e2e_t2i", "e2e_batch2", "e2e_i2i_1"])
def test_e2e_through_public_python_api(ref_pipe, name):
    """The same comparison through what users call: glmimage.Pipeline(...)(prompt, ...) with
    diffusers' argument names, sampled with the reference's sampling settings and generator."""
    case = CASES[name]
    prompts, h, w = case["prompts"], case["h"], case["w"]
    arrays = [[rgb(ih, iw, 10 * i + j) for j, (ih, iw) in enumerate(per)] for i, per in enumerate(case.get("images", []))]
    pil = [[PIL.Image.fromarray(a) for a in per] for per in arrays] or None
    prompt_arg = prompts if len(prompts) > 1 else prompts[0]
    set_greedy(ref_pipe, False)
    ref = ref_pipe(prompt=prompt_arg, image=(pil if pil is None or len(prompts) > 1 else pil[0]), height=h, width=w,
                   num_inference_steps=2, guidance_scale=1.5, generator=torch.Generator().manual_seed(11),
                   output_type="pil").images
    pipe = glmimage.Pipeline.from_pretrained(str(TINY))
    # The tiny checkpoint's generation config sets no sampling values: transformers' defaults apply.
    out = pipe(prompt_arg, image=pil, height=h, width=w, num_inference_steps=2, guidance_scale=1.5,
               generator=torch.Generator().manual_seed(11), do_sample=True, temperature=1.0, top_p=1.0, top_k=50,
               keep_in_codebook=False, progress=False)
    got = torch.from_numpy(np.stack([np.array(im) for im in out.images]))
    want = torch.from_numpy(np.stack([np.array(im) for im in ref]))
    assert record(f"{name}_python_api", got.long(), want.long(), atol=1.0)["ok"]


@pytest.mark.parity
def test_prior_tokens_unpack_as_diffusers(ref_pipe, ours):
    """generate_prior_tokens unpacks as diffusers' three values: the condition images' ids (per
    image here, concatenated there) and their grids equal diffusers', and the three handed back as
    diffusers' arguments decode the images of the call that made them."""
    prompt = 'Make the sign say "SALE"'
    images = [PIL.Image.fromarray(rgb(512, 768, s)) for s in (3, 4)]  # not square: rows and columns differ
    set_greedy(ref_pipe, True)
    try:
        ref_ids, ref_image_ids, ref_grids = ref_pipe.generate_prior_tokens(prompt=prompt, height=64, width=64,
                                                                           image=[images])
    finally:
        set_greedy(ref_pipe, False)
    ids, image_ids, grids = ours.generate_prior_tokens(prompt, height=64, width=64, image=images, do_sample=False,
                                                       progress=False)
    assert record_exact("prior_unpack_ids_greedy", ids, ref_ids)["ok"]
    assert record_exact("prior_unpack_image_ids", torch.cat(image_ids[0]), ref_image_ids[0])["ok"]
    assert record_exact("prior_unpack_grid_thw", grids[0], ref_grids[0])["ok"]
    assert grids[0].tolist() == [[1, 2 * 512 // 32, 2 * 768 // 32]] * 2  # t, then the 2x-upsampled VQ grid
    call = dict(image=images, height=64, width=64, num_inference_steps=2, seed=5, output_type="np", progress=False)
    full = ours(prompt, do_sample=False, **call).images
    for given in (image_ids, [torch.cat(image_ids[0])]):  # per image, or flat as diffusers gives them
        again = ours(prompt, prior_token_ids=ids, prior_token_image_ids=given, source_image_grid_thw=grids,
                     **call).images
        assert record("prior_unpack_round_trip", torch.from_numpy(again), torch.from_numpy(full), atol=0.0)["ok"]
    t2i = ours.generate_prior_tokens(prompt, height=64, width=64, progress=False)
    assert t2i.prior_token_image_ids is None and t2i.source_image_grid_thw is None and len(tuple(t2i)) == 3


@pytest.mark.parity
def test_e2e_with_and_without_cpu_block_cache(ref_pipe):
    """128x128, the tiny model's first size with CPU blocks of 1 MiB and more: with the block cache
    (LoadOptions::cpu_block_cache, the default) the cache serves blocks again, the image is the
    reference's as in every case above, and it is the image without the cache bit for bit."""
    prompt, kw = 'A poster that says "Hello"', dict(height=128, width=128, num_inference_steps=2, guidance_scale=1.5)
    set_greedy(ref_pipe, False)
    ref = ref_pipe(prompt=prompt, generator=torch.Generator().manual_seed(5), output_type="pil", **kw).images
    sampling = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=50, keep_in_codebook=False, progress=False)
    images, used = {}, {}
    for on in (True, False):
        pipe = glmimage.Pipeline.from_pretrained(str(TINY), cpu_block_cache=on)
        before = _testing.cpu_block_cache_stats()
        out = pipe(prompt, generator=torch.Generator().manual_seed(5), **kw, **sampling)
        after = _testing.cpu_block_cache_stats()
        images[on] = torch.from_numpy(np.stack([np.array(im) for im in out.images])).long()
        used[on] = (after["reused"] - before["reused"], after["fresh"] - before["fresh"])
        assert after["cached_bytes"] == 0, "blocks left cached after the call"
    print("blocks (reused, fresh) with the cache:", used[True], "without:", used[False])
    assert used[True][0] > 0 and used[False] == (0, 0)
    want = torch.from_numpy(np.stack([np.array(im) for im in ref])).long()
    assert record("e2e_t2i_128_cpu_block_cache", images[True], want, atol=1.0)["ok"]
    assert record_exact("e2e_t2i_128_cpu_block_cache_vs_none", images[True], images[False])["ok"]


def test_vae_under_the_block_caches_peak_bound():
    """256x256, where the tiny VAE's blocks change size from level to level: the VAE runs under the
    cache's peak bound (CpuBlockCachePeakBound), so cached blocks are freed there before new ones
    are taken (trimmed), and the image is still the one without the cache, bit for bit."""
    kw = dict(height=256, width=256, num_inference_steps=2, seed=3, progress=False)
    images, trimmed = {}, {}
    for on in (True, False):
        pipe = glmimage.Pipeline.from_pretrained(str(TINY), cpu_block_cache=on)
        before = _testing.cpu_block_cache_stats()
        out = pipe('A sign that says "Open"', **kw)
        trimmed[on] = _testing.cpu_block_cache_stats()["trimmed"] - before["trimmed"]
        images[on] = torch.from_numpy(np.stack([np.array(im) for im in out.images])).long()
    print("blocks freed under the peak bound:", trimmed)
    assert trimmed[True] > 0 and trimmed[False] == 0
    assert record_exact("e2e_t2i_256_cpu_block_cache_peak_bound_vs_none", images[True], images[False])["ok"]


@pytest.fixture(scope="module")
def far_generation_config(tmp_path_factory):
    """The tiny checkpoint with a generation_config.json that sets sampling values far from the
    published ones (and do_sample false, which diffusers' pipeline overrides: it always samples)."""
    import json
    import shutil

    root = tmp_path_factory.mktemp("gencfg") / "tiny"
    shutil.copytree(TINY, root)
    path = root / "vision_language_encoder" / "generation_config.json"
    cfg = json.loads(path.read_text())
    cfg.update({"do_sample": False, "temperature": 0.35, "top_p": 0.6, "top_k": 7})
    path.write_text(json.dumps(cfg, indent=2))
    return root


@pytest.mark.parity
@pytest.mark.parametrize("name", ["e2e_t2i", "e2e_i2i_1"])
def test_checkpoint_sampling_defaults_match_pipeline(far_generation_config, name):
    """A call with no sampling arguments samples with the checkpoint's generation config, as
    diffusers' GlmImagePipeline (through transformers' generate) does."""
    from diffusers import GlmImagePipeline

    ref_pipe = GlmImagePipeline.from_pretrained(str(far_generation_config))
    ref_pipe.set_progress_bar_config(disable=True)
    install_i2i_shim(ref_pipe)
    case = CASES[name]
    prompts, h, w = case["prompts"], case["h"], case["w"]
    pil = [PIL.Image.fromarray(rgb(ih, iw, j)) for j, (ih, iw) in enumerate(case["images"][0])] if "images" in case \
        else None
    ref_prior, _, _ = ref_pipe.generate_prior_tokens(prompt=prompts[0], height=h, width=w, image=pil and [pil],
                                                     generator=torch.Generator().manual_seed(5))
    ref = ref_pipe(prompt=prompts[0], image=pil, height=h, width=w, num_inference_steps=2,
                   generator=torch.Generator().manual_seed(5), output_type="np").images
    pipe = glmimage.Pipeline.from_pretrained(str(far_generation_config))
    assert pipe.sampling_defaults["temperature"] == 0.35 and pipe.sampling_defaults["top_k"] == 7
    assert "top_p: generation_config.json" in pipe.sampling_defaults["source"]
    # No sampling argument at all (keep_in_codebook is ours, not the reference's: off for parity).
    out = pipe(prompts[0], image=pil, height=h, width=w, num_inference_steps=2,
               generator=torch.Generator().manual_seed(5), keep_in_codebook=False, output_type="np", progress=False)
    assert record_exact(f"{name}_checkpoint_sampling_prior_tokens", out.prior_token_ids, ref_prior)["ok"]
    got = torch.from_numpy(levels(out.images)).long()
    want = torch.from_numpy(levels(ref)).long()
    assert record(f"{name}_checkpoint_sampling", got, want, atol=1.0)["ok"]
    # And the tiny checkpoint itself states none: transformers' defaults.
    plain = glmimage.Pipeline.from_pretrained(str(TINY)).sampling_defaults
    assert (plain["temperature"], plain["top_p"], plain["top_k"]) == (1.0, 1.0, 50)
