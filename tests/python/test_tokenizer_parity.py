"""The C++ GLM tokenizer (src/tokenizers/bpe_tokenizer.cpp) against the `tokenizers` library on
the embedded processor/tokenizer.json: identical ids on 10,000+ deterministic strings (English,
Chinese, digits, whitespace runs, emoji, every added token embedded, contractions, odd and random
Unicode), decode equality and round trips, variants of the file that exercise lstrip / rstrip /
normalized added tokens, ignore_merges and the GPT-2 ByteLevel regex, and clear errors on
malformed files."""

from __future__ import annotations

import json
import random
import time

import pytest
import torch
from conftest import REPO

from parity import record_exact

import glmimage
import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

TOKENIZER_JSON = REPO / "models" / "tiny" / "processor" / "tokenizer.json"

WORDS = ("the a an of and to in is it that with for on as by at from this be are was were poster title "
         "cat dog sunset city night neon sign coffee menu price sale open hello world GLM Image text "
         "Beijing Shanghai photo realistic 4K HDR ultra detailed don't can't I'm we've they'll she'd it's "
         "OpenAI Zhipu CamelCase snake_case kebab-case URL https://example.com/a?b=c&d=e email@x.org").split()
CJK_PUNCT = "，。！？：；、“”‘’（）《》【】…—·「」"
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\xa0", "\u3000", "\u2000", "\u2009", "\u200a",
              "\u2028", "\u2029", "\x85", "\u180e", "\x1c", "\x1f", "\u200b", "\ufeff", "\u202f", "\u205f", "\u1680"]
EMOJI = ["😀", "🎉", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳\ufe0f\u200d🌈", "🇨🇳", "🇺🇸", "❤\ufe0f", "🧑🏿\u200d🚀",
         "✌\ufe0e", "#\ufe0f\u20e3", "🫠", "👩\u200d❤\ufe0f\u200d💋\u200d👨"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'lL", "'D",
                "'ſ", "'K", "’s", "''", "'x", "'"]
ODD = ["e\u0301", "a\u0300\u0301\u0302", "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627", "\u200f",
       "\u202e", "\u202d", "\ue000", "\uf8ff", "\U000f0000", "\U0010fffd", "\ufffe", "\uffff", "\x00", "\x07",
       "\x7f", "\u0378", "한국어", "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
       "\U0001d400\U0001d41a", "\u2460\u00b2\u00bd", "\u0663\u0664", "\uff13\uff12", "ﬁ", "ß", "İ", "Ⅻ", "\u1e9e"]


def added_tokens() -> list[str]:
    return [t["content"] for t in json.loads(TOKENIZER_JSON.read_text())["added_tokens"]]


