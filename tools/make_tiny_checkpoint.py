#!/usr/bin/env python3
"""Build a complete GLM-Image pipeline checkpoint with random weights, in the real on-disk layout.

Usage::

    python3 tools/make_tiny_checkpoint.py --out DIR [--preset tiny|small] [--dtype float32|bfloat16] [--seed N]
    python3 tools/make_tiny_checkpoint.py --out DIR --preset real-widths [--layers N] --dtype bfloat16

Every component is an instance of the UPSTREAM reference class (transformers / diffusers), saved with the
upstream ``save_pretrained`` through a ``diffusers.GlmImagePipeline`` object, so ``model_index.json`` and the
component folders have exactly the layout of ``zai-org/GLM-Image``:

    model_index.json
    vision_language_encoder/  transformers GlmImageForConditionalGeneration (AR text decoder + vision + VQ)
    processor/                GlmImageProcessor: tokenizer.json (synthesized, see tools/_tokenizer_synth.py),
                              tokenizer_config.json, chat_template.jinja, preprocessor_config.json (real values)
    text_encoder/             transformers T5EncoderModel (ByT5-like glyph encoder)
    tokenizer/                transformers ByT5Tokenizer() defaults
    transformer/              diffusers GlmImageTransformer2DModel (DiT)
    vae/                      diffusers AutoencoderKL (CogView4-like structure: 4 blocks, 3 layers per block,
                              no quant convs, no mid attention), non-trivial latents_mean / latents_std
    scheduler/                FlowMatchEulerDiscreteScheduler; scheduler_config.json is the real file verbatim

The structure is the real one (GQA, partial rotary with a 3-part mrope_section, q/k/v biases, 4 sandwich
norms, learned vision position table that is resampled, L2-normalized VQ, gated-gelu T5 with 32 buckets,
...), only the sizes are small. Token-id space as in the real model: ids 0..codebook-1 are the VQ ("dit")
tokens, codebook = image start (``<|dit_token_{codebook}|>``), codebook+1 = image end / eos, the vision
vocabulary (lm_head rows) has some extra unused ids, then the GLM text vocabulary, then the GLM special tokens.

Preset ``real-widths`` ("real widths, few layers"): every config value of ``tests/data/real-configs/`` (AR hidden 4096,
32 heads, 2 KV heads, head_dim 128, intermediate 13696, MRoPE [8, 12, 12] with partial_rotary_factor 0.5, vocabulary
168064 and vision vocabulary 16512, max_position_embeddings 131072; vision encoder 1536 wide, 16 heads, patch 16,
image_size 2048; VQ 16384 x 2048; DiT 32 heads of 128, time 512, condition 256, text 1472; ByT5 d_model 1472;
the complete VAE, channels 128/512/1024/1024) except the layer counts: ``--layers N`` (default 1) layers in each of
the AR text decoder, the vision encoder, the T5 encoder and the DiT, as ``make_real_size_checkpoint.py --layers N``
reduces them (its ``make_plan`` supplies the configs). The processor's tokenizer is the synthesized one padded to
the real GLM-4 text vocabulary (``make_real_size_checkpoint.real_tokenizer_json``), so the special tokens have their
real ids (``<|image|>`` 167855, ``<|endoftext|>`` 167841). With ``--layers 1`` it has 1.84 B parameters: 3.7 GB
in bfloat16 (the real checkpoint's dtype; use ``--dtype bfloat16``), 7.3 GB in float32. Writing it in bfloat16 takes
about a minute on a 2-core machine (50-65 s measured, most of it the upstream initialization of the AR model) with a
5.8 GB peak RSS: the largest component in float32 (the AR model, 4.2 GB) plus the bf16 copies of those already built.
tests/python/test_real_widths_parity.py writes it (build/real_widths/) and compares every component with it.

Weights are random, with three deliberate modifications (all documented here, all applied after the
upstream initialization, in float32, before any dtype cast):

1. Parameters that the upstream initializers leave constant (norm weights = 1, biases = 0, ...) get a small
   random perturbation (weights 1 + 0.1 N(0,1), others 0.05 N(0,1)), so that a port that forgets a bias or a
   norm weight does not match by accident. (The embedding padding row stays as initialized.)
2. lm_head: the rows of every id >= codebook size (image start, image end and the extra vision ids) are set
   to ZERO and the codebook rows are multiplied by LM_HEAD_CODEBOOK_SCALE. Random weights would otherwise
   sample or pick those ids (end of image, unknown ids) in the middle of an image and the reference pipeline
   would crash (prior ids outside the DiT codebook, or too few tokens). The real model learned not to emit
   them; a random one did not. The scale makes the codebook logits dominate the zero logits of the other
   ids at every step, so sampled and greedy tokens stay inside the codebook and generation always runs to
   max_new_tokens. Measured on the tiny preset (15 prompts/sizes, every step of a sampled generation), the
   largest probability mass left on the non-codebook ids was 0.10 with a factor 8, 1.4e-4 with 32 and
   9e-9 with 64 (the codebook logits then have a standard deviation of about 15, so sampling is nearly
   greedy); the small preset is safer still (6e-30 at 64).
3. Nothing else: no weight is tied, the VQ codebook and every other tensor keep their random values.

Determinism: each component is built right after ``torch.manual_seed(seed * 1000 + k)`` with a fixed k and in
a fixed order, every JSON file written by this script is canonical (sorted keys where we write them), and the
upstream savers are deterministic for identical tensors, so two runs with the same arguments give
byte-identical files. No path of the output directory is written into any file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _tokenizer_synth as toksynth  # noqa: E402

REPO = HERE.parent
# The repository's copy; shared/reference/ beside the checkout (where the team's notes live) as a fallback.
REAL_CONFIGS_CANDIDATES = [
    REPO / "tests" / "data" / "real-configs",
    REPO.parent / "shared" / "reference" / "real-configs",
]

LM_HEAD_CODEBOOK_SCALE = 64.0

PRESETS: dict[str, dict] = {
    "tiny": {
        "codebook": 64,
        "vision_extra": 16,  # vision_vocab_size = 80 (real: 16384 + 128)
        "vocab_multiple": 64,
        "text": {
            "hidden_size": 128,
            "intermediate_size": 96,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "mrope_section": [2, 3, 3],  # head_dim 32, partial 0.5 -> rotary 16 -> 8 frequencies
        },
        "vision": {
            "depth": 2,
            "hidden_size": 32,
            "num_heads": 2,
            "intermediate_size": 64,
            "image_size": 64,  # 4 x 4 learned position table
            "patch_size": 16,
        },
        "vq": {"embed_dim": 24},
        "t5": {"d_model": 32, "d_kv": 8, "num_heads": 4, "d_ff": 48, "num_layers": 2},
        "dit": {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8, "time_embed_dim": 16,
                "condition_dim": 8},
        "vae": {"block_out_channels": [8, 16, 32, 32], "norm_num_groups": 4, "latent_channels": 4,
                "sample_size": 64},
    },
    "small": {
        "codebook": 1024,
        "vision_extra": 128,
        "vocab_multiple": 128,
        "text": {
            "hidden_size": 512,
            "intermediate_size": 1536,
            "num_hidden_layers": 6,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "mrope_section": [4, 6, 6],  # head_dim 64, partial 0.5 -> rotary 32 -> 16 frequencies
        },
        "vision": {
            "depth": 4,
            "hidden_size": 256,
            "num_heads": 4,
            "intermediate_size": 1024,
            "image_size": 512,  # 32 x 32 learned position table
            "patch_size": 16,
        },
        "vq": {"embed_dim": 64},
        "t5": {"d_model": 256, "d_kv": 32, "num_heads": 6, "d_ff": 640, "num_layers": 4},
        "dit": {"num_layers": 4, "num_attention_heads": 8, "attention_head_dim": 64, "time_embed_dim": 128,
                "condition_dim": 64},
        "vae": {"block_out_channels": [32, 64, 128, 128], "norm_num_groups": 8, "latent_channels": 16,
                "sample_size": 256},
    },
}


REAL_WIDTHS = "real-widths"
PRESET_NAMES = sorted(PRESETS) + [REAL_WIDTHS]


def real_configs_dir() -> Path:
    for c in REAL_CONFIGS_CANDIDATES:
        if (c / "model_index.json").is_file():
            return c
    raise FileNotFoundError("real-configs not found (looked in %s)" % ", ".join(map(str, REAL_CONFIGS_CANDIDATES)))


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


# --------------------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------------------


def _real_widths_plan_configs(layers: int) -> dict:
    """The real component configs with `layers` layers per stack, as make_real_size_checkpoint writes them."""
    import make_real_size_checkpoint as rs

    return {comp: p["config"] for comp, p in rs.make_plan(layers).items()}


def tokenizer_layout(preset: str) -> dict:
    if preset == REAL_WIDTHS:
        import make_real_size_checkpoint as rs

        return rs.real_token_layout(rs.load_real_config("vision_language_encoder"))
    p = PRESETS[preset]
    vision_vocab = p["codebook"] + p["vision_extra"]
    lay = toksynth.layout(vision_vocab)
    lay["codebook_size"] = p["codebook"]
    lay["image_start_token_id"] = p["codebook"]
    lay["image_end_token_id"] = p["codebook"] + 1
    lay["vocab_size"] = _round_up(lay["total_size"], p["vocab_multiple"])
    return lay


def _strip_meta(cfg: dict, keys=("architectures", "model_type", "dtype")) -> dict:
    """A config.json dict as constructor kwargs: without the file's metadata keys (also in nested configs)."""
    out = {}
    for k, v in cfg.items():
        if k in keys or k.startswith("_"):
            continue
        out[k] = _strip_meta(v, keys) if isinstance(v, dict) and k.endswith("_config") else v
    return out


