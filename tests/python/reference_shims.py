"""Shims the parity suite and the benches put on the reference (transformers + diffusers), each
documenting a difference glmimage makes on purpose. (conftest.py's install_i2i_shim works around a
failure of the reference itself.)"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def reference_bf16_products_as_ours():
    """Where glmimage's CPU bf16 products differ from LibTorch's on purpose, the reference's compute
    as ours inside this context, so that a comparison holds the same arithmetic to the usual
    tolerances; elsewhere it changes nothing. Yields whether anything is in force. Two cases, each
    a CPU kind:

    - AVX2-only x86, where LibTorch has no oneDNN bf16 kernels: glmimage computes bf16 linears and
      convolutions in float32 and rounds each result once (kernels/cpu_products.h), where LibTorch,
      and so the reference, runs generic bf16 loops: 8x (linears) to over 100x (convolutions)
      slower, accumulating in float32 in another order. Each product differs by one bf16 step in
      about 0.02 % of its elements (test_cpu_products bounds it). The reference's F.linear, F.conv2d
      and torch.einsum (its vision quantizer's distances, the one einsum it runs) on CPU bf16
      tensors then compute the same way as ours.
    - x86 with AVX-512 bf16 and no AMX: glmimage's unmasked bf16 attention of many queries runs its
      own kernel (kernels/cpu_bf16_attention.h), 2-3x faster than SDPA's CPU flash kernel there,
      with the same arithmetic in another order: outputs one bf16 step apart in some elements
      (test_cpu_bf16_attention bounds it against SDPA and float64). The reference's
      F.scaled_dot_product_attention calls that glmimage would send to that kernel go to it.

    Either difference, carried through a whole generation, moves the image by several levels
    (bench_decoder.py reports both: against the reference as run and as shimmed)."""
    import glmimage_testing
    import torch
    import torch.nn.functional as F

    products = glmimage_testing.cpu_bf16_products_in_float32()
    attention = glmimage_testing.cpu_bf16_attention_runs()
    if not (products or attention):
        yield False
        return
    linear, conv2d, einsum, sdpa = F.linear, F.conv2d, torch.einsum, F.scaled_dot_product_attention

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

    def attention_as_ours(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
        # glmimage's own rule of which calls its kernel takes (attention_backend), asked of the call
        if (attn_mask is None and dropout_p == 0.0 and not is_causal and cpu_bf16(query) and query.dim() == 4
                and (enable_gqa or query.size(1) == key.size(1))
                and glmimage_testing.attention_backend(query, key, value) == "cpu_bf16"):
            return glmimage_testing.attention(query, key, value, scale)
        return sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                    enable_gqa=enable_gqa)

    if products:
        F.linear, F.conv2d, torch.einsum = float32_linear, float32_conv2d, float32_einsum
    if attention:
        F.scaled_dot_product_attention = attention_as_ours
    try:
        yield True
    finally:
        F.linear, F.conv2d, torch.einsum, F.scaled_dot_product_attention = linear, conv2d, einsum, sdpa


@contextlib.contextmanager
def reference_first_block_cache(pipe, threshold: float):
    """diffusers 0.39's First Block Cache (hooks/first_block_cache.py) on a GlmImagePipeline, the
    reference for GenerateRequest::first_block_cache. diffusers ships the hook and the
    transformer takes it (CacheMixin), but not for this model as it stands: its
    TransformerBlockRegistry lacks GlmImageTransformerBlock (enable_cache fails), and
    GlmImagePipeline sets no cache context (the first call fails: "No context is set"; with one
    context for every call, the unconditional pass would be compared with the conditional one).
    This registers the block's outputs (hidden_states, encoder_hidden_states) and runs each
    transformer call in a context of its own pass: "cond" (no prior token dropped), "uncond"
    (all dropped), and a fresh one for each condition image's cache write, which must run every
    block to fill the cache. glmimage keeps the same state per CFG pass and per generation.
    Yields {"cond": [...], "uncond": [...]}: per call of that pass, True where the blocks after the
    first did not run. The hook is removed on exit."""
    from diffusers.hooks import FirstBlockCacheConfig, HookRegistry
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.models.transformers.transformer_glm_image import GlmImageTransformerBlock

    TransformerBlockRegistry.register(
        model_class=GlmImageTransformerBlock,
        metadata=TransformerBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=1))
    transformer = pipe.transformer
    transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    head = HookRegistry.check_if_exists_or_initialize(transformer.transformer_blocks[0]).get_hook(
        "fbc_leader_block_hook")
    skipped = {"cond": [], "uncond": []}
    writes = [0]
    forward = transformer.forward

    def forward_in_its_context(*args, **kwargs):
        kv = kwargs.get("kv_caches")
        if kv is not None and kv[0].mode == "write":
            writes[0] += 1
            context = f"condition write {writes[0]}"
        else:
            context = "uncond" if bool(kwargs["prior_token_drop"].all()) else "cond"
        with transformer.cache_context(context):
            out = forward(*args, **kwargs)
            if context in skipped:
                skipped[context].append(not head.state_manager.get_state().should_compute)
        return out

    transformer.forward = forward_in_its_context
    try:
        yield skipped
    finally:
        del transformer.forward  # the instance attribute; the class's forward again
        transformer.disable_cache()
