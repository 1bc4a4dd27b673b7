"""Glyph texts and the ByT5 ids / attention mask fed to the T5 glyph encoder, against the installed
GlmImagePipeline itself: its get_glyph_texts, and its _get_glyph_embeds run with its own tokenizer
(ByT5Tokenizer from models/tiny/tokenizer) and a text encoder that records its inputs."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO

from parity import record_exact

import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

TINY = REPO / "models" / "tiny"
TOKENIZER_DIR = TINY / "tokenizer"

SPACES = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())

PROMPTS = [
    "no quotes here",
    "",
    "A sign that says \"OPEN\" and 'Café'",
    "“你好” and 「世界」 and \"x\"",
    "it's a 'Hello' sign",
    "'single quoted'",
    "“curly double”",
    "\"straight double\"",
    "「corner brackets」",
    "「c」 \"b\" “a” 'd' then 'e'",                       # mixed kinds: grouped by kind, not position
    "\"outer 'inner' text\"",                              # nested: both kinds captured
    "“a“b”c”",                                             # nested curly: restarts at the inner opener
    "「x「y」z」",                                          # nested corner brackets
    "海报上写着“欢迎光临”和「新年快乐」，还有'2026'",
    "A cake with \"Happy 🎂 Birthday 🎉\" in icing",
    "'👨‍👩‍👧‍👦 family' and '🇨🇳' and “🙂”",                      # ZWJ sequence, flag, 4-byte code points
    "an 'unclosed quote",
    "say \"hello and 'bye'",
    "“never closed",
    "”oops” and 」no」 and ’x’",                            # closers without openers
    "'' and \"\" and “” and 「」",                           # empty captures
    "\"" + "长文本ABC" * 400 + "\" and 'short'",            # beyond max_sequence_length (bytes)
    "\"<pad>\" and '</s>' and “<unk>”",                     # special-token strings
    "\"a <pad> b\" 'x </s> y' “  <unk>  ”",                 # their lstrip/rstrip
    "\"<extra_id_0> <extra_id_124> <extra_id_125> <extra_id_1><extra_id_12>\"",
    "'hello</s>' and \"</s>\"",                             # eos already last: not repeated
    "\"line one\nline two\" and 'tab\there' and “cr\r\nlf”",  # newlines inside quotes
    # every Python whitespace character around special tokens
    "\"" + SPACES + "<pad>" + SPACES + "|" + SPACES + "</s>" + SPACES + "\"",
    "‘not a quote’ but 'yes'",                              # curly single quotes are not glyph quotes
    "'a' 'b' 'c' 'd' 'e'",                                  # odd count: no pad
    "'a' \"b\" “c” 「d」",                                   # even count: pad prepended to every text
    "Don't stop believin' 'til the 'end'",                 # apostrophes pair up in order
    "“it's”",
    "\"\"\"",
    "'e\u0301' and '𠀀𪚥' and '\ue000'",                     # combining mark, 4-byte CJK, private use
    "\"" + "a" * 3000 + "\"",
    "'x' " * 40,                                            # 40 texts
]

# (max_sequence_length, prompts): the default, and short limits that cut inside multi-byte characters and
# around special tokens.
EXTRA_SHORT = [
    "\"" + "a" * 10 + "<pad>" + "b" * 10 + "\"",
    "\"abcdefghijk</s>\" and 'xy'",
    "“你好世界你好世界”",
    "'🎂🎂🎂🎂' '<extra_id_7><extra_id_8>'",
]
CASES = [(2048, PROMPTS), (16, PROMPTS + EXTRA_SHORT), (5, PROMPTS + EXTRA_SHORT), (1, PROMPTS[:12] + EXTRA_SHORT),
         (12, EXTRA_SHORT)]


@pytest.fixture(scope="module")
def ref_pipe():
    from diffusers import GlmImagePipeline
    from transformers import ByT5Tokenizer

    pipe = GlmImagePipeline.from_pretrained(str(TINY))
    assert isinstance(pipe.tokenizer, ByT5Tokenizer)
    return pipe


def reference_glyph(pipe, prompt: str, max_len: int):
    """(texts, input_ids, attention_mask) exactly as _get_glyph_embeds hands them to the text encoder."""
    seen = {}

    def recorder(input_ids, attention_mask=None, **kwargs):
        seen["ids"], seen["mask"] = input_ids.clone(), attention_mask.clone()
        return SimpleNamespace(last_hidden_state=torch.zeros(*input_ids.shape, 4))

    enc = pipe.text_encoder
    enc.forward = recorder
    try:
        pipe._get_glyph_embeds(prompt, max_len, device=torch.device("cpu"), dtype=torch.float32)
    finally:
        del enc.forward
    return pipe.get_glyph_texts(prompt)[0], seen["ids"], seen["mask"]


def test_prompt_set_is_large():
    assert len(PROMPTS) >= 30


@pytest.mark.parity
@pytest.mark.parametrize("tokenizer_dir", [None, TOKENIZER_DIR], ids=["defaults", "tiny_tokenizer"])
@pytest.mark.parametrize("max_len,prompts", CASES, ids=[f"max{m}" for m, _ in CASES])
def test_glyph_tokens_match_pipeline(ref_pipe, max_len, prompts, tokenizer_dir):
    tok_dir = None if tokenizer_dir is None else str(tokenizer_dir)
    ours_ids, ref_ids, ours_mask, ref_mask = [], [], [], []
    failures = []
    for k, prompt in enumerate(prompts):
        ref_texts, r_ids, r_mask = reference_glyph(ref_pipe, prompt, max_len)
        texts, ids, mask = _testing.glyph_tokens(prompt, max_len, tok_dir)
        assert _testing.glyph_texts(prompt) == ref_texts, (k, prompt[:60])
        ok = (texts == (ref_texts or [""]) and ids.dtype == r_ids.dtype == torch.int64 and mask.dtype == r_mask.dtype
              and ids.shape == r_ids.shape and torch.equal(ids, r_ids) and torch.equal(mask, r_mask))
        if not ok:
            failures.append((k, prompt[:60], ids.shape, r_ids.shape))
        ours_ids.append(ids.flatten())
        ref_ids.append(r_ids.flatten())
        ours_mask.append(mask.flatten())
        ref_mask.append(r_mask.flatten())
    name = f"glyph_tokens_max{max_len}_{'defaults' if tokenizer_dir is None else 'tiny_tokenizer'}"
    e1 = record_exact(f"{name}_ids", torch.cat(ours_ids), torch.cat(ref_ids), prompts=len(prompts))
    e2 = record_exact(f"{name}_mask", torch.cat(ours_mask), torch.cat(ref_mask), prompts=len(prompts))
    assert not failures, failures
    assert e1["ok"] and e2["ok"]


@pytest.mark.parity
def test_byt5_encode_matches_tokenizer():
    """The tokenizer alone on strings that stress the added-token split and Python's whitespace strip."""
    from transformers import ByT5Tokenizer

    tok = ByT5Tokenizer.from_pretrained(str(TOKENIZER_DIR))
    texts = [
        "", "abc", "a <pad> b", "<pad><pad>", "<pad> </s>", " <unk> ", "x</s>", "</s>x", "<</s>>", "<<pad>",
        "<pad", "pad>", "<extra_id_1>0", "<extra_id_10>", "<extra_id_100><extra_id_1000>", "<Pad>",
        SPACES + "<pad>" + SPACES, "a" + SPACES + "</s>" + SPACES + "b", "\u200b<pad>\u200b",  # ZWSP is not space
        "\u180e<unk>\u180e", "é<pad>é", "🎂 </s> 🎂", "<extra_id_3>  <pad>  <extra_id_4>",
    ]
    ours, ref = [], []
    for t in texts:
        for max_len in (0, 1, 2, 3, 2048):
            kwargs = {"max_length": max_len, "truncation": True}
            r = tok([t], **kwargs).input_ids[0]
            for d in (None, str(TOKENIZER_DIR)):
                o = _testing.byt5_encode(t, max_len, d)
                assert o == r, (t, max_len, d, o, r)
                ours += o
                ref += r
    assert record_exact("byt5_encode_edge_cases", torch.tensor(ours), torch.tensor(ref), strings=len(texts))["ok"]


