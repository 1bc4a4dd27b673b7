#!/usr/bin/env python3
"""Write a random-weight GLM-Image checkpoint at REAL size, in the exact layout of ``zai-org/GLM-Image``.

Usage::

    python3 tools/make_real_size_checkpoint.py --out DIR [--layers N] [--seed S]
    python3 tools/make_real_size_checkpoint.py --print-plan [--layers N]      # what would be written

What it is for: running glmimage on the real architecture when the real weights (about 36 GB) cannot be
downloaded, to measure memory and speed (load time, residency, AR tokens/s, DiT steps/s, VAE decode) and to
check that the loader accepts the real key names, shapes and sharding. It is NOT for image quality: the
weights are random and the image is noise. (``tools/make_tiny_checkpoint.py`` builds the small checkpoints
that the parity tests compare against the reference; this one uses no reference class at all.)

Output (the real repository's layout)::

    DIR/model_index.json                 tests/data/real-configs/model_index.json, verbatim
    DIR/vision_language_encoder/         config.json (real; layer counts changed with --layers),
                                         generation_config.json (the tiny maker's keys, real eos / pad ids),
                                         model-0000k-of-0000K.safetensors + model.safetensors.index.json
    DIR/text_encoder/                    config.json, model.safetensors (below one shard: no index)
    DIR/transformer/                     config.json, diffusion_pytorch_model-0000k-of-0000K.safetensors
                                         + diffusion_pytorch_model.safetensors.index.json
    DIR/vae/                             config.json, diffusion_pytorch_model.safetensors
    DIR/processor/                       tokenizer.json, tokenizer_config.json, chat_template.jinja,
                                         preprocessor_config.json (the tiny maker's write_processor_files,
                                         with the real numbers; see "tokenizer" below)
    DIR/tokenizer/                       transformers ByT5Tokenizer() defaults (as the tiny maker)
    DIR/scheduler/                       scheduler_config.json, the real file verbatim

Tensors: exactly those of ``models/manifests/<component>.json`` (name, shape, BF16), i.e. the keys that
``save_pretrained`` writes for the real configuration. With ``--layers N`` every width stays real but each
layer stack keeps only its first N layers (tensors whose layer index is >= N are left out) and the configs
say so:

    vision_language_encoder  model.language_model.layers.<i>.   text_config.num_hidden_layers (real 40)
                             model.visual.blocks.<i>.           vision_config.depth           (real 40)
    text_encoder             encoder.block.<i>.                 num_layers                    (real 12)
    transformer              transformer_blocks.<i>.            num_layers                    (real 30)
    vae                      not reduced (0.4 B parameters)

Sharding as ``save_pretrained`` does it: tensors in manifest order go into shards of at most --shard-gb
(default 5, i.e. 5e9 bytes; a single larger tensor gets a shard of its own), named
``model-00001-of-0000K.safetensors`` (transformers components) or
``diffusion_pytorch_model-00001-of-0000K.safetensors`` (diffusers components), with
``*.safetensors.index.json`` = ``{"metadata": {"total_size": <tensor bytes>}, "weight_map": {key: shard}}``.
A component that fits in one shard is a single ``model.safetensors`` / ``diffusion_pytorch_model.safetensors``.

Streaming: the safetensors files are written here directly (8-byte little-endian header length, JSON header
padded with spaces to a multiple of 8, ``__metadata__`` {"format": "pt"}, tensors contiguous in header order).
Each tensor is generated chunk by chunk (float32 normal_ into a fixed buffer, cast into one of two bf16
buffers) and written at once by a background thread while the next chunk is generated, so the peak memory is about the chunk buffers plus torch (well under 2 GB) however large
the checkpoint is. Every file is fsync'ed, so the MB/s printed at the end is the disk's, not the page cache's.
One process writes about 200 MB/s (the normal_ draws bound it); ``--jobs N`` writes N shards at once in N
processes, each with its own buffers, giving the same bytes.
The whole checkpoint is written into a temporary folder beside DIR and renamed at the end.

Weights (chosen so that fp32 / bf16 activations stay finite through all 40 + 40 + 12 + 30 layers):

* 1-D ``*.weight`` (every RMSNorm / LayerNorm / GroupNorm weight): 1; every ``*.bias``: 0.
* embeddings (``embed_tokens``, T5 ``shared``, the vision position table, the DiT ``prior_token_embedding``,
  the T5 relative attention bias): N(0, 0.02).
* the VQ codebook ``model.vqmodel.quantize.embedding.weight``: N(0, 1) (it is L2-normalized when used).
* every other matrix / conv kernel: N(0, 1/fan_in), fan_in = prod(shape[1:]), so a projection keeps the
  variance of its input. Projections that end a residual branch (AR ``o_proj`` / ``down_proj``, vision
  ``attn.proj`` / ``mlp.fc2``, T5 ``o`` / ``wo``, DiT ``to_out.0`` / ``ff.net.2`` / ``proj_out``, VAE
  resnet ``conv2``) are scaled further by 1/sqrt(2 L), L the real depth of their stack, so the residual
  stream grows by O(1) over the whole stack; T5 ``q`` by 1/sqrt(d_kv) (T5 does not scale its scores).
* ``lm_head`` as the tiny maker's ``_fix_lm_head``: the rows of every id >= codebook size (16384: image
  start, image end and the 126 extra vision ids) are ZERO, the codebook rows are N(0, s) multiplied by
  ``make_tiny_checkpoint.LM_HEAD_CODEBOOK_SCALE`` (64), s chosen so that the codebook logits have a
  standard deviation of about 15 (the final RMSNorm output has unit RMS) -- the regime the tiny maker
  measured safe -- so a sampled generation stays inside the codebook and runs to max_new_tokens.

Tokenizer (processor/tokenizer.json): ``tools/_tokenizer_synth.py`` builds the structure (16512
``<|dit_token_N|>`` added tokens, the byte-level BPE learned from its corpus, the 16 GLM special tokens)
from ``build_tokenizer_json(vision_vocab_size=16512)``; its text vocabulary is small, so this tool pads it
with unreachable filler entries ``<|unused_text_K|>`` (in the BPE vocabulary only, no merge produces them)
up to the real GLM-4 size (151329 text tokens), which puts the special tokens at their REAL ids:
``<|endoftext|>`` = 167841 (text_config.pad_token_id), ``<sop>`` 167845, ``<eop>`` 167846,
``<|image|>`` = 167855 (image_token_id), 167857 ids in all (text_config.vocab_size 168064 is padded).

Determinism: each tensor's values come from its own generator seeded from (--seed, component, name), so two
runs with the same --seed give byte-identical files, and a tensor has the same values whatever --layers or
--shard-gb is (layer 0 of a --layers 1 checkpoint is layer 0 of the full one). JSON written here is
canonical; no path of the output directory is written into any file.
"""

