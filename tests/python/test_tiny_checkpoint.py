"""The generated tiny GLM-Image checkpoint: layout, tokenizer, determinism, and end-to-end runs of the
reference diffusers.GlmImagePipeline on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import REPO, install_i2i_shim, sha256_tree, versions_match

import make_tiny_checkpoint as mk

REAL = REPO / "tests" / "data" / "real-configs"
COMMITTED_TINY = REPO / "models" / "tiny"

TINY = mk.PRESETS["tiny"]
CB = TINY["codebook"]  # 64
START, END = CB, CB + 1

# Token ids of the tiny tokenizer (see tools/_tokenizer_synth.py for the layout).
EXPECTED_SPECIAL_IDS = {
    "<|endoftext|>": 656, "[MASK]": 657, "[gMASK]": 658, "[sMASK]": 659, "<sop>": 660, "<eop>": 661,
    "<|system|>": 662, "<|user|>": 663, "<|assistant|>": 664, "<|observation|>": 665,
    "<|begin_of_image|>": 666, "<|end_of_image|>": 667, "<|begin_of_video|>": 668, "<|end_of_video|>": 669,
    "<|image|>": 670, "<|video|>": 671,
}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------
# layout and configs
# ----------------------------------------------------------------------------------------------------------


def test_layout_matches_real(tiny_f32: Path):
    real_index = json.loads((REAL / "model_index.json").read_text())
    index = json.loads((tiny_f32 / "model_index.json").read_text())
    assert index["_class_name"] == real_index["_class_name"] == "GlmImagePipeline"
    comps = {k: v for k, v in index.items() if not k.startswith("_")}
    assert comps == {k: v for k, v in real_index.items() if not k.startswith("_")}
    for comp in comps:
        assert (tiny_f32 / comp).is_dir(), comp
    files = {p.relative_to(tiny_f32).as_posix() for p in tiny_f32.rglob("*") if p.is_file()}
    for f in [
        "vision_language_encoder/config.json", "vision_language_encoder/model.safetensors",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json", "tokenizer/tokenizer_config.json",
    ]:
        assert f in files, f
    assert {f for f in files if f.startswith("processor/")} == {
        "processor/tokenizer.json", "processor/tokenizer_config.json",
        "processor/chat_template.jinja", "processor/preprocessor_config.json",
    }
    # scheduler and image processor: the real files verbatim
    for f in ["scheduler/scheduler_config.json", "processor/preprocessor_config.json"]:
        assert (tiny_f32 / f).read_bytes() == (REAL / f).read_bytes(), f
    # tokenizer_config mirrors the real one (same keys; start/end ids of the tiny codebook)
    real_tc = json.loads((REAL / "processor" / "tokenizer_config.json").read_text())
    tc = json.loads((tiny_f32 / "processor" / "tokenizer_config.json").read_text())
    assert set(tc) == set(real_tc)
    assert tc["bos_token"] == f"<|dit_token_{START}|>"
    assert tc["eos_token"] == tc["pad_token"] == f"<|dit_token_{END}|>"
    for k in set(real_tc) - {"bos_token", "eos_token", "pad_token"}:
        assert tc[k] == real_tc[k], k
    # the real VAE structure with tiny channels
    vae = json.loads((tiny_f32 / "vae" / "config.json").read_text())
    real_vae = json.loads((REAL / "vae" / "config.json").read_text())
    for k in ["down_block_types", "up_block_types", "layers_per_block", "use_quant_conv", "use_post_quant_conv",
              "mid_block_add_attention", "act_fn", "scaling_factor", "shift_factor", "force_upcast"]:
        assert vae[k] == real_vae[k], k
    assert len(set(vae["latents_mean"])) == vae["latent_channels"] and len(set(vae["latents_std"])) > 1


def test_configs_exercise_every_path(tiny_f32: Path):
    vle = json.loads((tiny_f32 / "vision_language_encoder" / "config.json").read_text())
    tc, vc, qc = vle["text_config"], vle["vision_config"], vle["vq_config"]
    assert tc["num_attention_heads"] == 4 and tc["num_key_value_heads"] == 2  # GQA
    assert tc["attention_bias"] is True and tc["num_hidden_layers"] >= 2
    rope = tc["rope_parameters"]
    head_dim = tc["hidden_size"] // tc["num_attention_heads"]
    assert rope["partial_rotary_factor"] == 0.5
    assert all(s > 0 for s in rope["mrope_section"]) and len(rope["mrope_section"]) == 3
    assert 2 * sum(rope["mrope_section"]) == head_dim // 2
    assert vle["image_start_token_id"] == START and vle["image_end_token_id"] == END
    assert tc["eos_token_id"] == END
    assert tc["vision_vocab_size"] == CB + TINY["vision_extra"]
    assert tc["pad_token_id"] == EXPECTED_SPECIAL_IDS["<|endoftext|>"]
    assert vle["image_token_id"] == EXPECTED_SPECIAL_IDS["<|image|>"]
    assert tc["vocab_size"] >= max(EXPECTED_SPECIAL_IDS.values()) + 1
    assert vc["image_size"] // vc["patch_size"] == 4 and vc["hidden_act"] == "gelu"
    assert qc["num_embeddings"] == CB and qc["latent_channels"] == vc["hidden_size"]
    dit = json.loads((tiny_f32 / "transformer" / "config.json").read_text())
    t5 = json.loads((tiny_f32 / "text_encoder" / "config.json").read_text())
    vae = json.loads((tiny_f32 / "vae" / "config.json").read_text())
    assert dit["prior_vq_quantizer_codebook_size"] == CB
    assert dit["text_embed_dim"] == t5["d_model"]
    assert dit["in_channels"] == dit["out_channels"] == vae["latent_channels"]
    assert t5["feed_forward_proj"] == "gated-gelu" and t5["relative_attention_num_buckets"] == 32
    assert t5["vocab_size"] == 384


def test_weights_modifications(tiny_pipe):
    vle = tiny_pipe.vision_language_encoder
    w = vle.lm_head.weight
    assert torch.count_nonzero(w[CB:]) == 0
    assert torch.all(w[:CB].abs().amax(dim=1) > 0)
    # no parameter left constant by the initializers (norm weights, biases ...)
    for model in (vle, tiny_pipe.text_encoder, tiny_pipe.transformer, tiny_pipe.vae):
        for name, p in model.named_parameters():
            if name == "lm_head.weight" or p.numel() < 2:
                continue
            flat = p.detach().reshape(-1)
            assert not bool((flat == flat[0]).all()), name


# ----------------------------------------------------------------------------------------------------------
# tokenizer / processor
# ----------------------------------------------------------------------------------------------------------


def test_tokenizer_layout(tiny_pipe):
    tok = tiny_pipe.processor.tokenizer
    for s, i in EXPECTED_SPECIAL_IDS.items():
        assert tok.convert_tokens_to_ids(s) == i, s
    for n in (0, 1, CB - 1, START, END, CB + TINY["vision_extra"] - 1):
        assert tok.convert_tokens_to_ids(f"<|dit_token_{n}|>") == n
    assert tok.bos_token_id == START and tok.eos_token_id == END and tok.pad_token_id == END
    assert tok.padding_side == "left"
    # byte-level: the space byte is text id 220 as in GLM-4 (vision_vocab_size + 220)
    assert tok.convert_tokens_to_ids("\u0120") == CB + TINY["vision_extra"] + 220
    # no prefix/suffix tokens, special tokens never split, byte-level round trip (incl. Chinese, newlines)
    text = 'A "sign" 写着「你好」 1024\n\tend<sop>3 4<eop><|image|>'
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert EXPECTED_SPECIAL_IDS["<sop>"] in ids and EXPECTED_SPECIAL_IDS["<|image|>"] == ids[-1]
    assert tok("hi")["input_ids"] == tok.encode("hi", add_special_tokens=False)
    # digits grouped by at most three and a space before a number is its own token
    pieces = [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str("x 12345")]
    assert pieces == ["x", "\u0120", "123", "45"]
    assert tok.convert_ids_to_tokens(tok(" 32")["input_ids"]) == ["\u0120", "32"]


@pytest.mark.parametrize("h,w", [(64, 64), (64, 96), (1024, 1024), (1152, 768)])
def test_processor_t2i_suffix(tiny_pipe, h, w):
    tok = tiny_pipe.processor.tokenizer
    msgs = [[{"role": "user", "content": [{"type": "text", "text": 'A "cat"'}]}]]
    out = tiny_pipe.processor.apply_chat_template(msgs, tokenize=True, target_h=h, target_w=w,
                                                  return_dict=True, return_tensors="pt")
    th, tw = h // 32, w // 32
    ratio = th / tw
    ph, pw = int(ratio**0.5 * 16), int((1 / ratio) ** 0.5 * 16)
    suffix = f"<sop>{th} {tw}<eop><sop>{ph} {pw}<eop><|dit_token_{START}|>"
    expected = tok('A "cat"')["input_ids"] + tok(suffix)["input_ids"]
    assert out["input_ids"][0].tolist() == expected
    assert out["image_grid_thw"].tolist() == [[1, th, tw], [1, ph, pw]]
    assert out["images_per_sample"].tolist() == [2]
    assert expected[-1] == START


def test_processor_i2i(tiny_pipe):
    img = PIL.Image.fromarray(np.random.RandomState(0).randint(0, 255, (512, 768, 3), dtype=np.uint8))
    msgs = [[{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "make it red"}]}]]
    out = tiny_pipe.processor.apply_chat_template(msgs, tokenize=True, target_h=64, target_w=96,
                                                  return_dict=True, return_tensors="pt")
    ids = out["input_ids"][0].tolist()
    img_id = EXPECTED_SPECIAL_IDS["<|image|>"]
    # smart_resize: 512x768 -> halved to 256x384 -> grid 16x24
    assert out["image_grid_thw"].tolist() == [[1, 16, 24], [1, 2, 3]]
    assert ids[:1] == [START] and ids[1:1 + 16 * 24] == [img_id] * (16 * 24) and ids[1 + 16 * 24] == END
    tok = tiny_pipe.processor.tokenizer
    assert ids[2 + 16 * 24:] == tok("make it red<sop>2 3<eop>")["input_ids"] + [START]
    assert out["pixel_values"].shape == (16 * 24, 3 * 16 * 16)


# ----------------------------------------------------------------------------------------------------------
# end to end with the reference pipeline
# ----------------------------------------------------------------------------------------------------------


def test_ar_tokens_stay_in_codebook(tiny_pipe):
    prior, _, _ = tiny_pipe.generate_prior_tokens('A "sign" 你好', 64, 96, generator=_gen(3))
    assert prior.shape == (1, (64 // 16) * (96 // 16))
    assert int(prior.min()) >= 0 and int(prior.max()) < CB


@pytest.mark.parametrize("h,w", [(64, 64), (64, 96), (96, 64)])
def test_pipeline_t2i(tiny_pipe, h, w):
    prompt = 'A poster that says "Hello" and \u201cGLM\u201d'
    img = tiny_pipe(prompt=prompt, height=h, width=w, num_inference_steps=2, generator=_gen(0)).images[0]
    assert img.size == (w, h)
    again = tiny_pipe(prompt=prompt, height=h, width=w, num_inference_steps=2, generator=_gen(0)).images[0]
    assert np.array_equal(np.asarray(img), np.asarray(again))


def test_pipeline_i2i(tiny_pipe):
    # The condition image must have its short side >= 512 (real preprocessor min_pixels = 512^2): the
    # AR/VQ grid (after smart_resize halving, then x2 upsampling) then equals the DiT grid of the VAE latent.
    # Smaller condition images give mismatching prior-token and latent lengths in the reference as well.
    # Non-square (512 x 768): the 4x4 vision position table is resampled to a 16x24 grid.
    img = PIL.Image.fromarray(np.random.RandomState(1).randint(0, 255, (512, 768, 3), dtype=np.uint8))
    kwargs = dict(prompt='Make the sign say "OK"', image=[img], height=64, width=96, num_inference_steps=2)
    try:
        out = tiny_pipe(generator=_gen(0), **kwargs).images[0]
        unpatched_ok = True
    except RuntimeError as e:
        assert "channels" in str(e), e
        unpatched_ok = False
    if not unpatched_ok:
        orig = install_i2i_shim(tiny_pipe)
        try:
            out = tiny_pipe(generator=_gen(0), **kwargs).images[0]
        finally:
            tiny_pipe.vision_language_encoder.get_image_tokens = orig
    assert out.size == (96, 64)


def test_bf16_build_loads(tiny_bf16: Path):
    from diffusers import GlmImagePipeline
    from safetensors import safe_open

    for f in tiny_bf16.rglob("*.safetensors"):
        with safe_open(str(f), "pt") as s:
            assert {s.get_slice(k).get_dtype() for k in s.keys()} == {"BF16"}, f
    vle = json.loads((tiny_bf16 / "vision_language_encoder" / "config.json").read_text())
    assert vle["dtype"] == vle["text_config"]["dtype"] == "bfloat16"
    pipe = GlmImagePipeline.from_pretrained(str(tiny_bf16), torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.dtype == pipe.vision_language_encoder.dtype == torch.bfloat16
    img = pipe(prompt='"bf16"', height=64, width=64, num_inference_steps=2, generator=_gen(0)).images[0]
    assert img.size == (64, 64)


# ----------------------------------------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------------------------------------


def test_same_seed_identical_other_seed_differs(tiny_f32: Path, tmp_path: Path):
    ref = sha256_tree(tiny_f32)
    again = sha256_tree(mk.build(tmp_path / "again", "tiny", "float32", 0))
    assert again == ref
    other = sha256_tree(mk.build(tmp_path / "seed1", "tiny", "float32", 1))
    assert other.keys() == ref.keys()
    for name in ref:
        if name.endswith(".safetensors"):
            assert other[name] != ref[name], name
        else:
            assert other[name] == ref[name], name


def test_committed_tiny_regenerates(tiny_f32: Path):
    assert COMMITTED_TINY.is_dir(), "models/tiny is missing: python3 tools/make_tiny_checkpoint.py --out models/tiny"
    committed = sha256_tree(COMMITTED_TINY)
    total = sum(p.stat().st_size for p in COMMITTED_TINY.rglob("*") if p.is_file())
    assert total <= 20 * 1024 * 1024
    ok, why = versions_match()
    if not ok:
        pytest.skip("byte comparison needs the generating versions: " + why)
    assert sha256_tree(tiny_f32) == committed


def test_small_preset_configs():
    cfgs = mk.build_configs("small", "bfloat16")
    tc = cfgs["vision_language_encoder"]["text_config"]
    assert tc["hidden_size"] == 512 and tc["num_hidden_layers"] == 6
    assert tc["num_attention_heads"] == 8 and tc["num_key_value_heads"] == 2
    assert cfgs["transformer"]["num_attention_heads"] * cfgs["transformer"]["attention_head_dim"] == 512
    assert cfgs["transformer"]["text_embed_dim"] == cfgs["text_encoder"]["d_model"] == 256
    assert cfgs["vae"]["latent_channels"] == cfgs["transformer"]["in_channels"] == 16
