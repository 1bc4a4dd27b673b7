"""Parity at the REAL WIDTHS: every component of glmimage against transformers / diffusers on a
checkpoint with every width of the real GLM-Image (AR hidden 4096, 32 heads, 2 KV heads, head_dim 128,
MLP 13696, MRoPE [8, 12, 12] on half the head, vocabulary 168064 with the real special-token ids, vision
encoder 1536 wide, VQ 16384 x 2048, DiT 32 heads of 128, ByT5 1472 wide, the complete real VAE) but one
layer per stack, written through the upstream classes' own save_pretrained in bfloat16, the real
checkpoint's dtype (``tools/make_tiny_checkpoint.py --preset real-widths --layers 1``).

The checkpoint (3.7 GB, about a minute to write) is not committed: the first run writes it into
``build/real_widths/`` (or ``$GLMI_REAL_WIDTHS_DIR``) and later runs reuse it while a stamp of everything
it is made from (the scripts, the real configs, the manifests, the torch / transformers / diffusers
versions) still matches. Where the disk lacks the room (a CI machine was seen with 2.1 GB free after the
build), it goes to memory, ``/dev/shm``, for this run only, and is removed when the module ends; where
memory lacks it too, the module skips and says how much was free where.

Compared: the AR prefill (layer output and logits; text-to-image, a left-padded batch of 2 and an
image-to-image prompt with real VQ ids), greedy decoding (tokens identical, the logits of every step),
the vision encoder + VQ (ids identical), the T5 glyph encoder, one DiT forward (and one through the
condition-image KV cache), the VAE decode and encode, all in bfloat16 and, where both sides fit in memory
in float32 (T5, DiT, VAE), in float32 too; then one 64x64 image end to end, 2 steps, against diffusers'
GlmImagePipeline (prior tokens identical, pixels within 1 level).

Cost on the 2-core CI machine (shared, 1 torch thread as conftest sets): about 50 s to write the checkpoint
(peak 5.8 GB, in the child process) plus about 2 minutes of tests (peak 3.8 GB anonymous, 6.7 GB RSS with
the memory-mapped weights of both sides): part of the default run. ``pytest -m "not real_widths"`` leaves
it out; ``pytest tests/python/test_real_widths_parity.py`` runs only this.

Tolerances: float32 as the tiny tests (atol 1e-5, rtol 1e-4). bfloat16 as the tiny tests' bf16 variants
(T5 3e-2 / 2e-2, DiT 3e-2 of the output's largest magnitude, VAE 2e-2 / 2e-2, vision 2e-2 of the largest
feature), and for the AR, whose logits reach |400| here (bf16 steps of 2 above 256), two bf16 ulps of the
largest reference value (test_ar_parity's bf16 rule: "two bf16 ulps at the largest logits")."""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TOOLS

from parity import record, record_exact

import glmimage
import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

pytestmark = pytest.mark.real_widths

BUILD = {"preset": "real-widths", "layers": 1, "dtype": "bfloat16", "seed": 0}
NEED_BYTES = 4 * 10**9  # 3.7 GB of weights + the processor
WRITER_PEAK_BYTES = 6 * 10**9  # the writer's float32 initialization (5.8 GB), beside the files when they sit in memory

# Token ids of the real vocabulary (tests/data/real-configs): codebook 0..16383, image start / end,
# the text vocabulary from 16512, the GLM special tokens from 167841 (<sop> 167845, <eop> 167846,
# <|image|> 167855); the tokenizer pads on the left with the image end id.
START, END, PAD_TOKENIZER, IMAGE = 16384, 16385, 16385, 167855
TEXT_LO, TEXT_HI = 16512, 167857  # every text and special id (the embedding rows past 167856 are padding)

F32 = dict(atol=1e-5, rtol=1e-4)
T5_BF16 = dict(atol=3e-2, rtol=2e-2)
VAE_BF16 = dict(atol=2e-2, rtol=2e-2)
DIT_BF16_REL = 3e-2
VISION_BF16_REL = 2e-2


# --------------------------------------------------------------------------------------------------------
# the checkpoint, written once and reused
# --------------------------------------------------------------------------------------------------------


