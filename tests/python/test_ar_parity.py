"""The C++ GLM-4 text decoder of GLM-Image (MRoPE positions, per-layer forward, KV-cached decode,
greedy and seeded sampling, prior-id extraction) against transformers' GlmImageForConditionalGeneration
and diffusers' GlmImagePipeline helpers, called here on the embedded tiny checkpoint.

Prompts are token ids built like the processor would for the tiny vocabulary: text ids in 80..655,
image start 64, end 65, placeholder 670, tokenizer padding 65 on the left."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from parity import record, record_exact

import glmimage
import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

TINY = REPO / "models" / "tiny"
VLE = TINY / "vision_language_encoder"
START, END, PLACEHOLDER, PAD_TOKENIZER = 64, 65, 670, 65
# fp32 tolerances of ar.md 8.3: hidden states atol 1e-5 / rtol 1e-4; logits (|logit| up to ~50
# here) atol 1e-4 / rtol 1e-4. Observed differences are fp32 rounding (~1e-6 relative to scale).
FP32 = dict(atol=1e-5, rtol=1e-4)
FP32_LOGITS = dict(atol=1e-4, rtol=1e-4)


def _text(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(80, 656, (n,), generator=g).tolist()


def _reference(dtype=torch.float32, attn="eager"):
    import transformers

    m = transformers.GlmImageForConditionalGeneration.from_pretrained(
        str(VLE), torch_dtype=dtype, attn_implementation=attn)
    return m.eval()


@pytest.fixture(scope="module")
def ref():
    return _reference()


@pytest.fixture(scope="module")
def pipe():
    return glmimage.Pipeline.from_pretrained(str(TINY))


def _t2i():
    ids = torch.tensor([_text(12, 1) + [START]])
    return dict(input_ids=ids, image_grid_thw=torch.tensor([[1, 3, 4], [1, 2, 3]]))


def _batch2():
    a, b = _text(12, 2) + [START], _text(9, 3) + [START]
    ids = torch.tensor([a, [PAD_TOKENIZER] * 3 + b])
    mask = torch.tensor([[1] * 13, [0] * 3 + [1] * 10])
    grids = torch.tensor([[1, 3, 4], [1, 2, 3]] * 2)
    return dict(input_ids=ids, attention_mask=mask, image_grid_thw=grids, images_per_sample=torch.tensor([2, 2]))


def _i2i(two_sources: bool):
    src = [[1, 3, 4], [1, 2, 2]] if two_sources else [[1, 3, 4]]
    ids = []
    for _, h, w in src:
        ids += [START] + [PLACEHOLDER] * (h * w) + [END]
    ids += _text(5, 4) + [START]
    n = sum(h * w for _, h, w in src)
    pixels = torch.randn(n, 768, generator=torch.Generator().manual_seed(5))
    return dict(input_ids=torch.tensor([ids]), pixel_values=pixels, image_grid_thw=torch.tensor(src + [[1, 2, 3]]),
                images_per_sample=torch.tensor([len(src) + 1]))


CASES = {"t2i": _t2i, "batch2": _batch2, "i2i_1src": lambda: _i2i(False), "i2i_2src": lambda: _i2i(True)}
# The two CPU decode paths (LoadOptions::ar_decode): "static" is the fixed-shape step a CUDA graph
# replays, run eagerly; both must match the reference. Parity names get a "_static" suffix.
DECODES = ["eager", "static"]


def _suffix(decode: str) -> str:
    return "" if decode == "eager" else f"_{decode}"


def _substituted_ids(ref, inputs) -> torch.Tensor:
    """The prompt with placeholders replaced by the reference's own VQ ids (what its prefill embeds)."""
    ids = inputs["input_ids"]
    if "pixel_values" not in inputs:
        return ids
    with torch.no_grad():
        src = inputs["image_grid_thw"][:-1]
        feats = ref.get_image_features(inputs["pixel_values"], src).pooler_output
        vq = ref.get_image_tokens(feats, src).view(-1)
    return ids.masked_scatter(ids == PLACEHOLDER, vq)