from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import _tokenizer_synth as toksynth  # noqa: E402
import make_tiny_checkpoint as tiny  # noqa: E402

REPO = HERE.parent
MANIFEST_DIR = REPO / "models" / "manifests"

SHARD_BYTES = 5 * 10**9  # save_pretrained's "5GB"
BF16_BYTES = 2
EMBED_STD = 0.02
LM_HEAD_LOGIT_STD = 15.0
LM_HEAD_CODEBOOK_SCALE = tiny.LM_HEAD_CODEBOOK_SCALE
CHUNK_ELEMS = 1 << 23  # 32 MB float32 + 16 MB bf16 buffers
FILLER_TOKEN = "<|unused_text_{}|>"

# Weight-bearing components: library (decides the weight file names) and the config file.
COMPONENTS = {
    "vision_language_encoder": {"library": "transformers", "stem": "model"},
    "text_encoder": {"library": "transformers", "stem": "model"},
    "transformer": {"library": "diffusers", "stem": "diffusion_pytorch_model"},
    "vae": {"library": "diffusers", "stem": "diffusion_pytorch_model"},
}
CONFIG_ONLY = ("processor", "tokenizer", "scheduler")


@dataclass(frozen=True)
class Stack:
    component: str
    label: str
    pattern: str  # regex matched at the start of a tensor name; group 1 = the layer index
    config_keys: tuple  # paths into config.json of the layer count; the first is required
    residual_out: str  # regex (search) of the tensors that end a residual branch in this stack


