"""The First Block Cache (GenerateRequest::first_block_cache, an approximation the request turns
on) against diffusers 0.39's own First Block Cache hook on the same GlmImagePipeline
(reference_shims.reference_first_block_cache: diffusers lacks the registration and the cache
contexts this model needs). Both sides must skip the same steps of each CFG pass and give the
same images (within 1 level), with the passes apart and in one forward, where the joint forward
runs the later blocks for one pass alone when the other skips them."""

from __future__ import annotations

import json

import pytest
import torch
from parity import record
from reference_shims import reference_first_block_cache
from torch.profiler import ProfilerActivity, profile
# The decoder parity tests' helpers, and their fixtures (ref_pipe: diffusers' pipeline on
# models/tiny; ours: glmimage's), which pytest takes from this import.
from test_decoder_parity import TINY, condition, ours, prior_ids, ref_pipe, reference_images  # noqa: F401

import glmimage
import glmimage_testing as _testing

STEPS = 12


def pattern(skips) -> list[str]:
    """Per pass, one character a step: x where the blocks after the first did not run."""
    return ["".join("x" if s else "." for s in per_pass) for per_pass in skips]


def both(ref_pipe, ours, prompts, h, w, guidance, threshold, conds=None, batch_cfg=None, steps=STEPS, seed=1234,
         n=1):
    prior = prior_ids(len(prompts), h, w, seed=5)
    with reference_first_block_cache(ref_pipe, threshold) as ref_skips:
        ref = reference_images(ref_pipe, prompts, prior, h, w, steps, guidance, seed, conds, n=n)
    ref_skips = [ref_skips["cond"]] + ([ref_skips["uncond"]] if guidance > 1 else [])
    got, skips = _testing.decode(ours, prior, prompts, h, w, steps=steps, guidance=guidance, seed=seed,
                                 conditions=conds or [], batch_cfg=batch_cfg, first_block_cache=threshold,
                                 with_skips=True, images_per_prompt=n)
    return got, ref, skips, ref_skips


CASES = {
    "t2i": dict(prompts=['A poster that says "GLM"'], height=64, width=96, guidance=1.5),
    "batch2": dict(prompts=['A sign "OPEN"', "a mug with 'Good morning' on it"], height=64, width=64, guidance=1.5),
    "i2i": dict(prompts=['Make the sign say "SALE"'], height=64, width=64, guidance=1.5, conds=[[(64, 96)]]),
    "no_cfg": dict(prompts=['A poster that says "GLM"'], height=64, width=96, guidance=1.0),
    # Two prompts with a condition image each, two images per prompt: one decision per pass over
    # the four samples, as diffusers makes it over its batch.
    "i2i_batch2_n2": dict(prompts=['A card "A"', 'A card "BB"'], height=64, width=64, guidance=1.5,
                          conds=[[(64, 64)], [(64, 64)]], n=2),
}


@pytest.mark.parity
@pytest.mark.parametrize("batch_cfg", [True, False], ids=["joint", "apart"])
@pytest.mark.parametrize("threshold", [0.1, 0.3])
@pytest.mark.parametrize("name", list(CASES))
def test_first_block_cache_matches_diffusers(ref_pipe, ours, name, threshold, batch_cfg):
    case = CASES[name]
    conds = None
    if "conds" in case:
        conds = [[condition(ch, cw, seed=100 * i + j) for j, (ch, cw) in enumerate(per)]
                 for i, per in enumerate(case["conds"])]
    got, ref, skips, ref_skips = both(ref_pipe, ours, case["prompts"], case["height"], case["width"],
                                      case["guidance"], threshold, conds, batch_cfg, n=case.get("n", 1))
    print(name, threshold, "ours", pattern(skips), "diffusers", pattern(ref_skips))
    assert pattern(skips) == pattern(ref_skips)
    assert len(skips) == (2 if case["guidance"] > 1 else 1) and all(len(p) == STEPS for p in skips)
    entry = record(f"first_block_cache_{name}_{threshold}" + ("_joint" if batch_cfg else "_apart"),
                   got.long(), ref.long(), atol=1.0, skipped=pattern(skips))
    assert entry["ok"]


