"""The C++ DiT (GlmImageTransformer2DModel.forward) against diffusers on the embedded tiny
checkpoint: text-to-image forwards (random glyph embeddings and priors, non-square latent,
batch 2), prior-token drop, the condition-image KV cache driven as GlmImagePipeline drives it
(write / read / skip), a bf16 run, and input validation."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from parity import record

import glmimage
import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

TINY = REPO / "models" / "tiny"
VAE_SCALE = 8  # latent pixel -> image pixel, as the pipeline's target_size uses image pixels

# fp32: the same ops in the same order; observed differences are a few ulps.
F32_ATOL, F32_RTOL = 1e-5, 1e-4
# bf16 vs reference bf16: both round after every op, but the attention and matmul kernels may
# accumulate in a different order; allow 3e-2 of the output's largest magnitude.
BF16_REL = 3e-2


@pytest.fixture(scope="module")
def ours_f32():
    return glmimage.Pipeline.from_pretrained(str(TINY), dtype="float32")


@pytest.fixture(scope="module")
def ref_f32():
    from diffusers import GlmImageTransformer2DModel

    return GlmImageTransformer2DModel.from_pretrained(str(TINY / "transformer"), torch_dtype=torch.float32).eval()


def make_inputs(ref, batch, lat_h, lat_w, text_len, seed, dtype=torch.float32, drop="none", timesteps=None):
    """Inputs shaped and typed as GlmImagePipeline passes them in its denoising loop."""
    cfg = ref.config
    g = torch.Generator().manual_seed(seed)
    n_tokens = (lat_h // cfg.patch_size) * (lat_w // cfg.patch_size)
    ids = torch.randint(0, cfg.prior_vq_quantizer_codebook_size, (batch, n_tokens), generator=g)
    if drop == "none":
        drop_mask = torch.zeros_like(ids, dtype=torch.bool)
    elif drop == "all":
        drop_mask = torch.ones_like(ids, dtype=torch.bool)
    else:
        drop_mask = torch.rand(ids.shape, generator=g) < 0.5
    if timesteps is None:
        timesteps = [999.0, 499.0][:batch] + [0.0] * max(0, batch - 2)
    return dict(
        hidden_states=torch.randn(batch, cfg.in_channels, lat_h, lat_w, generator=g).to(dtype),
        encoder_hidden_states=torch.randn(batch, text_len, cfg.text_embed_dim, generator=g).to(dtype),
        prior_token_id=ids,
        prior_token_drop=drop_mask,
        # The label as the pipeline passes it: float32 t - 1.
        timestep=torch.tensor(timesteps, dtype=torch.float32),
        target_size=torch.tensor([[lat_h * VAE_SCALE, lat_w * VAE_SCALE]] * batch, dtype=dtype),
        crop_coords=torch.zeros(batch, 2, dtype=dtype),
    )


def run_ours(pipe, inp, kv_cache=None):
    return _testing.dit_forward(pipe, inp["hidden_states"], inp["encoder_hidden_states"], inp["prior_token_id"],
                                inp["prior_token_drop"], inp["timestep"], inp["target_size"], inp["crop_coords"],
                                kv_cache)


@torch.no_grad()
def run_ref(ref, inp, kv_caches=None):
    return ref(**inp, kv_caches=kv_caches, return_dict=False)[0]


@pytest.mark.parity
def test_dit_rope_tables(ours_f32, ref_f32):
    cos, sin = _testing.dit_rope(ours_f32, 8, 12)
    rcos, rsin = ref_f32.rope(torch.zeros(1, 4, 8, 12))
    assert record("dit_rope_cos", cos, rcos, atol=0.0)["ok"]
    assert record("dit_rope_sin", sin, rsin, atol=0.0)["ok"]


@pytest.mark.parity
def test_dit_temb(ours_f32, ref_f32):
    inp = make_inputs(ref_f32, 2, 8, 12, 7, seed=1)
    got = _testing.dit_temb(ours_f32, inp["timestep"], inp["target_size"], inp["crop_coords"])
    with torch.no_grad():
        want = ref_f32.time_condition_embed(inp["timestep"], inp["target_size"], inp["crop_coords"], torch.float32)
    assert record("dit_temb", got, want, atol=F32_ATOL, rtol=F32_RTOL)["ok"]


@pytest.mark.parity
def test_dit_forward(ours_f32, ref_f32):
    inp = make_inputs(ref_f32, 2, 8, 12, 7, seed=2)
    got, want = run_ours(ours_f32, inp), run_ref(ref_f32, inp)
    assert got.shape == (2, ref_f32.config.out_channels, 8, 12)
    assert record("dit_forward", got, want, atol=F32_ATOL, rtol=F32_RTOL, scale=float(want.abs().max()))["ok"]
    # The step-invariant split (text, prior, rope prepared once) gives the same result.
    prepared = _testing.dit_forward_prepared(ours_f32, *[inp[k] for k in (
        "hidden_states", "encoder_hidden_states", "prior_token_id", "prior_token_drop", "timestep", "target_size",
        "crop_coords")])
    assert torch.equal(prepared, got)
    # No drop mask at all is the same as none dropped.
    assert torch.equal(run_ours(ours_f32, dict(inp, prior_token_drop=None)), got)


@pytest.mark.parity
@pytest.mark.parametrize("shape", [(1, 4, 4, 0), (3, 12, 6, 5)], ids=["b1_4x4_no_text", "b3_12x6"])
def test_dit_forward_shapes(ours_f32, ref_f32, shape):
    b, h, w, l = shape
    inp = make_inputs(ref_f32, b, h, w, l, seed=3, timesteps=[999.0, 0.0, 512.0][:b])
    got, want = run_ours(ours_f32, inp), run_ref(ref_f32, inp)
    assert record(f"dit_forward_{b}x{h}x{w}_L{l}", got, want, atol=F32_ATOL, rtol=F32_RTOL)["ok"]


@pytest.mark.parity
def test_dit_forward_text_groups(ours_f32, ref_f32):
    """A batch in text groups of different lengths and timesteps in one forward (the sampler's joint
    CFG passes, each sample its own modulation): each group's output against the reference run
    on that group alone."""
    groups = [make_inputs(ref_f32, 1, 8, 8, 7, seed=11, timesteps=[999.0]),
              make_inputs(ref_f32, 2, 8, 8, 1, seed=12, timesteps=[500.0, 3.0]),
              make_inputs(ref_f32, 1, 8, 8, 20, seed=13, timesteps=[250.0])]
    both = lambda key: torch.cat([g[key] for g in groups])  # noqa: E731
    got = _testing.dit_forward_groups(ours_f32, both("hidden_states"), [g["encoder_hidden_states"] for g in groups],
                                      both("prior_token_id"), both("timestep"), both("target_size"),
                                      both("crop_coords"))
    row = 0
    for i, g in enumerate(groups):
        n = g["hidden_states"].shape[0]
        want = run_ref(ref_f32, g)  # its drop mask all False: nothing dropped, as in ours
        assert record(f"dit_forward_text_group_{i}", got[row:row + n], want, atol=F32_ATOL, rtol=F32_RTOL)["ok"]
        row += n


@pytest.mark.parity
@pytest.mark.parametrize("drop", ["all", "mixed"])
def test_dit_forward_dropped(ours_f32, ref_f32, drop):
    inp = make_inputs(ref_f32, 2, 8, 12, 7, seed=4, drop=drop)
    got, want = run_ours(ours_f32, inp), run_ref(ref_f32, inp)
    assert record(f"dit_forward_dropped_{drop}", got, want, atol=F32_ATOL, rtol=F32_RTOL)["ok"]
    # The drop must matter: compare with the same call without it.
    kept = run_ours(ours_f32, dict(inp, prior_token_drop=torch.zeros_like(inp["prior_token_drop"])))
    assert not torch.allclose(kept, got)


# Condition images per sample, as latent (h, w); the pipeline writes each with batch 1, empty text,
# 1-D prior ids, timestep 0, its own pixel size as target_size (int64) and crop (0, 0).
KV_CASES = {
    "1img_b2": ([[(8, 8)]], 2),
    "2img_b2": ([[(8, 8), (4, 12)]], 2),
    "2samples_b2": ([[(8, 8)], [(4, 8), (8, 4)]], 2),  # n == B: equal cached lengths per sample
    "2samples_b4": ([[(8, 8)], [(4, 8), (8, 4)]], 4),  # B % n == 0: each sample repeated
}


def condition_inputs(ref, lat_h, lat_w, seed):
    cfg = ref.config
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.prior_vq_quantizer_codebook_size, ((lat_h // 2) * (lat_w // 2),), generator=g)
    return dict(
        hidden_states=torch.randn(1, cfg.in_channels, lat_h, lat_w, generator=g),
        encoder_hidden_states=torch.zeros(1, 0, cfg.text_embed_dim),
        prior_token_id=ids,
        prior_token_drop=torch.full_like(ids, False, dtype=torch.bool),
        timestep=torch.zeros((1,)),
        target_size=torch.tensor([[lat_h * VAE_SCALE, lat_w * VAE_SCALE]]),
        crop_coords=torch.zeros((1, 2)),
    )


@pytest.mark.parity
@pytest.mark.parametrize("case", list(KV_CASES))
def test_dit_forward_kvcache(ours_f32, ref_f32, case):
    from diffusers.models.transformers.transformer_glm_image import GlmImageKVCache

    samples, batch = KV_CASES[case]
    n_layers = ref_f32.config.num_layers
    ours_kv, ref_kv = _testing.DiTKVCache(n_layers), GlmImageKVCache(num_layers=n_layers)
    ours_kv.set_mode("write")
    ref_kv.set_mode("write")
    seed = 10
    for images in samples:
        for lat_h, lat_w in images:
            cond = condition_inputs(ref_f32, lat_h, lat_w, seed)
            seed += 1
            got, want = run_ours(ours_f32, cond, ours_kv), run_ref(ref_f32, cond, ref_kv)
            assert record(f"dit_forward_kvcache_{case}_write{seed}", got, want, atol=F32_ATOL, rtol=F32_RTOL)["ok"]
        ours_kv.next_sample()
        ref_kv.next_sample()
    assert ours_kv.num_samples == len(samples)
    for layer in range(n_layers):
        for name, ours_t, ref_t in (("k", ours_kv.keys(layer), ref_kv[layer].k_caches),
                                    ("v", ours_kv.values(layer), ref_kv[layer].v_caches)):
            assert len(ours_t) == len(ref_t)
            for s, (a, b) in enumerate(zip(ours_t, ref_t)):
                assert record(f"dit_forward_kvcache_{case}_cache_{name}{layer}_s{s}", a, b, atol=F32_ATOL,
                              rtol=F32_RTOL)["ok"]

    target = make_inputs(ref_f32, batch, 8, 12, 7, seed=20, timesteps=[999.0] * batch)
    results = {}
    for mode in ("read", "skip"):
        ours_kv.set_mode(mode)
        ref_kv.set_mode(mode)
        got, want = run_ours(ours_f32, target, ours_kv), run_ref(ref_f32, target, ref_kv)
        results[mode] = got
        assert record(f"dit_forward_kvcache_{case}_{mode}", got, want, atol=F32_ATOL, rtol=F32_RTOL)["ok"]
    # Skip ignores the cache: same as no cache at all; read does not.
    assert torch.equal(results["skip"], run_ours(ours_f32, target))
    assert not torch.allclose(results["read"], results["skip"])
    ours_kv.clear()
    assert ours_kv.num_samples == 0 and ours_kv.mode == "off"


def test_dit_kvcache_batch_mismatch(ours_f32, ref_f32):
    kv = _testing.DiTKVCache(ref_f32.config.num_layers)
    kv.set_mode("write")
    for seed in range(2):
        run_ours(ours_f32, condition_inputs(ref_f32, 4, 4, seed), kv)
        kv.next_sample()
    kv.set_mode("read")
    with pytest.raises(ValueError, match="cannot match 2 cached samples to batch size 3"):
        run_ours(ours_f32, make_inputs(ref_f32, 3, 4, 4, 2, seed=0), kv)
    kv.clear()
    kv.set_mode("write")
    for seed, (h, w) in enumerate([(4, 4), (4, 8)]):  # samples with 4 and 8 condition tokens
        run_ours(ours_f32, condition_inputs(ref_f32, h, w, seed), kv)
        kv.next_sample()
    kv.set_mode("read")
    with pytest.raises(ValueError, match="different numbers of condition tokens"):
        run_ours(ours_f32, make_inputs(ref_f32, 2, 4, 4, 2, seed=0), kv)
    with pytest.raises(ValueError, match="invalid mode"):
        kv.set_mode("append")
    with pytest.raises(ValueError, match="batch 1"):
        kv.set_mode("write")
        run_ours(ours_f32, make_inputs(ref_f32, 2, 4, 4, 0, seed=0), kv)
    with pytest.raises(ValueError, match="layers"):
        run_ours(ours_f32, make_inputs(ref_f32, 1, 4, 4, 0, seed=0), _testing.DiTKVCache(5))


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory):
    """The tiny checkpoint with a wider DiT (4 heads of 32, 3 layers, time 64, condition 32), so the
    RoPE has 8 frequencies per axis and the attention real head sizes; other components as they are."""
    import shutil

    from diffusers import GlmImageTransformer2DModel
    from make_tiny_checkpoint import _perturb_constant_params

    out = tmp_path_factory.mktemp("dit_wide") / "ckpt"
    shutil.copytree(TINY, out)
    shutil.rmtree(out / "transformer")
    torch.manual_seed(7)
    cfg = dict(GlmImageTransformer2DModel.load_config(str(TINY / "transformer")))
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    cfg.update(num_layers=3, num_attention_heads=4, attention_head_dim=32, time_embed_dim=64, condition_dim=32)
    model = GlmImageTransformer2DModel(**cfg).eval()
    with torch.no_grad():
        _perturb_constant_params(model)
    model.save_pretrained(str(out / "transformer"))
    return out


@pytest.mark.parity
def test_dit_forward_wide(wide_dir):
    from diffusers import GlmImageTransformer2DModel

    ours = glmimage.Pipeline.from_pretrained(str(wide_dir), dtype="float32")
    ref = GlmImageTransformer2DModel.from_pretrained(str(wide_dir / "transformer")).eval()
    inp = make_inputs(ref, 2, 24, 40, 19, seed=8, drop="mixed")
    got, want = run_ours(ours, inp), run_ref(ref, inp)
    assert record("dit_forward_wide", got, want, atol=F32_ATOL, rtol=F32_RTOL, scale=float(want.abs().max()))["ok"]


@pytest.mark.parity
def test_dit_forward_bf16(ref_f32):
    from diffusers import GlmImageTransformer2DModel

    ours = glmimage.Pipeline.from_pretrained(str(TINY), dtype="bfloat16")
    ref = GlmImageTransformer2DModel.from_pretrained(str(TINY / "transformer"), torch_dtype=torch.bfloat16).eval()
    inp = make_inputs(ref, 2, 8, 12, 7, seed=5, dtype=torch.bfloat16, drop="mixed")
    got, want = run_ours(ours, inp), run_ref(ref, inp)
    assert got.dtype == torch.bfloat16
    scale = float(want.float().abs().max())
    entry = record("dit_forward_bf16", got.float(), want.float(), atol=BF16_REL * scale, scale=scale)
    assert entry["ok"]


@pytest.mark.parity
@pytest.mark.parametrize("shape", [(1, 8, 281, 281, 64), (2, 4, 79, 79, 32), (1, 4, 300, 1031, 128)],
                         ids=["small_preset", "wide_tiny", "real_heads_condition_cache"])
def test_dit_attention_against_the_references_sdpa(shape):
    """The DiT's attention call (kernels::attention) against the one the reference makes, LibTorch's
    SDPA, on bf16 q, k, v at the DiT's shapes (the last one with more keys than queries, as with the
    condition-image KV cache), keys scaled so that the softmax is peaked as trained models' are:
    within one bf16 step of the output's magnitude. On a CPU with AVX-512 bf16 and no AMX this is
    kernels/cpu_bf16_attention.h's own difference (measured 1-2 steps; a 3 % error put in its scale
    moved outputs by 0.09-0.13, 4-7x this tolerance, and failed every case); elsewhere both sides
    run SDPA and agree exactly."""
    b, h, sq, sk, d = shape
    g = torch.Generator().manual_seed(9)
    q = torch.randn(b, h, sq, d, generator=g).bfloat16()
    k = (torch.randn(b, h, sk, d, generator=g) * 2).bfloat16()
    v = torch.randn(b, h, sk, d, generator=g).bfloat16()
    with torch.inference_mode():
        got = _testing.attention(q, k, v)
    want = torch._C._nn.scaled_dot_product_attention(q, k, v)  # LibTorch's own, not the session's shim
    print(f"attention {shape}: {_testing.attention_backend(q, k, v)}")
    scale = float(want.float().abs().max())
    assert record(f"dit_attention_bf16_{'x'.join(map(str, shape))}", got.float(), want.float(), atol=scale / 128,
                  scale=scale)["ok"]


@pytest.mark.parity
def test_dit_forward_wide_bf16_against_the_reference_as_run(wide_dir):
    """bf16 with heads of 32: on a CPU with AVX-512 bf16 and no AMX the DiT's attention runs
    kernels/cpu_bf16_attention.h there, where the parity suite otherwise runs the reference with the
    same kernel (reference_shims.py). Here the reference also runs as it is, LibTorch's SDPA: the
    kernel's own difference, carried through 3 blocks (measured: one bf16 step, 0.0078 at 2.4), held
    to a third of the bf16 tolerance; and against the reference with the same attention, to a tenth
    of it (measured: 0). The end-to-end bound only: this random DiT's softmaxes are flat, so a small
    error of the kernel hardly shows here (a 3 % scale error did not); the test above holds the
    kernel itself to the reference's SDPA."""
    import torch.nn.functional as F
    from diffusers import GlmImageTransformer2DModel

    ours = glmimage.Pipeline.from_pretrained(str(wide_dir), dtype="bfloat16")
    ref = GlmImageTransformer2DModel.from_pretrained(str(wide_dir / "transformer"), torch_dtype=torch.bfloat16).eval()
    inp = make_inputs(ref, 2, 24, 40, 19, seed=8, dtype=torch.bfloat16, drop="mixed")
    q = torch.zeros(2, 4, 19 + 60, 32, dtype=torch.bfloat16)  # the forward's attention: 4 heads of 32
    kernel = _testing.attention_backend(q, q, q)
    print(f"the DiT's attention here: {kernel}")
    assert (kernel == "cpu_bf16") == _testing.cpu_bf16_attention_runs()
    got = run_ours(ours, inp)
    shimmed_sdpa = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = torch._C._nn.scaled_dot_product_attention  # LibTorch's own
    try:
        as_run = run_ref(ref, inp)
    finally:
        F.scaled_dot_product_attention = shimmed_sdpa
    same_attention = run_ref(ref, inp)  # the session's shim in force (a no-op without the kernel)
    scale = float(as_run.float().abs().max())
    assert record("dit_forward_wide_bf16_ref_as_run", got.float(), as_run.float(), atol=BF16_REL / 3 * scale,
                  scale=scale)["ok"]
    assert record("dit_forward_wide_bf16_ref_same_attention", got.float(), same_attention.float(),
                  atol=BF16_REL / 10 * scale, scale=scale)["ok"]


