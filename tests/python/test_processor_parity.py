"""The C++ text side of GlmImageProcessor (src/tokenizers/prompt_processor.cpp) against transformers'
GlmImageProcessor.from_pretrained(models/tiny/processor) called as diffusers' GlmImagePipeline
calls it (apply_chat_template with target_h / target_w, padding when batched): input_ids,
attention_mask, image_grid_thw and images_per_sample for text-to-image and image-to-image,
single and batched, plus smart_resize and the input errors."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import REPO

from parity import record_exact

import glmimage_testing as _testing  # noqa: E402  (the research hooks, built with the tests)

PROCESSOR = REPO / "models" / "tiny" / "processor"
SIZES = [(512, 512), (1024, 1024), (1152, 768), (768, 1344), (2048, 2048)]
PROMPTS = ["A red fox in the snow, the sign says \"OPEN 24h\"",
           "一张海报，标题写着“你好，世界”。 Poster with 3 lines:\n1. Coffee ¥12\n2. Tea ¥8 😀"]


@pytest.fixture(scope="module")
def ref():
    from transformers import GlmImageProcessor

    return GlmImageProcessor.from_pretrained(str(PROCESSOR))


@pytest.fixture(scope="module")
def ours():
    return _testing.PromptProcessor(str(PROCESSOR))


def reference(ref, prompts, images, height, width):
    """diffusers GlmImagePipeline.generate_prior_tokens, the processor call only."""
    from PIL import Image

    messages = []
    for idx, p in enumerate(prompts):
        content = []
        for h, w in (images[idx] if images else []):
            content.append({"type": "image", "image": Image.new("RGB", (w, h), (127, 64, 200))})
        content.append({"type": "text", "text": p})
        messages.append([{"role": "user", "content": content}])
    return ref.apply_chat_template(messages, tokenize=True, padding=len(prompts) > 1, target_h=height,
                                   target_w=width, return_dict=True, return_tensors="pt")


def compare(name, ours, ref, prompts, images, height, width):
    got = ours(prompts, images or [], height, width)
    want = reference(ref, prompts, images, height, width)
    ok = True
    for key in ("input_ids", "attention_mask", "image_grid_thw", "images_per_sample"):
        entry = record_exact(f"{name}_{key}", torch.tensor(got[key]), want[key], size=f"{height}x{width}",
                             batch=len(prompts), sources=len(images[0]) if images else 0)
        ok = ok and entry["ok"]
    return ok


@pytest.mark.parity
@pytest.mark.parametrize("height,width", SIZES)
@pytest.mark.parametrize("batched", [False, True])
def test_processor_t2i(ref, ours, height, width, batched):
    prompts = PROMPTS if batched else PROMPTS[:1]
    assert compare("processor_t2i", ours, ref, prompts, None, height, width)


CONDITIONS = [[(512, 768)], [(1024, 1024), (700, 1300)], [(1300, 700), (333, 1000)]]


@pytest.mark.parity
@pytest.mark.parametrize("height,width", SIZES)
@pytest.mark.parametrize("sources", CONDITIONS, ids=["one", "two", "two_odd"])
@pytest.mark.parametrize("batched", [False, True])
def test_processor_i2i(ref, ours, height, width, sources, batched):
    if batched:
        # Same number of condition images per prompt, different sizes.
        images = [sources, [(w, h) for h, w in sources]]
        prompts = PROMPTS
    else:
        images, prompts = [sources], PROMPTS[:1]
    assert compare("processor_i2i", ours, ref, prompts, images, height, width)


@pytest.mark.parity
def test_smart_resize_matches_reference():
    # The PIL backend is the one in use here (no torchvision); its smart_resize is the same rule.
    from transformers.models.glm_image.image_processing_pil_glm_image import smart_resize

    rng = random.Random(3)
    sizes = [(16, 16), (16, 64), (512, 512), (511, 513), (1024, 1024), (700, 1300), (4096, 4096), (8000, 2000),
             (2047, 2049), (528, 528), (544, 544), (3000, 750), (17, 17), (100, 399)]
    sizes += [(rng.randint(16, 6000), rng.randint(16, 6000)) for _ in range(3000)]
    got, want = [], []
    for h, w in sizes:
        try:
            want.append(smart_resize(h, w, factor=16, min_pixels=512 * 512, max_pixels=2048 * 2048))
        except ValueError:
            want.append((-1, -1))
        try:
            got.append(_testing.smart_resize(h, w, 16, 512 * 512, 2048 * 2048))
        except ValueError:
            got.append((-1, -1))
    entry = record_exact("processor_smart_resize", torch.tensor(got), torch.tensor(want), sizes=len(sizes),
                         rejected=sum(1 for x in want if x[0] < 0))
    assert entry["ok"]


@pytest.mark.parity
def test_chat_template_matches_reference(ref, ours):
    from PIL import Image

    got, want = [], []
    for prompt in PROMPTS + ["x", "  spaces  ", "<sop>1 2<eop>"]:
        for n in range(3):
            content = [{"type": "image", "image": Image.new("RGB", (512, 512))} for _ in range(n)]
            content.append({"type": "text", "text": prompt})
            want.append(ref.apply_chat_template([{"role": "user", "content": content}], tokenize=False))
            got.append(ours.render(prompt, n))
    to_t = lambda xs: torch.tensor([ord(c) for x in xs for c in x + "\0"])  # noqa: E731
    entry = record_exact("processor_chat_template", to_t(got), to_t(want), texts=len(got))
    assert entry["ok"], (got[:3], want[:3])


def test_rendered_text(ours):
    out = ours(["hi"], [[(512, 512)]], 1024, 1024)
    assert out["texts"][0] == "<|dit_token_64|>" + "<|image|>" * 256 + "<|dit_token_65|>hi<sop>32 32<eop><|dit_token_64|>"
    assert ours.render("x", 2) == "<|dit_token_64|><|image|><|dit_token_65|>" * 2 + "x"


@pytest.mark.parametrize("height,width", [(1000, 1024), (1024, 1000), (0, 1024), (-32, 512), (16, 1024)])
def test_sizes_not_multiple_of_32_raise(ours, height, width):
    with pytest.raises(ValueError, match="multiples of 32"):
        ours(["a cat"], [], height, width)


def test_bad_inputs_raise(ours):
    with pytest.raises(ValueError, match="empty"):
        ours([""], [], 1024, 1024)
    with pytest.raises(ValueError, match="empty"):
        ours(["ok", ""], [], 1024, 1024)
    with pytest.raises(ValueError, match="no prompt"):
        ours([], [], 1024, 1024)
    with pytest.raises(ValueError, match="same number"):
        ours(["a", "b"], [[(512, 512)], []], 1024, 1024)
    with pytest.raises(ValueError, match="image lists"):
        ours(["a", "b"], [[(512, 512)]], 1024, 1024)
    with pytest.raises(ValueError, match="image token"):
        ours(["a <|image|> b"], [], 1024, 1024)
    with pytest.raises(ValueError, match="aspect ratio"):
        ours(["a"], [[(512, 4000)]], 1024, 1024)
    with pytest.raises(ValueError, match="smaller than"):
        ours(["a"], [[(8, 512)]], 1024, 1024)