def _sources() -> list[Path]:
    files = [TOOLS / "make_tiny_checkpoint.py", TOOLS / "make_real_size_checkpoint.py", TOOLS / "_tokenizer_synth.py"]
    files += sorted(p for p in (REPO / "tests" / "data" / "real-configs").rglob("*") if p.is_file())
    files += sorted((REPO / "models" / "manifests").glob("*.json"))
    return files


def checkpoint_stamp() -> dict:
    """Everything the checkpoint's bytes depend on."""
    import diffusers
    import transformers

    h = hashlib.sha256()
    for f in _sources():
        h.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return {"args": BUILD, "sources_sha256": h.hexdigest(), "torch": torch.__version__,
            "transformers": transformers.__version__, "diffusers": diffusers.__version__}


def _is_current(cache: Path, want: dict) -> bool:
    stamp_file = cache / "stamp.json"
    if not ((cache / "ckpt" / "model_index.json").is_file() and stamp_file.is_file()):
        return False
    have = json.loads(stamp_file.read_text())
    return {k: have.get(k) for k in want} == want


def _room(cache: Path) -> int:
    """Bytes the checkpoint could take in cache: the free space there plus what an outdated copy holds."""
    probe = cache
    while not probe.exists():
        probe = probe.parent
    held = sum(f.stat().st_size for f in (cache / "ckpt").rglob("*") if f.is_file())
    return shutil.disk_usage(probe).free + held


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def choose_cache(want: dict) -> tuple[Path, bool]:
    """(folder, in_memory): $GLMI_REAL_WIDTHS_DIR when set; else build/real_widths when it holds a current
    checkpoint or the disk has the room; else a folder in /dev/shm (files in memory) when memory has the room
    for the files and the writer beside them. Skips, saying what was free where, when none has."""
    if "GLMI_REAL_WIDTHS_DIR" in os.environ:
        return Path(os.environ["GLMI_REAL_WIDTHS_DIR"]), False
    on_disk = REPO / "build" / "real_widths"
    if _is_current(on_disk, want) or _room(on_disk) >= NEED_BYTES:
        return on_disk, False
    in_memory = Path("/dev/shm") / f"glmimage-real-widths-{os.getuid()}"
    if Path("/dev/shm").is_dir():
        if _is_current(in_memory, want) or (
            _room(in_memory) >= NEED_BYTES and _mem_available() >= NEED_BYTES + WRITER_PEAK_BYTES
        ):
            return in_memory, True
    pytest.skip(f"the real-widths checkpoint needs {NEED_BYTES / 1e9:.0f} GB: {on_disk} has "
                f"{_room(on_disk) / 1e9:.1f} GB free, and memory {_mem_available() / 1e9:.1f} GB available of the "
                f"{(NEED_BYTES + WRITER_PEAK_BYTES) / 1e9:.0f} GB that the files in /dev/shm and their writer take")


def ensure_checkpoint(cache: Path, want: dict) -> Path:
    """cache/ckpt, written by tools/make_tiny_checkpoint.py in a child process (its float32 initialization
    peaks at 5.8 GB; the test process keeps none of it) unless cache/stamp.json says it is current."""
    cache.mkdir(parents=True, exist_ok=True)
    ckpt, stamp_file = cache / "ckpt", cache / "stamp.json"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer; a second run waits and then reuses
        if _is_current(cache, want):
            return ckpt
        stamp_file.unlink(missing_ok=True)
        assert _room(cache) >= NEED_BYTES, f"the real-widths checkpoint needs {NEED_BYTES / 1e9:.0f} GB free in {cache}"
        cmd = [sys.executable, str(TOOLS / "make_tiny_checkpoint.py"), "--out", str(ckpt), "--preset", BUILD["preset"],
               "--layers", str(BUILD["layers"]), "--dtype", BUILD["dtype"], "--seed", str(BUILD["seed"])]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        stamp_file.write_text(json.dumps(dict(want, write_seconds=round(time.perf_counter() - t0, 1)), indent=2) + "\n")
    return ckpt


@pytest.fixture(scope="module")
def ckpt():
    want = checkpoint_stamp()
    cache, in_memory = choose_cache(want)
    yield ensure_checkpoint(cache, want)
    if in_memory:  # memory is not a cache: give it back (the next run writes it again)
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="module")
def ours(ckpt):
    """bf16, as the checkpoint: every weight a view of the memory-mapped files."""
    return glmimage.Pipeline.from_pretrained(str(ckpt), dtype="bfloat16")