def generate_strings(n: int = 10_500, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    specials = added_tokens()
    near_specials = ["<|image", "<|dit_token_|>", "<|dit_token_999|>", "<|dit_token_6", "<sop", "eop>", "<|", "|>",
                     "<<sop>>", "<|<|image|>|>", "[gMASK]<sop>", "<|dit_token_64|><|dit_token_6|>"]

    def english():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) + rng.choice(["", ".", "!", "?", ",", " "])

    def chinese():
        return "".join(chr(rng.randint(0x4E00, 0x9FFF)) if rng.random() < 0.85 else rng.choice(CJK_PUNCT)
                       for _ in range(rng.randint(1, 20)))

    def digits():
        return rng.choice(["", "x", "价格 ", "$", "v"]) + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40))) + rng.choice(["", " ", ".5", "%", "元"])

    def whitespace():
        return "".join(rng.choice(WHITESPACE) * rng.randint(1, 4) if rng.random() < 0.6 else rng.choice(WORDS)
                       for _ in range(rng.randint(1, 8)))

    def emoji():
        return "".join(rng.choice(EMOJI) if rng.random() < 0.6 else rng.choice([" ", "a", "中", "1"]) for _ in range(rng.randint(1, 8)))

    def special():
        parts = []
        for _ in range(rng.randint(1, 8)):
            r = rng.random()
            parts.append(rng.choice(specials) if r < 0.4 else rng.choice(near_specials) if r < 0.55 else
                         rng.choice(WORDS) if r < 0.8 else rng.choice(WHITESPACE) if r < 0.9 else chinese())
        return "".join(parts)

    def contractions():
        return "".join(rng.choice(WORDS) + rng.choice(CONTRACTIONS) + rng.choice(["", " ", "s", "\n"]) for _ in range(rng.randint(1, 5)))

    def odd():
        return "".join(rng.choice(ODD) if rng.random() < 0.6 else rng.choice(WORDS + WHITESPACE) for _ in range(rng.randint(1, 8)))

    def random_unicode():
        out = []
        for _ in range(rng.randint(1, 16)):
            r = rng.random()
            hi = 0x7F if r < 0.3 else 0x3000 if r < 0.6 else 0x2FFFF if r < 0.9 else 0x10FFFF
            c = rng.randint(0, hi)
            while 0xD800 <= c <= 0xDFFF:  # surrogates are not valid in UTF-8
                c = rng.randint(0, hi)
            out.append(chr(c))
        return "".join(out)

    def mixed():
        gens = [english, chinese, digits, whitespace, emoji, special, contractions, odd, random_unicode]
        return "".join(rng.choice(gens)() for _ in range(rng.randint(2, 4)))

    gens = [english, chinese, digits, whitespace, emoji, special, contractions, odd, random_unicode, mixed]
    out = ["", " ", "\n", "\r\n", "  \n", "a", "'s", "'S", "12345678901234567890", "\t\t", "   x", "x   ", "中", "😀"]
    out += [s for s in specials] + ["".join(specials)]
    # Long inputs: whitespace and digit runs, a long mixed prompt.
    out += [" " * 5000 + "x", "1" * 3001, "\n" * 1000, "ab" * 2000, " ".join(english() for _ in range(200))]
    while len(out) < n:
        out.append(rng.choice(gens)())
    return out


def flat(seqs) -> torch.Tensor:
    """[len, items..., len, items...]: equal iff every sequence is equal."""
    data = []
    for s in seqs:
        s = [ord(c) for c in s] if isinstance(s, str) else list(s)
        data.append(len(s))
        data.extend(s)
    return torch.tensor(data, dtype=torch.long)


@pytest.fixture(scope="module")
def strings():
    return generate_strings()


@pytest.fixture(scope="module")
def ref():
    import tokenizers

    return tokenizers.Tokenizer.from_file(str(TOKENIZER_JSON))


@pytest.fixture(scope="module")
def ours():
    return _testing.BpeTokenizer(str(TOKENIZER_JSON))


@pytest.mark.parity
def test_encode_matches_tokenizers(strings, ref, ours):
    t0 = time.perf_counter()
    got = ours.encode_batch(strings)
    t_ours = time.perf_counter() - t0
    # A second run hits the per-word cache, as a long-lived tokenizer does.
    t0 = time.perf_counter()
    ours.encode_batch(strings)
    t_ours_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    want = [e.ids for e in ref.encode_batch(strings, add_special_tokens=False)]
    t_ref_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in strings[:2000]:
        ref.encode(s, add_special_tokens=False)
    t_ref_loop = (time.perf_counter() - t0) * len(strings) / 2000
    bad = [s for s, g, w in zip(strings, got, want) if g != w]
    entry = record_exact("tokenizer", flat(got), flat(want), strings=len(strings), mismatches=len(bad),
                         tokens=sum(map(len, want)), ours_s=round(t_ours, 4), ours_warm_s=round(t_ours_warm, 4),
                         ref_encode_batch_s=round(t_ref_batch, 4), ref_encode_loop_s=round(t_ref_loop, 4))
    assert entry["ok"], [repr(s) for s in bad[:5]]
    assert len(strings) >= 10_000


