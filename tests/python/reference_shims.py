"""Shims the parity suite and the benches put on the reference (transformers + diffusers), each
documenting a difference glmimage makes on purpose. (conftest.py's install_i2i_shim works around a
failure of the reference itself.)"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def reference_bf16_products_as_ours():
    """On a CPU where LibTorch has no oneDNN bf16 kernels (AVX2-only x86), glmimage computes bf16
    linears and convolutions in float32 and rounds each result once (kernels/cpu_products.h), where
    LibTorch, and so the reference, runs generic bf16 loops: 8x (linears) to over 100x
    (convolutions) slower, accumulating in float32 in another order. Each product differs by one
    bf16 step in about 0.02 % of its elements (test_cpu_products bounds it), which a whole
    generation carries to several levels of the image (bench_decoder.py reports it). Inside this
    context the reference's F.linear, F.conv2d and torch.einsum (its vision quantizer's distances,
    the one einsum it runs) on CPU bf16 tensors compute the same way as ours, so that a comparison
    holds the same arithmetic to the usual tolerances; elsewhere it changes nothing. Yields whether
    it is in force."""
    import glmimage_testing
    import torch
    import torch.nn.functional as F

    if not glmimage_testing.cpu_bf16_products_in_float32():
        yield False
        return
    linear, conv2d, einsum = F.linear, F.conv2d, torch.einsum

    def cpu_bf16(x) -> bool:
        return isinstance(x, torch.Tensor) and x.dtype == torch.bfloat16 and x.device.type == "cpu"

    def widened(t):
        return t.float() if cpu_bf16(t) else t

    def float32_linear(x, weight, bias=None):
        if not (cpu_bf16(x) and weight.dtype == torch.bfloat16):
            return linear(x, weight, bias)
        return linear(x.float(), weight.float(), widened(bias)).to(torch.bfloat16)

    def float32_conv2d(x, weight, bias=None, *args, **kwargs):
        if not (cpu_bf16(x) and weight.dtype == torch.bfloat16):
            return conv2d(x, weight, bias, *args, **kwargs)
        return conv2d(x.float(), weight.float(), widened(bias), *args, **kwargs).to(torch.bfloat16)

    def float32_einsum(equation, *operands):
        if not (operands and cpu_bf16(operands[0])):
            return einsum(equation, *operands)
        return einsum(equation, *(widened(t) for t in operands)).to(torch.bfloat16)

    F.linear, F.conv2d, torch.einsum = float32_linear, float32_conv2d, float32_einsum
    try:
        yield True
    finally:
        F.linear, F.conv2d, torch.einsum = linear, conv2d, einsum