def bf16_ulp(x: float) -> float:
    """The spacing of bfloat16 numbers at magnitude x (8 significant bits)."""
    return 2.0 ** (math.floor(math.log2(x)) - 7) if x > 0 else 0.0


def two_ulps(ref: torch.Tensor) -> float:
    return 2 * bf16_ulp(float(ref.float().abs().max()))


def _ref_vle(ckpt):
    from transformers import GlmImageForConditionalGeneration

    # transformers maps the bf16 safetensors as they are: no copy, loads in well under a second.
    return GlmImageForConditionalGeneration.from_pretrained(
        str(ckpt / "vision_language_encoder"), torch_dtype=torch.bfloat16).eval()


# Keys that the upstream class itself writes differently from the real file: transformers' T5EncoderModel
# saves is_encoder_decoder false and tie_word_embeddings true (an encoder has no output head to tie).
UPSTREAM_REWRITES = {"text_encoder": ("is_encoder_decoder", "tie_word_embeddings")}


def test_checkpoint_has_the_real_widths(ckpt):
    """The configs the reference wrote are the real ones, layer counts aside; the tokenizer has the real ids."""
    real = REPO / "tests" / "data" / "real-configs"
    for comp, layer_keys in (("vision_language_encoder", ()), ("text_encoder", ("num_layers", "num_decoder_layers")),
                             ("transformer", ("num_layers",)), ("vae", ())):
        want = json.loads((real / comp / "config.json").read_text())
        got = json.loads((ckpt / comp / "config.json").read_text())
        for key, value in want.items():
            if key in ("architectures", "_class_name") or key in layer_keys or key in UPSTREAM_REWRITES.get(comp, ()):
                continue
            if isinstance(value, dict):
                for k, v in value.items():
                    if k in ("num_hidden_layers", "depth"):
                        assert got[key][k] == 1, (comp, key, k)
                    elif k != "model_type":
                        assert got[key][k] == v, (comp, key, k, got[key][k], v)
            else:
                assert got[key] == value, (comp, key, got[key], value)
        for k in layer_keys:
            assert got.get(k, 1) == 1, (comp, k)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt / "processor"))
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<sop>", "<eop>", "<|image|>", "<|dit_token_16384|>"]) == [
        167841, 167845, 167846, IMAGE, START]


# --------------------------------------------------------------------------------------------------------
# AR: prefill, decode, greedy generation
# --------------------------------------------------------------------------------------------------------