@pytest.mark.parity
def test_decode_matches_tokenizers_and_round_trips(strings, ref, ours):
    ids = [e.ids for e in ref.encode_batch(strings, add_special_tokens=False)]
    back = ours.decode_batch(ids, skip_special_tokens=False)
    entry = record_exact("tokenizer_decode_roundtrip", flat(back), flat(strings), strings=len(strings))
    assert entry["ok"]
    want = ref.decode_batch(ids, skip_special_tokens=False)
    entry = record_exact("tokenizer_decode", flat(back), flat(want), strings=len(strings))
    assert entry["ok"]
    got = ours.decode_batch(ids, skip_special_tokens=True)
    want = ref.decode_batch(ids, skip_special_tokens=True)
    entry = record_exact("tokenizer_decode_skip_special", flat(got), flat(want), strings=len(strings))
    assert entry["ok"]


@pytest.mark.parity
def test_decode_arbitrary_ids(ref, ours):
    # Random id sequences split UTF-8 characters: both sides must replace the same bytes by U+FFFD.
    rng = random.Random(7)
    n = ref.get_vocab_size()
    seqs = [[rng.randrange(n) for _ in range(rng.randint(1, 12))] for _ in range(3000)]
    for skip in (False, True):
        got = ours.decode_batch(seqs, skip_special_tokens=skip)
        want = ref.decode_batch(seqs, skip_special_tokens=skip)
        entry = record_exact(f"tokenizer_decode_random_ids_skip{int(skip)}", flat(got), flat(want), sequences=len(seqs))
        assert entry["ok"]
    with pytest.raises(ValueError, match="unknown token id"):
        ours.decode([n + 5])


