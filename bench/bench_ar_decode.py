"""AR decode speed: glmimage's C++ generator (through glmimage_testing.ar_generate) against
transformers' GlmImageForConditionalGeneration.generate, greedy, same prompt and length, same
thread count and dtype, on the `small` preset checkpoint (hidden 512, 6 layers) built in a temp dir,
or with --preset real-widths on one with the real model's widths (hidden 4096, MLP 13696, 32 heads,
2 KV heads, the 16512-row vision lm_head) and --layers N layers (default 2): the real size's decode
step per layer, in a checkpoint that fits memory in fp32 too.

Decode tokens/s = (N - 1) / (t(N new tokens) - t(1 new token)): the prefill is timed separately
and taken out. Prints one JSON line: both rates, the ratio, the tokens' agreement, peak RSS, and
the memory roofline of the same work measured in the same run. The tokens: tokens_match and
tokens_equal_prefix against the reference run in our arithmetic where ours computes bf16 products in
float32 (bf16_products_in_float32; tests/python/reference_shims.py), the *_ref_as_run keys against
the reference as it is (whose timed runs these are), and logits_max_abs_diff over every step with
ours fed the reference's tokens (greedy tokens part at the first near tie, so a last-bit difference
in bf16 changes the rest of a random-weight model's sequence), over the first tokens_checked tokens
(--check-tokens; all of them at the small preset). The roofline:
  bytes per token = every weight the decode step reads (the text decoder's linears in their held
                    dtype, int8 + scales when quantized, its norms, the lm_head) + the KV cache
                    read at the mean decode position;
  bandwidth       = the best of a few passes of at::sum over a 512 MiB buffer, same threads,
                    measured before the timed runs, before each repeat and after them: the
                    highest taken;
  roofline_tok_s  = bandwidth / bytes per token (no decode can beat it on this machine).
This machine's bandwidth moves (a shared host: 28 to 58 GB/s within minutes, 2 threads), so each
repeat also measures it just before its own timed decode: ours_of_roofline_paired is the median
over the repeats of that repeat's decode rate against that moment's roofline, and bandwidth_gb_s_range
the lowest and highest of all the measurements.
--quantize int8|fp8 runs ours with quantized weights (the reference stays in --dtype).
--decode static runs ours through the fixed-shape decode step (the one a CUDA graph replays on a
GPU; here run eagerly, attending over the whole KV cache under a mask) instead of the eager one.
--profile prints where our decode's time goes (LibTorch's profiler, ops by self CPU time) to stderr,
then each product shape's rate and weight bytes per second against the
bandwidth measured in the same run (bench/profile_products.py).
--unfused-too also times ours with the fused kernels off (kernels/fused_switch.h: the LibTorch op
sequences instead), interleaved with the other runs: ours_unfused_decode_tok_s and
fused_speedup, and whether the two paths' tokens are equal (they must be).

    python3 bench/bench_ar_decode.py [--threads 1] [--dtype float32|bfloat16] [--quantize none|int8|fp8] [--decode eager|static]
                                     [--preset small|real-widths] [--layers N] [--profile] [--unfused-too]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "python"), str(REPO / "tools"), str(REPO / "tests" / "python")]  # + glmimage_testing

import torch  # noqa: E402

import profile_products  # noqa: E402  (bench/, the script's own folder)


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def rss_mb() -> float:
    """Peak resident set of this process so far (VmHWM of /proc/self/status), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise KeyError("VmHWM")


def measure_bandwidth() -> float:
    """Bytes per second that one read pass over a buffer larger than the caches reaches."""
    buf = torch.ones(128 * 1024 * 1024, dtype=torch.float32)  # 512 MiB
    buf.sum()
    best = min(best_time(lambda: buf.sum(), 1) for _ in range(5))
    return buf.numel() * buf.element_size() / best