def test_invalid_max_length():
    import glmimage

    with pytest.raises(glmimage.InputError):
        _testing.glyph_tokens("'a'", -1)


@pytest.mark.parity
def test_glyph_tokens_fuzz(ref_pipe):
    """2000 random prompts built from quote characters, special-token strings, whitespace kinds and multi-byte
    text, with random max_sequence_length."""
    import random

    atoms = ["'"] * 4 + ['"'] * 3 + ["“", "”", "「", "」"] * 2 + [
        "‘", "’", "<pad>", "</s>", "<unk>", "<extra_id_0>", "<extra_id_99>", "<extra_", "<", ">", " ", "  ", "\n",
        "\t", "\u3000", "\xa0", "\x85", "\u200b", "a", "Z", "é", "你", "好", "🎂", "👨‍👩‍👧", "x" * 20, "abc def"]
    rng = random.Random(1)
    ours, ref = [], []
    for _ in range(2000):
        prompt = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 30)))
        max_len = rng.choice([0, 1, 2, 3, 5, 8, 16, 2048])
        r_texts, r_ids, r_mask = reference_glyph(ref_pipe, prompt, max_len)
        texts, ids, mask = _testing.glyph_tokens(prompt, max_len)
        ok = texts == (r_texts or [""]) and torch.equal(ids, r_ids) and torch.equal(mask, r_mask)
        assert ok, (prompt, max_len)
        ours += [ids.flatten(), mask.flatten()]
        ref += [r_ids.flatten(), r_mask.flatten()]
    assert record_exact("glyph_tokens_fuzz2000", torch.cat(ours), torch.cat(ref), prompts=2000)["ok"]


@pytest.mark.parity
def test_get_glyph_texts_as_diffusers(ref_pipe):
    """The public pipe.get_glyph_texts (glmimage::glyph_texts) gives diffusers' lists, for one prompt
    and for the whole set at once."""
    import glmimage

    ours = glmimage.Pipeline.from_pretrained(TINY)
    assert ours.get_glyph_texts(PROMPTS) == ref_pipe.get_glyph_texts(PROMPTS)
    assert ours.get_glyph_texts(PROMPTS[2]) == ref_pipe.get_glyph_texts(PROMPTS[2]) == [["Café", "OPEN"]]
    with pytest.raises(ValueError, match="list of str"):
        ours.get_glyph_texts(3)