def variant(kind: str) -> str:
    j = json.loads(TOKENIZER_JSON.read_text())
    if kind == "stripping_added_tokens":
        n = len(j["model"]["vocab"])
        j["added_tokens"] += [
            {"id": n, "content": "café", "single_word": False, "lstrip": True, "rstrip": True, "normalized": False, "special": False},
            {"id": n + 1, "content": "<mark>", "single_word": False, "lstrip": True, "rstrip": False, "normalized": True, "special": True},
            {"id": n + 2, "content": " end", "single_word": False, "lstrip": False, "rstrip": True, "normalized": True, "special": False},
            {"id": n + 3, "content": "日本", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
        ]
        for t in j["added_tokens"]:
            if t["content"] == "<sop>":
                t["lstrip"] = t["rstrip"] = True
    elif kind == "ignore_merges":
        j["model"]["ignore_merges"] = True
    elif kind.startswith("unk"):
        # Byte characters missing from the vocab (none in a merge) become the unk token, fused or not.
        for ch in ["!", "%", "A", "K", "X", "\u00e6", "\u00a8"]:
            if ch in j["model"]["vocab"] and not any(ch in (a, b) for a, b in j["model"]["merges"]):
                del j["model"]["vocab"][ch]
        j["model"]["unk_token"] = "<|endoftext|>"
        j["model"]["fuse_unk"] = kind == "unk_fused"
    elif kind == "gpt2_byte_level":
        j["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return json.dumps(j)


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["stripping_added_tokens", "ignore_merges", "unk", "unk_fused", "gpt2_byte_level"])
def test_file_variants_match_tokenizers(strings, kind):
    import tokenizers

    text = variant(kind)
    ref = tokenizers.Tokenizer.from_str(text)
    ours = _testing.BpeTokenizer.from_str(text, kind)
    rng = random.Random(kind)
    extra = ["AAKX!!% A!", "KKK", "a  café  x", "café", "  café", "<mark>  end  end", "x <sop>  32 <eop>", "日本日本 日本", "\u3000café\u3000",
             " end", "end end"]
    pool = extra + [rng.choice(["", " ", "  ", "\t"]).join([s, rng.choice(extra)]) for s in rng.sample(strings, 3000)]
    got = ours.encode_batch(pool)
    want = [e.ids for e in ref.encode_batch(pool, add_special_tokens=False)]
    entry = record_exact(f"tokenizer_variant_{kind}", flat(got), flat(want), strings=len(pool))
    assert entry["ok"], [repr(s) for s, g, w in zip(pool, got, want) if g != w][:5]
    ids = want[:500]
    entry = record_exact(f"tokenizer_variant_{kind}_decode", flat(ours.decode_batch(ids, False)),
                         flat(ref.decode_batch(ids, skip_special_tokens=False)), strings=len(ids))
    assert entry["ok"]


def test_token_lookup(ours, ref):
    for tok in added_tokens() + ["Ġa", "!", "nonexistent-token"]:
        assert ours.token_to_id(tok) == ref.token_to_id(tok), tok
    assert ours.vocab_size == ref.get_vocab_size()


def test_invalid_utf8_is_input_error(ours):
    # pybind11 encodes str as UTF-8, so raw invalid bytes can only come as bytes objects.
    with pytest.raises(ValueError, match="UTF-8"):
        ours.encode(b"ab\xff")
    with pytest.raises(ValueError, match="UTF-8"):
        ours.encode(b"ab\xe4\xb8")  # truncated


def mutate(path: list, value) -> str:
    j = json.loads(TOKENIZER_JSON.read_text())
    node = j
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(j)


@pytest.mark.parametrize("text,error,match", [
    ("{not json", glmimage.FormatError, "not valid JSON"),
    ("[1, 2]", glmimage.ConfigError, "top level"),
    (mutate(["model", "type"], "WordPiece"), glmimage.UnsupportedError, "model type"),
    (mutate(["model", "vocab"], KeyError), glmimage.ConfigError, "model.vocab"),
    (mutate(["model", "merges", 0], ["Ġ", "zz-not-there"]), glmimage.ConfigError, "not in the vocab"),
    (mutate(["model", "merges", 1], 5), glmimage.ConfigError, "pair of strings"),
    (mutate(["model", "vocab", "!"], "80"), glmimage.ConfigError, "integer id"),
    (mutate(["model", "byte_fallback"], True), glmimage.UnsupportedError, "byte_fallback"),
    (mutate(["normalizer"], {"type": "NFC"}), glmimage.UnsupportedError, "normalizer"),
    (mutate(["pre_tokenizer", "pretokenizers", 0, "behavior"], "MergedWithNext"), glmimage.UnsupportedError, "behavior"),
    (mutate(["pre_tokenizer", "pretokenizers", 0, "pattern"], {"Regex": "(unclosed"}), glmimage.ConfigError, "does not compile"),
    (mutate(["pre_tokenizer", "pretokenizers", 1, "add_prefix_space"], True), glmimage.UnsupportedError, "add_prefix_space"),
    (mutate(["pre_tokenizer"], {"type": "Whitespace"}), glmimage.UnsupportedError, "Whitespace"),
    (mutate(["decoder"], {"type": "WordPiece"}), glmimage.UnsupportedError, "decoder"),
    (mutate(["added_tokens", 0, "id"], 5), glmimage.ConfigError, "tokenizers assigns"),
    (mutate(["added_tokens", 0, "single_word"], True), glmimage.UnsupportedError, "single_word"),
    (mutate(["added_tokens", 1, "content"], ""), glmimage.ConfigError, "empty content"),
])
def test_malformed_files_raise_clear_errors(text, error, match):
    with pytest.raises(error, match=match):
        _testing.BpeTokenizer.from_str(text, "tokenizer.json")


def test_missing_file_is_format_error(tmp_path):
    with pytest.raises(glmimage.FormatError, match="cannot read"):
        _testing.BpeTokenizer(str(tmp_path / "nope.json"))
