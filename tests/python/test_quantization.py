"""Quantized linears (LoadOptions.quantize = "int8" or "fp8") against the same checkpoint in bf16, on
the tiny checkpoint: AR logits and greedy tokens, the DiT's output, the final image. Each figure is
printed and held to a stated tolerance per format.

What the figures mean: the tiny checkpoint has random weights, a harsh case for quantization (no
outlier structure to exploit, logits close together, so one flipped near-tie changes a greedy
token). Per-channel int8 keeps each weight within max|w|/254 of its value. fp8 e4m3 has 3 mantissa
bits (a relative step of 1/16) and rounds the inputs too (per row, W8A8), so its tolerances are
wider. They are what each format allows through these models, not a claim about the real model's
image quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import glmimage
import glmimage_testing as _testing
from parity import levels

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny"
START = 64  # <|dit_token_16384|> of the tiny vocabulary

# Per format: AR logits max / mean relative error, teacher-forced argmax agreement, DiT output
# max / mean relative error, image PSNR (dB) against bf16.
TOLERANCES = {
    "int8": dict(ar_max=0.1, ar_mean=0.03, argmax=0.9, dit_max=0.05, dit_mean=0.02, psnr=30),
    "fp8": dict(ar_max=0.15, ar_mean=0.13, argmax=0.65, dit_max=0.1, dit_mean=0.06, psnr=34),
}
WEIGHT_DTYPE = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}


@pytest.fixture(scope="module")
def bf16():
    return glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16")


@pytest.fixture(scope="module", params=["int8", "fp8"])
def quant(request, load_quantized):
    """(format, a pipeline whose AR decoder and DiT linears are in that format)."""
    return request.param, load_quantized(TINY, request.param, dtype="bfloat16")


def rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.float() - b.float()).abs()
    scale = b.float().abs().max().item()
    return d.max().item() / scale, d.mean().item() / b.float().abs().mean().item()


def test_which_weights_are_quantized(quant):
    fmt, q = quant
    got = {c.folder: c.quantized for c in q.components}
    assert got["text_encoder"] == 0 and got["vae"] == 0
    assert got["vision_language_encoder"] > 0 and got["transformer"] > 0
    sd = _testing.state_dict(q, "vision_language_encoder")
    assert sd["model.language_model.layers.0.self_attn.q_proj.weight"].dtype == WEIGHT_DTYPE[fmt]
    assert sd["model.visual.blocks.0.attn.qkv.weight"].dtype == torch.bfloat16  # vision encoder kept
    assert f"linears {fmt}" in q.summary()


def test_ar_logits_and_greedy_tokens(bf16, quant):
    fmt, q = quant
    tol = TOLERANCES[fmt]
    g = torch.Generator().manual_seed(1)
    ids = torch.tensor([torch.randint(80, 656, (24,), generator=g).tolist() + [START]])
    grids = torch.tensor([[1, 8, 8], [1, 4, 4]])  # a 256x256 target: 64 + 16 grid tokens
    ref = _testing.ar_generate(bf16, ids, grids, record_logits=True, keep_in_codebook=False)
    # Teacher-forced on the bf16 tokens, so every step's logits compare like for like.
    got = _testing.ar_generate(q, ids, grids, record_logits=True, keep_in_codebook=False,
                               forced_tokens=ref["generated"])
    a, b = torch.stack(got["step_logits"]), torch.stack(ref["step_logits"])
    max_rel, mean_rel = rel(a, b)
    free = _testing.ar_generate(q, ids, grids, keep_in_codebook=False)
    n = min(free["generated"].shape[1], ref["generated"].shape[1])
    agree = (free["generated"][:, :n] == ref["generated"][:, :n]).float().mean().item()
    argmax_agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    print(f"{fmt}_ar_logits: max rel {max_rel:.4f}, mean rel {mean_rel:.4f} (tolerance {tol['ar_max']} / "
          f"{tol['ar_mean']}); teacher-forced argmax agreement {argmax_agree:.3f} (tolerance {tol['argmax']}); "
          f"free-running greedy agreement {agree:.3f} over {n} tokens")
    assert max_rel < tol["ar_max"] and mean_rel < tol["ar_mean"]
    assert argmax_agree >= tol["argmax"]


def test_dit_output(bf16, quant):
    fmt, q = quant
    tol = TOLERANCES[fmt]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 16, 16, generator=g).to(torch.bfloat16)
    text = torch.randn(2, 5, 32, generator=g).to(torch.bfloat16)
    prior = torch.randint(0, 64, (2, 64), generator=g)
    args = (x, text, prior, None, torch.tensor([999.0, 500.0]), torch.tensor([[128.0, 128.0]] * 2),
            torch.zeros(2, 2))
    max_rel, mean_rel = rel(_testing.dit_forward(q, *args), _testing.dit_forward(bf16, *args))
    print(f"{fmt}_dit_output: max rel {max_rel:.4f}, mean rel {mean_rel:.4f} "
          f"(tolerance {tol['dit_max']} / {tol['dit_mean']})")
    assert max_rel < tol["dit_max"] and mean_rel < tol["dit_mean"]


def test_final_image(bf16, quant):
    fmt, q = quant
    kw = dict(height=128, width=128, num_inference_steps=4, seed=3, progress=False, output_type="np")
    prior = bf16.generate_prior_tokens('A sign that says "OPEN"', height=128, width=128, seed=3, progress=False)
    # The same prior tokens for both: this compares the decoder half (the DiT quantized).
    a = levels(q('A sign that says "OPEN"', prior_token_ids=prior, **kw).images).astype(np.float64)
    b = levels(bf16('A sign that says "OPEN"', prior_token_ids=prior, **kw).images).astype(np.float64)
    mse = ((a - b) ** 2).mean()
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    print(f"{fmt}_image: PSNR {psnr:.1f} dB against bf16, max {np.abs(a - b).max():.0f} levels "
          f"(tolerance PSNR > {TOLERANCES[fmt]['psnr']})")
    assert psnr > TOLERANCES[fmt]["psnr"]


def test_fp8_weights_are_e4m3_per_channel(bf16, quant):
    """The stored fp8 weight is the bf16 weight divided by its channel's max|w| / 448, rounded to e4m3."""
    fmt, q = quant
    if fmt != "fp8":
        pytest.skip("fp8 only")
    w = _testing.state_dict(bf16, "transformer")["transformer_blocks.0.attn1.to_q.weight"].float()
    wq = _testing.state_dict(q, "transformer")["transformer_blocks.0.attn1.to_q.weight"]
    assert wq.dtype == torch.float8_e4m3fn
    w_scale = w.abs().amax(1, keepdim=True) / 448.0
    torch.testing.assert_close(wq.float(), (w / w_scale).to(torch.float8_e4m3fn).float(), rtol=0, atol=0)