STACKS = (
    Stack("vision_language_encoder", "AR text decoder", r"model\.language_model\.layers\.(\d+)\.",
          (("text_config", "num_hidden_layers"),), r"\.(self_attn\.o_proj|mlp\.down_proj)\.weight$"),
    Stack("vision_language_encoder", "vision encoder", r"model\.visual\.blocks\.(\d+)\.",
          (("vision_config", "depth"),), r"\.(attn\.proj|mlp\.fc2)\.weight$"),
    Stack("text_encoder", "T5 encoder", r"encoder\.block\.(\d+)\.",
          (("num_layers",), ("num_decoder_layers",)), r"\.(SelfAttention\.o|DenseReluDense\.wo)\.weight$"),
    Stack("transformer", "DiT", r"transformer_blocks\.(\d+)\.",
          (("num_layers",),), r"\.(attn1\.to_out\.0|ff\.net\.2)\.weight$"),
)
# Anything that looks like a layer index must belong to one of the stacks above (VAE excepted).
LAYER_LIKE = re.compile(r"(^|\.)(layers|blocks|block|transformer_blocks)\.\d+\.")

EMBEDDINGS = re.compile(
    r"(^|\.)(embed_tokens|shared|position_embedding|prior_token_embedding|relative_attention_bias)\.weight$")
VQ_CODEBOOK = "model.vqmodel.quantize.embedding.weight"
LM_HEAD = "lm_head.weight"
DIT_PROJ_OUT = "proj_out.weight"  # the DiT's last projection (outside the blocks)
VAE_RESNET_CONV2 = re.compile(r"\.resnets\.\d+\.conv2\.weight$")
VAE_RESIDUAL_DEPTH = 18  # resnets of the decoder: 2 in the mid block + 4 up blocks x 4
T5_QUERY = re.compile(r"\.SelfAttention\.q\.weight$")


# --------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------


def real_configs_dir() -> Path:
    return tiny.real_configs_dir()


def load_manifest(component: str) -> dict:
    return json.loads((MANIFEST_DIR / f"{component}.json").read_text())


def load_real_config(component: str) -> dict:
    return json.loads((real_configs_dir() / component / "config.json").read_text())


def _get(cfg: dict, path: tuple):
    for k in path:
        cfg = cfg[k]
    return cfg


def _has(cfg: dict, path: tuple) -> bool:
    for k in path:
        if not isinstance(cfg, dict) or k not in cfg:
            return False
        cfg = cfg[k]
    return True


