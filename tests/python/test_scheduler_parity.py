"""The flow-matching Euler schedule and step against diffusers' FlowMatchEulerDiscreteScheduler, driven
as the installed GlmImagePipeline drives it (diffusers 0.39: calculate_shift, np.linspace truncated to
int64, retrieve_timesteps(timesteps, sigmas, mu), label = t - 1, scheduler.step).

Sigmas and labels must be bit-identical. The diffusers >= 0.40 label (sigma' * 1000 - 1, diffusion.md
5.4) cannot be run here (0.39 is pinned); it is computed in the test from the reference's own sigmas."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from conftest import REPO

from parity import record

import glmimage
import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

TINY = REPO / "models" / "tiny"
TINY_SCHEDULER = TINY / "scheduler"
REAL_SCHEDULER = REPO / "tests" / "data" / "real-configs" / "scheduler"

STEPS = [1, 2, 10, 30, 50]
SIZES = [(32, 32), (64, 96), (512, 768), (1024, 1024)]


def reference_schedule(config_dir, steps, height, width, patch_size=2, vae_scale_factor=8, timesteps=None,
                       sigmas=None):
    """GlmImagePipeline.__call__, "Prepare timesteps" (diffusers 0.39), verbatim but for `self`, with the
    installed module's calculate_shift and retrieve_timesteps. Returns the scheduler and the DiT labels."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.glm_image.pipeline_glm_image import calculate_shift, retrieve_timesteps

    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(config_dir))
    num_inference_steps = steps
    image_seq_len = ((height // vae_scale_factor) * (width // vae_scale_factor)) // (patch_size**2)
    timesteps = (
        np.linspace(scheduler.config.num_train_timesteps, 1.0, num_inference_steps + 1)[:-1]
        if timesteps is None
        else np.array(timesteps)
    )
    timesteps = timesteps.astype(np.int64).astype(np.float32)
    sigmas = timesteps / scheduler.config.num_train_timesteps if sigmas is None else sigmas
    mu = calculate_shift(
        image_seq_len,
        scheduler.config.get("base_image_seq_len", 256),
        scheduler.config.get("base_shift", 0.25),
        scheduler.config.get("max_shift", 0.75),
    )
    timesteps, num_inference_steps = retrieve_timesteps(scheduler, num_inference_steps, "cpu", timesteps, sigmas,
                                                        mu=mu)
    labels = torch.stack([t.expand(1) - 1 for t in timesteps]).flatten()  # the loop's `timestep`
    return scheduler, labels, mu


def test_reference_code_is_what_we_replicate():
    """Guard: the lines reference_schedule copies are still the installed pipeline's."""
    from diffusers.pipelines.glm_image import pipeline_glm_image as pg

    src = inspect.getsource(pg.GlmImagePipeline.__call__)
    for line in [
        "np.linspace(self.scheduler.config.num_train_timesteps, 1.0, num_inference_steps + 1)[:-1]",
        "timesteps = timesteps.astype(np.int64).astype(np.float32)",
        "sigmas = timesteps / self.scheduler.config.num_train_timesteps if sigmas is None else sigmas",
        "self.scheduler, num_inference_steps, device, timesteps, sigmas, mu=mu",
        "timestep = t.expand(latents.shape[0]) - 1",
        "latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]",
    ]:
        assert line in src, line
    assert "m = (image_seq_len / base_seq_len) ** 0.5" in inspect.getsource(pg.calculate_shift)


def _check(name, ours_sigmas, ours_labels, scheduler, ref_labels):
    e1 = record(f"{name}_sigmas", ours_sigmas, scheduler.sigmas, atol=0.0)
    e2 = record(f"{name}_labels", ours_labels, ref_labels, atol=0.0)
    assert ours_sigmas.dtype == torch.float32 and ours_labels.dtype == torch.float32
    assert torch.equal(ours_sigmas, scheduler.sigmas), (ours_sigmas - scheduler.sigmas).abs().max()
    assert torch.equal(ours_labels, ref_labels)
    assert e1["ok"] and e2["ok"]


@pytest.mark.parity
@pytest.mark.parametrize("config_dir", [TINY_SCHEDULER, REAL_SCHEDULER], ids=["tiny", "real"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
@pytest.mark.parametrize("steps", STEPS)
def test_schedule_matches_reference(config_dir, steps, size):
    h, w = size
    scheduler, ref_labels, mu = reference_schedule(config_dir, steps, h, w)
    sigmas, labels = _testing.scheduler_schedule(str(config_dir), steps, h, w)
    which = "tiny" if config_dir == TINY_SCHEDULER else "real"
    _check(f"scheduler_{which}_{steps}_{h}x{w}", sigmas, labels, scheduler, ref_labels)
    info = _testing.scheduler_info(str(config_dir), steps, h, w)
    assert info["mu"] == mu  # the float64 shift, bit for bit
    assert torch.equal(info["timesteps"], scheduler.timesteps)


def test_real_1024_50_known_values():
    """diffusion.md 5.2/5.3: mu 3.25, timesteps 1000, 980, ..., 20, sigma' 1.0, 0.99376, ... 0.06220, 0."""
    info = _testing.scheduler_info(str(REAL_SCHEDULER), 50, 1024, 1024)
    assert info["image_seq_len"] == 4096 and info["mu"] == 3.25
    assert info["timesteps"].tolist() == [float(1000 - 20 * i) for i in range(50)]
    assert info["labels"].tolist() == [float(999 - 20 * i) for i in range(50)]
    s = info["sigmas"]
    assert s[0] == 1.0 and s[-1] == 0.0
    assert torch.allclose(s[1:3], torch.tensor([0.99376, 0.98734]), atol=1e-5)
    assert torch.allclose(s[-2], torch.tensor(0.06220), atol=1e-5)


@pytest.fixture(scope="module")
def ref_pipe():
    from diffusers import GlmImagePipeline

    pipe = GlmImagePipeline.from_pretrained(str(TINY))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parity
@pytest.mark.parametrize("steps,height,width", [(50, 1024, 1024), (10, 64, 96), (1, 32, 32), (30, 512, 768)])
def test_schedule_matches_running_pipeline(ref_pipe, steps, height, width):
    """The whole GlmImagePipeline.__call__ on the tiny checkpoint (real scheduler config), its DiT replaced by
    a recorder: the labels it feeds the DiT and the sigmas it integrates with, against ours from a loaded
    glmimage.Pipeline (patch size and VAE scale factor from the checkpoint)."""
    seen = []

    def recorder(hidden_states, timestep, **kwargs):
        seen.append(timestep.clone())
        return (torch.zeros_like(hidden_states),)

    transformer = ref_pipe.transformer
    transformer.forward = recorder
    try:
        n_prior = (height // 16) * (width // 16)
        ref_pipe(prompt="a 'sign'", height=height, width=width, num_inference_steps=steps, guidance_scale=1.5,
                 prior_token_ids=torch.zeros(1, n_prior, dtype=torch.long), output_type="latent",
                 generator=torch.Generator().manual_seed(0))
    finally:
        del transformer.forward
    # CFG: two DiT calls per step with the same label.
    ref_labels = torch.stack([t[0] for t in seen[::2]])
    assert len(seen) == 2 * steps and all(torch.equal(a, b) for a, b in zip(seen[::2], seen[1::2]))

    pipe = glmimage.Pipeline.from_pretrained(str(TINY))
    sigmas, labels = _testing.scheduler_schedule(pipe, steps, height, width)
    _check(f"scheduler_pipeline_{steps}_{height}x{width}", sigmas, labels, ref_pipe.scheduler, ref_labels)


def _edited_config(tmp_path, **changes):
    cfg = json.loads((REAL_SCHEDULER / "scheduler_config.json").read_text())
    cfg.update(changes)
    (tmp_path / "scheduler_config.json").write_text(json.dumps(cfg))
    return tmp_path


@pytest.mark.parity
@pytest.mark.parametrize(
    "name,changes",
    [
        ("exponential", {"time_shift_type": "exponential"}),
        ("static_shift1", {"use_dynamic_shifting": False}),  # the diffusers pipeline test's scheduler
        ("static_shift3", {"use_dynamic_shifting": False, "shift": 3.0}),
        ("terminal", {"shift_terminal": 0.1}),
        ("base_seq_1024", {"base_image_seq_len": 1024, "base_shift": 0.5, "max_shift": 1.15}),
    ],
)
def test_schedule_config_variants(tmp_path, name, changes):
    cfg = _edited_config(tmp_path, **changes)
    for steps, (h, w) in [(1, (32, 32)), (7, (64, 96)), (50, (1024, 1024)), (28, (1024, 1152))]:
        if name == "terminal" and steps == 1:
            continue  # one step stretches 0 / 0: NaN in the reference (and in ours)
        scheduler, ref_labels, _ = reference_schedule(cfg, steps, h, w)
        sigmas, labels = _testing.scheduler_schedule(str(cfg), steps, h, w)
        _check(f"scheduler_{name}_{steps}_{h}x{w}", sigmas, labels, scheduler, ref_labels)


@pytest.mark.parity
@pytest.mark.parametrize(
    "name,timesteps,sigmas,steps",
    [
        ("timesteps", [999.7, 750, 500.2, 10.9], None, 50),  # replace the step count, truncated to integers
        ("sigmas", None, [1.0, 0.8, 0.55, 0.3, 0.1], 5),
        ("both", [1000, 700, 400, 100], [0.99, 0.7, 0.41, 0.123456789], 50),
        ("sigma_zero", [1000, 500], [1.0, 0.0], 2),
    ],
)
def test_custom_timesteps_and_sigmas(name, timesteps, sigmas, steps):
    h, w = 512, 768
    scheduler, ref_labels, _ = reference_schedule(REAL_SCHEDULER, steps, h, w, timesteps=timesteps, sigmas=sigmas)
    ours_s, ours_l = _testing.scheduler_schedule(str(REAL_SCHEDULER), steps, h, w, timesteps=timesteps,
                                                 sigmas=sigmas)
    _check(f"scheduler_custom_{name}", ours_s, ours_l, scheduler, ref_labels)


@pytest.mark.parity
@pytest.mark.parametrize("steps,size", [(50, (1024, 1024)), (30, (1024, 1152)), (10, (64, 96)), (2, (32, 32))])
def test_label_version_040(steps, size):
    """diffusers >= 0.40 conditions the DiT on sigma' * num_train_timesteps - 1 (float32), with the same sigmas.
    Not runnable here: the expected labels are computed from the 0.39 reference's sigmas."""
    h, w = size
    scheduler, _, _ = reference_schedule(REAL_SCHEDULER, steps, h, w)
    expected = scheduler.sigmas[:-1] * scheduler.config.num_train_timesteps - 1
    sigmas, labels = _testing.scheduler_schedule(str(REAL_SCHEDULER), steps, h, w, "0.40")
    assert torch.equal(sigmas, scheduler.sigmas)
    entry = record(f"scheduler_label040_{steps}_{h}x{w}", labels, expected, atol=0.0)
    assert entry["ok"] and torch.equal(labels, expected)
    if (steps, size) == (50, (1024, 1024)):  # diffusion.md 5.4: 999, 992.7598, ..., 61.2010
        assert labels[0] == 999.0
        assert abs(float(labels[1]) - 992.7598) < 1e-3 and abs(float(labels[-1]) - 61.2010) < 1e-3


@pytest.mark.parity
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_scheduler_step(dtype):
    """scheduler.step(v, t, x) over a whole 1024x1024 / 50-step schedule on random tensors: each step from the
    reference's state, and a 50-step chain of ours against the reference's chain."""
    scheduler, _, _ = reference_schedule(REAL_SCHEDULER, 50, 1024, 1024)
    sigmas, _ = _testing.scheduler_schedule(str(REAL_SCHEDULER), 50, 1024, 1024)
    g = torch.Generator().manual_seed(0)
    x_ref = torch.randn(2, 4, 16, 12, generator=g)
    x_ours = x_ref.clone()
    worst = 0.0
    for i, t in enumerate(scheduler.timesteps):
        v = torch.randn(2, 4, 16, 12, generator=g).to(dtype)
        single = _testing.scheduler_step(x_ref, v, float(sigmas[i]), float(sigmas[i + 1]))
        x_ours = _testing.scheduler_step(x_ours, v, float(sigmas[i]), float(sigmas[i + 1]))
        x_ref = scheduler.step(v, t, x_ref, return_dict=False)[0]
        assert single.dtype == x_ref.dtype == dtype
        assert torch.equal(single, x_ref), i
        worst = max(worst, float((x_ours.double() - x_ref.double()).abs().max()))
    entry = record(f"scheduler_step_chain50_{dtype}".replace("torch.", ""), x_ours, x_ref, atol=0.0, steps=50)
    assert entry["ok"] and worst == 0.0


def test_invalid_arguments():
    cfg = str(REAL_SCHEDULER)
    for args in [(0, 64, 64), (-3, 64, 64), (10, 48, 64), (10, 64, 100), (10, 0, 64)]:
        with pytest.raises(glmimage.InputError):
            _testing.scheduler_schedule(cfg, *args)
    with pytest.raises(glmimage.InputError):  # the reference raises ValueError too
        _testing.scheduler_schedule(cfg, 10, 64, 64, sigmas=[1.0, 0.5])
    with pytest.raises(ValueError):
        reference_schedule(REAL_SCHEDULER, 10, 64, 64, sigmas=[1.0, 0.5])
    with pytest.raises(glmimage.InputError):
        _testing.scheduler_schedule(cfg, 10, 64, 64, timesteps=[])
    with pytest.raises(glmimage.InputError):
        _testing.scheduler_schedule(cfg, 10, 64, 64, timesteps=[float("nan")])
    with pytest.raises(glmimage.InputError):
        _testing.scheduler_schedule(cfg, 10, 64, 64, "0.38")
    with pytest.raises(glmimage.InputError):
        _testing.scheduler_schedule(cfg, 10, 64, 64, patch_size=0)


@pytest.mark.parity
def test_schedule_sweep():
    """Every step count 1..100 at 1024x1024 and 100 random sizes / step counts, under the real config."""
    import random

    rng = random.Random(0)
    cases = [(s, 1024, 1024) for s in range(1, 101)]
    cases += [(rng.randint(1, 120), 32 * rng.randint(1, 96), 32 * rng.randint(1, 96)) for _ in range(100)]
    ours_s, ref_s, ours_l, ref_l = [], [], [], []
    for steps, h, w in cases:
        scheduler, labels, _ = reference_schedule(REAL_SCHEDULER, steps, h, w)
        s, l = _testing.scheduler_schedule(str(REAL_SCHEDULER), steps, h, w)
        assert torch.equal(s, scheduler.sigmas) and torch.equal(l, labels), (steps, h, w)
        ours_s.append(s), ref_s.append(scheduler.sigmas), ours_l.append(l), ref_l.append(labels)
    e1 = record("scheduler_sweep_sigmas", torch.cat(ours_s), torch.cat(ref_s), atol=0.0, cases=len(cases))
    e2 = record("scheduler_sweep_labels", torch.cat(ours_l), torch.cat(ref_l), atol=0.0, cases=len(cases))
    assert e1["ok"] and e2["ok"]