@pytest.mark.parity
def test_first_block_cache_cases_exercise_the_paths(ref_pipe, ours):
    """What the comparisons above rest on: at 0.3 each pass skips some steps and runs others (the
    first always runs); at 0.1 the conditional pass skips a step the unconditional one runs, so the
    joint forward runs the later blocks for one pass alone; and the cache moves the images (a test
    of a cache that never skips, or skips without effect, could not fail)."""
    case = CASES["t2i"]
    args = (case["prompts"], case["height"], case["width"], case["guidance"])
    got, _, skips, _ = both(ref_pipe, ours, *args, threshold=0.3, batch_cfg=True)
    for per_pass in skips:
        assert not per_pass[0] and any(per_pass) and not all(per_pass[1:]), pattern(skips)
    _, _, skips_01, _ = both(ref_pipe, ours, *args, threshold=0.1, batch_cfg=True)
    assert any(c != u for c, u in zip(*skips_01)), pattern(skips_01)
    prior = prior_ids(1, case["height"], case["width"], seed=5)
    exact = _testing.decode(ours, prior, case["prompts"], case["height"], case["width"], steps=STEPS,
                            guidance=case["guidance"], seed=1234, batch_cfg=True)
    moved = (got.long() - exact.long()).abs().max().item()
    print("levels moved by the cache at 0.3:", moved)
    assert moved > 1


@pytest.mark.parity
def test_first_block_cache_bf16_small_preset(tmp_path_factory):
    """bf16 at the small preset's widths and its four blocks (so the blocks between the first and
    the last are skipped too), 256x256, the CPU's default CFG passes: the same skipped steps and
    images within 1 level, as the exact path holds (test_decoder_parity)."""
    import make_tiny_checkpoint as mk
    from diffusers import GlmImagePipeline

    ckpt = mk.build(tmp_path_factory.mktemp("small_bf16_fbc") / "ckpt", "small", "bfloat16", 0)
    ref_pipe = GlmImagePipeline.from_pretrained(str(ckpt), torch_dtype=torch.bfloat16)
    ref_pipe.set_progress_bar_config(disable=True)
    ours = glmimage.Pipeline.from_pretrained(str(ckpt), dtype="bfloat16")
    got, ref, skips, ref_skips = both(ref_pipe, ours, ['A poster that says "GLM-Image"'], 256, 256, 1.5,
                                      threshold=0.5, steps=8, seed=7)
    print("small bf16", "ours", pattern(skips), "diffusers", pattern(ref_skips))
    assert pattern(skips) == pattern(ref_skips)
    assert any(any(p) for p in skips), pattern(skips)
    assert record("first_block_cache_small_bf16_0.5", got.long(), ref.long(), atol=1.0,
                  skipped=pattern(skips))["ok"]


def test_first_block_cache_threshold_is_validated(ours):
    prior = prior_ids(1, 64, 64, seed=5)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="first_block_cache"):
            _testing.decode(ours, prior, ["x"], 64, 64, steps=1, first_block_cache=bad)
    with pytest.raises(ValueError, match="first_block_cache"):
        ours(["x"], height=64, width=64, num_inference_steps=1, first_block_cache=-1.0,
             prior_token_ids=prior, progress=False)


def test_first_block_cache_counts_in_the_public_api(ours):
    """The Python call takes the threshold and reports the passes it served in the timings, the
    count the research hook's per-step record gives; 0 (the default) serves none."""
    case = CASES["t2i"]
    h, w = case["height"], case["width"]
    prior = prior_ids(1, h, w, seed=5)
    _, skips = _testing.decode(ours, prior, case["prompts"], h, w, steps=STEPS, guidance=1.5, seed=1234,
                               first_block_cache=0.3, with_skips=True)
    out = ours(case["prompts"], height=h, width=w, num_inference_steps=STEPS, guidance_scale=1.5, seed=1234,
               prior_token_ids=prior, first_block_cache=0.3, progress=False, output_type="np")
    assert out.timings["dit_passes"] == 2 * STEPS
    assert out.timings["dit_passes_cached"] == sum(map(sum, skips)) > 0
    exact = ours(case["prompts"], height=h, width=w, num_inference_steps=STEPS, guidance_scale=1.5, seed=1234,
                 prior_token_ids=prior, progress=False, output_type="np")
    assert (exact.timings["dit_passes"], exact.timings["dit_passes_cached"]) == (2 * STEPS, 0)