def _ours_kwargs(ref, inputs) -> dict:
    kw = dict(input_ids=_substituted_ids(ref, inputs), image_grid_thw=inputs["image_grid_thw"])
    if "images_per_sample" in inputs:
        kw["images_per_sample"] = inputs["images_per_sample"].tolist()
    if "attention_mask" in inputs:
        kw["attention_mask"] = inputs["attention_mask"]
    return kw


def _diffusers_params(inputs):
    """max_new_tokens, large-grid offset and size exactly as GlmImagePipeline.generate_prior_tokens computes them."""
    from diffusers import GlmImagePipeline

    per = int(inputs["images_per_sample"][0]) if "images_per_sample" in inputs else inputs["image_grid_thw"].shape[0]
    return GlmImagePipeline._compute_generation_params(
        image_grid_thw=inputs["image_grid_thw"][:per], is_text_to_image="pixel_values" not in inputs)


def _diffusers_prior(outputs, input_length, offset, h, w):
    from diffusers import GlmImagePipeline

    rows = []
    for i in range(outputs.shape[0]):
        d32 = GlmImagePipeline._extract_large_image_tokens(outputs[i:i + 1], input_length, offset, h * w)
        rows.append(GlmImagePipeline._upsample_token_ids(d32, h, w))
    return torch.cat(rows, 0)


def _record_positions(ref):
    """Wraps the reference's compute_3d_position_ids to capture what each generate step uses."""
    seen = []
    orig = ref.model.compute_3d_position_ids

    def spy(*a, **k):
        out = orig(*a, **k)
        seen.append(out.clone())
        return out

    ref.model.compute_3d_position_ids = spy
    return seen, lambda: setattr(ref.model, "compute_3d_position_ids", orig)


@pytest.mark.parity
@pytest.mark.parametrize("case", list(CASES))
def test_ar_positions(ref, pipe, case):
    inputs = CASES[case]()
    n_new, *_ = _diffusers_params(inputs)
    seen, restore = _record_positions(ref)
    try:
        with torch.no_grad():
            ref.generate(**inputs, max_new_tokens=n_new, do_sample=False)
    finally:
        restore()
    assert len(seen) == n_new  # the prefill, then one call per fed-back token
    kw = _ours_kwargs(ref, inputs)
    prefill, decode = _testing.ar_positions(pipe, **kw)
    # Position ids of each decode step k are entry k of our table; the reference's whole table too.
    ref_steps = torch.cat(seen[1:], dim=2)  # [3, B, n_new - 1]
    ours_steps = decode[:, :, : n_new - 1].permute(1, 0, 2)
    got = torch.cat([prefill.flatten(), ours_steps.flatten(), decode.flatten()])
    want = torch.cat([seen[0].flatten(), ref_steps.flatten(), ref.model._cached_decode_position_ids.flatten()])
    assert decode.shape == ref.model._cached_decode_position_ids.shape
    assert prefill.shape == seen[0].shape
    assert record_exact(f"ar_positions_{case}", got, want)["ok"]

    # Rotary tables for the prefill and decode positions (fp32, before any cast).
    pos = torch.cat([prefill, decode.permute(1, 0, 2)], dim=2)
    cos, sin = _testing.ar_rotary(pipe, pos)
    x = torch.zeros(1, dtype=torch.float32)
    rc, rs = ref.model.language_model.rotary_emb(x, pos)
    assert record(f"ar_rotary_{case}", torch.cat([cos, sin]), torch.cat([rc, rs]), atol=1e-6)["ok"]


def _layer_outputs(ref, inputs):
    outs = []
    hooks = [layer.register_forward_hook(lambda m, a, o: outs.append(o[0] if isinstance(o, tuple) else o))
             for layer in ref.model.language_model.layers]
    try:
        with torch.no_grad():
            logits = ref(**inputs).logits
    finally:
        for h in hooks:
            h.remove()
    return logits, outs