def _set(cfg: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        cfg = cfg[k]
    cfg[path[-1]] = value


def stack_of(component: str, name: str):
    """(Stack, layer index) of a tensor name, or (None, None)."""
    for st in STACKS:
        if st.component == component:
            m = re.match(st.pattern, name)
            if m:
                return st, int(m.group(1))
    return None, None


# --------------------------------------------------------------------------------------------------------
# the plan: configs, tensors (with their initialization), shards
# --------------------------------------------------------------------------------------------------------


def init_spec(component: str, name: str, shape: list[int], real_cfgs: dict) -> dict:
    """How a tensor is filled: {"kind": "const", "value"} | {"kind": "normal", "std"} |
    {"kind": "lm_head", "std", "rows", "scale"} (first `rows` rows N(0, std) * scale, the rest zero)."""
    if name.endswith(".bias"):
        return {"kind": "const", "value": 0.0}
    if len(shape) == 1 and name.endswith(".weight"):
        return {"kind": "const", "value": 1.0}  # every 1-D weight of these models is a norm weight
    if component == "vision_language_encoder" and name == VQ_CODEBOOK:
        return {"kind": "normal", "std": 1.0}
    if component == "vision_language_encoder" and name == LM_HEAD:
        vle = real_cfgs["vision_language_encoder"]
        codebook = vle["vq_config"]["num_embeddings"]
        hidden = vle["text_config"]["hidden_size"]
        assert shape == [vle["text_config"]["vision_vocab_size"], hidden], shape
        std = LM_HEAD_LOGIT_STD / (LM_HEAD_CODEBOOK_SCALE * math.sqrt(hidden))
        return {"kind": "lm_head", "std": std, "rows": codebook, "scale": LM_HEAD_CODEBOOK_SCALE}
    if EMBEDDINGS.search(name):
        return {"kind": "normal", "std": EMBED_STD}
    fan_in = math.prod(shape[1:])
    std = 1.0 / math.sqrt(fan_in)
    st, _ = stack_of(component, name)
    if st is not None and re.search(st.residual_out, name):
        std /= math.sqrt(2 * _get(real_cfgs[component], st.config_keys[0]))
    elif component == "transformer" and name == DIT_PROJ_OUT:
        std /= math.sqrt(2 * real_cfgs["transformer"]["num_layers"])
    elif component == "vae" and VAE_RESNET_CONV2.search(name):
        std /= math.sqrt(2 * VAE_RESIDUAL_DEPTH)
    if component == "text_encoder" and T5_QUERY.search(name):
        std /= math.sqrt(real_cfgs["text_encoder"]["d_kv"])
    return {"kind": "normal", "std": std}


def weight_file_names(component: str, num_shards: int) -> tuple[list[str], str | None]:
    stem = COMPONENTS[component]["stem"]
    if num_shards == 1:
        return [f"{stem}.safetensors"], None
    return ([f"{stem}-{k + 1:05d}-of-{num_shards:05d}.safetensors" for k in range(num_shards)],
            f"{stem}.safetensors.index.json")


def shard_tensors(tensors: list[dict], shard_bytes: int) -> list[list[dict]]:
    """Split as huggingface_hub's split_state_dict_into_shards does: in order, a new shard when the next
    tensor would overflow the current one; a tensor larger than a shard gets a shard of its own."""
    shards: list[list[dict]] = []
    cur: list[dict] = []
    cur_bytes = 0
    for t in tensors:
        if t["nbytes"] > shard_bytes:
            shards.append([t])
            continue
        if cur and cur_bytes + t["nbytes"] > shard_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(t)
        cur_bytes += t["nbytes"]
    if cur:
        shards.append(cur)
    return shards


def make_plan(layers: int | None = None, shard_bytes: int = SHARD_BYTES) -> dict:
    """Everything that would be written, without writing: {component: plan} for the four weight-bearing
    components. A component plan has: library, class, config (the dict for config.json), config_changed,
    layers ({stack label: [kept, real]}), tensors ([{name, shape, dtype, nbytes, init}] in file order),
    num_parameters, total_bytes, shards ([{file, tensors: [names], bytes}]), index_file and index (None for
    a single file)."""
    if layers is not None and layers < 1:
        raise ValueError(f"--layers must be >= 1, got {layers}")
    real_cfgs = {c: load_real_config(c) for c in COMPONENTS}
    model_index = json.loads((real_configs_dir() / "model_index.json").read_text())
    plan: dict = {}
    for comp, info in COMPONENTS.items():
        man = load_manifest(comp)
        assert man["component"] == comp and man["library"] == info["library"], (comp, man["library"])
        assert model_index[comp] == [info["library"], man["class"]], (comp, model_index[comp])
        cfg = copy.deepcopy(real_cfgs[comp])
        stacks = [st for st in STACKS if st.component == comp]
        # The manifest's layer indices must be exactly 0..L-1 with L the config's count.
        seen = {st.label: set() for st in stacks}
        for t in man["tensors"]:
            st, i = stack_of(comp, t["name"])
            if st is not None:
                seen[st.label].add(i)
            elif comp != "vae" and LAYER_LIKE.search(t["name"]):
                raise AssertionError(f"{comp}: '{t['name']}' looks like a layer but matches no stack")
        kept = {}
        for st in stacks:
            real_n = _get(cfg, st.config_keys[0])
            assert seen[st.label] == set(range(real_n)), (comp, st.label, real_n, sorted(seen[st.label]))
            n = real_n if layers is None else min(layers, real_n)
            kept[st.label] = [n, real_n]
            for path in st.config_keys:
                if _has(cfg, path):
                    _set(cfg, path, n)
        tensors = []
        for t in man["tensors"]:
            assert t["dtype"] == "BF16", t
            st, i = stack_of(comp, t["name"])
            if st is not None and i >= kept[st.label][0]:
                continue
            shape = list(t["shape"])
            tensors.append({"name": t["name"], "shape": shape, "dtype": "BF16",
                            "nbytes": math.prod(shape) * BF16_BYTES,
                            "init": init_spec(comp, t["name"], shape, real_cfgs)})
        groups = shard_tensors(tensors, shard_bytes)
        files, index_file = weight_file_names(comp, len(groups))
        shards = [{"file": f, "tensors": [t["name"] for t in g], "bytes": sum(t["nbytes"] for t in g)}
                  for f, g in zip(files, groups)]
        total = sum(t["nbytes"] for t in tensors)
        index = None
        if index_file:
            index = {"metadata": {"total_size": total},
                     "weight_map": {n: s["file"] for s in shards for n in s["tensors"]}}
            index["weight_map"] = dict(sorted(index["weight_map"].items()))
        plan[comp] = {
            "library": info["library"], "class": man["class"], "config": cfg,
            "config_changed": cfg != real_cfgs[comp], "layers": kept, "tensors": tensors,
            "num_parameters": sum(math.prod(t["shape"]) for t in tensors), "total_bytes": total,
            "shards": shards, "index_file": index_file, "index": index,
        }
    return plan


def generation_config(vle_cfg: dict) -> dict:
    """vision_language_encoder/generation_config.json: the keys transformers writes from the model config
    (as in the tiny checkpoint), with the real eos / pad ids."""
    try:
        from importlib.metadata import version

        tf_version = version("transformers")
    except Exception:  # pragma: no cover - transformers not installed
        tf_version = "5.24.0"
    text = vle_cfg["text_config"]
    return {"_from_model_config": True, "eos_token_id": text["eos_token_id"], "output_attentions": False,
            "output_hidden_states": False, "pad_token_id": text["pad_token_id"],
            "transformers_version": tf_version, "use_cache": True}


# --------------------------------------------------------------------------------------------------------
# tokenizer with the real ids
# --------------------------------------------------------------------------------------------------------


def real_token_layout(vle_cfg: dict) -> dict:
    """The real token-id numbers, from the real vision_language_encoder config."""
    text = vle_cfg["text_config"]
    specials = toksynth.GLM_SPECIAL_TOKENS
    first_special = text["pad_token_id"]  # <|endoftext|>, GLM-4's first special token
    lay = {
        "vision_vocab_size": text["vision_vocab_size"],
        "codebook_size": vle_cfg["vq_config"]["num_embeddings"],
        "image_start_token_id": vle_cfg["image_start_token_id"],
        "image_end_token_id": vle_cfg["image_end_token_id"],
        "text_vocab_first_id": text["vision_vocab_size"],
        "text_vocab_size": first_special - text["vision_vocab_size"],
        "special_tokens": {s: first_special + k for k, s in enumerate(specials)},
        "total_size": first_special + len(specials),
        "vocab_size": text["vocab_size"],
    }
    assert lay["special_tokens"]["<|image|>"] == vle_cfg["image_token_id"], lay
    assert lay["image_start_token_id"] == lay["codebook_size"] and lay["image_end_token_id"] == lay["codebook_size"] + 1
    assert text["eos_token_id"] == lay["image_end_token_id"]
    assert lay["total_size"] <= lay["vocab_size"]
    return lay


def real_tokenizer_json(lay: dict) -> str:
    """The synthesized tokenizer of _tokenizer_synth for the real vision vocabulary, its text vocabulary
    padded with unreachable filler entries so that the GLM special tokens get their real ids."""
    from tokenizers import Tokenizer

    vv = lay["vision_vocab_size"]
    spec = json.loads(toksynth.build_tokenizer_json(vv))
    vocab = spec["model"]["vocab"]
    specials = toksynth.GLM_SPECIAL_TOKENS
    synth_first_special = vocab[specials[0]]
    target_first_special = lay["special_tokens"][specials[0]]
    n_fill = target_first_special - synth_first_special
    assert n_fill >= 0, (synth_first_special, target_first_special)
    keep = sorted(((i, t) for t, i in vocab.items() if i < synth_first_special), key=lambda x: x[0])
    assert [i for i, _ in keep] == list(range(synth_first_special)), "synthesized vocabulary has gaps"
    new_vocab = {t: i for i, t in keep}
    for k in range(n_fill):
        tok = FILLER_TOKEN.format(k)
        assert tok not in new_vocab, tok
        new_vocab[tok] = synth_first_special + k
    for s in specials:
        new_vocab[s] = lay["special_tokens"][s]
    spec["model"]["vocab"] = new_vocab
    for a in spec["added_tokens"]:
        if a["content"] in lay["special_tokens"]:
            a["id"] = lay["special_tokens"][a["content"]]
    tok = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    for s, i in lay["special_tokens"].items():
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s), i)
    for i in (0, lay["codebook_size"], lay["codebook_size"] + 1, vv - 1):
        assert tok.token_to_id(toksynth.dit_token(i)) == i
    assert tok.get_vocab_size(with_added_tokens=True) == lay["total_size"]
    return tok.to_str(pretty=True)