def _build_real_widths_configs(dtype: str, layers: int) -> dict:
    real = _real_widths_plan_configs(layers)
    lay = tokenizer_layout(REAL_WIDTHS)
    vle = _strip_meta(real["vision_language_encoder"])
    assert vle["text_config"]["vocab_size"] == lay["vocab_size"]
    assert vle["image_token_id"] == lay["special_tokens"]["<|image|>"]
    return {"preset": REAL_WIDTHS, "dtype": dtype, "layers": layers, "layout": lay, "vision_language_encoder": vle,
            "text_encoder": _strip_meta(real["text_encoder"]), "vae": _strip_meta(real["vae"]),
            "transformer": _strip_meta(real["transformer"])}


def build_configs(preset: str, dtype: str, layers: int | None = None) -> dict:
    """All component configs (plain dicts / kwargs) of a preset. `layers` only for the real-widths preset
    (layers per stack; default 1)."""
    if preset == REAL_WIDTHS:
        return _build_real_widths_configs(dtype, 1 if layers is None else layers)
    if layers is not None:
        raise ValueError("--layers applies to the real-widths preset only")
    p = PRESETS[preset]
    lay = tokenizer_layout(preset)
    cb = p["codebook"]
    t = p["text"]
    vle = {
        "image_token_id": lay["special_tokens"]["<|image|>"],
        "image_start_token_id": cb,
        "image_end_token_id": cb + 1,
        "tie_word_embeddings": False,
        "text_config": {
            "vocab_size": lay["vocab_size"],
            "vision_vocab_size": lay["vision_vocab_size"],
            "hidden_size": t["hidden_size"],
            "intermediate_size": t["intermediate_size"],
            "num_hidden_layers": t["num_hidden_layers"],
            "num_attention_heads": t["num_attention_heads"],
            "num_key_value_heads": t["num_key_value_heads"],
            "hidden_act": "silu",
            "max_position_embeddings": t["max_position_embeddings"],
            "rms_norm_eps": 1e-5,
            "attention_bias": True,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "use_cache": True,
            "pad_token_id": lay["special_tokens"]["<|endoftext|>"],
            "eos_token_id": cb + 1,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": list(t["mrope_section"]),
                "partial_rotary_factor": 0.5,
            },
        },
        "vision_config": {
            "depth": p["vision"]["depth"],
            "hidden_size": p["vision"]["hidden_size"],
            "num_heads": p["vision"]["num_heads"],
            "intermediate_size": p["vision"]["intermediate_size"],
            "hidden_act": "gelu",
            "attention_bias": True,
            "attention_dropout": 0.0,
            "in_channels": 3,
            "image_size": p["vision"]["image_size"],
            "patch_size": p["vision"]["patch_size"],
            "layer_norm_eps": 1e-6,
            "spatial_merge_size": 1,
            "initializer_range": 0.02,
        },
        "vq_config": {
            "embed_dim": p["vq"]["embed_dim"],
            "num_embeddings": cb,
            "latent_channels": p["vision"]["hidden_size"],
            "in_channels": 3,
            "initializer_range": 0.02,
        },
    }
    hd = t["hidden_size"] // t["num_attention_heads"]
    assert sum(t["mrope_section"]) * 2 == int(hd * 0.5), "mrope_section must cover the rotary half"
    t5 = {
        "vocab_size": 384,
        "d_model": p["t5"]["d_model"],
        "d_kv": p["t5"]["d_kv"],
        "d_ff": p["t5"]["d_ff"],
        "num_heads": p["t5"]["num_heads"],
        "num_layers": p["t5"]["num_layers"],
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu",
        "layer_norm_epsilon": 1e-6,
        "dropout_rate": 0.1,
        "tie_word_embeddings": False,
        "is_encoder_decoder": True,
    }
    v = p["vae"]
    nlat = v["latent_channels"]
    vae = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": list(v["block_out_channels"]),
        "layers_per_block": 3,
        "act_fn": "silu",
        "latent_channels": nlat,
        "norm_num_groups": v["norm_num_groups"],
        "sample_size": v["sample_size"],
        "scaling_factor": 1.0,
        "shift_factor": 0.0,
        "force_upcast": True,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "mid_block_add_attention": False,
        "latents_mean": [round(0.1 * k, 6) for k in range(nlat)],
        "latents_std": [round(1.0 + 0.1 * k, 6) for k in range(nlat)],
    }
    d = p["dit"]
    dit = {
        "patch_size": 2,
        "in_channels": nlat,
        "out_channels": nlat,
        "num_layers": d["num_layers"],
        "attention_head_dim": d["attention_head_dim"],
        "num_attention_heads": d["num_attention_heads"],
        "text_embed_dim": p["t5"]["d_model"],
        "time_embed_dim": d["time_embed_dim"],
        "condition_dim": d["condition_dim"],
        "prior_vq_quantizer_codebook_size": cb,
    }
    return {"preset": preset, "dtype": dtype, "layout": lay, "vision_language_encoder": vle, "text_encoder": t5,
            "vae": vae, "transformer": dit}