@pytest.mark.parity
@pytest.mark.parametrize("case", ["t2i", "batch2", "i2i_2src"])
def test_ar_prefill(ref, pipe, case):
    inputs = CASES[case]()
    ref_logits, ref_layers = _layer_outputs(ref, inputs)
    kw = _ours_kwargs(ref, inputs)
    prefill, _ = _testing.ar_positions(pipe, **kw)
    # Left-padding slots are garbage in both (never attended to); compare valid tokens only.
    valid = kw["attention_mask"].bool() if "attention_mask" in kw else torch.ones_like(kw["input_ids"], dtype=torch.bool)
    # split 0: one prefill call; split 5: 5 tokens, then the rest as a second chunk over the cache.
    for split, tag in ((0, ""), (5, "_chunked")):
        logits, layers = _testing.ar_forward(pipe, kw["input_ids"], prefill, kw.get("attention_mask"), split)
        assert len(layers) == len(ref_layers) == 3
        got = torch.cat([t[valid].flatten() for t in layers])
        want = torch.cat([t[valid].flatten() for t in ref_layers])
        assert record(f"ar_prefill_layers_{case}{tag}", got, want, **FP32)["ok"]
        assert record(f"ar_prefill_logits_{case}{tag}", logits[valid], ref_logits[valid], **FP32_LOGITS)["ok"]


@pytest.mark.parity
@pytest.mark.parametrize("decode", DECODES)
@pytest.mark.parametrize("case", ["t2i", "batch2"])
def test_ar_decode(ref, pipe, case, decode):
    """Logits of the prefill and five decode steps, fed the reference's tokens."""
    inputs = CASES[case]()
    with torch.no_grad():
        out = ref.generate(**inputs, max_new_tokens=6, do_sample=False, output_logits=True,
                           return_dict_in_generate=True)
    ref_tokens = out.sequences[:, inputs["input_ids"].shape[1]:]
    ours = _testing.ar_generate(pipe, **_ours_kwargs(ref, inputs), max_new_tokens=6, keep_in_codebook=False,
                                record_logits=True, forced_tokens=ref_tokens, decode=decode)
    assert ours["decode"] == decode
    assert len(ours["step_logits"]) == len(out.logits) == 6
    got, want = torch.stack(ours["step_logits"]), torch.stack(out.logits)
    assert record(f"ar_decode_{case}{_suffix(decode)}", got, want, **FP32_LOGITS)["ok"]
    assert ours["prior_ids"] is None  # six tokens do not reach the main grid


def _greedy(ref, pipe, case, decode="eager"):
    inputs = CASES[case]()
    n_new, offset, h, w = _diffusers_params(inputs)
    with torch.no_grad():
        ref_out = ref.generate(**inputs, max_new_tokens=n_new, do_sample=False)
    L = inputs["input_ids"].shape[1]
    ref_prior = _diffusers_prior(ref_out, L, offset, h, w)
    ours = _testing.ar_generate(pipe, **_ours_kwargs(ref, inputs), keep_in_codebook=False, decode=decode)
    assert ours["generated"].shape[1] == n_new == ref_out.shape[1] - L
    assert (ours["grid_offset"], ours["grid_h"], ours["grid_w"]) == (offset, h, w)
    got = torch.cat([ours["generated"].flatten(), ours["prior_ids"].flatten()])
    want = torch.cat([ref_out[:, L:].flatten(), ref_prior.flatten()])
    return got, want


@pytest.mark.parity
@pytest.mark.parametrize("decode", DECODES)
def test_ar_greedy_t2i(ref, pipe, decode):
    got, want = _greedy(ref, pipe, "t2i", decode)
    assert record_exact(f"ar_greedy_t2i{_suffix(decode)}", got, want)["ok"]


@pytest.mark.parity
@pytest.mark.parametrize("decode", DECODES)
@pytest.mark.parametrize("case", ["i2i_1src", "i2i_2src"])
def test_ar_greedy_i2i(ref, pipe, case, decode):
    got, want = _greedy(ref, pipe, case, decode)
    assert record_exact(f"ar_greedy_{case}{_suffix(decode)}", got, want)["ok"]


@pytest.mark.parity
@pytest.mark.parametrize("decode", DECODES)
def test_ar_greedy_batch2(ref, pipe, decode):
    got, want = _greedy(ref, pipe, "batch2", decode)
    assert record_exact(f"ar_greedy_batch2{_suffix(decode)}", got, want)["ok"]


