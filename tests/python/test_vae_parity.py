"""AutoencoderKL forward parity: glmimage's C++ VAE decoder and encoder against diffusers'
AutoencoderKL, with GLM-Image's latent (un)normalization as GlmImagePipeline applies it
(decode: z * latents_std + latents_mean; encode: (mean - latents_mean) / latents_std), and the
postprocess to uint8 pixels as diffusers' VaeImageProcessor does it.

Two configurations: the tiny checkpoint's VAE (the real structure: no quant convs, no mid-block
attention, layers_per_block 3) and a diffusers-default-like one (quant_conv, post_quant_conv,
mid-block attention, layers_per_block 1) written by save_pretrained and loaded as a lone component.
Latents are non-square (4 x 6 -> 32 x 48 pixels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO

from parity import record, record_exact

import glmimage
import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

TINY = REPO / "models" / "tiny"

# float32: the same kernels in the same order; the decoded images are O(0.1..1).
F32_ATOL, F32_RTOL = 1e-5, 1e-4
# bfloat16 on both sides: a few bf16 ulps of O(1) values.
BF16_ATOL, BF16_RTOL = 2e-2, 2e-2


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _latent_stats(vae, dtype):
    c = vae.config.latent_channels
    mean = torch.tensor(vae.config.latents_mean).view(1, c, 1, 1).to(dtype)
    std = torch.tensor(vae.config.latents_std).view(1, c, 1, 1).to(dtype)
    return mean, std


def ref_decode(vae, latents):
    """GlmImagePipeline.__call__'s decode step (output_type != "latent")."""
    latents = latents.to(vae.dtype)
    mean, std = _latent_stats(vae, latents.dtype)
    with torch.no_grad():
        return vae.decode(latents * std + mean, return_dict=False)[0]


def ref_encode(vae, images):
    """GlmImagePipeline's condition-image encode: the posterior mode, normalized."""
    images = images.to(vae.dtype)
    mean, std = _latent_stats(vae, images.dtype)
    with torch.no_grad():
        z = vae.encode(images).latent_dist.mean
    return (z - mean) / std


def ref_postprocess_u8(images):
    """VaeImageProcessor.postprocess(output_type="pil") as uint8 NHWC."""
    from diffusers.image_processor import VaeImageProcessor

    pil = VaeImageProcessor(vae_scale_factor=8).postprocess(images, output_type="pil")
    return torch.from_numpy(np.stack([np.asarray(im) for im in pil]))


@pytest.fixture(scope="module")
def pipe_f32():
    return glmimage.Pipeline.from_pretrained(str(TINY), dtype="float32")


@pytest.fixture(scope="module")
def ref_f32():
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(TINY / "vae")).eval()


