"""The public Python API (`import glmimage`) as users call it, on the embedded tiny checkpoint.

Random weights: the images are noise, so these tests check shapes, determinism, plumbing
(callbacks, cancellation, the GIL, errors), not pictures. 64x64 with 2 steps keeps each run
well under a second.
"""

from __future__ import annotations

import ast

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import glmimage
import glmimage_testing
from parity import levels

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny"
PROMPT = 'A poster that says "Hello"'
FAST = dict(height=64, width=64, num_inference_steps=2, progress=False)
# cfg_passes="auto" on the CPU in float32: one forward over both CFG passes where a product row's
# bits do not depend on the call's other rows there (MKL's sgemm), else two as diffusers runs them.
# Asked when a test runs: the answer is per thread count, which conftest sets for the session.
def float32_cfg_default() -> str:
    return "joint" if glmimage_testing.products_keep_row_bits(torch.zeros(1)) else "apart"


@pytest.fixture(scope="module")
def pipe():
    return glmimage.Pipeline.from_pretrained(TINY, dtype="float32")


def arrays(out):
    return np.stack([np.asarray(im) for im in out.images]) if isinstance(out.images, list) else out.images


def noise_image(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# ------------------------------------------------------------------ the README example


def readme_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", glmimage.__doc__, flags=re.S)
    assert len(blocks) == 1, "glmimage.__doc__ must hold exactly one ```python example"
    return blocks[0]


def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    # Run from a directory that looks like the repository root (models/ beside the script), so
    # the example's relative path and its output file work exactly as written.
    (tmp_path / "models").symlink_to(REPO / "models")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_snippet(), "README example", "exec"), {"__name__": "__main__"})
    saved = Image.open(tmp_path / "hello.png")
    assert saved.size == (64, 64) and saved.mode == "RGB"
    assert "(64, 64)" in capsys.readouterr().out


# ------------------------------------------------------------------ generation


def test_text_to_image_pil(pipe):
    out = pipe(PROMPT, seed=1, **FAST)
    assert isinstance(out, glmimage.PipelineOutput)
    assert len(out.images) == 1
    im = out.images[0]
    assert isinstance(im, Image.Image) and im.size == (64, 64) and im.mode == "RGB"
    # The prior tokens: the 2x2 AR grid of a 64x64 image, upsampled 2x.
    assert out.prior_token_ids.shape == (1, 16) and out.prior_token_ids.dtype == torch.int64
    assert out.prior_token_image_ids is None
    assert set(out.timings) == {"ar", "decoder", "ar_decode", "cfg", "dit_passes", "dit_passes_cached"}
    assert out.timings["ar_decode"] == "eager"
    assert (out.timings["dit_passes"], out.timings["dit_passes_cached"]) == (2 * FAST["num_inference_steps"], 0)
    assert out.timings["ar"] >= 0 and out.timings["decoder"] >= 0
    assert out.timings["cfg"] == float32_cfg_default()
    assert pipe(PROMPT, seed=1, guidance_scale=1.0, **FAST).timings["cfg"] == "none"


def test_calls_take_diffusers_arguments_in_its_order():
    """diffusers' GlmImagePipeline's __call__, generate_prior_tokens and encode_prompt arguments are
    glmimage's first ones, by name and position, so code written for diffusers calls glmimage the
    same way; from_pretrained takes its torch_dtype= and device_map= too."""
    import inspect

    diffusers = pytest.importorskip("diffusers")

    def names(fn):
        return [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]

    for call in ("__call__", "generate_prior_tokens", "encode_prompt"):
        ref = names(getattr(diffusers.GlmImagePipeline, call))
        assert names(getattr(glmimage.Pipeline, call))[:len(ref)] == ref, call
    assert {"torch_dtype", "device_map"} <= set(names(glmimage.Pipeline.from_pretrained))