def _sample_both(ref, pipe, inputs, seed, n_new, decode="eager", **params):
    torch.manual_seed(seed)
    with torch.no_grad():
        ref_out = ref.generate(**inputs, max_new_tokens=n_new, do_sample=True, **params)
    ours = _testing.ar_generate(pipe, **_ours_kwargs(ref, inputs), do_sample=True, seed=seed, max_new_tokens=n_new,
                                keep_in_codebook=False, decode=decode, **params)
    return ours["generated"], ref_out[:, inputs["input_ids"].shape[1]:]


@pytest.mark.parity
@pytest.mark.parametrize("decode", DECODES)
@pytest.mark.parametrize("case", ["t2i", "batch2"])
def test_ar_sampling_seeded(ref, pipe, case, decode):
    """Seeded sampling (temperature -> top-k -> top-p -> multinomial) is token-identical to
    torch.manual_seed(seed) + generate(do_sample=True): same probabilities, same CPU generator stream.
    The tiny model's logits are very peaked, so high temperatures make the draws actually random."""
    inputs = CASES[case]()
    for temperature in (5.0, 20.0):
        for seed in (0, 1):
            got, want = _sample_both(ref, pipe, inputs, seed, 12, decode, temperature=temperature, top_k=30, top_p=0.9)
            assert record_exact(f"ar_sample_{case}_t{temperature:g}_seed{seed}{_suffix(decode)}", got, want)["ok"]


def _stop_seeds(ref, inputs, n_new=12):
    """Seeds whose flat draws (temperature 30, no top-k) end rows early on the reference: one that
    ends one row of the two (the rest of it padded with pad_token_id, generation going on), and one
    that ends both before n_new tokens (generation stops), with that length. Found rather than
    fixed: the CPU generator's stream of draws differs between torch releases (seeds 3 and 4 did
    this under 2.13, not under 2.6)."""
    L = inputs["input_ids"].shape[1]
    one_row = both = None
    for seed in range(64):
        torch.manual_seed(seed)
        with torch.no_grad():
            new = ref.generate(**inputs, max_new_tokens=n_new, do_sample=True, temperature=30.0, top_k=0)[:, L:]
        ended = (new[:, :-1] == 65).any(1)  # an end before the last token: padding follows it
        if one_row is None and new.shape[1] == n_new and int(ended.sum()) == 1:
            one_row = seed
        if both is None and new.shape[1] < n_new:
            both = (seed, new.shape[1])
        if one_row is not None and both is not None:
            return one_row, both
    pytest.fail(f"no seed in 0..63 ends {'one row' if one_row is None else 'both rows'} early: the stop rules "
                "go unchecked")


@pytest.mark.parity
@pytest.mark.parametrize("decode", DECODES)
def test_ar_sampling_stop_rules(ref, pipe, decode):
    """Flat sampling that emits the end marker: one seed ends one row early (the rest padded with
    pad_token_id), another ends both rows before max_new_tokens (generation stops). The end is read
    from the device only every 16 tokens: with 17 new tokens a stop before 16 is found at the check
    after token 16 and the tokens past it are dropped; with 12 it is found after the loop."""
    inputs = CASES["batch2"]()
    one_row, (both, stop) = _stop_seeds(ref, inputs)
    for name, seed, n_new, length in (("one_row", one_row, 12, 12), ("both_rows", both, 12, stop),
                                      ("both_rows", both, 17, stop)):
        got, want = _sample_both(ref, pipe, inputs, seed, n_new, decode, temperature=30.0, top_k=0)
        assert got.shape[1] == length and (want == 65).any()
        assert record_exact(f"ar_sample_stop_{name}_n{n_new}{_suffix(decode)}", got, want, seed=seed)["ok"]