# --------------------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def _perturb_constant_params(model: torch.nn.Module) -> None:
    """Give parameters that the initializer left constant (norm weights, zero biases) random values."""
    for name, prm in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if prm.numel() < 2 or prm.is_meta:
            continue
        flat = prm.detach().reshape(-1)
        if bool((flat == flat[0]).all()):
            noise = torch.randn(prm.shape, dtype=torch.float32)
            if float(flat[0]) == 1.0:
                prm.copy_(1.0 + 0.1 * noise)
            else:
                prm.copy_(flat[0] + 0.05 * noise)


@torch.no_grad()
def _fix_lm_head(model, codebook: int) -> None:
    w = model.lm_head.weight
    w[codebook:].zero_()
    w[:codebook].mul_(LM_HEAD_CODEBOOK_SCALE)


def _seed(seed: int, k: int) -> None:
    torch.manual_seed(seed * 1000 + k)


def build_components(cfgs: dict, seed: int):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, GlmImageTransformer2DModel
    from transformers import ByT5Tokenizer, GlmImageConfig, GlmImageForConditionalGeneration, T5Config, T5EncoderModel

    dtype = torch.bfloat16 if cfgs["dtype"] == "bfloat16" else torch.float32
    cb = cfgs["layout"]["codebook_size"]

    # Each component is cast right after its float32 initialization (the values are those of a cast at the end;
    # the peak memory is one component in float32, which matters for the real-widths preset).
    _seed(seed, 1)
    vle_cfg = GlmImageConfig(**json.loads(json.dumps(cfgs["vision_language_encoder"])))
    vle = GlmImageForConditionalGeneration(vle_cfg).eval()
    _perturb_constant_params(vle)
    _fix_lm_head(vle, cb)
    vle.to(dtype)

    _seed(seed, 2)
    te = T5EncoderModel(T5Config(**cfgs["text_encoder"])).eval()
    _perturb_constant_params(te)
    te.to(dtype)

    _seed(seed, 3)
    dit = GlmImageTransformer2DModel(**cfgs["transformer"]).eval()
    _perturb_constant_params(dit)
    dit.to(dtype)

    _seed(seed, 4)
    vae = AutoencoderKL(**cfgs["vae"]).eval()
    _perturb_constant_params(vae)
    vae.to(dtype)

    sched_cfg = json.loads((real_configs_dir() / "scheduler" / "scheduler_config.json").read_text())
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(sched_cfg)
    # As in the real config.json files: "dtype" at the top level and inside text_config.
    vle.config.dtype = cfgs["dtype"]
    vle.config.text_config.dtype = cfgs["dtype"]
    te.config.dtype = cfgs["dtype"]

    glyph_tok = ByT5Tokenizer()
    return {"vision_language_encoder": vle, "text_encoder": te, "transformer": dit, "vae": vae,
            "scheduler": scheduler, "tokenizer": glyph_tok}