@pytest.mark.parametrize("batch_cfg", [True, False], ids=["joint", "apart"])
def test_first_block_cache_skips_the_later_blocks_modulation(ours, batch_cfg):
    """A step served by the cache does not compute the later blocks' adaLN products (at the real
    size 1.5 GB of weights a step): the exact decode computes every block's once a step, shared by
    both CFG passes; with a threshold no residual reaches, every step after the first computes only
    the first block's. Counted as LibTorch's linear ops on an adaLN weight's shape [12 D, T]."""
    c = json.loads((TINY / "transformer" / "config.json").read_text())
    blocks, d, t = c["num_layers"], c["num_attention_heads"] * c["attention_head_dim"], c["time_embed_dim"]
    case = CASES["t2i"]
    h, w, steps = case["height"], case["width"], 4
    prior = prior_ids(1, h, w, seed=5)

    def adaln_products(threshold: float) -> int:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            _, skips = _testing.decode(ours, prior, case["prompts"], h, w, steps=steps, guidance=1.5, seed=1234,
                                       batch_cfg=batch_cfg, first_block_cache=threshold, with_skips=True)
        assert sum(map(sum, skips)) == (2 * (steps - 1) if threshold > 0 else 0)
        return sum(e.count for e in prof.key_averages(group_by_input_shape=True)
                   if e.key == "aten::linear" and [12 * d, t] in e.input_shapes)

    exact, cached = adaln_products(0.0), adaln_products(1e9)
    print("adaLN products: exact", exact, "cached", cached, "blocks", blocks, "steps", steps)
    assert exact == blocks * steps
    assert cached == blocks + (steps - 1)


@pytest.mark.parity
@pytest.mark.parametrize("cfg_passes", ["joint", "apart"])
def test_first_block_cache_with_guidance_changed_by_the_step_callback(ref_pipe, cfg_passes):
    """The cache with diffusers' dynamic guidance (a step-end callback setting pipe._guidance_scale):
    guidance off after step 2 (the unconditional pass stops running, its cache state kept as it
    was), on again after step 6 (it resumes against its state of step 2), as diffusers' hook does
    with each pass in its own context: the same passes run and served, the same images."""
    ours = glmimage.Pipeline.from_pretrained(str(TINY), cfg_passes=cfg_passes)
    case = CASES["t2i"]
    h, w = case["height"], case["width"]
    changes = {2: 1.0, 6: 1.5}

    def cb(pipe, i, t, kwargs):
        if i in changes:
            pipe._guidance_scale = changes[i]
        return kwargs

    prior = prior_ids(1, h, w, seed=5)
    args = dict(prior_token_ids=prior, height=h, width=w, num_inference_steps=STEPS, guidance_scale=1.5,
                output_type="np", callback_on_step_end=cb)
    with reference_first_block_cache(ref_pipe, 0.3) as ref_skips:
        ref = ref_pipe(prompt=case["prompts"][0], generator=torch.Generator().manual_seed(1234), **args).images
    got = ours(case["prompts"][0], seed=1234, first_block_cache=0.3, progress=False, **args)
    calls = len(ref_skips["cond"]) + len(ref_skips["uncond"])
    served = sum(ref_skips["cond"]) + sum(ref_skips["uncond"])
    print(cfg_passes, "diffusers", pattern([ref_skips["cond"], ref_skips["uncond"]]), "ours passes",
          got.timings["dit_passes"], "served", got.timings["dit_passes_cached"])
    assert len(ref_skips["uncond"]) == STEPS - 4  # steps 3 to 6 ran the conditional pass alone
    assert (got.timings["dit_passes"], got.timings["dit_passes_cached"]) == (calls, served) and served > 0
    assert sum(ref_skips["uncond"][3:]) > 0  # the resumed pass was served too
    entry = record(f"first_block_cache_guidance_changed_{cfg_passes}", torch.from_numpy(got.images),
                   torch.from_numpy(ref), atol=1e-5, skipped=pattern([ref_skips["cond"], ref_skips["uncond"]]))
    assert entry["ok"]