# --------------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------------


def tensor_seed(seed: int, component: str, name: str) -> int:
    h = hashlib.sha256(f"{seed}\0{component}\0{name}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


class _Buffers:
    """Chunk buffers: one float32 for normal_, two bf16 ones (one filled while the other is written) and the
    constant chunks."""

    def __init__(self):
        self.f32 = torch.empty(CHUNK_ELEMS, dtype=torch.float32)
        self.bf16 = [torch.empty(CHUNK_ELEMS, dtype=torch.bfloat16) for _ in range(2)]
        self.const = {}

    def const_chunk(self, value: float) -> torch.Tensor:
        if value not in self.const:
            self.const[value] = torch.full((CHUNK_ELEMS,), value, dtype=torch.bfloat16)
        return self.const[value]


def _write_bf16(f, t: torch.Tensor) -> None:
    mv = memoryview(t.view(torch.int16).numpy()).cast("B")  # little-endian bf16 bits, no copy
    while mv:
        mv = mv[f.write(mv):]  # a raw write may be short


class _StreamWriter:
    """Writes chunks in submission order on one background thread (file writes and torch's normal_ both
    release the GIL), so generating the next chunk overlaps writing the previous one."""

    def __init__(self, f, bufs: _Buffers):
        from concurrent.futures import ThreadPoolExecutor

        self.f, self.bufs = f, bufs
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.busy = [None, None]  # the pending write of each bf16 buffer
        self.pending = collections.deque()
        self.turn = 0

    def _submit(self, t: torch.Tensor):
        while self.pending and self.pending[0].done():
            self.pending.popleft().result()  # raises a failed write
        fut = self.pool.submit(_write_bf16, self.f, t)
        self.pending.append(fut)
        return fut

    def write_const(self, t: torch.Tensor) -> None:  # a read-only constant chunk
        self._submit(t)

    def next_buffer(self) -> tuple[int, torch.Tensor]:
        i = self.turn
        self.turn ^= 1
        if self.busy[i] is not None:
            self.busy[i].result()  # also raises a failed write
        return i, self.bufs.bf16[i]

    def write_buffer(self, i: int, t: torch.Tensor) -> None:
        self.busy[i] = self._submit(t)

    def close(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True)


def _write_tensor(w: _StreamWriter, component: str, t: dict, seed: int) -> None:
    n = math.prod(t["shape"])
    init = t["init"]
    if init["kind"] == "const":
        c = w.bufs.const_chunk(init["value"])
        for off in range(0, n, CHUNK_ELEMS):
            w.write_const(c[:min(CHUNK_ELEMS, n - off)])
        return
    g = torch.Generator()
    g.manual_seed(tensor_seed(seed, component, t["name"]))
    if init["kind"] == "lm_head":
        n_rand = init["rows"] * math.prod(t["shape"][1:])
        std, scale = init["std"], init["scale"]
    else:
        n_rand, std, scale = n, init["std"], 1.0
    for off in range(0, n_rand, CHUNK_ELEMS):
        k = min(CHUNK_ELEMS, n_rand - off)
        x = w.bufs.f32[:k].normal_(0.0, std, generator=g)
        if scale != 1.0:
            x.mul_(scale)
        i, buf = w.next_buffer()
        w.write_buffer(i, buf[:k].copy_(x))
    if n_rand < n:
        z = w.bufs.const_chunk(0.0)
        for off in range(n_rand, n, CHUNK_ELEMS):
            w.write_const(z[:min(CHUNK_ELEMS, n - off)])


def safetensors_header(tensors: list[dict]) -> bytes:
    """8-byte little-endian length + the JSON header (space-padded to a multiple of 8, as safetensors)."""
    header: dict = {"__metadata__": {"format": "pt"}}
    off = 0
    for t in tensors:
        header[t["name"]] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [off, off + t["nbytes"]]}
        off += t["nbytes"]
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h