# --------------------------------------------------------------------------------------------------------
# processor
# --------------------------------------------------------------------------------------------------------


def _dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_processor_files(dst: Path, cfgs: dict) -> None:
    """The processor/ folder in the real layout, written canonically by this script."""
    lay = cfgs["layout"]
    cb = lay["codebook_size"]
    dst.mkdir(parents=True, exist_ok=True)
    if cfgs.get("preset") == REAL_WIDTHS:  # the text vocabulary padded so that the special ids are the real ones
        import make_real_size_checkpoint as rs

        tok_json = rs.real_tokenizer_json(lay)
    else:
        tok_json = toksynth.build_tokenizer_json(lay["vision_vocab_size"])
    (dst / "tokenizer.json").write_text(tok_json + "\n", encoding="utf-8")
    _dump_json(dst / "tokenizer_config.json", toksynth.tokenizer_config(cb))
    (dst / "chat_template.jinja").write_text(toksynth.chat_template(cb), encoding="utf-8")
    shutil.copyfile(real_configs_dir() / "processor" / "preprocessor_config.json", dst / "preprocessor_config.json")


def build_processor(cfgs: dict):
    from transformers import AutoImageProcessor, AutoTokenizer, GlmImageProcessor

    with tempfile.TemporaryDirectory() as td:
        write_processor_files(Path(td), cfgs)
        tok = AutoTokenizer.from_pretrained(td)
        ip = AutoImageProcessor.from_pretrained(td)
        chat = (Path(td) / "chat_template.jinja").read_text(encoding="utf-8")
    return GlmImageProcessor(image_processor=ip, tokenizer=tok, chat_template=chat)