@pytest.mark.parity
def test_ar_bf16(pipe):
    """bf16 weights and activations: prefill + decode logits (|logit| < 64) against the reference in bf16.
    Against its default SDPA attention: atol 0.5 = four bf16 ulps at the largest logits, the
    difference between the reference's own two attention paths (below). Observed: 0 while the
    decode step ran SDPA here too; 0.25 (two ulps) since on an AVX2 CPU it runs this library's
    decode loop (kernels/cpu_decode_attention.h: SDPA's arithmetic, its sums in another order).
    Against eager attention, whose bf16 probabilities are rounded before P.V: atol 1.0, since the
    reference's own eager and SDPA paths already differ by 0.5 here."""
    pipe16 = glmimage.Pipeline.from_pretrained(str(TINY), dtype="bfloat16")
    inputs = CASES["t2i"]()
    L = inputs["input_ids"].shape[1]
    for attn, atol in (("sdpa", 0.5), ("eager", 1.0)):
        ref16 = _reference(torch.bfloat16, attn)
        with torch.no_grad():
            out = ref16.generate(**inputs, max_new_tokens=4, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True)
        ours = _testing.ar_generate(pipe16, **_ours_kwargs(ref16, inputs), max_new_tokens=4,
                                    keep_in_codebook=False, record_logits=True, forced_tokens=out.sequences[:, L:])
        got, want = torch.stack(ours["step_logits"]), torch.stack(out.logits)
        name = "ar_bf16" if attn == "sdpa" else "ar_bf16_vs_eager"
        assert record(name, got, want, atol=atol, dtype="bfloat16", reference_attention=attn)["ok"]


def test_keep_in_codebook(pipe):
    """With a flat distribution (huge temperature) the markers and ids >= 64 get sampled; the
    codebook guard keeps every grid id inside the codebook so the prior ids are always valid."""
    inputs = _t2i()
    kw = dict(input_ids=inputs["input_ids"], image_grid_thw=inputs["image_grid_thw"], do_sample=True,
              temperature=1e4, top_k=0)
    for seed in range(3):
        out = _testing.ar_generate(pipe, **kw, seed=seed)
        grid = out["generated"][:, :18]
        assert int(grid.max()) < 64 and out["prior_ids"].shape == (1, 4 * 12)
    with pytest.raises(glmimage.Error):  # unguarded, some seed hits a marker or an id past the codebook
        for seed in range(3):
            _testing.ar_generate(pipe, **kw, seed=seed, keep_in_codebook=False)


def test_bad_input(pipe):
    g = torch.tensor([[1, 3, 4], [1, 2, 3]])
    with pytest.raises(glmimage.InputError, match="out of range"):
        _testing.ar_generate(pipe, torch.tensor([[80, 9999, START]]), g)
    with pytest.raises(glmimage.InputError, match="placeholders"):
        _testing.ar_generate(pipe, torch.tensor([[START, PLACEHOLDER, END, 80, START]]), g)
    with pytest.raises(glmimage.InputError, match="spans"):  # prompt image of 2 tokens vs a 3x4 grid
        _testing.ar_generate(pipe, torch.tensor([[START, 1, 2, END, 80, START]]), g)
    with pytest.raises(glmimage.InputError, match="image_grid_thw"):
        _testing.ar_generate(pipe, torch.tensor([[80, START]]), torch.tensor([1, 3, 4]))
    with pytest.raises(glmimage.InputError, match="max_new_tokens"):
        _testing.ar_generate(pipe, torch.tensor([[80, START]]), g, max_new_tokens=100)
    with pytest.raises(glmimage.InputError, match="images_per_sample"):
        _testing.ar_generate(pipe, torch.tensor([[80, START]] * 2), g, images_per_sample=[2, 1])
    with pytest.raises(glmimage.InputError, match="grids must be"):
        _testing.ar_generate(pipe, torch.tensor([[80, START]]), torch.tensor([[1, 0, 4]]))
    with pytest.raises(glmimage.InputError, match="attention_mask"):
        _testing.ar_generate(pipe, torch.tensor([[80, START]]), g, attention_mask=torch.ones(1, 3))
    with pytest.raises(glmimage.InputError, match="position ids"):
        _testing.ar_forward(pipe, torch.tensor([[80, START]]), torch.zeros(3, 1, 5, dtype=torch.long))
    with pytest.raises(glmimage.InputError, match="temperature"):
        _testing.ar_generate(pipe, torch.tensor([[80, START]]), g, do_sample=True, temperature=0.0)