def test_non_square_and_np_output(pipe):
    out = pipe(PROMPT, seed=1, output_type="np", height=96, width=64, num_inference_steps=2, progress=False)
    assert isinstance(out.images, np.ndarray)
    assert out.images.shape == (1, 96, 64, 3) and out.images.dtype == np.float32  # diffusers' "np"
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert out.prior_token_ids.shape == (1, (96 // 16) * (64 // 16))


def test_np_pt_and_pil_agree(pipe):
    """"pil" is "np" rounded to 8 bits (as diffusers' numpy_to_pil does), "pt" is "np" as NCHW."""
    a = pipe(PROMPT, seed=3, **FAST)
    b = pipe(PROMPT, seed=3, output_type="np", **FAST)
    np.testing.assert_array_equal(arrays(a), levels(b.images))
    assert not np.array_equal(b.images * 255, levels(b.images))  # not the 8-bit levels again
    c = pipe(PROMPT, seed=3, output_type="pt", **FAST)
    assert isinstance(c.images, torch.Tensor) and c.images.dtype == torch.float32  # the VAE's dtype here
    assert c.images.shape == (1, 3, 64, 64) and c.images.is_contiguous()
    np.testing.assert_array_equal(c.images.permute(0, 2, 3, 1).numpy(), b.images)


def test_batch_of_prompts_times_images_per_prompt(pipe):
    out = pipe([PROMPT, "a cat"], num_images_per_prompt=2, seed=5, output_type="np", **FAST)
    assert out.images.shape == (4, 64, 64, 3)
    assert out.prior_token_ids.shape == (2, 16)  # prior tokens are per prompt, shared by its images
    assert not np.array_equal(out.images[0], out.images[1])  # different initial latents


def test_same_seed_same_images_different_seed_different(pipe):
    a = arrays(pipe(PROMPT, seed=11, **FAST))
    b = arrays(pipe(PROMPT, seed=11, **FAST))
    c = arrays(pipe(PROMPT, seed=12, **FAST))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_generator_seeds_like_its_initial_seed(pipe):
    a = pipe(PROMPT, generator=torch.Generator().manual_seed(21), **FAST)
    b = pipe(PROMPT, seed=21, **FAST)
    np.testing.assert_array_equal(arrays(a), arrays(b))
    assert torch.equal(a.prior_token_ids, b.prior_token_ids)


def test_no_seed_follows_torch_manual_seed(pipe):
    torch.manual_seed(4)
    a = arrays(pipe(PROMPT, **FAST))
    torch.manual_seed(4)
    b = arrays(pipe(PROMPT, **FAST))
    np.testing.assert_array_equal(a, b)


def test_prior_tokens_round_trip(pipe):
    prompts = [PROMPT, "a cat"]
    full = pipe(prompts, seed=7, output_type="np", **FAST)
    prior = pipe.generate_prior_tokens(prompts, height=64, width=64, seed=7, progress=False)
    assert torch.equal(prior.prior_token_ids, full.prior_token_ids)
    ids, image_ids, grid_thw = prior  # unpacks like diffusers' generate_prior_tokens
    assert image_ids is None and grid_thw is None
    placed = pipe.generate_prior_tokens(prompts, height=64, width=64, seed=7, progress=False, device="cpu")
    assert torch.equal(placed.prior_token_ids, ids) and placed.prior_token_ids.device.type == "cpu"
    with pytest.raises(ValueError, match="device"):
        pipe.generate_prior_tokens(prompts, height=64, width=64, seed=7, progress=False, device="tpu")
    again = pipe(prompts, seed=7, output_type="np", prior_token_ids=prior, **FAST)
    np.testing.assert_array_equal(again.images, full.images)
    # A plain [B, S] tensor works too (diffusers' form), e.g. after saving it.
    from_tensor = pipe(prompts, seed=7, output_type="np", prior_token_ids=ids.clone(), **FAST)
    np.testing.assert_array_equal(from_tensor.images, full.images)


def test_image_to_image_forms(pipe):
    # Condition images need a short side >= 512 (and a long side <= 2048).
    cond = noise_image(512, 512)
    ref = pipe("make it red", image=cond, seed=2, output_type="np", **FAST)
    assert ref.images.shape == (1, 64, 64, 3)
    assert len(ref.prior_token_image_ids) == 1 and len(ref.prior_token_image_ids[0]) == 1
    for form in ([[cond]], [np.asarray(cond)]):  # list of lists; numpy instead of PIL
        out = pipe("make it red", image=form, seed=2, output_type="np", **FAST)
        np.testing.assert_array_equal(out.images, ref.images)
    prior = pipe.generate_prior_tokens("make it red", image=[cond], height=64, width=64, seed=2, progress=False)
    moved = prior.to(torch.device("meta"))  # what generate_prior_tokens(device="cuda") does with a GPU
    assert [t.device.type for t in [moved.prior_token_ids, *moved.prior_token_image_ids[0],
                                    *moved.source_image_grid_thw]] == ["meta"] * 3
    again = pipe("make it red", image=[cond], seed=2, output_type="np", prior_token_ids=prior, **FAST)
    np.testing.assert_array_equal(again.images, ref.images)
    flat = pipe("make it red", image=[cond], seed=2, output_type="np", prior_token_ids=prior.prior_token_ids,
                prior_token_image_ids=[prior.prior_token_image_ids[0][0]], **FAST)
    np.testing.assert_array_equal(flat.images, ref.images)


def test_image_lists_follow_diffusers_rules(pipe):
    cond = noise_image(512, 512)
    with pytest.raises(ValueError, match="list of image lists"):
        pipe(["a", "b"], image=[cond, cond], **FAST)
    with pytest.raises(ValueError, match="must match the number of prompts"):
        pipe(["a", "b"], image=[[cond]], **FAST)
    with pytest.raises(ValueError, match="same number of condition images"):
        pipe(["a", "b"], image=[[cond], [cond, cond]], **FAST)
    with pytest.raises(ValueError, match="expected 1 image list"):
        pipe("a", image=[[cond], [cond]], **FAST)


# ------------------------------------------------------------------ progress, cancel, GIL


def test_callback_sees_both_stages_in_order(pipe):
    seen = []
    pipe(PROMPT, seed=1, callback=lambda stage, step, total: seen.append((stage, step, total)), **FAST)
    stages = [s for s, _, _ in seen]
    assert stages[0] == "ar" and stages[-1] == "denoise"
    assert stages == sorted(stages, key=["ar", "denoise"].index)  # all AR first, then denoising
    for stage in ("ar", "denoise"):
        steps = [(step, total) for s, step, total in seen if s == stage]
        assert [s for s, _ in steps] == sorted(s for s, _ in steps) and len({s for s, _ in steps}) == len(steps)
        assert steps[-1][0] == steps[-1][1]  # ends at total
    assert [st for s, st, _ in seen if s == "denoise"] == [1, 2]


def test_tqdm_progress_runs(pipe, capsys):
    pytest.importorskip("tqdm")
    out = pipe(PROMPT, seed=1, height=64, width=64, num_inference_steps=2, progress=True)
    assert len(out.images) == 1
    assert "denoise" in capsys.readouterr().err


def test_diffusers_pipeline_attributes(pipe, capsys):
    """diffusers' pipe.dtype, pipe.device and set_progress_bar_config (tqdm's arguments for the
    calls that follow; disable=True shows no bar)."""
    pytest.importorskip("tqdm")
    assert (pipe.dtype, pipe.device) == (torch.float32, torch.device("cpu"))
    assert glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16").dtype == torch.bfloat16
    other = pipe.new_session()  # its own settings: pipe's bars stay as they are
    shown = {**FAST, "progress": True}
    other.set_progress_bar_config(disable=True)
    other(PROMPT, seed=1, **shown)
    assert "denoise" not in capsys.readouterr().err
    other.set_progress_bar_config(desc="my bar")
    other(PROMPT, seed=1, **shown)
    err = capsys.readouterr().err
    assert "my bar" in err and "denoise" not in err
    pipe(PROMPT, seed=1, **shown)
    assert "denoise" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tqdm does not take"):
        other.set_progress_bar_config(colour_of_bar="red")


def test_cancel_from_callback(pipe):
    for when in ("ar", "denoise"):
        steps = []

        def cb(stage, step, total):
            steps.append((stage, step))
            if stage == when:
                pipe.cancel()

        with pytest.raises(glmimage.CancelledError):
            pipe(PROMPT, seed=1, callback=cb, **FAST)
        assert isinstance(glmimage.CancelledError("x"), RuntimeError)
        assert steps[-1] == (when, 1)  # stopped at the next step
    # The flag is cleared by the next call: the pipeline still works.
    assert len(pipe(PROMPT, seed=1, **FAST).images) == 1


def test_cancel_from_another_thread(pipe):
    started = threading.Event()
    t = threading.Thread(target=lambda: started.wait(30) and pipe.cancel())
    t.start()
    seen = []

    def cb(stage, step, total):
        seen.append(stage)
        if stage == "denoise":
            started.set()
            time.sleep(0.01)  # GIL released while sleeping: the other thread cancels meanwhile

    try:
        with pytest.raises(glmimage.CancelledError):
            pipe(PROMPT, seed=1, height=64, width=64, num_inference_steps=400, callback=cb, progress=False)
    finally:
        started.set()
        t.join()
    assert seen.count("denoise") < 400


def test_callback_exception_propagates(pipe):
    class Boom(Exception):
        pass

    def cb(stage, step, total):
        raise Boom("from the callback")

    with pytest.raises(Boom, match="from the callback"):
        pipe(PROMPT, seed=1, callback=cb, **FAST)
    assert len(pipe(PROMPT, seed=1, **FAST).images) == 1


def test_failed_load_leaves_no_crashing_instance():
    """A load that raises must not leave its half-made instance in the traceback's locals, where
    pytest, debuggers and rich tracebacks repr it: it has no C++ pipeline, and any method on it
    crashed the process (pybind11 hands raw memory in its place). A subprocess, so a crash fails
    this test only; it looks at every frame's locals as such tools do."""
    code = "\n".join([
        f"import sys; sys.path.insert(0, {str(REPO / 'python')!r})",
        "import glmimage",
        "for kwargs in (dict(ar_decode='bogus'), dict(quantize='int3'), dict(device='tpu')):",
        "    try:",
        f"        glmimage.Pipeline({str(TINY)!r}, **kwargs)",
        "    except (glmimage.InputError, ValueError, RuntimeError) as e:",
        "        tb, shown = e.__traceback__, []",
        "        while tb is not None:",
        "            shown += [repr(v) for v in tb.tb_frame.f_locals.values()]",
        "            tb = tb.tb_next",
        "        print(type(e).__name__, sum('glmimage.Pipeline' in r for r in shown))",
    ])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 3, lines
    assert all(line.endswith(" 0") for line in lines), lines  # no Pipeline instance in any frame


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_ctrl_c_cancels(pipe):
    started = threading.Event()
    seen = []

    def cb(stage, step, total):
        seen.append((stage, step, total))
        if stage == "denoise":
            started.set()

    def interrupt():
        if started.wait(30):
            os.kill(os.getpid(), signal.SIGINT)

    # Python's own Ctrl-C handler, as an interactive session has it: a shell's background job
    # (`cmd &`) starts with SIGINT ignored, and Python then installs none.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    t = threading.Thread(target=interrupt)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            # Many steps, so the run is still going when the signal lands.
            pipe(PROMPT, seed=1, height=64, width=64, num_inference_steps=400, callback=cb, progress=False)
            time.sleep(5)  # never reached unless the run ignored the signal; lets the interrupt land
    finally:
        t.join()
        signal.signal(signal.SIGINT, previous)
    last = [step for s, step, _ in seen if s == "denoise"][-1]
    assert last < 400, "the run finished: Ctrl-C did not cancel it"
    assert len(pipe(PROMPT, seed=1, **FAST).images) == 1


def test_cpu_block_cache_takes_a_bool():
    """What the option does is compared in test_e2e_parity.py::test_e2e_with_and_without_cpu_block_cache."""
    with pytest.raises(glmimage.InputError, match="cpu_block_cache must be a bool"):
        glmimage.Pipeline.from_pretrained(TINY, cpu_block_cache="yes")


def test_cfg_passes():
    """cfg_passes="apart" (diffusers' two forwards) against "joint": one DiT forward over both CFG
    passes (the quoted prompt makes their texts differ in length, so two text groups), text-to-image
    and image-to-image. Where a product row's bits do not depend on the call's other rows (MKL's
    float32 GEMMs), the images must be equal; elsewhere within 1 level (test_decoder_parity.py
    compares both ways with diffusers). The feed-forward's shared call runs in both."""
    apart = glmimage.Pipeline.from_pretrained(TINY, dtype="float32", cfg_passes="apart")
    joint = glmimage.Pipeline.from_pretrained(TINY, dtype="float32", cfg_passes="joint")
    bound = 0 if float32_cfg_default() == "joint" else 1
    # Glyph rows enough for the feed-forward to take them in the image rows' call (12 and more).
    prompt = 'A poster that says "Hello, GLM-Image world"'
    assert glmimage_testing.glyph_embeddings(joint, [prompt]).shape[1] >= 12
    cond = noise_image(512, 512)  # a condition image's short side is >= 512
    for kwargs in (dict(), dict(image=cond), dict(image=cond, num_images_per_prompt=2)):
        a, b = apart(prompt, seed=1, **FAST, **kwargs), joint(prompt, seed=1, **FAST, **kwargs)
        assert (a.timings["cfg"], b.timings["cfg"]) == ("apart", "joint")
        assert len(a.images) == len(b.images) == kwargs.get("num_images_per_prompt", 1)
        for x, y in zip(a.images, b.images):
            diff = np.abs(np.asarray(x, np.int16) - np.asarray(y, np.int16)).max()
            assert diff <= bound, diff
    with pytest.raises(ValueError, match="unknown cfg_passes 'both': expected auto, joint or apart"):
        glmimage.Pipeline.from_pretrained(TINY, cfg_passes="both")


def test_cfg_passes_auto_in_bf16():
    """bf16 on the CPU: joint where its products are computed in float32 (no oneDNN bf16 kernels)
    and give a row the same bits whatever the call's other rows (float32's answer), apart where
    oneDNN's bf16 kernels run (the joint forward moved images on an AVX-512 Xeon, and was slower at
    the real widths where the kernels keep the bits)."""
    bf16 = glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16")
    want = "joint" if glmimage_testing.cpu_bf16_products_in_float32() and float32_cfg_default() == "joint" else "apart"
    assert bf16(PROMPT, seed=1, **FAST).timings["cfg"] == want


def test_gil_released_while_generating(pipe):
    """A Python thread keeps running while generate works in C++."""
    stop = threading.Event()
    count = [0]

    def spin():
        while not stop.is_set():
            count[0] += 1

    def count_during(seconds_or_fn):
        count[0] = 0
        stop.clear()
        t = threading.Thread(target=spin)
        t0 = time.perf_counter()
        t.start()
        if callable(seconds_or_fn):
            while time.perf_counter() - t0 < 0.5:  # repeat short runs for a measurable window
                seconds_or_fn()
        else:
            time.sleep(seconds_or_fn)
        stop.set()
        t.join()
        return count[0] / (time.perf_counter() - t0)

    idle_rate = count_during(0.3)
    busy_rate = count_during(lambda: pipe(PROMPT, seed=1, height=128, width=128, num_inference_steps=4,
                                           progress=False))
    # With the GIL held the spinning thread would only run between calls (a few ms per 0.1 s run):
    # a rate far below the idle one. Released, it runs alongside (the tests use 1 torch thread).
    assert busy_rate > 0.2 * idle_rate, (busy_rate, idle_rate)


def test_calls_on_one_pipeline_queue(pipe):
    # A second call from another thread waits for the running one (queued, not refused) and
    # gives the image it gives alone.
    alone = arrays(pipe(PROMPT, seed=3, **FAST))
    inside = threading.Event()
    release = threading.Event()
    results, errors = {}, []

    def cb(stage, step, total):
        inside.set()
        release.wait(10)

    def first():
        try:
            results["first"] = arrays(pipe(PROMPT, seed=1, callback=cb, **FAST))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def second():
        try:
            results["second"] = arrays(pipe(PROMPT, seed=3, **FAST))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t1 = threading.Thread(target=first)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.3)
    assert "second" not in results, "the second call ran while the first one held the pipeline"
    release.set()
    t1.join(30)
    t2.join(30)
    assert not errors, errors
    assert np.array_equal(results["second"], alone)


def test_cancel_before_a_call_is_not_lost(pipe):
    pipe.cancel()
    with pytest.raises(glmimage.CancelledError):
        pipe(PROMPT, seed=1, **FAST)
    # consumed by that call: the next one runs, and gives a fresh pipeline's image
    fresh = glmimage.Pipeline.from_pretrained(TINY, dtype="float32")
    assert np.array_equal(arrays(pipe(PROMPT, seed=4, **FAST)), arrays(fresh(PROMPT, seed=4, **FAST)))


def test_sessions_share_weights_and_cancel_independently(pipe):
    import glmimage_testing

    other = pipe.new_session()
    mine = glmimage_testing.state_dict(pipe, "transformer")
    theirs = glmimage_testing.state_dict(other, "transformer")
    assert all(mine[k].data_ptr() == theirs[k].data_ptr() for k in mine)  # one copy of the weights
    want = arrays(pipe(PROMPT, seed=5, **FAST))

    inside = threading.Event()
    release = threading.Event()
    outcome = {}

    def cb(stage, step, total):
        inside.set()
        release.wait(10)

    def run_other():
        try:
            other(PROMPT, seed=5, callback=cb, **FAST)
            outcome["other"] = "done"
        except glmimage.CancelledError:
            outcome["other"] = "cancelled"

    t = threading.Thread(target=run_other)
    t.start()
    assert inside.wait(10)
    # Concurrent with the other session's call (it waits in its callback), and unaffected by it.
    assert np.array_equal(arrays(pipe(PROMPT, seed=5, **FAST)), want)
    other.cancel()  # cancels the other session's running call only
    release.set()
    t.join(30)
    assert outcome["other"] == "cancelled"
    assert np.array_equal(arrays(pipe(PROMPT, seed=5, **FAST)), want)
    assert np.array_equal(arrays(other(PROMPT, seed=5, **FAST)), want)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(height=65), "multiples of 32"),
        (dict(width=100), "multiples of 32"),
        (dict(height=0), "multiples of 32"),
        (dict(num_inference_steps=-1), "steps must be >= 1"),
        (dict(num_inference_steps=0), "steps must be >= 1"),
        (dict(num_inference_steps=2.5), "num_inference_steps must be an integer"),
        (dict(num_images_per_prompt=0), "images_per_prompt"),
        (dict(guidance_scale=float("nan")), "guidance_scale"),
        (dict(seed=-1), "seed must be >= 0"),
        (dict(seed=1, generator=torch.Generator()), "either generator or seed"),
        (dict(generator=123), "torch.Generator"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(output_type="numpy"), "output_type"),
        (dict(callback=42), "callback must be callable"),
        (dict(prior_token_ids=torch.zeros(1, 15, dtype=torch.long)), r"shape \[1, 16\]"),
        (dict(prior_token_ids=torch.zeros(1, 16)), "integer token ids"),
        (dict(prior_token_ids=torch.full((1, 16), -1)), "negative"),
    ],
)
def test_bad_arguments_are_value_errors(pipe, kwargs, message):
    args = dict(FAST, seed=None)
    args.update(kwargs)
    if "generator" in kwargs and "seed" not in kwargs:
        args.pop("seed")
    with pytest.raises(ValueError, match=message) as info:
        pipe(PROMPT, **args)
    assert isinstance(info.value, glmimage.InputError)