# --------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------


def _fix_model_index(path: Path) -> None:
    """Give each component the library named in the real model_index.json.

    diffusers 0.39 records the library of a component from its module path and, because transformers'
    module ``transformers.models.glm_image`` has the same last name as diffusers' pipeline folder
    ``glm_image``, it writes ``["glm_image", ...]`` for GlmImageProcessor and GlmImageForConditionalGeneration.
    The real file says ``["transformers", ...]``.
    """
    real = json.loads((real_configs_dir() / "model_index.json").read_text())
    idx = json.loads(path.read_text())
    for key, value in idx.items():
        if key.startswith("_"):
            continue
        assert key in real and real[key][1] == value[1], (key, value, real.get(key))
        idx[key] = list(real[key])
    assert set(k for k in idx if not k.startswith("_")) == set(k for k in real if not k.startswith("_"))
    # same format as diffusers' ConfigMixin.to_json_string
    path.write_text(json.dumps(idx, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build(out: str | os.PathLike, preset: str = "tiny", dtype: str = "float32", seed: int = 0,
          layers: int | None = None) -> Path:
    from diffusers import GlmImagePipeline

    out = Path(out)
    cfgs = build_configs(preset, dtype, layers)
    comps = build_components(cfgs, seed)
    processor = build_processor(cfgs)
    pipe = GlmImagePipeline(processor=processor, **comps)

    if out.exists():
        if any(out.iterdir()) and not (out / "model_index.json").is_file():
            raise SystemExit(f"refusing to replace {out}: not empty and not a pipeline checkpoint")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as td:
        tmp = Path(td) / "ckpt"
        pipe.save_pretrained(tmp, safe_serialization=True)
        # processor/: replace what the generic saver wrote (processor_config.json with a nested image
        # processor, runtime keys in tokenizer_config.json) by the real layout's four files.
        shutil.rmtree(tmp / "processor")
        write_processor_files(tmp / "processor", cfgs)
        # scheduler/: the real scheduler_config.json verbatim.
        shutil.copyfile(real_configs_dir() / "scheduler" / "scheduler_config.json",
                        tmp / "scheduler" / "scheduler_config.json")
        _fix_model_index(tmp / "model_index.json")
        for f in tmp.rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)
        os.replace(tmp, out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output directory (replaced if it exists)")
    ap.add_argument("--preset", choices=PRESET_NAMES, default="tiny")
    ap.add_argument("--layers", type=int, default=None, metavar="N",
                    help="real-widths preset only: layers per stack (AR decoder, vision encoder, T5, DiT) [1]")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--print-layout", action="store_true", help="print the token-id layout and exit")
    args = ap.parse_args(argv)
    if args.print_layout:
        print(json.dumps(tokenizer_layout(args.preset), indent=2))
        return 0
    if args.layers is not None and (args.preset != REAL_WIDTHS or args.layers < 1):
        ap.error("--layers N (N >= 1) applies to --preset real-widths only")
    if not args.out:
        ap.error("--out is required")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = build(args.out, args.preset, args.dtype, args.seed, args.layers)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