def _text(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(TEXT_LO, TEXT_HI, (n,), generator=g).tolist()


def _t2i(ckpt):
    # target grid 4x4, preview 2x2: 4 + 16 + 1 new tokens (the real processor's preview is 16x16; the
    # end-to-end test below runs that one).
    ids = torch.tensor([_text(20, 1) + [167845, 16520, 167846, START]])
    return dict(input_ids=ids, image_grid_thw=torch.tensor([[1, 4, 4], [1, 2, 2]]))


def _batch2(ckpt):
    a, b = _text(14, 2) + [START], _text(9, 3) + [START]
    ids = torch.tensor([a, [PAD_TOKENIZER] * 5 + b])
    mask = torch.tensor([[1] * 15, [0] * 5 + [1] * 10])
    grids = torch.tensor([[1, 4, 4], [1, 2, 2]] * 2)
    return dict(input_ids=ids, attention_mask=mask, image_grid_thw=grids, images_per_sample=torch.tensor([2, 2]))


def _i2i(ckpt):
    """One 16x16-token condition image (real pixels through the reference's processor), target 4x4."""
    from PIL import Image
    from test_vision_parity import make_image
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(str(ckpt / "processor"))
    pp = proc(images=[Image.fromarray(make_image(512, 512, 7))], return_tensors="pt")
    (_, h, w), = pp["image_grid_thw"].tolist()
    ids = [START] + [IMAGE] * (h * w) + [END] + _text(6, 4) + [START]
    return dict(input_ids=torch.tensor([ids]), pixel_values=pp["pixel_values"].to(torch.bfloat16),
                image_grid_thw=torch.tensor([[1, h, w], [1, 4, 4]]), images_per_sample=torch.tensor([2]))


AR_CASES = {"t2i": _t2i, "batch2": _batch2, "i2i": _i2i}


def _ours_kwargs(ref, inputs) -> dict:
    """Our AR takes the prompt with the placeholders already replaced by VQ ids: the reference's own."""
    ids = inputs["input_ids"]
    if "pixel_values" in inputs:
        src = inputs["image_grid_thw"][:-1]
        with torch.no_grad():
            feats = ref.get_image_features(inputs["pixel_values"], src).pooler_output
            vq = ref.get_image_tokens(feats, src).view(-1)
        ids = ids.masked_scatter(ids == IMAGE, vq)
    kw = dict(input_ids=ids, image_grid_thw=inputs["image_grid_thw"])
    if "images_per_sample" in inputs:
        kw["images_per_sample"] = inputs["images_per_sample"].tolist()
    if "attention_mask" in inputs:
        kw["attention_mask"] = inputs["attention_mask"]
    return kw


@pytest.mark.parity
@pytest.mark.parametrize("case", list(AR_CASES))
def test_ar_prefill(ckpt, ours, case):
    ref = _ref_vle(ckpt)
    inputs = AR_CASES[case](ckpt)
    outs = []
    hook = ref.model.language_model.layers[0].register_forward_hook(
        lambda m, a, o: outs.append(o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            ref_logits = ref(**inputs).logits
    finally:
        hook.remove()
    kw = _ours_kwargs(ref, inputs)
    prefill, _ = _testing.ar_positions(ours, **kw)
    logits, layers = _testing.ar_forward(ours, kw["input_ids"], prefill, kw.get("attention_mask"))
    valid = kw["attention_mask"].bool() if "attention_mask" in kw else torch.ones_like(kw["input_ids"], dtype=torch.bool)
    assert len(layers) == len(outs) == 1 and logits.dtype == torch.bfloat16
    got, want = layers[0][valid].float(), outs[0][valid].float()
    assert record(f"real_widths_ar_prefill_layer_{case}", got, want, atol=two_ulps(want), dtype="bfloat16",
                  scale=float(want.abs().max()), tokens=int(valid.sum()))["ok"]
    got, want = logits[valid].float(), ref_logits[valid].float()
    assert record(f"real_widths_ar_prefill_logits_{case}", got, want, atol=two_ulps(want), dtype="bfloat16",
                  scale=float(want.abs().max()))["ok"]


@pytest.mark.parity
@pytest.mark.parametrize("case", list(AR_CASES))
def test_ar_greedy(ckpt, ours, case):
    """Greedy generation to the end of the grid: tokens and prior ids identical, and the logits of every
    step (ours fed the reference's tokens) within two bf16 ulps."""
    from diffusers import GlmImagePipeline

    ref = _ref_vle(ckpt)
    inputs = AR_CASES[case](ckpt)
    per = int(inputs["images_per_sample"][0]) if "images_per_sample" in inputs else inputs["image_grid_thw"].shape[0]
    n_new, offset, h, w = GlmImagePipeline._compute_generation_params(
        image_grid_thw=inputs["image_grid_thw"][:per], is_text_to_image="pixel_values" not in inputs)
    with torch.no_grad():
        out = ref.generate(**inputs, max_new_tokens=n_new, do_sample=False, output_logits=True,
                           return_dict_in_generate=True)
    L = inputs["input_ids"].shape[1]
    ref_tokens = out.sequences[:, L:]
    ref_prior = torch.cat([GlmImagePipeline._upsample_token_ids(
        GlmImagePipeline._extract_large_image_tokens(out.sequences[i:i + 1], L, offset, h * w), h, w)
        for i in range(out.sequences.shape[0])])
    kw = _ours_kwargs(ref, inputs)
    mine = _testing.ar_generate(ours, **kw, keep_in_codebook=False)
    assert mine["generated"].shape == ref_tokens.shape == (ref_tokens.shape[0], n_new)
    got = torch.cat([mine["generated"].flatten(), mine["prior_ids"].flatten()])
    assert record_exact(f"real_widths_ar_greedy_{case}", got, torch.cat([ref_tokens.flatten(), ref_prior.flatten()]),
                        tokens=n_new)["ok"]
    forced = _testing.ar_generate(ours, **kw, keep_in_codebook=False, record_logits=True, forced_tokens=ref_tokens)
    got, want = torch.stack(forced["step_logits"]).float(), torch.stack(out.logits).float()
    assert record(f"real_widths_ar_decode_logits_{case}", got, want, atol=two_ulps(want), dtype="bfloat16",
                  scale=float(want.abs().max()), steps=n_new)["ok"]

    # The static decode step (the fixed-shape step a CUDA graph replays, run eagerly here): its logits
    # fed the reference's tokens within the same two ulps, and its greedy tokens the reference's, or
    # parting only where our two candidates' logits (fed the reference's tokens) are within two ulps.
    static = _testing.ar_generate(ours, **kw, keep_in_codebook=False, record_logits=True, forced_tokens=ref_tokens,
                                  decode="static")
    got = torch.stack(static["step_logits"]).float()
    assert record(f"real_widths_ar_decode_logits_{case}_static", got, want, atol=two_ulps(want), dtype="bfloat16",
                  scale=float(want.abs().max()), steps=n_new)["ok"]
    tokens = _testing.ar_generate(ours, **kw, keep_in_codebook=False, decode="static")["generated"]
    parted = (tokens != ref_tokens).any(0).nonzero().flatten()
    if not len(parted):
        assert record_exact(f"real_widths_ar_greedy_{case}_static", tokens, ref_tokens, tokens=n_new)["ok"]
    else:
        step = int(parted[0])
        row = int((tokens[:, step] != ref_tokens[:, step]).nonzero()[0])
        logits = got[step, row]
        gap = float((logits[int(tokens[row, step])] - logits[int(ref_tokens[row, step])]).abs())
        print(f"real_widths_ar_greedy_{case}_static: parts at step {step} of {n_new}, logit gap {gap}")
        assert record(f"real_widths_ar_greedy_{case}_static_first_difference_logit_gap", torch.tensor([gap]),
                      torch.zeros(1), atol=two_ulps(logits), step=step, steps=n_new)["ok"]


# --------------------------------------------------------------------------------------------------------
# vision encoder + VQ
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parity
def test_vision_vq(ckpt, ours):
    from test_vision_parity import make_image, ref_preprocess, ref_token_ids
    from transformers import AutoImageProcessor

    ref = _ref_vle(ckpt)
    proc = AutoImageProcessor.from_pretrained(str(ckpt / "processor"))
    images = [make_image(512, 768, 20), make_image(1024, 1024, 21)]
    pv, grids = ref_preprocess(proc, images)
    feats, ref_ids = ref_token_ids(ref, pv.to(torch.bfloat16), grids)
    got = _testing.vision_encode(ours, pv, grids)
    want = feats.last_hidden_state
    assert got.dtype == want.dtype == torch.bfloat16
    scale = float(want.float().abs().max())
    assert record("real_widths_vision_features", got.float(), want.float(), atol=VISION_BF16_REL * scale,
                  rtol=VISION_BF16_REL, dtype="bfloat16", scale=scale)["ok"]
    ids = _testing.vision_token_ids(ours, pv, grids)
    assert record_exact("real_widths_vision_vq_ids", ids, ref_ids, tokens=int(ids.numel()), dtype="bfloat16")["ok"]


# --------------------------------------------------------------------------------------------------------
# T5 (Glyph-ByT5)
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_t5(ckpt, dtype):
    from test_t5_parity import _inputs
    from transformers import T5EncoderModel

    ref = T5EncoderModel.from_pretrained(str(ckpt / "text_encoder"), torch_dtype=getattr(torch, dtype)).eval()
    enc = _testing.load_t5(str(ckpt / "text_encoder"), dtype)
    ids, mask = _inputs(384, [80, 57, 23], 80, seed=3)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    got = _testing.t5_encode(enc, ids, mask)
    assert got.dtype == want.dtype
    tol = F32 if dtype == "float32" else T5_BF16
    assert record(f"real_widths_t5_{dtype}", got.float(), want.float(), **tol, dtype=dtype,
                  scale=float(want.float().abs().max()))["ok"]


# --------------------------------------------------------------------------------------------------------
# DiT
# --------------------------------------------------------------------------------------------------------


def _dit_pair(ckpt, ours, dtype):
    from diffusers import GlmImageTransformer2DModel

    ref = GlmImageTransformer2DModel.from_pretrained(str(ckpt / "transformer"),
                                                     torch_dtype=getattr(torch, dtype)).eval()
    if dtype == "bfloat16":
        return ref, ours
    # float32: the DiT cast on load (1.4 GB), the other components stay bf16 file views.
    return ref, glmimage.Pipeline.from_pretrained(str(ckpt), dtype="bfloat16", components={"transformer": {"dtype": dtype}})


def _dit_tol(dtype, want):
    if dtype == "float32":
        return F32
    return dict(atol=DIT_BF16_REL * float(want.float().abs().max()))


@pytest.mark.parity
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_dit_forward(ckpt, ours, dtype):
    """CFG batch of 2 (one with every prior token dropped, as the pipeline's unconditional half, one with
    half of them), a non-square 16x24 latent (8x12 patches), 19 text tokens of width 1472."""
    from test_dit_parity import make_inputs, run_ours, run_ref

    ref, mine = _dit_pair(ckpt, ours, dtype)
    inp = make_inputs(ref, 2, 16, 24, 19, seed=2, dtype=getattr(torch, dtype), drop="mixed")
    got, want = run_ours(mine, inp), run_ref(ref, inp)
    assert got.shape == want.shape == (2, 16, 16, 24) and got.dtype == want.dtype
    assert record(f"real_widths_dit_forward_{dtype}", got.float(), want.float(), **_dit_tol(dtype, want), dtype=dtype,
                  scale=float(want.float().abs().max()))["ok"]


@pytest.mark.parity
def test_dit_kvcache(ckpt, ours):
    """One condition image written into the KV cache (as the pipeline does for image-to-image), then a
    batch-2 forward that reads it."""
    from diffusers.models.transformers.transformer_glm_image import GlmImageKVCache
    from test_dit_parity import condition_inputs, make_inputs, run_ours, run_ref

    ref, _ = _dit_pair(ckpt, ours, "bfloat16")
    mine_kv, ref_kv = _testing.DiTKVCache(1), GlmImageKVCache(num_layers=1)
    mine_kv.set_mode("write")
    ref_kv.set_mode("write")
    cond = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in condition_inputs(ref, 8, 8, 11).items()}
    cond["timestep"] = cond["timestep"].float()
    run_ours(ours, cond, mine_kv), run_ref(ref, cond, ref_kv)
    mine_kv.next_sample()
    ref_kv.next_sample()
    mine_kv.set_mode("read")
    ref_kv.set_mode("read")
    inp = make_inputs(ref, 2, 16, 16, 7, seed=12, dtype=torch.bfloat16, timesteps=[999.0, 999.0])
    got, want = run_ours(ours, inp, mine_kv), run_ref(ref, inp, ref_kv)
    assert record("real_widths_dit_kvcache_read", got.float(), want.float(), **_dit_tol("bfloat16", want),
                  dtype="bfloat16")["ok"]


# --------------------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parity
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_vae(ckpt, dtype):
    """Decode 16x8x12 latents (64x96 pixels; a batch of 2 in bf16, 1 in float32, whose CPU convolutions
    are the slowest part of this file) and, as image-to-image does for its condition images, encode a 64x96
    image; the whole real VAE (channels 128 / 512 / 1024 / 1024, 3 + 4 resnets per block)."""
    from diffusers import AutoencoderKL
    from test_vae_parity import ref_decode, ref_encode, ref_postprocess_u8

    td = getattr(torch, dtype)
    ref = AutoencoderKL.from_pretrained(str(ckpt / "vae"), torch_dtype=td).eval()
    vae = _testing.load_vae(str(ckpt / "vae"), dtype)
    tol = F32 if dtype == "float32" else VAE_BF16
    batch = 2 if dtype == "bfloat16" else 1
    z = torch.randn(batch, 16, 8, 12, generator=torch.Generator().manual_seed(0))
    got, want = _testing.vae_decode(vae, z.to(td)), ref_decode(ref, z)
    assert got.shape == want.shape == (batch, 3, 64, 96) and got.dtype == want.dtype == td
    assert record(f"real_widths_vae_decode_{dtype}", got.float(), want.float(), **tol, dtype=dtype,
                  scale=float(want.float().abs().max()))["ok"]
    assert record(f"real_widths_vae_postprocess_{dtype}", _testing.vae_postprocess(got).long(),
                  ref_postprocess_u8(want).long(), atol=1, dtype=dtype)["ok"]
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1)) * 2 - 1
    got, want = _testing.vae_encode(vae, x.to(td)), ref_encode(ref, x)
    assert got.shape == want.shape == (1, 16, 8, 12)
    assert record(f"real_widths_vae_encode_{dtype}", got.float(), want.float(), **tol, dtype=dtype,
                  scale=float(want.float().abs().max()))["ok"]


