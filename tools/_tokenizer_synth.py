"""Synthesize a GLM-Image style text tokenizer (``processor/tokenizer.json``).

The real GLM-Image ``processor/tokenizer.json`` (the GLM-4-9B-0414 byte-level BPE with 16512
``<|dit_token_N|>`` tokens placed in front of it) cannot be obtained on the build machines. This module
builds a small tokenizer with the same *structure* from a built-in corpus, deterministically and without any
external data:

* id layout::

      0 .. vision_vocab_size-1          <|dit_token_N|>          (added, special)
      vision_vocab_size + 0 .. +255      the 256 byte symbols     (BPE model vocabulary, GPT-2 byte order,
                                                                   so the space byte 'Ġ' is text id 220)
      vision_vocab_size + 256 ..         one token per learned merge, in merge order
      after the BPE vocabulary           <|endoftext|> [MASK] [gMASK] [sMASK] <sop> <eop> <|system|> <|user|>
                                         <|assistant|> <|observation|> <|begin_of_image|> <|end_of_image|>
                                         <|begin_of_video|> <|end_of_video|> <|image|> <|video|>
                                         (added, special; same order as GLM-4, where <|endoftext|> = 151329)

  In the real model the codebook has 16384 entries, ``<|dit_token_16384|>`` is the image start token,
  ``<|dit_token_16385|>`` the image end token, and ``vision_vocab_size`` = 16512.

* normalizer: none; pre-tokenizer: ``Split`` with the GLM-4 (cl100k-style) regex, behaviour ``isolated``,
  followed by ``ByteLevel(add_prefix_space=False, use_regex=False)``; decoder: ``ByteLevel``;
  model: BPE (``ignore_merges`` false, no unk token, no byte fallback); post-processor: none (GLM-Image
  tokenizes with no prefix or suffix tokens).

* The merges are learned by a small, fully deterministic BPE trainer written here (pair counts over the
  pre-tokenized corpus, ties broken by the lexicographic order of the pair), so the same arguments always
  produce byte-identical JSON regardless of thread counts.

The dit tokens and the special tokens are listed in ``added_tokens`` (matched as whole strings before the
pre-tokenizer runs, never split) and are also entries of the BPE model vocabulary with the same ids, so the
model vocabulary covers every id 0 .. size-1 without gaps.
"""

from __future__ import annotations

import functools
import json
from collections import Counter

GLM4_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# GLM-4 special tokens, in id order (GLM-4: <|endoftext|> = 151329 ... <|video|> = 151344).
GLM_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
]

DEFAULT_NUM_MERGES = 400


def dit_token(n: int) -> str:
    return f"<|dit_token_{n}|>"