BAD_INPUTS = {
    "odd_height": lambda g: dict(hidden_states=torch.randn(2, 4, 7, 12)),
    "odd_width": lambda g: dict(hidden_states=torch.randn(2, 4, 8, 11)),
    "channels": lambda g: dict(hidden_states=torch.randn(2, 3, 8, 12)),
    "latent_3d": lambda g: dict(hidden_states=torch.randn(4, 8, 12)),
    "int_latent": lambda g: dict(hidden_states=torch.zeros(2, 4, 8, 12, dtype=torch.long)),
    "prior_count": lambda g: dict(prior_token_id=g["prior_token_id"][:, :-1],
                                  prior_token_drop=g["prior_token_drop"][:, :-1]),
    "id_too_large": lambda g: dict(prior_token_id=torch.full_like(g["prior_token_id"], 64)),
    "negative_id": lambda g: dict(prior_token_id=torch.full_like(g["prior_token_id"], -1)),
    "float_ids": lambda g: dict(prior_token_id=g["prior_token_id"].float()),
    "ids_batch": lambda g: dict(prior_token_id=g["prior_token_id"][:1], prior_token_drop=g["prior_token_drop"][:1]),
    "drop_shape": lambda g: dict(prior_token_drop=torch.zeros(2, g["prior_token_id"].shape[1] + 1, dtype=torch.bool)),
    "drop_dtype": lambda g: dict(prior_token_drop=torch.zeros(g["prior_token_id"].shape)),
    "text_width": lambda g: dict(encoder_hidden_states=torch.randn(2, 3, 31)),
    "text_batch": lambda g: dict(encoder_hidden_states=torch.randn(1, 3, 32)),
    "timestep_count": lambda g: dict(timestep=torch.tensor([1.0, 2.0, 3.0])),
    "target_size_cols": lambda g: dict(target_size=torch.tensor([[64.0, 96.0, 1.0]] * 2)),
    "crop_rows": lambda g: dict(crop_coords=torch.zeros(3, 2)),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_dit_bad_inputs(ours_f32, ref_f32, case):
    """InputError (a ValueError in Python) with a message naming the argument; never a crash."""
    good = make_inputs(ref_f32, 2, 8, 12, 3, seed=6)
    assert ref_f32.config.prior_vq_quantizer_codebook_size == 64
    with pytest.raises(ValueError, match="dit: "):
        run_ours(ours_f32, dict(good, **BAD_INPUTS[case](good)))