def decode_bytes_per_token(state: dict, ckpt: Path, mean_position: float) -> float:
    """What one decode step must read: the text decoder's weights as held, plus its KV cache."""
    import json as _json

    text = _json.loads((ckpt / "vision_language_encoder" / "config.json").read_text())["text_config"]
    weights = sum(t.numel() * t.element_size() for k, t in state.items()
                  if k.startswith("model.language_model.layers.") or k.startswith("model.language_model.norm")
                  or k.startswith("lm_head"))
    # Quantized linears also read one scale per output row; small, counted through their rows.
    scale_bytes = sum(t.shape[0] * (2 if t.dtype == torch.int8 else 4) for k, t in state.items()
                      if t.dtype in (torch.int8, torch.float8_e4m3fn))
    kv_el = state["model.language_model.norm.weight"].element_size()  # the compute dtype
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    kv = 2 * text["num_hidden_layers"] * text["num_key_value_heads"] * head_dim * mean_position * kv_el
    return weights + scale_bytes + kv


def equal_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading tokens two greedy generations share (a near tie of two logits, resolved
    apart by a last-bit difference, changes every token after it in a random-weight model)."""
    a, b = a.reshape(-1), b.reshape(-1)
    n = min(a.numel(), b.numel())
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if differ.numel() else n


def print_profile(fn, what: str, rows: int = 18, gemm_rate: float | None = None, bandwidth: float | None = None,
                  weight_bytes: float = 2) -> None:
    """Runs fn once under LibTorch's profiler (it sees the ATen ops our C++ calls, as they share
    this process's LibTorch) and prints the ops by self CPU time to stderr, then the products and
    attention calls by shape against the limits given (profile_products.py; `weight_bytes` a
    weight element's)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    print(f"== profile: {what}", file=sys.stderr)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows), file=sys.stderr)
    print(profile_products.table(prof.key_averages(group_by_input_shape=True), False, gemm_rate, bandwidth,
                                 weight_bytes, limit=rows), file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--large", type=int, default=16, help="main grid side in tokens (t2i)")
    ap.add_argument("--small", type=int, default=8, help="preview grid side in tokens")
    ap.add_argument("--prompt", type=int, default=32, help="text tokens in the prompt")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--quantize", choices=["none", "int8", "fp8"], default="none")
    ap.add_argument("--decode", choices=["eager", "static"], default="eager")
    ap.add_argument("--profile", action="store_true", help="print our decode's op profile to stderr")
    ap.add_argument("--unfused-too", action="store_true",
                    help="also time ours with the fused kernels off (the op sequences)")
    ap.add_argument("--preset", choices=["small", "real-widths"], default="small")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers of the real-widths preset (default 2)")
    ap.add_argument("--check-tokens", type=int, default=None,
                    help="tokens compared with the reference (default: all at the small preset, 16 at the real widths)")
    args = ap.parse_args()
    if args.layers is not None and args.preset != "real-widths":
        ap.error("--layers applies to --preset real-widths only")
    layer_args = ["--layers", str(args.layers or 2), "--dtype", "bfloat16"] if args.preset == "real-widths" else []
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    import make_tiny_checkpoint as mk

    import glmimage
    import glmimage_testing as _testing

    with tempfile.TemporaryDirectory() as tmp:
        # Built in a child process so its memory does not count in this process's peak RSS.
        ckpt = Path(tmp) / args.preset
        subprocess.run([sys.executable, str(REPO / "tools" / "make_tiny_checkpoint.py"), "--out", str(ckpt),
                        "--preset", args.preset, *layer_args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        lay = mk.tokenizer_layout(args.preset)
        n_layers = json.loads((ckpt / "vision_language_encoder" / "config.json").read_text())["text_config"][
            "num_hidden_layers"]
        g = torch.Generator().manual_seed(0)
        first = lay["text_vocab_first_id"]
        text = torch.randint(first, first + lay["text_vocab_size"], (args.prompt,), generator=g).tolist()
        ids = torch.tensor([text + [lay["image_start_token_id"]]])
        grids = torch.tensor([[1, args.large, args.large], [1, args.small, args.small]])
        n_new = args.large ** 2 + args.small ** 2 + 1

        rss0 = rss_mb()
        glmimage.set_num_threads(args.threads)
        pipe = glmimage.Pipeline.from_pretrained(str(ckpt), dtype=args.dtype, quantize=args.quantize)
        bytes_per_token = decode_bytes_per_token(_testing.state_dict(pipe, "vision_language_encoder"), ckpt,
                                                 ids.shape[1] + n_new / 2)
        bandwidth = measure_bandwidth()

        def ours(n):
            return _testing.ar_generate(pipe, ids, grids, max_new_tokens=n, keep_in_codebook=False,
                                        decode=args.decode)

        def unfused(n):
            _testing.set_fused_kernels(False)
            try:
                return ours(n)
            finally:
                _testing.set_fused_kernels(True)

        ours_tokens = ours(n_new)["generated"]  # also the warm-up
        unfused_tokens = unfused(n_new)["generated"] if args.unfused_too else None
        if args.profile:
            print_profile(lambda: ours(n_new), f"ours, {n_new} tokens", bandwidth=bandwidth,
                          weight_bytes=profile_products.stored_weight_bytes(args.quantize,
                                                                            getattr(torch, args.dtype).itemsize))
        rss_ours = rss_mb()  # before the reference is loaded

        import transformers

        ref = transformers.GlmImageForConditionalGeneration.from_pretrained(
            str(ckpt / "vision_language_encoder"), torch_dtype=dtype).eval()

        def theirs(n):
            with torch.no_grad():
                return ref.generate(input_ids=ids, image_grid_thw=grids, max_new_tokens=n, do_sample=False)

        ref_tokens = theirs(n_new)[:, ids.shape[1]:]
        # Interleaved repeats, best of each: the machine is shared, so load changes hit both sides.
        t = {k: float("inf") for k in ("ours_n", "ours_1", "ref_n", "ref_1", "unfused_n", "unfused_1")}
        bandwidths, paired = [bandwidth], []
        for _ in range(args.repeats):
            bandwidths.append(measure_bandwidth())
            ours_n = best_time(lambda: ours(n_new), 1)
            ours_1 = best_time(lambda: ours(1), 1)
            paired.append((n_new - 1) / (ours_n - ours_1) / (bandwidths[-1] / bytes_per_token))
            t["ours_n"] = min(t["ours_n"], ours_n)
            t["ours_1"] = min(t["ours_1"], ours_1)
            t["ref_n"] = min(t["ref_n"], best_time(lambda: theirs(n_new), 1))
            t["ref_1"] = min(t["ref_1"], best_time(lambda: theirs(1), 1))
            if args.unfused_too:
                t["unfused_n"] = min(t["unfused_n"], best_time(lambda: unfused(n_new), 1))
                t["unfused_1"] = min(t["unfused_1"], best_time(lambda: unfused(1), 1))
        t_ours_n, t_ours_1, t_ref_n, t_ref_1 = t["ours_n"], t["ours_1"], t["ref_n"], t["ref_1"]
        # Measured again after the timed runs, the higher taken: a slow moment of a shared machine
        # must not make our rate look closer to the roofline.
        bandwidths.append(measure_bandwidth())
        bandwidth = max(bandwidths)
        # The check against the reference. Where glmimage computes bf16 products in float32 (a CPU
        # without oneDNN bf16 kernels) the reference is run that way too (tests/python/
        # reference_shims.py; its timed runs above are the reference as it is). Greedy tokens of a
        # random-weight model part at the first near tie of two logits (one bf16 step at
        # |logit| ~ 100 is 0.5), so the logits are also compared step by step on the reference's
        # tokens (teacher-forced). At the real widths the shimmed reference widens every weight at
        # every token (about a second a token here): the check covers the first --check-tokens.
        from reference_shims import reference_bf16_products_as_ours

        n_check = min(n_new, args.check_tokens or (n_new if args.preset == "small" else 16))
        ref_tokens_as_run = ref_tokens[:, :n_check]
        ours_checked = ours_tokens[:, :n_check]
        with reference_bf16_products_as_ours(), torch.no_grad():
            out = ref.generate(input_ids=ids, image_grid_thw=grids, max_new_tokens=n_check, do_sample=False,
                               output_logits=True, return_dict_in_generate=True)
        ref_tokens = out.sequences[:, ids.shape[1]:]
        forced = _testing.ar_generate(pipe, ids, grids, max_new_tokens=n_check, keep_in_codebook=False,
                                      decode=args.decode, record_logits=True, forced_tokens=ref_tokens)
        want_logits = torch.stack(out.logits).float()
        got_logits = torch.stack(forced["step_logits"]).float().reshape(want_logits.shape)

    ours_tps = (n_new - 1) / (t_ours_n - t_ours_1)
    ref_tps = (n_new - 1) / (t_ref_n - t_ref_1)
    extra = {}
    if args.unfused_too:
        unfused_tps = (n_new - 1) / (t["unfused_n"] - t["unfused_1"])
        extra = {"ours_unfused_decode_tok_s": round(unfused_tps, 1), "fused_speedup": round(ours_tps / unfused_tps, 3),
                 "ours_unfused_prefill_s": round(t["unfused_1"], 4),
                 "fused_tokens_equal_unfused": bool(torch.equal(ours_tokens, unfused_tokens))}
    print(json.dumps({
        "bench": "ar_decode", "preset": args.preset,
        "layers": n_layers,
        "dtype": args.dtype, "quantize": args.quantize, "decode": args.decode,
        "threads": args.threads,
        "prompt_tokens": ids.shape[1], "new_tokens": n_new,
        "ours_decode_tok_s": round(ours_tps, 1), "transformers_decode_tok_s": round(ref_tps, 1),
        "ratio": round(ours_tps / ref_tps, 2),
        "roofline_tok_s": round(bandwidth / bytes_per_token, 1),
        "ours_of_roofline": round(ours_tps / (bandwidth / bytes_per_token), 3),
        "ours_of_roofline_paired": round(sorted(paired)[len(paired) // 2], 3),
        "bandwidth_gb_s_range": [round(min(bandwidths) / 1e9, 1), round(max(bandwidths) / 1e9, 1)],
        "bytes_per_token_mb": round(bytes_per_token / 1e6, 2), "bandwidth_gb_s": round(bandwidth / 1e9, 2),
        "ours_prefill_s": round(t_ours_1, 4), "transformers_prefill_s": round(t_ref_1, 4),
        "ours_total_s": round(t_ours_n, 3), "transformers_total_s": round(t_ref_n, 3),
        "tokens_checked": n_check,
        "tokens_match": bool(torch.equal(ours_checked, ref_tokens)),
        "tokens_match_ref_as_run": bool(torch.equal(ours_checked, ref_tokens_as_run)),
        "tokens_equal_prefix": equal_prefix(ours_checked, ref_tokens),
        "tokens_equal_prefix_ref_as_run": equal_prefix(ours_checked, ref_tokens_as_run),
        "logits_max_abs_diff": round((got_logits - want_logits).abs().max().item(), 4),
        "logits_max_abs": round(want_logits.abs().max().item(), 2),
        "bf16_products_in_float32": args.dtype == "bfloat16" and _testing.cpu_bf16_products_in_float32(),
        # Peak RSS of this process: before loading anything, after our load + one generation,
        # and at the end (the transformers model loaded and run too).
        "peak_rss_mb_before_load": round(rss0, 1), "peak_rss_mb_ours": round(rss_ours, 1),
        "peak_rss_mb_end": round(rss_mb(), 1),
        **extra,
    }))


if __name__ == "__main__":
    main()
