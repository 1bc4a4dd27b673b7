"""Glyph-ByT5 text encoder (T5EncoderModel) forward parity: glmimage's C++ encoder against
transformers' T5EncoderModel, on the tiny checkpoint's encoder (gated-gelu, 32 buckets) and on a
second, relu-FF config written by save_pretrained and loaded as a lone component.

Sequences are longer than 16 and 64 tokens, so relative distances reach the logarithmic buckets
(including the exact powers of two 16, 32, 64), and some rows are padded (left and right)."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from parity import record, record_exact

import glmimage
import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

TINY = REPO / "models" / "tiny"

# float32 against float32: the same kernels in the same order, so differences are rounding noise.
F32_ATOL, F32_RTOL = 1e-5, 1e-4
# bfloat16 against bfloat16 (both sides bf16 weights and activations): a few bf16 ulps of the O(1)
# outputs (bf16 has 8 significant bits: one ulp at 2 is 0.0156).
BF16_ATOL, BF16_RTOL = 3e-2, 2e-2


def _ref(folder, dtype=torch.float32):
    from transformers import T5EncoderModel

    return T5EncoderModel.from_pretrained(str(folder), torch_dtype=dtype).eval()


def _inputs(vocab: int, lengths: list[int], length: int, seed: int = 0):
    """Random ids (batch, length) and a mask with `lengths[b]` ones per row: row 0 right-padded,
    row 1 left-padded, others right-padded; padded ids are 0 (<pad>)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), length), generator=g)
    mask = torch.zeros(len(lengths), length, dtype=torch.long)
    for b, n in enumerate(lengths):
        if b == 1:
            mask[b, length - n:] = 1
        else:
            mask[b, :n] = 1
    ids = ids * mask
    return ids, mask


@pytest.fixture(scope="module")
def pipe_f32():
    return glmimage.Pipeline.from_pretrained(str(TINY), dtype="float32")


@pytest.fixture(scope="module")
def ref_f32():
    return _ref(TINY / "text_encoder")


@pytest.mark.parity
def test_position_buckets_exact():
    """Bucket ids for every offset in [-300, 300] equal transformers' _relative_position_bucket
    (float32 log; n = 16, 32, 64 land exactly on bucket boundaries)."""
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 301, dtype=torch.long)
    for nb, md in [(32, 128), (8, 128), (32, 64)]:
        ref = T5Attention._relative_position_bucket(rel, bidirectional=True, num_buckets=nb, max_distance=md)
        ours = _testing.t5_position_bucket(rel, nb, md)
        e = record_exact(f"t5_position_bucket_{nb}_{md}", ours, ref)
        assert e["ok"], e
    # The spec's table for the real configuration (32 buckets, max distance 128).
    table = {-1: 1, -7: 7, -8: 8, -12: 9, -16: 10, -32: 12, -64: 14, -91: 15, -127: 15, -128: 15, -200: 15,
             0: 0, 1: 17, 7: 23, 8: 24, 12: 25, 16: 26, 24: 27, 32: 28, 46: 29, 64: 30, 91: 31}
    got = _testing.t5_position_bucket(torch.tensor(list(table)), 32, 128).tolist()
    assert got == list(table.values())


@pytest.mark.parity
@pytest.mark.parametrize("length,lengths", [(80, [80, 57, 23]), (20, [20, 20]), (1, [1])])
def test_t5_encoder_f32(pipe_f32, ref_f32, length, lengths):
    ids, mask = _inputs(384, lengths, length)
    with torch.no_grad():
        ref = ref_f32(input_ids=ids, attention_mask=mask).last_hidden_state
    ours = _testing.t5_encode(pipe_f32, ids, mask)
    assert ours.dtype == torch.float32
    name = "t5_encoder" if length == 80 else f"t5_encoder_len{length}"
    e = record(name, ours, ref, atol=F32_ATOL, rtol=F32_RTOL, length=length, lengths=lengths)
    assert e["ok"], e