def write_safetensors(path: Path, component: str, tensors: list[dict], seed: int, bufs: _Buffers) -> int:
    head = safetensors_header(tensors)
    with open(path, "wb", buffering=0) as f:
        f.write(head)
        w = _StreamWriter(f, bufs)
        try:
            for t in tensors:
                _write_tensor(w, component, t, seed)
        finally:
            w.close()
        os.fsync(f.fileno())
    size = path.stat().st_size
    expected = len(head) + sum(t["nbytes"] for t in tensors)
    if size != expected:
        raise RuntimeError(f"{path}: wrote {size} bytes, expected {expected}")
    return size


def _dump_json(path: Path, obj, sort_keys: bool = False) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n", encoding="utf-8")


def write_configs(root: Path, plan: dict) -> None:
    real = real_configs_dir()
    shutil.copyfile(real / "model_index.json", root / "model_index.json")
    for comp, p in plan.items():
        d = root / comp
        d.mkdir(parents=True, exist_ok=True)
        if p["config_changed"]:
            _dump_json(d / "config.json", p["config"])
        else:
            shutil.copyfile(real / comp / "config.json", d / "config.json")
        if p["index"] is not None:
            _dump_json(d / p["index_file"], p["index"])
    vle = plan["vision_language_encoder"]["config"]
    _dump_json(root / "vision_language_encoder" / "generation_config.json", generation_config(vle), sort_keys=True)

    # processor/: the tiny maker's four files with the real numbers; tokenizer.json is then replaced by the
    # synthesized tokenizer padded to the real special-token ids (write_processor_files writes the unpadded
    # one, whose special tokens sit right after the small synthesized text vocabulary).
    lay = real_token_layout(vle)
    proc = root / "processor"
    tiny.write_processor_files(proc, {"layout": lay})
    (proc / "tokenizer.json").write_text(real_tokenizer_json(lay) + "\n", encoding="utf-8")

    # tokenizer/: ByT5Tokenizer() defaults, as the tiny maker saves them.
    from transformers import ByT5Tokenizer

    ByT5Tokenizer().save_pretrained(str(root / "tokenizer"))
    (root / "scheduler").mkdir(exist_ok=True)
    shutil.copyfile(real / "scheduler" / "scheduler_config.json", root / "scheduler" / "scheduler_config.json")


