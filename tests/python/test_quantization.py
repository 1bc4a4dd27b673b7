"""Weight-only int8 (LoadOptions.quantize = "int8") against the same checkpoint in bf16, on the tiny
checkpoint: AR logits and greedy tokens, the DiT's output, the final image. Each figure is printed
and held to a stated tolerance.

What the figures mean: the tiny checkpoint has random weights, a harsh case for quantization (no
outlier structure to exploit, logits close together, so one flipped near-tie changes a greedy
token). Per-channel int8 keeps each weight within max|w|/254 of its value; the tolerances below
are what that allows through these models, not a claim about the real model's image quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import glmimage
import glmimage_testing as _testing

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny"
START = 64  # <|dit_token_16384|> of the tiny vocabulary


@pytest.fixture(scope="module")
def bf16():
    return glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16")


@pytest.fixture(scope="module")
def int8():
    return glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16", quantize="int8")


def rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.float() - b.float()).abs()
    scale = b.float().abs().max().item()
    return d.max().item() / scale, d.mean().item() / b.float().abs().mean().item()


def test_which_weights_are_int8(int8):
    got = {c.folder: c.quantized for c in int8.components}
    assert got["text_encoder"] == 0 and got["vae"] == 0
    assert got["vision_language_encoder"] > 0 and got["transformer"] > 0
    sd = _testing.state_dict(int8, "vision_language_encoder")
    assert sd["model.language_model.layers.0.self_attn.q_proj.weight"].dtype == torch.int8
    assert sd["model.visual.blocks.0.attn.qkv.weight"].dtype == torch.bfloat16  # vision encoder kept
    assert "linears int8" in int8.summary()


def test_ar_logits_and_greedy_tokens(bf16, int8):
    g = torch.Generator().manual_seed(1)
    ids = torch.tensor([torch.randint(80, 656, (24,), generator=g).tolist() + [START]])
    grids = torch.tensor([[1, 8, 8], [1, 4, 4]])  # a 256x256 target: 64 + 16 grid tokens
    ref = _testing.ar_generate(bf16, ids, grids, record_logits=True, keep_in_codebook=False)
    # Teacher-forced on the bf16 tokens, so every step's logits compare like for like.
    got = _testing.ar_generate(int8, ids, grids, record_logits=True, keep_in_codebook=False,
                               forced_tokens=ref["generated"])
    a, b = torch.stack(got["step_logits"]), torch.stack(ref["step_logits"])
    max_rel, mean_rel = rel(a, b)
    free = _testing.ar_generate(int8, ids, grids, keep_in_codebook=False)
    n = min(free["generated"].shape[1], ref["generated"].shape[1])
    agree = (free["generated"][:, :n] == ref["generated"][:, :n]).float().mean().item()
    argmax_agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    print(f"int8_ar_logits: max rel {max_rel:.4f}, mean rel {mean_rel:.4f} (tolerance 0.1 / 0.03); "
          f"teacher-forced argmax agreement {argmax_agree:.3f} (tolerance 0.9); free-running greedy agreement "
          f"{agree:.3f} over {n} tokens")
    assert max_rel < 0.1 and mean_rel < 0.03
    assert argmax_agree >= 0.9


def test_dit_output(bf16, int8):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 16, 16, generator=g).to(torch.bfloat16)
    text = torch.randn(2, 5, 32, generator=g).to(torch.bfloat16)
    prior = torch.randint(0, 64, (2, 64), generator=g)
    args = (x, text, prior, None, torch.tensor([999.0, 500.0]), torch.tensor([[128.0, 128.0]] * 2),
            torch.zeros(2, 2))
    max_rel, mean_rel = rel(_testing.dit_forward(int8, *args), _testing.dit_forward(bf16, *args))
    print(f"int8_dit_output: max rel {max_rel:.4f}, mean rel {mean_rel:.4f} (tolerance 0.05 / 0.02)")
    assert max_rel < 0.05 and mean_rel < 0.02


def test_final_image(bf16, int8):
    kw = dict(height=128, width=128, num_inference_steps=4, seed=3, progress=False, output_type="np")
    prior = bf16.generate_prior_tokens('A sign that says "OPEN"', height=128, width=128, seed=3, progress=False)
    # The same prior tokens for both: this compares the decoder half (the DiT in int8).
    a = int8('A sign that says "OPEN"', prior_token_ids=prior, **kw).images.astype(np.float64)
    b = bf16('A sign that says "OPEN"', prior_token_ids=prior, **kw).images.astype(np.float64)
    mse = ((a - b) ** 2).mean()
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    print(f"int8_image: PSNR {psnr:.1f} dB against bf16, max {np.abs(a - b).max():.0f} levels (tolerance PSNR > 30)")
    assert psnr > 30
