"""The C++ loader holds exactly the tensors the reference loads: every component of the
embedded tiny checkpoint, compared with transformers / diffusers `from_pretrained`, in the
checkpoint dtype (bit-exact, zero-copy) and cast to bf16 (bit-exact with the reference cast)."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from parity import record

import glmimage
import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

TINY = REPO / "models" / "tiny"


def reference_component(folder: str, dtype):
    import diffusers
    import transformers

    cls = {
        "vision_language_encoder": transformers.GlmImageForConditionalGeneration,
        "text_encoder": transformers.T5EncoderModel,
        "transformer": diffusers.GlmImageTransformer2DModel,
        "vae": diffusers.AutoencoderKL,
    }[folder]
    return cls.from_pretrained(str(TINY / folder), torch_dtype=dtype)


@pytest.mark.parity
@pytest.mark.parametrize("dtype_name,dtype", [("auto", torch.float32), ("bfloat16", torch.bfloat16)])
@pytest.mark.parametrize("folder", ["vision_language_encoder", "text_encoder", "transformer", "vae"])
def test_loaded_weights_equal_reference(folder, dtype_name, dtype):
    pipe = glmimage.Pipeline.from_pretrained(str(TINY), dtype=dtype_name)
    ours = _testing.state_dict(pipe, folder)
    ref = reference_component(folder, dtype).state_dict()
    # The reference state dict also lists tied aliases (T5's encoder.embed_tokens) that the
    # file does not store; every key we hold must be there and identical.
    missing = sorted(set(ours) - set(ref))
    assert not missing, missing
    tied = sorted(set(ref) - set(ours))
    assert tied in ([], ["encoder.embed_tokens.weight"]), tied
    worst = 0.0
    for name, t in ours.items():
        r = ref[name]
        assert t.dtype == r.dtype, (name, t.dtype, r.dtype)
        assert t.shape == r.shape, (name, t.shape, r.shape)
        worst = max(worst, float((t.double() - r.double()).abs().max()) if t.numel() else 0.0)
    flat_ours = torch.cat([t.flatten().double() for t in ours.values()])
    flat_ref = torch.cat([ref[n].flatten().double() for n in ours])
    entry = record(f"weights_{folder}_{dtype_name}", flat_ours, flat_ref, atol=0.0, tensors=len(ours))
    assert entry["ok"] and worst == 0.0
