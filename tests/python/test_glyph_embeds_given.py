"""diffusers' prompt_embeds= / negative_prompt_embeds= (GenerateRequest::prompt_embeds /
negative_prompt_embeds) through glmimage's public call, held to diffusers' GlmImagePipeline given
the same tensors: the embeddings of diffusers' own encode_prompt, changed so that they are not
what the prompt would give, each pass's alone and both, without a prompt (prior tokens given),
in float32 and bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import levels, record
# The decoder parity tests' helpers and fixtures (ref_pipe: diffusers' pipeline on models/tiny;
# ours: glmimage's), which pytest takes from this import.
from test_decoder_parity import TINY, ours, prior_ids, ref_pipe  # noqa: F401

import glmimage

PROMPTS = ['A sign "OPEN"', "a mug with 'Good morning' on it"]
H, W, N = 64, 64, 2


def call_args(n: int = N) -> dict:
    latents = torch.randn(len(PROMPTS) * n, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(3))
    return dict(prior_token_ids=prior_ids(len(PROMPTS), H, W, seed=5), height=H, width=W, num_inference_steps=3,
                guidance_scale=1.5, num_images_per_prompt=n, output_type="np", latents=latents)


def pipes(ref_pipe, ours, dtype):
    if dtype == "float32":
        return ref_pipe, ours
    from diffusers import GlmImagePipeline

    ref = GlmImagePipeline.from_pretrained(str(TINY), torch_dtype=torch.bfloat16)
    ref.set_progress_bar_config(disable=True)
    return ref, glmimage.Pipeline.from_pretrained(str(TINY), dtype="bfloat16")


def embeds(ref, case: str) -> dict:
    """The case's arguments: encode_prompt's embeddings, moved so that they are not the prompt's.
    diffusers takes both only in one shape (its check_inputs), so "both" gives the unconditional
    pass rows shaped like the conditional one's."""
    pe, _ = ref.encode_prompt(PROMPTS, do_classifier_free_guidance=True)
    g = torch.Generator().manual_seed(11)
    moved = (pe.float() * 1.5 + 0.1 * torch.randn(pe.shape, generator=g)).to(pe.dtype)
    other = (0.3 * torch.randn(pe.shape, generator=g)).to(pe.dtype)
    return {"cond": dict(prompt=None, prompt_embeds=moved),
            "uncond": dict(prompt=PROMPTS, negative_prompt_embeds=other),
            "both": dict(prompt=None, prompt_embeds=moved, negative_prompt_embeds=other)}[case]


@pytest.mark.parity
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", ["cond", "uncond", "both"])
def test_given_glyph_embeds_match_diffusers(ref_pipe, ours, case, dtype):
    ref_pipe, ours = pipes(ref_pipe, ours, dtype)
    given = embeds(ref_pipe, case)
    # diffusers repeats given prompt_embeds for num_images_per_prompt but not given
    # negative_prompt_embeds (its DiT then fails on the batch); glmimage repeats both.
    args = call_args(N if case == "cond" else 1)
    ref = ref_pipe(**given, **{**args, "latents": args["latents"].clone()}).images
    ref = torch.from_numpy(levels(ref)).long()
    got = torch.from_numpy(levels(ours(**given, progress=False, **args).images)).long()
    assert record(f"glyph_embeds_given_{case}_{dtype}", got, ref, atol=1.0)["ok"]
    own = torch.from_numpy(levels(ours(PROMPTS, progress=False, **args).images)).long()
    assert (got - own).abs().max() > 1  # the embeddings given were used


def test_given_glyph_embeds_are_checked(ours):
    args = {k: v for k, v in call_args(1).items() if k != "latents"}
    good = torch.zeros(len(PROMPTS), 5, 32)
    cases = [
        (dict(prompt=None, prompt_embeds=torch.zeros(len(PROMPTS), 5, 31)), "32 channels"),
        (dict(prompt=PROMPTS, prompt_embeds=torch.zeros(3, 5, 32)), "3 prompts' embeddings for 2"),
        (dict(prompt=None, prompt_embeds=torch.zeros(len(PROMPTS), 32)), "3-D shape"),
        (dict(prompt=None, prompt_embeds=torch.zeros(len(PROMPTS), 0, 32)), "3-D shape"),
        (dict(prompt=None, prompt_embeds=good.to(torch.bfloat16)), "DiT's dtype torch.float32"),
        (dict(prompt=None, prompt_embeds=good * float("nan")), "prompt_embeds must be finite"),
        (dict(prompt=None, prompt_embeds=[[0.0]]), "tensor or array"),
        (dict(prompt=PROMPTS, negative_prompt_embeds=torch.zeros(len(PROMPTS), 5, 8)), "32 channels"),
        (dict(prompt=None, prompt_embeds=good, negative_prompt_embeds=torch.zeros(1, 5, 32)), "1 prompts' embeddings"),
        (dict(prompt=None), "prompt must be a str"),
    ]
    for kwargs, says in cases:
        with pytest.raises(ValueError, match=says):
            ours(progress=False, **kwargs, **args)
    no_prior = {k: v for k, v in args.items() if k != "prior_token_ids"}
    with pytest.raises(ValueError, match="need prior_token_ids"):
        ours(prompt=None, prompt_embeds=good, progress=False, **no_prior)
    # Another number of rows for each pass is taken (diffusers asks for one shape; the DiT does not).
    out = ours(prompt=None, prompt_embeds=good, negative_prompt_embeds=torch.zeros(len(PROMPTS), 2, 32),
               progress=False, **args)
    assert out.images.shape == (len(PROMPTS), H, W, 3)


