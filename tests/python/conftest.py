"""Shared fixtures for the Python-side tests (reference checkpoints built with the upstream classes)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

# Versions the committed files under models/ were generated with. Random initialization and the
# version strings inside the config files depend on them, so byte-for-byte comparisons with the committed
# files are only meaningful with these versions.
GENERATED_WITH = {"torch": "2.13", "transformers": "5.24.0", "diffusers": "0.39.0"}


def versions_match() -> tuple[bool, str]:
    import diffusers
    import torch
    import transformers

    have = {"torch": torch.__version__, "transformers": transformers.__version__, "diffusers": diffusers.__version__}
    ok = all(have[k].startswith(v) for k, v in GENERATED_WITH.items())
    return ok, f"generated with {GENERATED_WITH}, running {have}"


def sha256_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session", autouse=True)
def _modest_threads():
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session", autouse=True)
def _reference_bf16_products_as_ours():
    """For the session, on a CPU where glmimage's bf16 products differ from LibTorch's on purpose
    (AVX2-only x86: linears and convolutions computed in float32; AVX-512 bf16 without AMX: its own
    attention kernel), the reference's compute as ours: every parity test then compares the same
    arithmetic (reference_shims.py says why and what each bounds). Elsewhere nothing is changed."""
    from reference_shims import reference_bf16_products_as_ours

    with reference_bf16_products_as_ours() as shimmed:
        yield shimmed


@pytest.fixture(scope="session")
def tiny_f32(tmp_path_factory) -> Path:
    """preset tiny, float32, seed 0: what models/tiny/ holds."""
    import make_tiny_checkpoint as mk

    return mk.build(tmp_path_factory.mktemp("tiny_f32") / "ckpt", "tiny", "float32", 0)


@pytest.fixture(scope="session")
def tiny_bf16(tmp_path_factory) -> Path:
    import make_tiny_checkpoint as mk

    return mk.build(tmp_path_factory.mktemp("tiny_bf16") / "ckpt", "tiny", "bfloat16", 0)


@pytest.fixture(scope="session")
def load_quantized():
    """load(path, fmt, **from_pretrained kwargs): a pipeline with quantized linears, or the test
    skipped where this LibTorch lacks the kernel and the load says so (UnsupportedError), as
    fp8 on a CPU with torch 2.11, whose CPU _scaled_mm takes only per-tensor scales. The skip
    needs torch itself to fail the same row-wise scaled product; where torch runs it, our refusal
    is the bug and the test fails."""
    import glmimage
    import torch

    def torch_has_rowwise_fp8_cpu() -> bool:
        a = torch.randn(32, 32).to(torch.float8_e4m3fn)
        b = torch.randn(32, 32).to(torch.float8_e4m3fn).t()
        try:
            torch._scaled_mm(a, b, scale_a=torch.ones(32, 1), scale_b=torch.ones(1, 32), out_dtype=torch.bfloat16)
            return True
        except (RuntimeError, NotImplementedError):
            return False

    def load(path, fmt: str, **kwargs):
        try:
            return glmimage.Pipeline.from_pretrained(path, quantize=fmt, **kwargs)
        except glmimage.UnsupportedError as e:
            if fmt == "fp8" and kwargs.get("device", "cpu") == "cpu" and not torch_has_rowwise_fp8_cpu():
                pytest.skip(f"quantize={fmt!r}: {e}")
            raise

    return load


@pytest.fixture(scope="session")
def tiny_pipe(tiny_f32):
    from diffusers import GlmImagePipeline

    pipe = GlmImagePipeline.from_pretrained(str(tiny_f32))
    pipe.set_progress_bar_config(disable=True)
    return pipe



def install_i2i_shim(pipe):
    """Works around a reference incompatibility (diffusers 0.39.0 + transformers 5.24.0): the pipeline
    does ``torch.cat(get_image_features(...).pooler_output, dim=0)`` but transformers now returns one
    (hidden, grid_h, grid_w) tensor per image and ``get_image_tokens`` expects that list, so the
    concatenation hands the VQ one channel per hidden unit and i2i fails with a conv channel mismatch.
    The shim splits the concatenation back into per-image tensors (exact for any number of equal-size
    condition images, which torch.cat requires anyway). Returns the original method."""
    import torch

    vle = pipe.vision_language_encoder
    orig = vle.get_image_tokens
    hidden = vle.config.vision_config.hidden_size

    def get_image_tokens(hidden_states, image_grid_thw=None):
        if isinstance(hidden_states, torch.Tensor) and hidden_states.dim() == 3:
            hidden_states = list(torch.split(hidden_states, hidden, dim=0))
        return orig(hidden_states, image_grid_thw)

    vle.get_image_tokens = get_image_tokens
    return orig


def pytest_configure(config):
    config.addinivalue_line("markers", "real_widths: parity at the real GLM-Image widths "
                            "(tests/python/test_real_widths_parity.py; writes a 3.7 GB checkpoint under build/, or "
                            "in /dev/shm for the run when the disk lacks the room)")