def _write_shard(path: str, component: str, tensors: list[dict], seed: int,
                 bufs: _Buffers | None = None) -> tuple[int, float]:
    """One shard: (bytes, seconds)."""
    ts = time.perf_counter()
    size = write_safetensors(Path(path), component, tensors, seed, bufs or _Buffers())
    return size, time.perf_counter() - ts


def _write_shard_job(path: str, component: str, tensors: list[dict], seed: int) -> tuple[int, float]:
    """One shard in a worker process (--jobs), on one thread."""
    torch.set_num_threads(1)
    return _write_shard(path, component, tensors, seed)


def build(out: str | os.PathLike, layers: int | None = None, seed: int = 0, shard_bytes: int = SHARD_BYTES,
          log=print, jobs: int = 1) -> dict:
    """Write the checkpoint; returns {"path", "weight_bytes", "seconds", "mb_per_s"}. jobs > 1 writes that many
    shards at once, each in its own process (the files are the same: every tensor has its own generator)."""
    out = Path(out)
    plan = make_plan(layers, shard_bytes)
    need = sum(p["total_bytes"] for p in plan.values())
    if out.exists():
        if any(out.iterdir()) and not (out / "model_index.json").is_file():
            raise SystemExit(f"refusing to replace {out}: not empty and not a pipeline checkpoint")
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if free < need + 200 * 10**6:
        raise SystemExit(f"not enough disk space in {out.parent}: need {need / 1e9:.2f} GB, "
                         f"{free / 1e9:.2f} GB free")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=out.name + ".tmp-") as td:
        tmp = Path(td) / "ckpt"
        tmp.mkdir()
        write_configs(tmp, plan)
        shards = []  # (component, file, tensors), the largest first so that parallel jobs finish together
        for comp, p in plan.items():
            for s in p["shards"]:
                names = set(s["tensors"])
                shards.append((comp, s["file"], [t for t in p["tensors"] if t["name"] in names]))
        shards.sort(key=lambda c: -sum(t["nbytes"] for t in c[2]))
        t0 = time.perf_counter()
        written = 0

        def logged(comp, file, tensors, size, dt):
            log(f"  {comp}/{file}: {len(tensors)} tensors, {size / 1e9:.3f} GB, "
                f"{size / 1e6 / max(dt, 1e-9):.0f} MB/s", file=sys.stderr)
            return size

        jobs = min(jobs, len(shards))
        if jobs <= 1:
            bufs = _Buffers()
            for comp, file, tensors in shards:
                written += logged(comp, file, tensors, *_write_shard(str(tmp / comp / file), comp, tensors, seed, bufs))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn, not fork: the parent's torch may hold threads a fork would copy half-made
            pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
            try:
                futures = {pool.submit(_write_shard_job, str(tmp / comp / file), comp, tensors, seed):
                           (comp, file, tensors) for comp, file, tensors in shards}
                for fut in as_completed(futures):
                    written += logged(*futures[fut], *fut.result())
            except BaseException:
                # A failed shard (or Ctrl-C) ends the build: the queued shards are not started,
                # the running ones finish, then the temporary folder goes.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
        seconds = time.perf_counter() - t0
        for f in tmp.rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    return {"path": out, "weight_bytes": written, "seconds": seconds,
            "mb_per_s": written / 1e6 / max(seconds, 1e-9)}