def test_given_negative_embeds_serve_every_image_of_a_prompt(ours):
    """Each prompt's negative_prompt_embeds serve all its num_images_per_prompt images (diffusers
    fails there, see above): two images per prompt give the images of each prompt listed twice."""
    g = torch.Generator().manual_seed(2)
    negative = 0.3 * torch.randn(len(PROMPTS), 4, 32, generator=g)
    args = call_args(2)
    got = ours(PROMPTS, negative_prompt_embeds=negative, progress=False, **args).images
    twice = [p for p in PROMPTS for _ in range(2)]
    listed = ours(twice, negative_prompt_embeds=negative.repeat_interleave(2, 0), progress=False,
                  **{**args, "num_images_per_prompt": 1,
                     "prior_token_ids": args["prior_token_ids"].repeat_interleave(2, 0)}).images
    assert record("glyph_embeds_negative_per_prompt", torch.from_numpy(got), torch.from_numpy(listed), atol=0.0)["ok"]


# encode_prompt's tolerance per dtype: float32 as the glyph encoder's parity test; bf16 2^-8, under
# one bf16 step at the embeddings' largest values (|x| up to 2.7 here, a step of 2^-6 there): the
# T5 runs in bf16 on both sides, so its values agree or the test says by how much.
ENCODE_ATOL = {"float32": 1e-5, "bfloat16": 2.0**-8}


@pytest.mark.parity
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_encode_prompt_as_diffusers(ref_pipe, ours, dtype):
    """pipe.encode_prompt as diffusers' (the same embeddings, shapes and dtypes, the same repeats
    and pass-through of given ones), and what it returns, handed back, gives the prompts' images."""
    ref_pipe, ours = pipes(ref_pipe, ours, dtype)
    for kwargs in (dict(), dict(num_images_per_prompt=2), dict(do_classifier_free_guidance=False)):
        with torch.no_grad():
            want = ref_pipe.encode_prompt(PROMPTS, **kwargs)
        got = ours.encode_prompt(PROMPTS, **kwargs)
        for name, g, w in zip(("prompt_embeds", "negative_prompt_embeds"), got, want):
            if w is None:
                assert g is None
                continue
            assert g.dtype == w.dtype and g.device.type == "cpu"
            tag = "_".join(f"{k}_{v}" for k, v in kwargs.items())
            assert record(f"encode_prompt_{name}_{dtype}{'_' + tag if tag else ''}", g, w,
                          atol=ENCODE_ATOL[dtype])["ok"]
    pe, ne = ours.encode_prompt(PROMPTS)
    assert pe.shape[1] > 1 and ne.shape == (len(PROMPTS), 1, 32)
    args = call_args(1)
    own = ours(PROMPTS, progress=False, **args).images
    given = ours(prompt=None, prompt_embeds=pe, negative_prompt_embeds=ne, progress=False, **args).images
    assert record(f"encode_prompt_round_trip_{dtype}", torch.from_numpy(given), torch.from_numpy(own), atol=0.0)["ok"]
    # Given ones: prompt_embeds repeated, a given negative as it is, the negative made for them.
    again, same = ours.encode_prompt(None, prompt_embeds=pe, negative_prompt_embeds=ne, num_images_per_prompt=2)
    assert torch.equal(again, pe.repeat_interleave(2, 0)) and same is ne
    _, made = ours.encode_prompt(None, prompt_embeds=pe[:1])
    assert torch.equal(made, ne[:1])


def test_encode_prompt_is_checked(ours):
    for kwargs, says in [(dict(), "a prompt or prompt_embeds"), (dict(prompt=""), "prompt is empty"),
                         (dict(prompt="x", num_images_per_prompt=0), ">= 1"),
                         (dict(prompt="x", dtype=torch.int8), "torch.float32"),
                         (dict(prompt="x", device="tpu"), "device"),
                         (dict(prompt="x", max_sequence_length=0), "max_sequence_length"),
                         (dict(prompt_embeds=torch.zeros(2, 3, 31)), "32 channels"),
                         (dict(prompt_embeds=torch.zeros(3, 32)), "3-D")]:
        with pytest.raises(ValueError, match=says):
            ours.encode_prompt(**kwargs)