@pytest.mark.parametrize("prompt", ["", "   ", [], ["ok", ""], 42, None, [PROMPT, 3]])
def test_bad_prompts(pipe, prompt):
    with pytest.raises(ValueError, match="prompt"):
        pipe(prompt, **FAST)


def test_errors_from_cpp_are_value_errors_too(pipe):
    # Checked by the C++ request validation, not the Python front: still a ValueError.
    req = glmimage.GenerateRequest()
    req.prompts = ["x"]
    req.height = 48
    with pytest.raises(glmimage.InputError, match="multiples of 32"):
        pipe._generate(req)


@pytest.mark.parametrize("dtype", ["float64", "int8", "fp8", torch.float64, 3])
def test_unknown_dtype(dtype):
    with pytest.raises(ValueError, match="dtype"):
        glmimage.Pipeline.from_pretrained(TINY, dtype=dtype)


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu", torch.device("meta"), 0])
def test_unknown_device(device):
    with pytest.raises(ValueError, match="device"):
        glmimage.Pipeline.from_pretrained(TINY, device=device)


def test_load_options_accept_torch_types():
    p = glmimage.Pipeline.from_pretrained(str(TINY), dtype=torch.bfloat16, device=torch.device("cpu"))
    assert {c.dtype for c in p.components if c.num_tensors} == {"BF16"}
    assert "transformer" in p.summary()