def _corpus() -> list[str]:
    """Built-in training text: English, Chinese, digits, punctuation and whitespace runs."""
    english = [
        "A photo of a cat sitting on a wooden table, with the words \"Hello World\" written on a sign.",
        "The quick brown fox jumps over the lazy dog. The dog doesn't mind; it's sleeping.",
        "A poster for a coffee shop named 'Morning Brew', with a steaming cup and warm light.",
        "An astronaut riding a horse on Mars, cinematic lighting, highly detailed, 4k.",
        "A red apple and a green pear on a white plate. There are three apples and two pears.",
        "The sign says \"OPEN 24 HOURS\" in bright neon letters above the door of the store.",
        "A watercolor painting of a mountain lake at sunrise, soft colors, calm water.",
        "We'll meet at the station at 10:30; they've said the train is late again!",
        "A beautiful landscape with a river, trees, flowers and a small house in the distance.",
        "The title of the book is 'The Art of the Image', written by a famous painter.",
        "Generate an image of a city street at night with cars, people and lights.",
        "A close-up portrait of an old man with a white beard, wearing a blue hat.",
        "A minimalist logo with the text \"GLM\" in bold black letters on a white background.",
        "I'm sure you'd like the menu: soup, bread, salad, pasta and ice cream.",
        "The image shows a cat, a dog and a bird playing together in the garden.",
        "Make the sky more blue and add some clouds; keep the house and the tree.",
    ]
    chinese = [
        "一只猫坐在木桌上，旁边的牌子上写着“你好世界”。",
        "这是一张海报，标题是「早安咖啡」，画面温暖明亮。",
        "宇航员在火星上骑马，电影感光效，细节丰富。",
        "一个红苹果和一个绿梨放在白色的盘子上。",
        "城市的夜晚，街道上有汽车、行人和灯光。",
        "生成一张图片：山间湖泊的日出，水面平静，色彩柔和。",
        "图片中有一只猫、一只狗和一只鸟在花园里玩耍。",
        "请把天空变得更蓝，并添加一些白云，保留房子和树。",
        "中国的书法艺术历史悠久，文字优美。",
        "今天天气很好，我们去公园散步吧。",
    ]
    digits = [
        " ".join(str(i) for i in range(100)),
        " ".join(str(i) for i in range(100)),
        " ".join(str(i) for i in range(0, 1000, 16)),
        "2024-01-15 12:30:45, 3.14159, 2.71828, 1,000,000 and 42%.",
        "Size 1024x1024, 1152x768, 768x1152, 512x512, 2048x2048.",
    ]
    punctuation = [
        "Hello, world! How are you? (Fine.) [Yes] {No} <ok> \"quoted\" 'single' -- ... ;:",
        "#tag @user $100 & 50% * 2 + 3 = 11 / 4 \\ | ~ ` ^ _",
        "  two spaces,\tTab,\nnew line,\r\nwindows line,\n\n\nmany lines.   trailing   ",
        "——《》、，。？！：；（）…",
    ]
    return english + chinese + digits + punctuation


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character table (insertion order = GPT-2 id order)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(
        range(ord("\xae"), ord("\xff") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _pre_tokenizer_json() -> dict:
    return {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": GLM4_SPLIT_REGEX},
                "behavior": "Isolated",
                "invert": False,
            },
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }


def _learn_merges(num_merges: int) -> list[tuple[str, str]]:
    """Deterministic BPE training on the built-in corpus (byte-level symbols)."""
    from tokenizers import Tokenizer

    # Reuse the exact pre-tokenizer of the final tokenizer to split the corpus.
    tmp = Tokenizer.from_str(
        json.dumps(
            {
                "version": "1.0",
                "truncation": None,
                "padding": None,
                "added_tokens": [],
                "normalizer": None,
                "pre_tokenizer": _pre_tokenizer_json(),
                "post_processor": None,
                "decoder": None,
                "model": {"type": "BPE", "vocab": {}, "merges": []},
            }
        )
    )
    words: Counter = Counter()
    for line in _corpus():
        for piece, _ in tmp.pre_tokenizer.pre_tokenize_str(line):
            words[tuple(piece)] += 1

    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for word, freq in words.items():
            for a, b in zip(word[:-1], word[1:]):
                pairs[(a, b)] += freq
        if not pairs:
            break
        best_count = max(pairs.values())
        if best_count < 2:
            break
        best = min(p for p, c in pairs.items() if c == best_count)
        merges.append(best)
        merged = best[0] + best[1]
        new_words: Counter = Counter()
        for word, freq in words.items():
            out = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == best[0] and word[i + 1] == best[1]:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += freq
        words = new_words
    return merges


@functools.lru_cache(maxsize=8)
def build_tokenizer_json(vision_vocab_size: int, num_merges: int = DEFAULT_NUM_MERGES) -> str:
    """Return the tokenizer.json text (canonical `tokenizers` serialization)."""
    from tokenizers import Tokenizer

    base = list(bytes_to_unicode().values())
    merges = _learn_merges(num_merges)
    text_tokens: list[str] = list(base)
    seen = set(text_tokens)
    for a, b in merges:
        tok = a + b
        if tok not in seen:
            seen.add(tok)
            text_tokens.append(tok)
    first_special = vision_vocab_size + len(text_tokens)
    # The added tokens are also entries of the model vocabulary: `tokenizers` only keeps an added token's
    # explicit id when the model vocabulary maps its content to that id.
    vocab = {dit_token(i): i for i in range(vision_vocab_size)}
    vocab.update({tok: vision_vocab_size + i for i, tok in enumerate(text_tokens)})
    vocab.update({s: first_special + k for k, s in enumerate(GLM_SPECIAL_TOKENS)})

    def added(i: int, content: str) -> dict:
        return {
            "id": i,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }

    added_tokens = [added(i, dit_token(i)) for i in range(vision_vocab_size)]
    added_tokens += [added(first_special + k, s) for k, s in enumerate(GLM_SPECIAL_TOKENS)]
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": None,
        "pre_tokenizer": _pre_tokenizer_json(),
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[a, b] for a, b in merges],
        },
    }
    tok = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    # Sanity: explicit ids must have been kept.
    for i in (0, vision_vocab_size - 1):
        assert tok.token_to_id(dit_token(i)) == i
    assert tok.token_to_id(GLM_SPECIAL_TOKENS[0]) == first_special
    assert tok.token_to_id(GLM_SPECIAL_TOKENS[-1]) == first_special + len(GLM_SPECIAL_TOKENS) - 1
    return tok.to_str(pretty=True)


def layout(vision_vocab_size: int, num_merges: int = DEFAULT_NUM_MERGES) -> dict:
    """Token-id layout summary of the synthesized tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(build_tokenizer_json(vision_vocab_size, num_merges))
    specials = {s: tok.token_to_id(s) for s in GLM_SPECIAL_TOKENS}
    return {
        "vision_vocab_size": vision_vocab_size,
        "text_vocab_first_id": vision_vocab_size,
        "text_vocab_size": specials[GLM_SPECIAL_TOKENS[0]] - vision_vocab_size,
        "special_tokens": specials,
        "total_size": tok.get_vocab_size(with_added_tokens=True),
    }


def tokenizer_config(codebook_size: int, model_max_length: int = 65536) -> dict:
    """processor/tokenizer_config.json mirroring the real file (only the start/end ids differ)."""
    return {
        "tokenizer_class": "TokenizersBackend",
        "bos_token": dit_token(codebook_size),
        "eos_token": dit_token(codebook_size + 1),
        "pad_token": dit_token(codebook_size + 1),
        "padding_side": "left",
        "grid_bos_token": "<sop>",
        "grid_eos_token": "<eop>",
        "image_token": "<|image|>",
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "extra_special_tokens": list(GLM_SPECIAL_TOKENS),
    }


def chat_template(codebook_size: int) -> str:
    """processor/chat_template.jinja with the behaviour described for the real file.

    Every message in order, roles ignored: string content verbatim; list content item by item, an image item
    becomes ``<|dit_token_{start}|><|image|><|dit_token_{end}|>`` and a text item its text. Nothing else.
    """
    start, end = dit_token(codebook_size), dit_token(codebook_size + 1)
    return (
        "{%- for message in messages -%}\n"
        "{%- if message['content'] is string -%}\n"
        "{{- message['content'] -}}\n"
        "{%- else -%}\n"
        "{%- for item in message['content'] -%}\n"
        "{%- if item['type'] == 'image' or 'image' in item -%}\n"
        "{{- '" + start + "<|image|>" + end + "' -}}\n"
        "{%- elif item['type'] == 'text' -%}\n"
        "{{- item['text'] -}}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
    )