def plan_summary(plan: dict) -> str:
    lines = []
    total_p = total_b = 0
    for comp, p in plan.items():
        total_p += p["num_parameters"]
        total_b += p["total_bytes"]
        lay = ", ".join(f"{k} {n}/{r} layers" for k, (n, r) in p["layers"].items())
        lines.append(f"{comp} [{p['class']}]: {len(p['tensors'])} tensors, {p['num_parameters']:,} parameters, "
                     f"{p['total_bytes'] / 1e9:.3f} GB in {len(p['shards'])} file(s)" + (f"; {lay}" if lay else ""))
        for s in p["shards"]:
            lines.append(f"    {s['file']}: {len(s['tensors'])} tensors, {s['bytes'] / 1e9:.3f} GB")
    lines.append(f"total: {total_p:,} parameters, {total_b / 1e9:.3f} GB of BF16 tensor data")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output directory; replaced if it already holds a checkpoint (model_index.json), "
                    "refused if it holds anything else. Written via a temporary folder beside it.")
    ap.add_argument("--layers", type=int, default=None, metavar="N",
                    help="keep only the first N layers of every layer stack (AR text decoder 40, vision encoder 40, "
                         "T5 12, DiT 30; a stack with fewer keeps all), every width real, and write the configs "
                         "with those layer counts; the VAE is always complete [default: all layers, ~36 GB]")
    ap.add_argument("--seed", type=int, default=0,
                    help="random seed; each tensor is seeded from (seed, component, name), so the output is "
                         "byte-identical for a given seed and a tensor does not depend on --layers [0]")
    ap.add_argument("--shard-gb", type=float, default=SHARD_BYTES / 1e9,
                    help="maximum shard size in GB (1e9 bytes), as save_pretrained's max_shard_size [5]")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads [1]")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="write N shards at once, each in its own process of one thread (the same bytes; "
                         "the writer is CPU-bound, about 200 MB/s a process, so N up to the cores or the "
                         "disk's speed; --threads then does not apply) [1]")
    ap.add_argument("--print-plan", action="store_true",
                    help="print what would be written (files, tensors, parameters, sizes) and exit")
    args = ap.parse_args(argv)
    if args.layers is not None and args.layers < 1:
        ap.error("--layers must be >= 1")
    shard_bytes = int(args.shard_gb * 1e9)
    if shard_bytes <= 0:
        ap.error("--shard-gb must be positive")
    if args.print_plan:
        print(plan_summary(make_plan(args.layers, shard_bytes)))
        return 0
    if not args.out:
        ap.error("--out is required (or --print-plan)")
    torch.set_num_threads(max(1, args.threads))
    t0 = time.perf_counter()
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    r = build(args.out, args.layers, args.seed, shard_bytes, jobs=args.jobs)
    total = sum(f.stat().st_size for f in Path(r["path"]).rglob("*") if f.is_file())
    print(f"wrote {r['path']} ({total / 1e9:.3f} GB in {time.perf_counter() - t0:.1f} s); weights "
          f"{r['weight_bytes'] / 1e9:.3f} GB in {r['seconds']:.1f} s = {r['mb_per_s']:.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