@pytest.fixture(scope="module")
def attn_vae(tmp_path_factory):
    """(reference, C++ handle) for a VAE with quant_conv, post_quant_conv, mid-block attention and
    layers_per_block 1 (diffusers' defaults, as in the diffusers GLM-Image pipeline test)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    ref = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        block_out_channels=(4, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=128,
        latents_mean=[0.05, -0.1, 0.2, 0.0], latents_std=[0.9, 1.1, 1.3, 0.7],
    ).eval()
    assert ref.config.use_quant_conv and ref.config.use_post_quant_conv
    assert ref.config.mid_block_add_attention and ref.config.layers_per_block == 1
    folder = tmp_path_factory.mktemp("vae_attn")
    ref.save_pretrained(str(folder))
    return ref, _testing.load_vae(str(folder), "float32")


def _rounding_ties() -> torch.Tensor:
    """float32 x with fl(fl(x * 0.5) + 0.5) * 255 == n + 0.5 exactly, for as many n as exist."""
    f32 = np.float32
    out = []
    for n in range(255):
        y0 = f32((n + 0.5) / 255)
        cands, lo, hi = [y0], y0, y0
        for _ in range(20):
            lo, hi = np.nextafter(lo, f32(0)), np.nextafter(hi, f32(2))
            cands += [lo, hi]
        for y in cands:
            x = (y - f32(0.5)) * f32(2)
            if f32(y * f32(255)) == f32(n + 0.5) and f32(f32(x * f32(0.5)) + f32(0.5)) == y:
                out.append(x)
                break
    return torch.from_numpy(np.array(out, dtype=np.float32))


def _latents(seed=0, shape=(2, 4, 4, 6)):
    return torch.randn(*shape, generator=_gen(seed))


def _images(seed=0, shape=(2, 3, 32, 48)):
    return torch.rand(*shape, generator=_gen(seed)) * 2 - 1


@pytest.mark.parity
def test_vae_decode(pipe_f32, ref_f32):
    z = _latents(0)
    ours = _testing.vae_decode(pipe_f32, z)
    ref = ref_decode(ref_f32, z)
    assert ours.shape == (2, 3, 32, 48) and ours.dtype == torch.float32
    e = record("vae_decode", ours, ref, atol=F32_ATOL, rtol=F32_RTOL)
    assert e["ok"], e


@pytest.mark.parity
def test_vae_decode_raw(pipe_f32, ref_f32):
    """Without the GLM normalization: AutoencoderKL.decode(z).sample itself."""
    z = _latents(1, (1, 4, 3, 5))
    ours = _testing.vae_decode(pipe_f32, z, denormalize=False)
    with torch.no_grad():
        ref = ref_f32.decode(z).sample
    e = record("vae_decode_raw", ours, ref, atol=F32_ATOL, rtol=F32_RTOL)
    assert e["ok"], e


@pytest.mark.parity
def test_vae_encode(pipe_f32, ref_f32):
    x = _images(0)
    ours = _testing.vae_encode(pipe_f32, x)
    ref = ref_encode(ref_f32, x)
    assert ours.shape == (2, 4, 4, 6)
    e = record("vae_encode", ours, ref, atol=F32_ATOL, rtol=F32_RTOL)
    assert e["ok"], e
    # Odd sizes go through the asymmetric (0, 1, 0, 1) padding with a remainder.
    x = _images(1, (1, 3, 27, 41))
    ours = _testing.vae_encode(pipe_f32, x, normalize=False)
    with torch.no_grad():
        ref = ref_f32.encode(x).latent_dist.mean
    e = record("vae_encode_odd", ours, ref, atol=F32_ATOL, rtol=F32_RTOL)
    assert e["ok"], e


@pytest.mark.parity
def test_vae_decode_attn(attn_vae):
    ref_model, ours_model = attn_vae
    z = _latents(2)
    ours = _testing.vae_decode(ours_model, z)
    ref = ref_decode(ref_model, z)
    e = record("vae_decode_attn", ours, ref, atol=F32_ATOL, rtol=F32_RTOL)
    assert e["ok"], e


@pytest.mark.parity
def test_vae_encode_attn(attn_vae):
    ref_model, ours_model = attn_vae
    x = _images(2)
    ours = _testing.vae_encode(ours_model, x)
    ref = ref_encode(ref_model, x)
    e = record("vae_encode_attn", ours, ref, atol=F32_ATOL, rtol=F32_RTOL)
    assert e["ok"], e


@pytest.mark.parity
def test_vae_postprocess(pipe_f32, ref_f32):
    # 1. The same decoded tensor through both postprocesses: identical bytes.
    img = ref_decode(ref_f32, _latents(3))
    img = img / img.abs().amax() * 1.3  # spread over [-1.3, 1.3]: both clamps are exercised
    e = record_exact("vae_postprocess", _testing.vae_postprocess(img), ref_postprocess_u8(img))
    assert e["ok"], e
    # 2. Exact rounding ties: inputs x whose float32 (x * 0.5 + 0.5) * 255 is exactly n + 0.5, which
    # must round half to even; and the same values in bf16, clamped in bf16 before going to float32.
    ties = _rounding_ties()
    assert len(ties) > 100
    y = (ties * 0.5 + 0.5) * 255
    assert torch.equal(y, y.floor() + 0.5)
    x = ties.view(1, 1, 1, -1).expand(1, 3, 2, -1).contiguous()
    ours = _testing.vae_postprocess(x)
    assert torch.equal(ours[0, 0, :, 0].long(), torch.round(y).long())  # even neighbour
    assert (ours[0, 0, :, 0].long() % 2 == 0).all()
    for dtype in (torch.float32, torch.bfloat16):
        xd = x.to(dtype)
        e = record_exact(f"vae_postprocess_ties_{str(dtype)[6:]}", _testing.vae_postprocess(xd), ref_postprocess_u8(xd))
        assert e["ok"], e
        denorm = _testing.vae_postprocess(xd, to_uint8=False)
        assert denorm.dtype == dtype and torch.equal(denorm, (xd * 0.5 + 0.5).clamp(0, 1))
    # 3. End to end: our decode + our postprocess against the reference decode + its postprocess.
    z = _latents(4)
    ours = _testing.vae_postprocess(_testing.vae_decode(pipe_f32, z))
    ref = ref_postprocess_u8(ref_decode(ref_f32, z))
    assert ours.shape == (2, 32, 48, 3) and ours.dtype == torch.uint8
    e = record("vae_postprocess_decoded", ours.long(), ref.long(), atol=1)
    assert e["ok"], e


@pytest.mark.parity
def test_vae_decode_bf16(ref_f32):
    from diffusers import AutoencoderKL

    pipe = glmimage.Pipeline.from_pretrained(str(TINY), dtype="bfloat16")
    ref_model = AutoencoderKL.from_pretrained(str(TINY / "vae"), torch_dtype=torch.bfloat16).eval()
    z = _latents(5)
    ours = _testing.vae_decode(pipe, z)
    assert ours.dtype == torch.bfloat16
    ref = ref_decode(ref_model, z)
    drift = float((ref.float() - ref_decode(ref_f32, z)).abs().max())
    e = record("vae_decode_bf16", ours.float(), ref.float(), atol=BF16_ATOL, rtol=BF16_RTOL,
               ref_bf16_vs_f32=drift)
    assert e["ok"], e
    # Pixels: the bf16 clamp happens in bf16 on both sides.
    e = record("vae_postprocess_bf16", _testing.vae_postprocess(ours).long(), ref_postprocess_u8(ref).long(), atol=1)
    assert e["ok"], e


def test_vae_bad_inputs(pipe_f32, attn_vae):
    _, handle = attn_vae
    for target in (pipe_f32, handle):
        with pytest.raises(ValueError, match=r"4 channels, got shape \[1, 3, 4, 6\]"):
            _testing.vae_decode(target, torch.zeros(1, 3, 4, 6))
        with pytest.raises(ValueError, match=r"4-D .*got shape \[4, 4, 6\]"):
            _testing.vae_decode(target, torch.zeros(4, 4, 6))
        with pytest.raises(ValueError, match=r"empty tensor of shape \[1, 4, 0, 6\]"):
            _testing.vae_decode(target, torch.zeros(1, 4, 0, 6))
        with pytest.raises(ValueError, match="3 channels"):
            _testing.vae_encode(target, torch.zeros(1, 4, 32, 48))
        with pytest.raises(ValueError, match="4-D"):
            _testing.vae_encode(target, torch.zeros(1, 1, 3, 32, 48))
        with pytest.raises(ValueError, match="floating"):
            _testing.vae_decode(target, torch.zeros(1, 4, 4, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="4-D"):
        _testing.vae_postprocess(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="floating"):
        _testing.vae_postprocess(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_lone_vae_matches_pipeline(pipe_f32):
    """load_vae on the tiny checkpoint's folder holds the same tensors as the pipeline's VAE."""
    handle = _testing.load_vae(str(TINY / "vae"))
    ours = handle.state_dict()
    pipe_sd = _testing.state_dict(pipe_f32, "vae")
    assert ours.keys() == pipe_sd.keys()
    assert all(torch.equal(ours[k], pipe_sd[k]) for k in ours)
    z = _latents(6)
    assert torch.equal(_testing.vae_decode(handle, z), _testing.vae_decode(pipe_f32, z))