@pytest.mark.parity
def test_t5_encoder_no_mask(pipe_f32, ref_f32):
    """No mask means attend everywhere (the pipeline's left-padded glyph batch runs without one)."""
    ids, _ = _inputs(384, [70, 70], 70, seed=1)
    ids[1, :9] = 0
    with torch.no_grad():
        ref = ref_f32(input_ids=ids).last_hidden_state
    ours = _testing.t5_encode(pipe_f32, ids)
    e = record("t5_encoder_nomask", ours, ref, atol=F32_ATOL, rtol=F32_RTOL)
    assert e["ok"], e
    ours_ones = _testing.t5_encode(pipe_f32, ids, torch.ones_like(ids))
    assert torch.equal(ours, ours_ones)


@pytest.mark.parity
def test_t5_encoder_relu(tmp_path):
    """A non-gated relu FF encoder (the diffusers pipeline test's tiny-random-t5 shape: 8 buckets,
    inner dim != d_model), saved by transformers and loaded in C++ as a lone component."""
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=1103, d_model=32, d_kv=8, num_heads=4, d_ff=37, num_layers=5,
                   relative_attention_num_buckets=8, relative_attention_max_distance=128,
                   feed_forward_proj="relu", layer_norm_epsilon=1e-6)
    torch.manual_seed(0)
    ref_model = T5EncoderModel(cfg).eval()
    # Random init gives a weak position bias; make it matter.
    with torch.no_grad():
        ref_model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.mul_(8.0)
    ref_model.save_pretrained(str(tmp_path))
    enc = _testing.load_t5(str(tmp_path), "float32")
    ids, mask = _inputs(1103, [90, 66, 17], 90, seed=2)
    with torch.no_grad():
        ref = ref_model(input_ids=ids, attention_mask=mask).last_hidden_state
    ours = _testing.t5_encode(enc, ids, mask)
    e = record("t5_encoder_relu", ours, ref, atol=F32_ATOL, rtol=F32_RTOL)
    assert e["ok"], e


@pytest.mark.parity
def test_t5_encoder_bf16(ref_f32):
    pipe = glmimage.Pipeline.from_pretrained(str(TINY), dtype="bfloat16")
    ref_model = _ref(TINY / "text_encoder", torch.bfloat16)
    ids, mask = _inputs(384, [80, 57, 23], 80, seed=3)
    with torch.no_grad():
        ref = ref_model(input_ids=ids, attention_mask=mask).last_hidden_state
        ref32 = ref_f32(input_ids=ids, attention_mask=mask).last_hidden_state
    ours = _testing.t5_encode(pipe, ids, mask)
    assert ours.dtype == torch.bfloat16
    # For scale: how far the bf16 reference itself is from float32.
    drift = float((ref.float() - ref32).abs().max())
    e = record("t5_encoder_bf16", ours.float(), ref.float(), atol=BF16_ATOL, rtol=BF16_RTOL,
               ref_bf16_vs_f32=drift)
    assert e["ok"], e


def test_t5_bad_inputs(pipe_f32):
    ids = torch.ones(2, 5, dtype=torch.long)
    # The messages name the shapes as LibTorch prints sizes.
    with pytest.raises(ValueError, match=r"2-D \(batch, length\), got \[5\]"):
        _testing.t5_encode(pipe_f32, ids[0])
    with pytest.raises(ValueError, match=r"2-D \(batch, length\), got \[1, 2, 5\]"):
        _testing.t5_encode(pipe_f32, ids[None])
    with pytest.raises(ValueError, match=r"attention_mask shape \[2, 6\]: expected \[2, 5\]"):
        _testing.t5_encode(pipe_f32, ids, torch.ones(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        _testing.t5_encode(pipe_f32, ids * 384)
    with pytest.raises(ValueError, match="out of range"):
        _testing.t5_encode(pipe_f32, -ids)
    with pytest.raises(ValueError, match="integer"):
        _testing.t5_encode(pipe_f32, ids.float())
    with pytest.raises(ValueError, match=r"empty input_ids \[2, 0\]"):
        _testing.t5_encode(pipe_f32, ids[:, :0])
    with pytest.raises(glmimage.InputError):
        _testing.t5_encode(pipe_f32, ids[0])
