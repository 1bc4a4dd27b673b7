"""The library's own CPU loops are named in LibTorch's profiler (src/kernels/profile_scope.h):
torch.profiler, and the benches' --profile, record ATen ops only, so without the names the time of
these loops belonged to no row of a profile."""

from pathlib import Path

import glmimage  # noqa: F401  (before the testing extension)
import glmimage_testing as _testing
import torch

TINY = Path(__file__).resolve().parents[2] / "models" / "tiny"


def _profiled(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    return {(e.key, str(e.input_shapes)) for e in prof.key_averages(group_by_input_shape=True)}


def test_own_loops_are_named_with_their_input_shapes():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 6, 16, generator=g).bfloat16()
    scale, shift = torch.randn(1, 1, 16, generator=g).bfloat16(), torch.randn(1, 1, 16, generator=g).bfloat16()
    x = torch.randn(1, 5, 2, 8, generator=g)
    cos, sin = torch.randn(4, 8, generator=g).cos(), torch.randn(4, 8, generator=g).sin()
    rows = _profiled(lambda: (_testing.fused_mul_add(a, scale, shift), _testing.fused_dit_rope(x, cos, sin, 1, False)))
    assert ("glmimage::mul_add", str([[1, 6, 16], [1, 1, 16], [1, 1, 16]])) in rows
    assert ("glmimage::rotary_half", str([[1, 5, 2, 8], [4, 8], [4, 8]])) in rows


def test_a_loop_that_hands_the_work_to_libtorch_is_not_named():
    # float64 is not one of the loops' dtypes: LibTorch's op runs, and shows as itself.
    x = torch.randn(3, 8, dtype=torch.float64)
    names = {key for key, _ in _profiled(lambda: _testing.layer_norm(x, 1e-6))}
    assert "aten::layer_norm" in names
    assert "glmimage::layer_norm" not in names


def test_a_generation_names_the_denoising_loops():
    """The tiny checkpoint in bf16, under the profiler: the DiT's modulations and RoPE are the
    library's loops, and a row each."""
    pipe = glmimage.Pipeline.from_pretrained(TINY, dtype="bfloat16")
    prior = torch.arange(16).view(1, 16)  # the decoder alone: the AR stage under the profiler is slow
    names = {key for key, _ in _profiled(lambda: pipe("a red square", prior_token_ids=prior, seed=1, height=64,
                                                      width=64, num_inference_steps=2, output_type="np",
                                                      progress=False))}
    assert {"glmimage::mul_add", "glmimage::rotary_half"} <= names, sorted(n for n in names if "glmimage" in n)