def _decode_peak_in_use(decode):
    """The image and the most bytes the decode held in use at once, counted by the CPU block cache
    (blocks of 1 MiB or more made on this thread: its activations, whichever library made them)."""
    with _testing.cpu_block_cache(), _testing.cpu_block_cache_peak_bound():
        before = _testing.cpu_block_cache_stats()["in_use_bytes"]
        image = decode()
        return image, _testing.cpu_block_cache_stats()["peak_in_use_bytes"] - before


def test_vae_decode_holds_less_at_once_than_the_reference(ckpt):
    """The real VAE's decode, bf16, at 256 x 512 pixels: the most activation bytes it holds at once,
    ours against diffusers' on the same latents, both counted by the same allocator, in units of one
    512-channel activation at the image's size (X, 128 MiB here). Ours frees each intermediate as
    soon as it is read (models/vae/autoencoder_kl.cpp), convolves inputs of 128 MiB and more in
    bands of output rows where that gives the same bits (layers/conv2d.cpp), so that LibTorch's copy
    of a whole input in oneDNN's layout is never made, and writes a handed-over input's convolution
    with as many channels out, and its group norms, into the input itself (layers/norms.cpp). Its
    widest moment is then the first convolution of the last block: the block's input, normalized in
    place, with that convolution's output and the shortcut's (1.5 X) and a few bands of 8 MiB.
    Measured on a 2-core EPYC: ours 1.76 X, diffusers' 3.79 X; ours held 2.25 X with the norms and
    convolutions into new tensors, 4.30 X with every intermediate alive through the next
    convolution, 3.19 X with them freed but the convolutions whole (at 128 x 192 pixels, where
    diffusers' held 3.94 X); on a 2-core Zen 3 EPYC (AVX2 only), where both sides' bf16 convolutions
    are computed in float32 (kernels/cpu_products.h, conftest.py) and ours go in bands from a smaller
    input on, as their whole calls hold more: ours 1.75 X, diffusers' 7.89 X (ours 4.06 X with the
    bands at the bf16 threshold). The images stay equal, bit for bit. Where this CPU's bit checks leave
    out the bands or the in-place norms (a CPU with AMX takes NHWC convolutions instead: input,
    output and a layout copy, about 2.25 X), the bound is the earlier 2.75 X."""
    from diffusers import AutoencoderKL
    from test_vae_parity import ref_decode

    ref = AutoencoderKL.from_pretrained(str(ckpt / "vae"), torch_dtype=torch.bfloat16).eval()
    vae = _testing.load_vae(str(ckpt / "vae"), "bfloat16")
    z = torch.randn(1, 16, 32, 64, generator=torch.Generator().manual_seed(3))
    full = 512 * 256 * 512 * 2  # X
    got, ours_bytes = _decode_peak_in_use(lambda: _testing.vae_decode(vae, z.bfloat16()))
    want, ref_bytes = _decode_peak_in_use(lambda: ref_decode(ref, z))
    print(f"held at once: ours {ours_bytes / full:.2f} X, diffusers {ref_bytes / full:.2f} X "
          f"(X = {full / 2**20:.0f} MiB)")
    assert record("real_widths_vae_decode_low_memory_bfloat16", got.float(), want.float(), atol=0.0, rtol=0.0,
                  dtype="bfloat16")["ok"]
    # The bound for the forms this CPU's bit checks allow: bands and in-place norms (the EPYC), or
    # the NHWC convolutions of a CPU with AMX (input, output and a layout copy: about 2.25 X).
    paths = _testing.vae_large_activation_paths("bfloat16")
    print("memory-saving forms on this CPU:", paths)
    bound = 1.9 if paths["conv_row_bands"] and paths["group_norm_in_place"] else 2.75
    assert ours_bytes <= bound * full, "the VAE decode held more at once than its widest step needs"
    assert ours_bytes < ref_bytes