def test_missing_model_directory(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        glmimage.Pipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="model_index.json is missing"):
        glmimage.Pipeline.from_pretrained(tmp_path)


def test_incomplete_model_directory(tmp_path):
    ckpt = tmp_path / "tiny"
    shutil.copytree(TINY, ckpt)
    shutil.rmtree(ckpt / "vae")
    with pytest.raises(ValueError, match=r"incomplete model directory .*vae/"):
        glmimage.Pipeline.from_pretrained(ckpt)
    # The native loader reports it too (no Python pre-check).
    with pytest.raises(glmimage.InputError, match="vae"):
        glmimage._C.Pipeline(str(ckpt))


def test_truncated_weights_are_clear_errors(tmp_path):
    ckpt = tmp_path / "tiny"
    shutil.copytree(TINY, ckpt)
    weights = next((ckpt / "vae").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(glmimage.Error, match="vae"):
        glmimage.Pipeline.from_pretrained(ckpt)


def test_bad_images(pipe, tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    empty_file = tmp_path / "empty.png"
    empty_file.write_bytes(b"")
    truncated = tmp_path / "truncated.png"
    noise_image(512, 512).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    cases = [
        (str(garbage), "cannot read image"),
        (empty_file, "cannot read image"),
        (truncated, "cannot read image"),
        (tmp_path / "missing.png", "cannot read image"),
        (Image.new("RGB", (0, 0)), "empty image"),
        (np.zeros((0, 0, 3), np.uint8), "empty image"),
        (np.zeros((512, 512, 3), np.float32), "uint8"),
        (np.zeros((512, 512, 4), np.uint8), r"\[H, W, 3\]"),
        (torch.zeros(3, 512, 512), "expected a PIL.Image"),
        ([[]], "empty list of condition images"),
        (noise_image(60, 100), "does not fit"),  # the C++ side's size rule, still a ValueError
    ]
    for image, message in cases:
        with pytest.raises(ValueError, match=message):
            pipe("x", image=image, **FAST)


def test_prior_token_image_ids_need_images(pipe):
    with pytest.raises(ValueError, match="without condition images"):
        pipe("x", prior_token_ids=torch.zeros(1, 16, dtype=torch.long), prior_token_image_ids=[torch.zeros(4)],
             **FAST)
    prior = pipe.generate_prior_tokens("x", height=64, width=64, seed=0, progress=False)
    with pytest.raises(ValueError, match="generated for 64x64"):
        pipe("x", prior_token_ids=prior, height=128, width=128, num_inference_steps=2, progress=False)


def test_exception_hierarchy():
    assert issubclass(glmimage.InputError, ValueError)
    for cls in (glmimage.FormatError, glmimage.ConfigError, glmimage.WeightError, glmimage.UnsupportedError,
                glmimage.CancelledError):
        assert issubclass(cls, glmimage.Error) and issubclass(cls, RuntimeError)


def test_type_stubs_ship():
    pkg = Path(glmimage.__file__).parent
    assert (pkg / "py.typed").is_file() and (pkg / "_C.pyi").is_file()


def stub_names(node) -> set:
    names = set()
    for b in node.body:
        if isinstance(b, (ast.FunctionDef, ast.ClassDef)):
            names.add(b.name)
        elif isinstance(b, ast.AnnAssign):
            names.add(b.target.id)
    return names - {"__init__"}


def test_type_stubs_name_what_the_module_has():
    """Every class, attribute and method of glmimage._C is in _C.pyi and the stub names nothing the
    module lacks (it once kept a field the request had dropped and missed three new ones)."""
    from glmimage import _C

    tree = ast.parse((Path(_C.__file__).parent / "_C.pyi").read_text())
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    module = {n for n in dir(_C) if not n.startswith("__")}
    assert {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))} == module
    mismatched = {}
    for node in classes:
        cls = _C.GenerateRequest.Output if node.name == "Output" else getattr(_C, node.name)
        have = {n for n in vars(cls) if not n.startswith("__")} - {"_pybind11_conduit_v1_"}
        if node.name == "Output":  # pybind11's enum bookkeeping besides the values
            have = {n for n in have if isinstance(vars(cls)[n], cls)}
        if stub_names(node) != have:
            mismatched[node.name] = (sorted(stub_names(node) - have), sorted(have - stub_names(node)))
    assert not mismatched, f"(in the stub only, in the module only) per class: {mismatched}"


def test_decode_leaves_the_mkldnn_switch_as_it_was():
    """bf16 decode steps on the CPU turn LibTorch's process-wide oneDNN switch off while they run
    (layers/linear.cpp says why); the caller's setting, either way, is what remains afterwards."""
    pipe = glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16")
    before = torch.backends.mkldnn.enabled
    try:
        for state in (True, False):
            torch.backends.mkldnn.enabled = state
            pipe.generate_prior_tokens("a sign", height=64, width=64, seed=1, progress=False)
            assert torch.backends.mkldnn.enabled is state
    finally:
        torch.backends.mkldnn.enabled = before


def test_image_path_that_is_no_regular_file_is_refused_at_once(tmp_path):
    """A FIFO (or a directory) given as a condition image is a clear error, not a blocked open()."""
    pipe = glmimage.Pipeline.from_pretrained(TINY)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path, words in ((fifo, "not a regular file"), (tmp_path, "is a directory")):
        with pytest.raises(ValueError, match=words):
            pipe("x", image=str(path), height=64, width=64, num_inference_steps=1, progress=False)
