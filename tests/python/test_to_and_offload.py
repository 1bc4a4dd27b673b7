"""diffusers' placement calls on a loaded pipeline: ``pipe.to(device / dtype)`` and
``pipe.enable_model_cpu_offload()``. Each loads the checkpoint again with the new placement and
hands it to the pipeline's session (Session::replace_model): the images equal a fresh load's with
that placement, and diffusers' own pipeline after the same call."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import glmimage
import glmimage_testing
from parity import record

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny"
FOLDERS = ("vision_language_encoder", "text_encoder", "transformer", "vae")
PROMPT = 'A sign that says "OPEN"'
FAST = dict(height=64, width=64, num_inference_steps=2, progress=False, output_type="np", seed=5)
NAMES = {torch.float32: "F32", torch.bfloat16: "BF16"}


def placement(pipe):
    return {c.folder: (c.dtype, c.device, c.residency) for c in pipe.components}


def images(pipe, **kw):
    return pipe(PROMPT, **{**FAST, **kw}).images


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.fixture(scope="module")
def fp32_images():
    return images(glmimage.Pipeline.from_pretrained(TINY, dtype="float32"))


@pytest.fixture(scope="module")
def bf16_images():
    return images(glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16"))


def test_to_gives_a_fresh_load_with_that_placement(fp32_images, bf16_images):
    pipe = glmimage.Pipeline.from_pretrained(TINY, dtype="float32")
    assert pipe.to(torch.bfloat16) is pipe
    assert set(placement(pipe).values()) == {("BF16", "cpu", "resident")} and pipe.dtype == torch.bfloat16
    d = max_diff(images(pipe), bf16_images)
    print(f"to(bfloat16) vs loaded in bfloat16: max abs diff {d} (tolerance 0)")
    assert d == 0 and max_diff(bf16_images, fp32_images) > 0  # the two dtypes tell apart
    assert pipe.to("cpu", torch.float32) is pipe
    d = max_diff(images(pipe), fp32_images)
    print(f"to('cpu', float32) vs loaded in float32: max abs diff {d} (tolerance 0)")
    assert d == 0 and set(placement(pipe).values()) == {("F32", "cpu", "resident")}
    # The AR stage too: the prior tokens of both ways equal.
    fresh = glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16")
    pipe.to(dtype=torch.bfloat16)
    got = pipe.generate_prior_tokens(PROMPT, height=64, width=64, seed=9, progress=False).prior_token_ids
    want = fresh.generate_prior_tokens(PROMPT, height=64, width=64, seed=9, progress=False).prior_token_ids
    assert torch.equal(got, want)


def test_to_keeps_what_it_does_not_change():
    pipe = glmimage.Pipeline.from_pretrained(TINY, dtype="float32", components={"vae": {"dtype": "bfloat16"},
                                                                               "text_encoder": {"residency": "staged"}})
    before = placement(pipe)
    pipe.to("cpu")  # already there: kept as is
    assert placement(pipe) == before
    pipe.to(torch.bfloat16)  # every component, the VAE's override dropped; residency kept
    assert placement(pipe) == {f: ("BF16", "cpu", "staged" if f == "text_encoder" else "resident") for f in FOLDERS}
    pipe.to(torch.float32)
    assert {f: v[0] for f, v in placement(pipe).items()} == {f: "F32" for f in FOLDERS}


@pytest.mark.parametrize("args, kwargs, says", [
    ((torch.float32, "cpu"), {}, "first is the device"),
    (("cpu", torch.float32, 1), {}, "at most two"),
    ((torch.float32,), {"dtype": torch.float32}, "dtype given both"),
    (("cpu",), {"device": "cpu"}, "device given both"),
    ((), {"non_blocking": True}, "unexpected keyword"),
    (("tpu",), {}, "unknown device"),
    ((torch.int8,), {}, "unsupported dtype"),
])
def test_to_takes_diffusers_arguments_and_refuses_others(args, kwargs, says):
    pipe = glmimage.Pipeline.from_pretrained(TINY, dtype="float32")
    with pytest.raises(ValueError, match=says):
        pipe.to(*args, **kwargs)
    assert set(placement(pipe).values()) == {("F32", "cpu", "resident")}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_failed_to_leaves_the_pipeline_as_it_was(fp32_images):
    pipe = glmimage.Pipeline.from_pretrained(TINY, dtype="float32")
    with pytest.raises(glmimage.Error, match="no CUDA"):
        pipe.to("cuda", torch.bfloat16)
    assert set(placement(pipe).values()) == {("F32", "cpu", "resident")}
    assert max_diff(images(pipe), fp32_images) == 0


def test_enable_model_cpu_offload_stages_every_component(bf16_images):
    # a per-component residency is dropped too: every component staged
    pipe = glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16", components={"vae": {"residency": "resident"}})
    assert pipe.enable_model_cpu_offload(device="cpu") is None  # as diffusers'
    assert set(placement(pipe).values()) == {("BF16", "cpu", "staged")}
    d = max_diff(images(pipe), bf16_images)
    print(f"enable_model_cpu_offload vs resident: max abs diff {d} (tolerance 0)")
    assert d == 0
    # Between stages its weights are the files' own (float32 as stored), not bf16 copies.
    assert all(t.dtype != torch.bfloat16 for f in FOLDERS for t in glmimage_testing.state_dict(pipe, f).values())
    with pytest.raises(ValueError, match="both given"):
        pipe.enable_model_cpu_offload(gpu_id=1, device="cuda:0")
    with pytest.raises(NotImplementedError, match="enable_model_cpu_offload"):
        pipe.enable_sequential_cpu_offload()
    if not torch.cuda.is_available():  # diffusers' rule: with no device named, an accelerator is required
        with pytest.raises(RuntimeError, match="requires an accelerator"):
            pipe.enable_model_cpu_offload()


def test_to_while_a_call_runs_and_on_other_sessions(fp32_images, bf16_images):
    """A call running when to() replaces the weights finishes on its own; the next call runs on
    the new ones; a session made before (new_session) keeps the old ones; to() does not wait."""
    pipe = glmimage.Pipeline.from_pretrained(TINY, dtype="float32")
    sibling = pipe.new_session()
    in_call, placed = threading.Event(), threading.Event()
    result = {}

    def on_progress(stage, step, total):
        if stage == "denoise" and not in_call.is_set():
            in_call.set()
            assert placed.wait(120), "to() did not return while the call ran"

    def run():
        result["images"] = images(pipe, callback=on_progress)

    worker = threading.Thread(target=run)
    worker.start()
    assert in_call.wait(120)
    pipe.to(torch.bfloat16)
    placed.set()
    worker.join(120)
    assert not worker.is_alive()
    d_running = max_diff(result["images"], fp32_images)
    d_next = max_diff(images(pipe), bf16_images)
    d_sibling = max_diff(images(sibling), fp32_images)
    print(f"to() during a call: the running call vs float32 {d_running}, the next call vs bfloat16 {d_next}, "
          f"an earlier session vs float32 {d_sibling} (max abs diffs, tolerance 0)")
    assert d_running == 0 and d_next == 0 and d_sibling == 0
    assert set(placement(sibling).values()) == {("F32", "cpu", "resident")}
    assert set(placement(pipe.new_session()).values()) == {("BF16", "cpu", "resident")}


@pytest.fixture(scope="module")
def tiny_bf16(tmp_path_factory):
    """The tiny checkpoint stored in bf16, as the published one is."""
    out = tmp_path_factory.mktemp("tiny_bf16")
    shutil.copytree(TINY, out, dirs_exist_ok=True)
    for f in out.glob("*/*.safetensors"):
        save_file({k: v.to(torch.bfloat16) for k, v in load_file(str(f)).items()}, str(f), metadata={"format": "pt"})
    return out


@pytest.mark.parity
@pytest.mark.parametrize("stored, loaded, target", [("bf16", torch.bfloat16, torch.float32),
                                                     ("f32", torch.float32, torch.bfloat16)])
def test_to_as_diffusers(tiny_bf16, stored, loaded, target):
    """diffusers' pipeline and ours, loaded alike, then to(target): the same component dtypes and the
    same images (given prior tokens, so both decoders start from the same grid). With a checkpoint
    stored in the loaded dtype or wider and a wider target, diffusers' cast and our fresh load give
    the same weights (a float32 checkpoint loaded in bf16 and cast back to float32 would not: the
    docstring of Pipeline.to says so)."""
    from diffusers import GlmImagePipeline

    ckpt = tiny_bf16 if stored == "bf16" else TINY
    ref = GlmImagePipeline.from_pretrained(str(ckpt), torch_dtype=loaded).to(target)
    ref.set_progress_bar_config(disable=True)
    ours = glmimage.Pipeline.from_pretrained(ckpt, torch_dtype=loaded).to(target)
    assert {f: NAMES[getattr(ref, f).dtype] for f in FOLDERS} == {c.folder: c.dtype for c in ours.components}
    prior = torch.randint(0, 64, (1, (64 // 16) * (64 // 16)), generator=torch.Generator().manual_seed(3))
    kw = dict(prior_token_ids=prior, height=64, width=64, num_inference_steps=2, guidance_scale=1.5,
              output_type="np")
    want = ref(PROMPT, generator=torch.Generator().manual_seed(8), **kw).images
    got = ours(PROMPT, generator=torch.Generator().manual_seed(8), progress=False, **kw).images
    atol = 1e-5 if target == torch.float32 else 2.0**-9
    entry = record(f"to_{stored}_{NAMES[loaded]}_to_{NAMES[target]}", torch.as_tensor(got), torch.as_tensor(want),
                   atol=atol)
    assert entry["ok"]