# --------------------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parity
def test_e2e_t2i(ckpt, ours):
    """One 64x64 image, 2 steps, guidance 1.5, bf16, through diffusers' GlmImagePipeline: its processor
    (16x16 preview grid + the 2x2 target: 261 AR tokens), the AR model, glyph ByT5, the DiT with CFG and
    the VAE. Greedy on both sides: the pipeline calls generate(do_sample=True), which the reference is
    patched to turn off (a bf16 logit may differ by one ulp, which moves a sampled token).

    Our bf16 decode steps take LibTorch's own gemm, the reference's oneDNN (layers/linear.cpp), so a
    logit may round one bf16 step apart and a greedy choice between two logits that close may differ.
    The prior tokens must therefore be identical up to their first difference, and at that step the
    two candidates must be within two bf16 steps in our logits fed the reference's tokens (a near-tie,
    not an error). The image is then compared on the reference's own prior tokens (within 1 level)."""
    from diffusers import GlmImagePipeline

    pipe = GlmImagePipeline.from_pretrained(str(ckpt), torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    vle = pipe.vision_language_encoder
    orig_generate, orig_prior = vle.generate, pipe.generate_prior_tokens
    seen = {}

    def greedy_generate(*a, **kw):
        seen["ar_inputs"] = kw
        seen["ar_out"] = orig_generate(*a, **dict(kw, do_sample=False))
        return seen["ar_out"]

    vle.generate = greedy_generate

    def prior_spy(*a, **kw):
        seen["prior"] = orig_prior(*a, **kw)
        return seen["prior"]

    pipe.generate_prior_tokens = prior_spy
    prompt = 'A poster that says "GLM" and “你好”'
    ref = pipe(prompt=prompt, height=64, width=64, num_inference_steps=2, guidance_scale=1.5,
               generator=torch.Generator().manual_seed(3), output_type="pil").images
    ref_prior = seen["prior"][0]
    _, prior, _ = _testing.generate(ours, [prompt], [], height=64, width=64, steps=2, guidance=1.5, seed=3,
                                    do_sample=False, temperature=1.0, top_p=1.0, top_k=50, keep_in_codebook=False)
    prior, ref_prior = torch.as_tensor(prior).flatten(), torch.as_tensor(ref_prior).flatten()
    differ = (prior != ref_prior).nonzero()
    if not len(differ):
        assert record_exact("real_widths_e2e_t2i_prior_tokens", prior, ref_prior)["ok"]
    else:
        inputs = seen["ar_inputs"]
        L = inputs["input_ids"].shape[1]
        ref_tokens = seen["ar_out"][:, L:]
        forced = _testing.ar_generate(ours, **_ours_kwargs(vle, inputs), keep_in_codebook=False, record_logits=True,
                                      forced_tokens=ref_tokens)
        mine = _testing.ar_generate(ours, **_ours_kwargs(vle, inputs), keep_in_codebook=False)["generated"]
        step = int((mine[0] != ref_tokens[0]).nonzero()[0])  # the first differing AR step
        logits = forced["step_logits"][step][0].float()
        a, b = int(mine[0, step]), int(ref_tokens[0, step])
        gap = float((logits[a] - logits[b]).abs())
        tol = two_ulps(logits)
        print(f"real_widths_e2e_t2i: first differing AR step {step} of {ref_tokens.shape[1]}: logits "
              f"{float(logits[a])} (ours) and {float(logits[b])} (reference's token), gap {gap} (near-tie bound {tol})")
        assert record("real_widths_e2e_t2i_first_difference_logit_gap", torch.tensor([gap]), torch.zeros(1),
                      atol=tol, step=step, steps=int(ref_tokens.shape[1]))["ok"]
    imgs = _testing.decode(ours, ref_prior.view(1, -1), [prompt], 64, 64, steps=2, guidance=1.5, seed=3)
    want = torch.from_numpy(np.stack([np.array(im) for im in ref]))
    assert imgs.shape == want.shape == (1, 64, 64, 3)
    assert record("real_widths_e2e_t2i", imgs.long(), want.long(), atol=1.0, dtype="bfloat16")["ok"]
