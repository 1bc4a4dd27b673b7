"""diffusers' callback_on_step_end through glmimage's public call (the C++ DenoiseStepCallback):
held to diffusers' GlmImagePipeline given the same callback. What the callback sees (the step, its
`t`, the latents after the step), what it changes (latents returned or changed in place) and an
early stop (pipe._interrupt) must give diffusers' images."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from parity import levels, record
from torch.profiler import ProfilerActivity, profile
# The decoder parity tests' helpers and fixtures (ref_pipe: diffusers' pipeline on models/tiny;
# ours: glmimage's), which pytest takes from this import.
from test_decoder_parity import TINY, condition, ours, prior_ids, ref_pipe  # noqa: F401

import glmimage

PROMPTS = ['A sign "OPEN"', "a mug with 'Good morning' on it"]
H, W, N, STEPS = 64, 96, 2, 4


def call_args(seed: int = 3) -> dict:
    latents = torch.randn(len(PROMPTS) * N, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(seed))
    return dict(prior_token_ids=prior_ids(len(PROMPTS), H, W, seed=5), height=H, width=W,
                num_inference_steps=STEPS, guidance_scale=1.5, num_images_per_prompt=N, output_type="np",
                latents=latents)


def both(ref_pipe, ours, callback):
    """Each side's images (uint8) with `callback` as callback_on_step_end."""
    args = call_args()
    ref = ref_pipe(prompt=PROMPTS, callback_on_step_end=callback, **{**args, "latents": args["latents"].clone()})
    got = ours(PROMPTS, callback_on_step_end=callback, progress=False, **args)
    return torch.from_numpy(levels(got.images)).long(), torch.from_numpy(levels(ref.images)).long()


def plain(ours) -> torch.Tensor:
    return torch.from_numpy(levels(ours(PROMPTS, progress=False, **call_args()).images)).long()


@pytest.mark.parity
def test_step_callback_sees_what_diffusers_passes(ref_pipe, ours):
    seen: dict[str, list] = {"ours": [], "ref": []}

    def recorder(side):
        def cb(pipe, i, t, kwargs):
            seen[side].append((i, t.clone(), kwargs["latents"].detach().clone()))
            return kwargs
        return cb

    args = call_args()
    ref_pipe(prompt=PROMPTS, callback_on_step_end=recorder("ref"), **{**args, "latents": args["latents"].clone()})
    ours(PROMPTS, callback_on_step_end=recorder("ours"), progress=False, **args)
    assert [i for i, _, _ in seen["ours"]] == [i for i, _, _ in seen["ref"]] == list(range(STEPS))
    for (i, t, lat), (_, rt, rlat) in zip(seen["ours"], seen["ref"]):
        assert t.dtype == rt.dtype == torch.float32 and t.shape == rt.shape == ()
        assert float(t) == float(rt), (i, float(t), float(rt))
        assert lat.dtype == rlat.dtype
        assert record(f"step_callback_latents_step{i}", lat, rlat, atol=1e-5)["ok"]


@pytest.mark.parity
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("how", ["returned", "in_place", "in_place_not_returned"])
def test_step_callback_changes_latents_as_diffusers(ref_pipe, ours, how, dtype):
    if dtype == "bfloat16":
        from diffusers import GlmImagePipeline

        ref_pipe = GlmImagePipeline.from_pretrained(str(TINY), torch_dtype=torch.bfloat16)
        ref_pipe.set_progress_bar_config(disable=True)
        ours = glmimage.Pipeline.from_pretrained(str(TINY), dtype="bfloat16")

    def cb(pipe, i, t, kwargs):
        if i == 1:
            if how == "returned":
                return {"latents": kwargs["latents"] * 0.5 + 0.25}
            kwargs["latents"].mul_(0.5).add_(0.25)
            if how == "in_place_not_returned":  # diffusers keeps its (changed) latents
                return {}
        return kwargs

    got, ref = both(ref_pipe, ours, cb)
    assert record(f"step_callback_changed_{how}_{dtype}", got, ref, atol=1.0)["ok"]
    assert (got - plain(ours)).abs().max() > 1  # the change reached the images


@pytest.mark.parity
def test_step_callback_interrupt_as_diffusers(ref_pipe, ours):
    """pipe._interrupt = True after step 1: both sides decode the latents of that step."""
    def cb(pipe, i, t, kwargs):
        assert pipe.num_timesteps == STEPS and not pipe.interrupt
        if i == 1:
            pipe._interrupt = True
        return kwargs

    got, ref = both(ref_pipe, ours, cb)
    assert record("step_callback_interrupt", got, ref, atol=1.0)["ok"]
    assert (got - plain(ours)).abs().max() > 1
    progress: list = []
    out = ours(PROMPTS, callback_on_step_end=cb, callback=lambda *a: progress.append(a), progress=False,
               **call_args())
    assert out.timings["dit_passes"] == 2 * 2  # two steps, two CFG passes each
    assert [a for a in progress if a[0] == "denoise"] == [("denoise", 1, STEPS), ("denoise", 2, STEPS)]
    assert ours.interrupt  # as diffusers' flag, set until the next call, which starts with it off
    again = ours(PROMPTS, progress=False, **call_args())
    assert not ours.interrupt
    assert again.timings["dit_passes"] == 2 * STEPS


