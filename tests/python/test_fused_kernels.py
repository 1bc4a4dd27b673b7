"""The fused kernels (the AR decoder's, src/kernels/decoder_fused.h; the DiT's RoPE and
modulations, rotary.h and mul_add.h) against the LibTorch op sequences they replace, on every
device at hand: the CPU always, CUDA where there is one (there this file is the device's
bit-for-bit check of the CUDA kernels, and tools/gpu_bench.sh runs it first).

Each kernel is compared on random inputs with the ops written here as the reference's modules
write them (transformers' GlmImage RMSNorm, rotary and MLP; diffusers' GLM-Image RoPE, AdaLN
modulation and gated residuals); then the whole AR decoder on the tiny
checkpoint, fused against unfused (the research hook set_fused_kernels), prefill logits and every
layer's output, and generated tokens with their per-step logits; and the whole pipeline's images
(the DiT's RoPE and modulations) fused against unfused. Tolerance 0 everywhere: the kernels round
where the ops round. Every comparison prints its max abs diff."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import glmimage
import glmimage_testing as _testing
from parity import record

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.bfloat16]


def _needs_kernels(device: str, dtype: torch.dtype):
    like = torch.empty(0, device=device, dtype=dtype)
    if not _testing.decoder_fused_available(like):
        pytest.skip(f"this build has no fused decoder kernels for {device}")


def _rand(*shape, device, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)


def _rms_norm(x, w, eps):  # GlmImageRMSNorm's order
    xf = x.to(torch.float32)
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rotate(x, cos, sin):  # NeoX pairs: x * cos + rotate_half(x) * sin
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


# Widths a power of two and not (the mean's division is then inexact), and an epsilon that float32
# does not hold exactly: the CPU folds the division, the epsilon and the rsqrt into its pass.
@pytest.mark.parametrize("width,eps", [(5, 1e-5), (320, 1e-5), (1000, 1e-6), (4096, 1e-5)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_rms_norms(device, dtype, width, eps):
    _needs_kernels(device, dtype)
    x = _rand(2, 150, width, device=device, dtype=dtype, seed=1, scale=3.0)
    h = _rand(2, 150, width, device=device, dtype=dtype, seed=2, scale=40.0)
    w = _rand(width, device=device, dtype=dtype, seed=3)
    tag = f"{device}_{str(dtype).split('.')[-1]}_{width}"
    assert record(f"fused_squares_{tag}", _testing.fused_squares(x), x.float().pow(2), atol=0.0)["ok"]
    assert record(f"fused_rms_norm_{tag}", _testing.fused_rms_norm(x, w, eps), _rms_norm(x, w, eps), atol=0.0)["ok"]
    out, sq = _testing.fused_residual_rms_norm(x, h, w, eps)
    want = x + _rms_norm(h, w, eps)
    assert record(f"fused_residual_rms_norm_{tag}", out, want, atol=0.0)["ok"]
    # On the CPU the norms square their input as they read it (row_sum.h): no squares are stored.
    assert _testing.norm_needs_squares(x) == (device != "cpu")
    if device == "cpu":
        assert sq is None
    else:
        assert record(f"fused_residual_rms_norm_squares_{tag}", sq, want.float().pow(2), atol=0.0)["ok"]


@pytest.mark.parametrize("width", [1, 7, 8, 100, 512, 4096, 13696], ids=str)
def test_row_sums(width):
    """The RMSNorms' sums (row_sum.h) against torch's sum, the op behind transformers' mean: the
    loop runs on this CPU (its probe found LibTorch's vector width) and gives its bits."""
    x = _rand(3, 5, width, device="cpu", dtype=torch.float32, seed=width, scale=7.0) ** 3
    assert _testing.row_sum_matches_libtorch(width)
    assert record(f"row_sums_{width}", _testing.row_sums(x), x.sum(-1), atol=0.0)["ok"]


@pytest.mark.parametrize("rotary_dim", [8, 16], ids=["partial", "whole"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_rotary_qkv_to_cache(device, dtype, rotary_dim):
    """q/k/v as views of one fused projection; a prefill at slots [2, 5) and a static step at a
    slot read from the device; cos/sin rows taken out of a longer table (strided)."""
    _needs_kernels(device, dtype)
    B, hq, hkv, D, cap = 2, 4, 2, 16, 9
    tag = f"{device}_{str(dtype).split('.')[-1]}_rd{rotary_dim}"
    for S, slot in ((3, None), (1, 6)):
        proj = _rand(B, S, (hq + 2 * hkv) * D, device=device, dtype=dtype, seed=S, scale=2.0)
        q, k, v = proj.split([hq * D, hkv * D, hkv * D], -1)
        table = _rand(B, S + 4, 2 * rotary_dim, device=device, dtype=dtype, seed=10 + S)
        cos, sin = table[:, 2:2 + S, :rotary_dim], table[:, 2:2 + S, rotary_dim:]
        cache_k = torch.zeros(B, hkv, cap, D, device=device, dtype=dtype)
        cache_v = torch.zeros_like(cache_k)
        slot_t = None if slot is None else torch.tensor([slot], device=device)
        got_q = _testing.fused_rotary_qkv_to_cache(q, k, v, cos, sin, D, slot=slot_t, slot0=2, cache_k=cache_k,
                                                   cache_v=cache_v)
        first = 2 if slot is None else slot
        cs, sn = cos.unsqueeze(1), sin.unsqueeze(1)
        qh = q.reshape(B, S, hq, D).transpose(1, 2)
        kh = k.reshape(B, S, hkv, D).transpose(1, 2)
        want_q = torch.cat([_rotate(qh[..., :rotary_dim], cs, sn), qh[..., rotary_dim:]], -1)
        want_k = torch.zeros_like(cache_k)
        want_v = torch.zeros_like(cache_v)
        want_k[:, :, first:first + S] = torch.cat([_rotate(kh[..., :rotary_dim], cs, sn), kh[..., rotary_dim:]], -1)
        want_v[:, :, first:first + S] = v.reshape(B, S, hkv, D).transpose(1, 2)
        assert got_q.is_contiguous() and got_q.shape == (B, hq, S, D)
        for name, got, want in (("q", got_q, want_q), ("k_cache", cache_k, want_k), ("v_cache", cache_v, want_v)):
            assert record(f"fused_rotary_{name}_S{S}_{tag}", got, want, atol=0.0)["ok"]


# 96: LibTorch's ops (a 16-bit run whose end LibTorch computes in its scalar loop); 128 and 1536 (the
# small preset's): on the CPU a 16-bit silu is looked up in LibTorch's own table (half_float_table.h).
@pytest.mark.parametrize("inter", [96, 128, 1536], ids=str)
@pytest.mark.parametrize("dtype", DTYPES + [torch.float16], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_silu_mul(device, dtype, inter):
    gu = _rand(3, 2, 2 * inter, device=device, dtype=dtype, seed=7, scale=4.0)
    want = gu[..., inter:] * F.silu(gu[..., :inter])
    tag = f"{device}_{str(dtype).split('.')[-1]}_{inter}"
    by_table = device == "cpu" and dtype != torch.float32 and inter % 64 == 0
    assert _testing.silu_mul_by_table(gu) == by_table
    assert record(f"fused_silu_mul_{tag}", _testing.fused_silu_mul(gu), want, atol=0.0)["ok"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_silu_mul_every_gate_input(dtype):
    """Every bit pattern of the gate (NaNs, infinities, subnormals, signed zeros) against LibTorch's
    silu and product, up random and scaled so that products also overflow and underflow; NaNs
    compared as NaNs."""
    gate = torch.arange(-32768, 32768, dtype=torch.int16).view(dtype)
    up = _rand(65536, device="cpu", dtype=torch.float32, seed=8) * torch.logspace(-30, 30, 65536)
    gu = torch.cat([gate, up.to(dtype)]).view(1, 2 * 65536)
    want = gu[..., 65536:] * F.silu(gu[..., :65536])
    got = _testing.fused_silu_mul(gu)
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)
    # The bit patterns as integers (infinities compare too), NaNs set to one pattern.
    got_bits, want_bits = (t.masked_fill(nan, 0.0).view(torch.int16).int() for t in (got, want))
    assert record(f"fused_silu_mul_every_gate_{str(dtype).split('.')[-1]}_bits", got_bits, want_bits, atol=0.0)["ok"]


@pytest.mark.parametrize("head_major", [False, True], ids=["token_major", "head_major"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_dit_rope(device, dtype, head_major):
    """Text tokens [0, skip) pass through; x a strided view (a slice of a fused q/k/v projection)."""
    _needs_kernels(device, dtype)
    B, S, H, D, skip = 2, 7, 3, 16, 2
    qkv = _rand(B, S, 3, H, D, device=device, dtype=dtype, seed=21, scale=3.0)
    x = qkv[:, :, 1]  # [B, S, H, D], token stride 3 * H * D
    table = torch.randn(S - skip, D, generator=torch.Generator().manual_seed(22)).to(device)
    cos, sin = table.cos().contiguous(), table.sin().contiguous()
    img = x[:, skip:]
    half = D // 2
    rotated = torch.cat([-img[..., half:], img[..., :half]], -1)
    c, s = cos[None, :, None], sin[None, :, None]
    want = torch.cat([x[:, :skip], (img.float() * c + rotated.float() * s).to(dtype)], 1)
    got = _testing.fused_dit_rope(x, cos, sin, skip, head_major)
    if head_major:
        assert got.transpose(1, 2).is_contiguous()
    tag = f"{device}_{str(dtype).split('.')[-1]}_{'head' if head_major else 'token'}_major"
    assert record(f"fused_dit_rope_{tag}", got, want, atol=0.0)["ok"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_mul_add(device, dtype):
    """The modulation (c a vector per sample) and the gated residual (c of a's shape), a strided."""
    _needs_kernels(device, dtype)
    B, S, D = 2, 5, 48
    a = _rand(B, S + 3, D, device=device, dtype=dtype, seed=31, scale=5.0)[:, 3:]
    g = _rand(B, 1, D, device=device, dtype=dtype, seed=32)
    tag = f"{device}_{str(dtype).split('.')[-1]}"
    for name, c in (("vector", _rand(B, 1, D, device=device, dtype=dtype, seed=33)),
                    ("full", _rand(B, S, D, device=device, dtype=dtype, seed=34, scale=7.0)),
                    ("shared_vector", _rand(1, 1, D, device=device, dtype=dtype, seed=35))):
        assert record(f"fused_mul_add_{name}_{tag}", _testing.fused_mul_add(a, g, c), a * g + c, atol=0.0)["ok"]
        # into the image rows of [text; image] samples, as the DiT fills its attention input
        buffer = torch.full((B, 3 + S, D), 42.0, device=device, dtype=dtype)
        _testing.fused_mul_add_into(a, g, c, buffer[:, 3:])
        assert record(f"fused_mul_add_into_{name}_{tag}", buffer[:, 3:], a * g + c, atol=0.0)["ok"]
        assert bool((buffer[:, :3] == 42.0).all()), "wrote outside the rows it was given"


@pytest.mark.parametrize("shape", [(1, 281, 8, 64), (2, 256, 512), (1, 1, 512), (3, 40, 13696)], ids=str)
def test_dit_layer_norm(shape):
    """The DiT's LayerNorm without weight or bias against torch's, bit for bit: the per-head q/k
    rows, the streams, the empty text's one token, a wide row (a cascade of many chunks)."""
    x = _rand(*shape, device="cpu", dtype=torch.float32, seed=41, scale=3.0) + 0.25
    got = _testing.layer_norm(x, 1e-5)
    tag = "x".join(map(str, shape))
    assert record(f"dit_layer_norm_{tag}", got, F.layer_norm(x, shape[-1:], eps=1e-5), atol=0.0)["ok"]
    assert torch.equal(got.view(torch.int32), F.layer_norm(x, shape[-1:], eps=1e-5).view(torch.int32))
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert _testing.layer_norm_by_loop(x), "LibTorch runs its AVX2 layer norm here: the loop should run"


def test_bad_inputs_are_refused():
    x = torch.randn(2, 8)
    with pytest.raises(Exception, match="rms_norm"):
        _testing.fused_rms_norm(x, torch.randn(7), 1e-5)
    with pytest.raises(Exception, match="capacity"):
        q = torch.randn(1, 3, 16)
        c = torch.zeros(1, 1, 4, 16)
        _testing.fused_rotary_qkv_to_cache(q, q, q, torch.randn(1, 3, 8), torch.randn(1, 3, 8), 16, slot0=2,
                                           cache_k=c, cache_v=c.clone())
    with pytest.raises(Exception, match="float32 or bfloat16"):
        _testing.fused_squares(torch.randn(4, 8, dtype=torch.float64))


class _Unfused:
    """Every fused kernel off (LibTorch's op sequences) while inside."""

    def __enter__(self):
        _testing.set_fused_kernels(False)

    def __exit__(self, *exc):
        _testing.set_fused_kernels(True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("device", DEVICES)
def test_decoder_fused_equals_unfused(device, dtype):
    _needs_kernels(device, getattr(torch, dtype))
    _check_decoder_fused_equals_unfused(glmimage.Pipeline.from_pretrained(TINY, dtype=dtype, device=device), device,
                                        f"{device}_{dtype}")


def test_decoder_fused_equals_unfused_small_bf16(tmp_path):
    """The small preset (hidden 512, intermediate 1536) in bf16: on the CPU its silu is looked up
    in LibTorch's table (the tiny checkpoint's intermediate 96 keeps LibTorch's silu)."""
    import make_tiny_checkpoint as mk

    ckpt = mk.build(tmp_path / "small", "small", "bfloat16", 0)
    assert _testing.silu_mul_by_table(torch.empty(1, 2 * 1536, dtype=torch.bfloat16))
    _check_decoder_fused_equals_unfused(glmimage.Pipeline.from_pretrained(ckpt, dtype="bfloat16", device="cpu"), "cpu",
                                        "cpu_bfloat16_small")


def _check_decoder_fused_equals_unfused(pipe, device, tag):
    g = torch.Generator().manual_seed(3)
    ids = torch.cat([torch.randint(80, 656, (2, 11), generator=g), torch.full((2, 1), 64)], 1)
    grids = torch.tensor([[1, 3, 4], [1, 2, 3]] * 2)
    pos = _testing.ar_positions(pipe, ids, grids, [2, 2])[0]
    fused_logits, fused_layers = _testing.ar_forward(pipe, ids, pos)
    with _Unfused():
        logits, layers = _testing.ar_forward(pipe, ids, pos)
    assert record(f"decoder_fused_prefill_logits_{tag}", fused_logits, logits, atol=0.0)["ok"]
    for i, (a, b) in enumerate(zip(fused_layers, layers)):
        assert record(f"decoder_fused_prefill_layer{i}_{tag}", a, b, atol=0.0)["ok"]

    decodes = ["eager", "static"] + (["graph"] if device == "cuda" else [])
    kw = dict(input_ids=ids, image_grid_thw=grids, images_per_sample=[2, 2], record_logits=True, do_sample=True,
              temperature=3.0, top_k=30, top_p=0.9, seed=5)
    for decode in decodes:
        fused = _testing.ar_generate(pipe, **kw, decode=decode)
        with _Unfused():
            ops = _testing.ar_generate(pipe, **kw, decode=decode)
        assert fused["decode"] == ops["decode"] == decode
        assert record(f"decoder_fused_tokens_{decode}_{tag}", fused["generated"], ops["generated"], atol=0.0)["ok"]
        assert record(f"decoder_fused_step_logits_{decode}_{tag}", torch.stack(fused["step_logits"]),
                      torch.stack(ops["step_logits"]), atol=0.0)["ok"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("device", DEVICES)
def test_pipeline_fused_equals_unfused(device, dtype):
    """Text-to-image and image-to-image (the condition KV cache), the AR stage and the decoder."""
    import numpy as np
    from PIL import Image

    pipe = glmimage.Pipeline.from_pretrained(TINY, dtype=dtype, device=device)
    cond = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    for case, extra in (("t2i", {}), ("i2i", {"image": cond})):
        args = dict(height=64, width=64, num_inference_steps=2, seed=3, progress=False, output_type="np", **extra)
        fused = pipe('A sign that says "OPEN"', **args)
        with _Unfused():
            ops = pipe('A sign that says "OPEN"', **args)
        tag = f"{case}_{device}_{dtype}"
        assert record(f"pipeline_fused_prior_{tag}", fused.prior_token_ids, ops.prior_token_ids, atol=0.0)["ok"]
        assert record(f"pipeline_fused_image_{tag}", torch.from_numpy(fused.images), torch.from_numpy(ops.images),
                      atol=0.0)["ok"]