GUIDANCE_CHANGES = {
    # diffusers' "dynamic CFG": guidance off after step 1 (the conditional pass alone from step 2 on)
    "off_after_1": {1: 1.0},
    # raised after step 0, off after step 1, back on (the unconditional pass resumes) after step 2
    "up_off_on": {0: 4.0, 1: 0.0, 2: 2.5},
}


def condition_args(h: int = 512, w: int = 512) -> dict:
    """One condition image per prompt with its prior ids, as both pipelines take them."""
    conds = [condition(h, w, seed=40 + k) for k in range(len(PROMPTS))]
    return dict(image=[[PIL.Image.fromarray(px.numpy())] for px, _ in conds],
                prior_token_image_ids=[ids for _, ids in conds],
                source_image_grid_thw=[torch.tensor([[1, h // 16, w // 16]]) for _ in conds])


@pytest.mark.parity
@pytest.mark.parametrize("cfg_passes", ["joint", "apart"])
@pytest.mark.parametrize("change", list(GUIDANCE_CHANGES) + ["i2i_up_off_on"])
def test_step_callback_changes_guidance_as_diffusers(ref_pipe, change, cfg_passes):
    """A callback setting pipe._guidance_scale guides the steps after with it, as diffusers' loop
    reads it at every step; at or below 1 they run the conditional pass alone (with a condition
    image: the conditional pass reads its cached keys and values, as ever). What the callback reads
    (guidance_scale, do_classifier_free_guidance, current_timestep) is diffusers' too."""
    ours = glmimage.Pipeline.from_pretrained(str(TINY), cfg_passes=cfg_passes)
    case, extra = change, condition_args() if change.startswith("i2i_") else {}
    change = change.removeprefix("i2i_")
    seen: dict = {"ours": [], "ref": []}

    def changer(side):
        def cb(pipe, i, t, kwargs):
            seen[side].append((i, pipe.guidance_scale, pipe.do_classifier_free_guidance,
                               float(pipe.current_timestep), pipe.current_timestep.dtype))
            if i in GUIDANCE_CHANGES[change]:
                pipe._guidance_scale = GUIDANCE_CHANGES[change][i]
            return kwargs
        return cb

    args = {**call_args(), **extra}
    ref = ref_pipe(prompt=PROMPTS, callback_on_step_end=changer("ref"), **{**args, "latents": args["latents"].clone()})
    got = ours(PROMPTS, callback_on_step_end=changer("ours"), progress=False, **args)
    assert seen["ours"] == seen["ref"], (seen["ours"], seen["ref"])
    assert ours.current_timestep is None and ref_pipe.current_timestep is None  # outside the loop
    entry = record(f"step_callback_guidance_{case}_{cfg_passes}", torch.from_numpy(got.images),
                   torch.from_numpy(ref.images), atol=1e-5)
    assert entry["ok"]
    plain_images = ours(PROMPTS, progress=False, **{**call_args(), **extra}).images
    assert np.abs(got.images - plain_images).max() > 1e-3  # the change reached the images
    g, passes = 1.5, 0
    for i in range(STEPS):  # each step's passes: 2 where the guidance it runs with is above 1
        g = GUIDANCE_CHANGES[change].get(i - 1, g)
        passes += 2 if g > 1 else 1
    assert got.timings["dit_passes"] == passes < 2 * STEPS


def test_call_state_of_a_queued_call_does_not_reach_the_running_one(ours):
    """A second thread's call on the same pipeline (queued behind the running one) sets its own
    guidance and interrupt flag at its start; the running call's callback still reads its own, and
    each call gives its solo images. (diffusers' attributes are per thread here: _PerThread.)"""
    import threading
    import time

    solo = {g: ours(PROMPTS, progress=False, **{**call_args(), "guidance_scale": g}).images for g in (1.5, 3.0)}
    first_in_step, second_started, seen, out = threading.Event(), threading.Event(), [], {}

    def first_cb(pipe, i, t, kwargs):
        if i == 0:
            first_in_step.set()
            assert second_started.wait(60)
            time.sleep(0.5)  # the second call sets its state, then waits for this one
        seen.append((pipe.guidance_scale, pipe.interrupt))
        return kwargs

    def first():
        out[1.5] = ours(PROMPTS, callback_on_step_end=first_cb, progress=False, **call_args()).images

    def second():
        second_started.set()
        out[3.0] = ours(PROMPTS, progress=False, **{**call_args(), "guidance_scale": 3.0}).images

    a = threading.Thread(target=first)
    a.start()
    assert first_in_step.wait(60)  # the first call is in its step 0 callback
    b = threading.Thread(target=second)
    b.start()
    a.join(120)
    b.join(120)
    assert seen == [(1.5, False)] * STEPS
    diffs = {g: float(np.abs(out[g] - solo[g]).max()) for g in solo}
    print(f"calls queued on one pipeline against their solo runs: max abs diff {diffs} (tolerance 0)")
    assert diffs == {1.5: 0.0, 3.0: 0.0}


def test_step_callback_guidance_misuse_is_a_clear_error(ours):
    def setter(value):
        def cb(pipe, i, t, kwargs):
            pipe._guidance_scale = value
            return kwargs
        return cb

    with pytest.raises(ValueError, match="started without guidance"):
        ours(PROMPTS, callback_on_step_end=setter(2.0), progress=False, **{**call_args(), "guidance_scale": 1.0})
    for bad in (float("nan"), "high", None):
        with pytest.raises(ValueError, match="finite"):
            ours(PROMPTS, callback_on_step_end=setter(bad), progress=False, **call_args())
    # Lowering it in a call without guidance is no change; a tensor value is read as its number.
    out = ours(PROMPTS, callback_on_step_end=setter(torch.tensor(0.5)), progress=False,
               **{**call_args(), "guidance_scale": 1.0})
    assert out.timings["dit_passes"] == STEPS


def test_step_callback_misuse_is_a_clear_error(ours):
    args = call_args()
    cases = [
        (lambda p, i, t, kw: None, "must return a dict"),
        (lambda p, i, t, kw: {"latents": kw["latents"][:1]}, r"expected floating-point values of shape"),
        (lambda p, i, t, kw: {"latents": [0.0]}, "not a tensor"),
        (lambda p, i, t, kw: {"latents": kw["latents"].long()}, "floating-point"),
        (lambda p, i, t, kw: {"latents": kw["latents"] * float("nan")}, "must be finite"),
        (lambda p, i, t, kw: {"prompt_embeds": torch.zeros(1)}, "'latents' only"),
    ]
    for cb, says in cases:
        with pytest.raises(ValueError, match=says):
            ours(PROMPTS, callback_on_step_end=cb, progress=False, **args)
    with pytest.raises(ValueError, match="'latents' only"):
        ours(PROMPTS, callback_on_step_end=lambda *a: a[3], callback_on_step_end_tensor_inputs=["prompt_embeds"],
             progress=False, **args)
    with pytest.raises(ValueError, match="must be callable"):
        ours(PROMPTS, callback_on_step_end=3, progress=False, **args)

    class Boom(Exception):
        pass

    def raises(p, i, t, kw):
        raise Boom(i)

    with pytest.raises(Boom):  # the callback's own error, not a CancelledError
        ours(PROMPTS, callback_on_step_end=raises, progress=False, **args)
    # The pipeline is usable afterwards.
    after = torch.from_numpy(levels(ours(PROMPTS, progress=False, **args).images)).long()
    assert (after - plain(ours)).abs().max() == 0


def test_step_callback_tensor_inputs_of_a_callback_object(ours):
    """diffusers' PipelineCallback objects name their inputs in .tensor_inputs; an empty list
    gives the callback no latents (and nothing changes)."""
    class Counter:
        tensor_inputs: list = []

        def __init__(self):
            self.calls = []

        def __call__(self, pipe, i, t, kwargs):
            self.calls.append(sorted(kwargs))
            return kwargs

    c = Counter()
    got = ours(PROMPTS, callback_on_step_end=c, progress=False, **call_args()).images
    assert c.calls == [[]] * STEPS
    assert (torch.from_numpy(levels(got)).long() - plain(ours)).abs().max() == 0


@pytest.mark.parity
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_latent_output_as_diffusers(ref_pipe, ours, dtype):
    """output_type="latent": diffusers' denoised latents (the VAE does not run), the ones the step
    callback saw last; with a stop, the stopped step's."""
    if dtype == "bfloat16":
        from diffusers import GlmImagePipeline

        ref_pipe = GlmImagePipeline.from_pretrained(str(TINY), torch_dtype=torch.bfloat16)
        ref_pipe.set_progress_bar_config(disable=True)
        ours = glmimage.Pipeline.from_pretrained(str(TINY), dtype="bfloat16")
    args = {**call_args(), "output_type": "latent"}
    ref = ref_pipe(prompt=PROMPTS, **{**args, "latents": args["latents"].clone()}).images
    last: list = []

    def keep(pipe, i, t, kwargs):
        last.append(kwargs["latents"].clone())
        return kwargs

    def convolutions(**kw) -> tuple:
        """The call's output and its convolution count (the VAE is the decoder's only conv user)."""
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = ours(PROMPTS, progress=False, **{**args, **kw}).images
        return out, sum(e.count for e in prof.key_averages() if e.key == "aten::convolution")

    got, convs = convolutions(callback_on_step_end=keep)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.device.type == "cpu"
    assert ref.dtype == torch.float32
    assert record(f"latent_output_{dtype}", got, ref, atol=1e-5)["ok"]
    assert torch.equal(got, last[-1])
    assert convs == 0 and convolutions(output_type="np")[1] > 0  # the VAE ran for images only
    with pytest.raises(ValueError, match="'pil', 'np', 'pt' or 'latent'"):
        ours(PROMPTS, progress=False, **{**args, "output_type": "numpy"})
