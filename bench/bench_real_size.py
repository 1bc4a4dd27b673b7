"""GLM-Image at its real size on this machine's CPU: one image end to end from a random-weight
checkpoint in the real layout (tools/make_real_size_checkpoint.py; made in --out, or reused if --out
already holds one), bf16 weights used in place from the memory map (no copy in anonymous memory). A
checkpoint made by the run is written to the disk and dropped from the page cache before the load,
so that the run reads it as a first run after a download would (drop_from_page_cache).

Prints one JSON line:
  load_s                   Pipeline.from_pretrained
  ar_s_per_token           AR decode seconds per token (first token, i.e. the prefill, left out)
  ar_roofline_s_per_token  bytes one decode step reads (the text decoder's weights, bf16, and its
                           lm_head; the KV cache is negligible here) / a read bandwidth measured in
                           the same run (the best of 5 passes of sum() over 512 MiB)
  ar_prefill_s             from the call to the first token: the prompt's (and condition images')
                           tokens through the decoder at once, after the vision encoder (with --condition)
  dit_s_per_step           the mean of the denoising steps after the first (which also pages the DiT in)
  dit_roofline_s_per_step  DiT FLOPs per step (2 x S x the blocks' weights + attention 4 x S^2 x
                           inner x layers, for each CFG pass with its own S: the prompt's glyph rows
                           or the empty text's one, + the image tokens) / a bf16 GEMM rate measured in
                           the same run (the best of 5 4096^3 matmuls)
  vae_s                    from the last denoising step to the image (the VAE decode; its weights
                           are read into the page cache beforehand)
  block_cache              the CPU block cache over the generation (LoadOptions::cpu_block_cache):
                           blocks served again, new ones, freed at its cap, freed to keep the VAE
                           within its peak in use; block_cache_fresh_per_step: new blocks per
                           denoising step after the first (0 when every step reuses the last one's)
  ar_mapped_gb, ar_pmd_mapped_gb  after the AR stage, the mapped files' resident size and the part of
                           it mapped with 2 MB page-table entries (smaps_rollup FilePmdMapped)
  peak_rss_mb, peak_anon_mb  VmHWM at the end, and the largest RssAnon of the generation (read
                           every 10 ms by a thread), from /proc/self/status
  image                    the PNG written (noise: the weights are random)
Each limit (bandwidth, GEMM rate) is measured twice, before the run and after it, and the higher
taken, so that a slow moment of a shared machine cannot flatter the share of the roofline.

    python3 bench/bench_real_size.py --out DIR [--size 256] [--steps 2] [--threads 2]
                                     [--quantize none|int8|fp8] [--residency resident|staged]
                                     [--device cpu|cuda] [--layers N] [--reference]
                                     [--decoder-only] [--no-cpu-block-cache] [--cfg-passes auto|joint|apart]
                                     [--profile FILE] [--profile-ar FILE] [--unfused]
                                     [--condition PX] [--vae-only] [--first-block-cache T]

--condition PX makes the request image-to-image: one PX x PX condition image (a fixed pattern; PX
a multiple of 32 from 512, the smallest the model takes). Its vision encoding and AR tokens join
the prefill (the key ar_prefill_s), its VAE encoding and the DiT's pass that writes its keys and
values into the condition cache come before the first denoising step, and each conditional pass
attends to those (PX/16)^2 cached tokens beside its own (counted in dit_roofline_s_per_step).

--unfused runs LibTorch's op sequences instead of every fused kernel (the AR decoder's, the DiT's
RoPE and modulations): what the kernels gain; the key fused_kernels says which ran.
--vae-only runs the VAE decode alone, ours and then diffusers' (in a child process) on the same
random latents at --size, and prints vae_s, vae_roofline_s (the decoder's convolution FLOPs at the
bf16 GEMM rate measured in the same run), vae_peak_anon_rise_mb (the largest RssAnon during the
decode above the one before it: its activations, the weights being mapped or loaded beforehand),
the reference's ref_vae_s and ref_vae_peak_anon_rise_mb, and max_abs_diff of the two images.
--first-block-cache T runs the denoising loop with the First Block Cache at threshold T
(GenerateRequest::first_block_cache) and adds dit_passes_cached. With a threshold no residual
reaches (1e9) every step after the first runs each pass's first block alone, so dit_s_per_step is
what such a step costs at this size (the random weights cannot tell how many steps the real
model's residuals would let it skip).
--decoder-only skips the AR stage (its keys are then null) and denoises from random prior tokens:
the decoder at a size whose AR stage would take this CPU too long (1024²: about 1,300 tokens).
With --reference it then runs diffusers' transformer for one denoising step (its two CFG passes,
glyph rows as ours: the prompt's and the empty text's) and its VAE decode on the same shapes, in a
child process: these two fit a 24 GB machine (about 18 GB), the whole pipeline does not.

On a GPU (--device cuda) the stage timings synchronize the device at each progress step, the
rooflines are the device's (a read pass over 4 GiB; a bf16 8192^3 matmul), and peak_gpu_mb is the
CUDA caching allocator's peak (glmimage allocates through the same LibTorch as torch here).
--reference also runs diffusers' GlmImagePipeline (+ transformers) on the same checkpoint and
request in a child process and adds its figures (ref_*) and the ratios. It cannot run on a 24 GB
CPU machine at the real size: from_pretrained materializes the 35 GB of bf16 weights in anonymous
memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "python"), str(REPO / "tests" / "python")]  # glmimage, glmimage_testing

import profile_products  # noqa: E402  (bench/, the script's own folder)

PROMPT = 'A poster that says "GLM-Image"'


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class AnonPeak:
    """The largest RssAnon (KiB) of this process from now to stop(), read every 10 ms by a thread
    (generation releases the GIL): the kernel keeps a peak of the whole RSS only (VmHWM), which the
    mapped weights fill."""

    def __init__(self):
        self.peak = proc_status_kib("RssAnon")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._done.wait(0.01):
            self.peak = max(self.peak, proc_status_kib("RssAnon"))

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self.peak, proc_status_kib("RssAnon"))


def file_mapped_gb() -> tuple[float, float]:
    """(RSS of mapped files, the part of it mapped with 2 MB page-table entries), in GB, from
    /proc/self/smaps_rollup: the weights are the mapped files, and their TLB cost depends on it."""
    kib = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            kib[parts[0].rstrip(":")] = int(parts[1])
    rss_file = kib.get("Rss", 0) - kib.get("Anonymous", 0)
    return rss_file * 1024 / 1e9, kib.get("FilePmdMapped", 0) * 1024 / 1e9


def best_of(fn, n: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def checkpoint_layers(ckpt: Path):
    """The checkpoint's layers per stack: "real" where its DiT has the real config's count, else
    the count (a --layers N checkpoint), whichever --layers this call was given."""
    real = json.loads((REPO / "tests/data/real-configs/transformer/config.json").read_text())["num_layers"]
    n = json.loads((Path(ckpt) / "transformer/config.json").read_text())["num_layers"]
    return "real" if n == real else n


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_limits(device: str, threads: int) -> tuple[float, float]:
    """(read bandwidth in B/s, bf16 GEMM rate in FLOP/s) measured now on `device`."""
    import torch

    if not device.startswith("cuda"):
        buf = torch.ones(128 * 1024 * 1024, dtype=torch.float32)
        bandwidth = buf.numel() * buf.element_size() / best_of(buf.sum)
        del buf
        from bench_decoder import gemm_rate  # bf16: the higher of its and the float32 product's rate

        return bandwidth, gemm_rate(torch.bfloat16, n=4096)

    def timed(fn, n=10):
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / n

    buf = torch.ones(1024 * 1024 * 1024, dtype=torch.float32, device=device)  # 4 GiB
    bandwidth = buf.numel() * buf.element_size() / timed(buf.sum)
    del buf
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    gemm = 2 * n**3 / timed(lambda: a @ b)
    del a, b
    torch.cuda.empty_cache()
    return bandwidth, gemm


def profiled(fn, table: Path, cuda: bool, limits: tuple[float, float], weight_bytes: float):
    """fn() under torch.profiler; the ops (on a GPU with their kernels' device time) written to
    `table`, sorted by self device time on a GPU and self CPU time on a CPU. LibTorch's profiler sees
    the ATen ops and kernels of our C++, as it shares this process's LibTorch. Then the products
    and attention calls by shape against `limits` (bandwidth, GEMM rate) measured before the run
    (profile_products.py; `weight_bytes` a weight element's)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []),
                 record_shapes=True) as prof:
        result = fn()
        sync("cuda" if cuda else "cpu")
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    bandwidth, gemm = limits
    table.write_text(prof.key_averages().table(sort_by=sort, row_limit=40, max_name_column_width=90) + "\n"
                     + profile_products.table(prof.key_averages(group_by_input_shape=True), cuda, gemm,
                                              bandwidth, weight_bytes))
    return result


def condition_image(px: int):
    """A fixed PX x PX RGB pattern (uint8 [H, W, 3]): smooth gradients with a checkerboard, so the
    vision encoder and the VAE see structure rather than a flat field."""
    import numpy as np

    y, x = np.mgrid[0:px, 0:px]
    checker = ((x // 32 + y // 32) % 2) * 64
    rgb = np.stack([x * 255 // max(px - 1, 1), y * 255 // max(px - 1, 1), 128 + checker - 32], axis=-1)
    return rgb.clip(0, 255).astype(np.uint8)


def run_reference_decoder(args, out: Path) -> dict:
    """diffusers' DiT (one step: both CFG passes) and VAE decode on the request's shapes."""
    import torch
    from diffusers import AutoencoderKL, GlmImageTransformer2DModel

    torch.set_num_threads(args.threads)
    cfg = json.loads((out / "transformer" / "config.json").read_text())
    gen = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    dit = GlmImageTransformer2DModel.from_pretrained(str(out / "transformer"), torch_dtype=torch.bfloat16)
    load_s = time.perf_counter() - t0
    n = args.size // 8
    latents = torch.randn(1, cfg["in_channels"], n, n, generator=gen).bfloat16()
    prior = torch.randint(0, cfg["prior_vq_quantizer_codebook_size"], (1, (args.size // 16) ** 2), generator=gen)
    common = dict(prior_token_id=prior, timestep=torch.tensor([999.0]),
                  target_size=torch.tensor([[float(args.size)] * 2]).bfloat16(),
                  crop_coords=torch.zeros(1, 2).bfloat16(), return_dict=False)
    texts = [args.glyph_rows, 1]  # the prompt's glyph rows, then the empty text's
    with torch.inference_mode():
        t0 = time.perf_counter()
        for rows, drop in zip(texts, [False, True]):
            dit(latents, torch.randn(1, rows, cfg["text_embed_dim"], generator=gen).bfloat16(),
                prior_token_drop=torch.full_like(prior, drop, dtype=torch.bool), **common)
        dit_s = time.perf_counter() - t0
        del dit
        vae = AutoencoderKL.from_pretrained(str(out / "vae"), torch_dtype=torch.bfloat16)
        t0 = time.perf_counter()
        vae.decode(latents).sample
        vae_s = time.perf_counter() - t0
    return {"ref_load_dit_s": round(load_s, 2), "ref_dit_s_per_step": round(dit_s, 2), "ref_vae_s": round(vae_s, 2),
            "ref_peak_rss_mb": round(proc_status_kib("VmHWM") / 1024, 1)}


def vae_decode_flops(vae_config: dict, size: int) -> int:
    """The FLOPs of the VAE decoder's convolutions (2 x in x out x k^2 per output pixel) for one
    size x size image; the group norms, SiLUs and adds are left out."""
    ch = list(reversed(vae_config["block_out_channels"]))
    res = size // 2 ** (len(ch) - 1)  # the latent's side
    flops = 0

    def conv(c_in, c_out, k, side):
        nonlocal flops
        flops += 2 * c_in * c_out * k * k * side * side

    conv(vae_config["latent_channels"], ch[0], 3, res)  # conv_in
    for _ in range(2):  # the mid block's two resnets
        conv(ch[0], ch[0], 3, res), conv(ch[0], ch[0], 3, res)
    for i, c in enumerate(ch):
        for j in range(vae_config["layers_per_block"] + 1):
            c_in = (ch[i - 1] if i else ch[0]) if j == 0 else c
            conv(c_in, c, 3, res), conv(c, c, 3, res)
            if c_in != c:
                conv(c_in, c, 1, res)  # the shortcut
        if i + 1 < len(ch):
            res *= 2
            conv(c, c, 3, res)  # the upsampler's
    conv(ch[-1], vae_config["out_channels"], 3, res)  # conv_out
    return flops


def vae_latents(args):
    import torch

    n = args.size // 8
    return torch.randn(1, 16, n, n, generator=torch.Generator().manual_seed(1)).bfloat16()


def timed_decode(decode) -> tuple[object, float, float]:
    """(image, seconds, MB of RssAnon above the one before the call, at its largest)."""
    before = proc_status_kib("RssAnon")
    peak = AnonPeak()
    t0 = time.perf_counter()
    image = decode()
    seconds = time.perf_counter() - t0
    return image, seconds, (peak.stop() - before) / 1024


def run_reference_vae(args, out: Path) -> dict:
    """diffusers' AutoencoderKL decode of --vae-only's latents, as GlmImagePipeline does it (z * std
    + mean, then decode); the image saved to --side-image for the parent to compare."""
    import torch
    from diffusers import AutoencoderKL

    torch.set_num_threads(args.threads)
    vae = AutoencoderKL.from_pretrained(str(out / "vae"), torch_dtype=torch.bfloat16).eval()
    c = vae.config.latent_channels
    z = vae_latents(args)
    mean = torch.tensor(vae.config.latents_mean).view(1, c, 1, 1).bfloat16()
    std = torch.tensor(vae.config.latents_std).view(1, c, 1, 1).bfloat16()
    with torch.inference_mode():
        image, seconds, rise = timed_decode(lambda: vae.decode(z * std + mean).sample)
    torch.save(image, args.side_image)
    return {"ref_vae_s": round(seconds, 2), "ref_vae_peak_anon_rise_mb": round(rise, 1)}


def run_vae_only(args, out: Path) -> dict:
    """Ours, then the reference in a child process, on the same latents (the pipeline's decode)."""
    import tempfile

    import torch

    import glmimage
    import glmimage_testing as _testing

    torch.set_num_threads(args.threads)
    glmimage.set_num_threads(args.threads)
    limits_before = device_limits("cpu", args.threads)
    vae = _testing.load_vae(str(out / "vae"), "bfloat16")
    _testing.vae_decode(vae, vae_latents(args)[..., :4, :4])  # the weights paged in: a 32² image
    image, seconds, rise = timed_decode(lambda: _testing.vae_decode(vae, vae_latents(args)))
    del vae
    gemm = max(limits_before[1], device_limits("cpu", args.threads)[1])
    flops = vae_decode_flops(json.loads((out / "vae" / "config.json").read_text()), args.size)
    result = {"bench": "real_size_vae", "size": args.size, "threads": args.threads, "dtype": "bfloat16",
              "vae_s": round(seconds, 2), "vae_roofline_s": round(flops / gemm, 2),
              "vae_tflop": round(flops / 1e12, 2), "bf16_gemm_tflop_s": round(gemm / 1e12, 3),
              "vae_peak_anon_rise_mb": round(rise, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        ref_image = Path(tmp) / "reference.pt"
        cmd = [sys.executable, __file__, "--side", "reference", "--vae-only", "--side-image", str(ref_image),
               "--out", str(out), "--size", str(args.size), "--threads", str(args.threads)]
        result.update(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
        want = torch.load(ref_image)
    result["max_abs_diff"] = float((image.float() - want.float()).abs().max())
    result["speedup_vae"] = round(result["ref_vae_s"] / seconds, 2)
    result["anon_rise_ratio"] = round(rise / result["ref_vae_peak_anon_rise_mb"], 2)
    return result


def run_reference(args, out: Path) -> dict:
    """diffusers' GlmImagePipeline on the same checkpoint and request (run in a child process)."""
    import torch
    from diffusers import GlmImagePipeline

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pipe = GlmImagePipeline.from_pretrained(str(out), torch_dtype=torch.bfloat16)
    if args.residency == "staged":
        pipe.enable_model_cpu_offload(device=args.device)
    else:
        pipe.to(args.device)
    sync(args.device)
    load_s = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    stamps: list[float] = []

    def on_step(_pipe, _i, _t, kw):
        sync(args.device)
        stamps.append(time.perf_counter())
        return kw

    t0 = time.perf_counter()
    with torch.inference_mode():
        pipe(prompt=PROMPT, height=args.size, width=args.size, num_inference_steps=args.steps,
             generator=torch.Generator().manual_seed(1), callback_on_step_end=on_step, output_type="pil")
    sync(args.device)
    t_end = time.perf_counter()
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    res = {"ref_load_s": round(load_s, 2), "ref_total_s": round(t_end - t0, 2),
           # From the call to the end of the first denoising step: the AR stage, T5, one step.
           "ref_to_first_step_s": round(stamps[0] - t0, 2),
           "ref_dit_s_per_step": round(sum(steps) / len(steps), 4) if steps else None,
           "ref_vae_s": round(t_end - stamps[-1], 2),
           "ref_rss_anon_mb": round(proc_status_kib("RssAnon") / 1024, 1)}  # at the end
    if args.device.startswith("cuda"):
        res["ref_peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


def drop_from_page_cache(out: Path) -> None:
    """Writes the checkpoint just made to the disk and drops its files from the page cache, so that
    the run reads them as a first run after a download does. Left in the cache, the pages hold the
    small folios of the writes, and the mapping's MADV_HUGEPAGE (io/safetensors.cpp) cannot map them
    2 MB at a time: measured on a 2-core EPYC, 13.5 of the AR's 16.65 GB PMD-mapped right after the
    checkpoint was written, 16.1 once read cold."""
    for f in sorted(out.rglob("*.safetensors")):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="checkpoint directory (made if it holds none)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", default=None, help="PNG to write [OUT/../real_size.png]")
    ap.add_argument("--quantize", choices=["none", "int8", "fp8"], default="none",
                    help="the AR decoder's and the DiT's linears quantized at load (anonymous copies)")
    ap.add_argument("--residency", choices=["resident", "staged"], default="resident")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--ar-decode", choices=["auto", "eager", "static", "graph"], default="auto",
                    help="the AR decode path (LoadOptions::ar_decode)")
    ap.add_argument("--cfg-passes", choices=["auto", "joint", "apart"], default="auto",
                    help="guidance's two DiT passes as one forward or two (LoadOptions::cfg_passes); "
                         "the key cfg says which ran")
    ap.add_argument("--layers", type=int, default=None, help="layers per stack when making the checkpoint")
    ap.add_argument("--reference", action="store_true", help="also run diffusers on the same request")
    ap.add_argument("--no-cpu-block-cache", action="store_true",
                    help="every large CPU block new (LoadOptions::cpu_block_cache off), to measure what reuse gives")
    ap.add_argument("--decoder-only", action="store_true",
                    help="skip the AR stage: denoise from random prior tokens (AR keys null)")
    ap.add_argument("--profile", metavar="FILE",
                    help="the denoising call under torch.profiler, its ops by self device (GPU) or CPU time "
                         "written to FILE, then each product and attention shape against the measured GEMM "
                         "rate and bandwidth (profile_products.py); the stage timings then carry the "
                         "profiler's cost")
    ap.add_argument("--profile-ar", metavar="FILE",
                    help="the same for the AR stage (with --ar-decode static its steps' kernels show one by one; "
                         "a CUDA graph's replay shows as the graph)")
    ap.add_argument("--unfused", action="store_true",
                    help="every fused kernel off (kernels/fused_switch.h: the AR decoder's, the DiT's RoPE and "
                         "modulations), LibTorch's op sequences instead: what they gain; the key fused_kernels says which ran")
    ap.add_argument("--condition", type=int, metavar="PX", default=None,
                    help="image-to-image with one PX x PX condition image (PX a multiple of 32, from 512)")
    ap.add_argument("--vae-only", action="store_true",
                    help="the VAE decode alone, ours and diffusers' on the same latents (see above)")
    ap.add_argument("--first-block-cache", type=float, default=0.0, metavar="T",
                    help="the denoising loop with the First Block Cache at threshold T (0: off)")
    ap.add_argument("--side", choices=["reference"], help=argparse.SUPPRESS)
    ap.add_argument("--side-image", help=argparse.SUPPRESS)
    ap.add_argument("--glyph-rows", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.condition is not None:
        # The model's own limits are Model::validate's; these are the bench's: the reference side
        # runs text-to-image only, and --decoder-only has no AR stage to tokenize the image.
        if args.reference or args.decoder_only:
            ap.error("--condition runs ours alone and with the AR stage: drop --reference / --decoder-only")
    out = Path(args.out)
    if args.side == "reference":
        if args.vae_only:
            print(json.dumps(run_reference_vae(args, out)))
        else:
            print(json.dumps(run_reference_decoder(args, out) if args.decoder_only else run_reference(args, out)))
        return 0
    if not (out / "model_index.json").exists():
        make = [sys.executable, str(REPO / "tools" / "make_real_size_checkpoint.py"), "--out", str(out),
                "--jobs", str(len(os.sched_getaffinity(0)))]  # the cores this process may use
        if args.layers:
            make += ["--layers", str(args.layers)]
        subprocess.run(make, check=True)
        drop_from_page_cache(out)
    if args.vae_only:
        print(json.dumps(run_vae_only(args, out)))
        return 0

    import torch

    import glmimage
    import glmimage_testing as _testing

    torch.set_num_threads(args.threads)
    glmimage.set_num_threads(args.threads)
    _testing.set_fused_kernels(not args.unfused)

    cuda = args.device.startswith("cuda")
    # The machine's limits are measured before the run and again after it, and the higher of the
    # two taken: a slow moment of a shared machine must not make the run look closer to its limit.
    limits_before = device_limits(args.device, args.threads)
    t0 = time.perf_counter()
    pipe = glmimage.Pipeline.from_pretrained(out, dtype="bfloat16", quantize=args.quantize, device=args.device,
                                             residency=args.residency, ar_decode=args.ar_decode,
                                             cfg_passes=args.cfg_passes,
                                             cpu_block_cache=not args.no_cpu_block_cache)
    sync(args.device)
    load_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ar_state = _testing.state_dict(pipe, "vision_language_encoder")
    ar_bytes = sum(t.numel() * t.element_size() for k, t in ar_state.items()  # int8 when quantized
                   if k.startswith("model.language_model.layers.") or k.startswith("lm_head"))
    dit_state = _testing.state_dict(pipe, "transformer")
    dit_block_weights = sum(t.numel() for k, t in dit_state.items() if k.startswith("transformer_blocks.")
                            and (".attn1." in k or ".ff." in k) and k.endswith(".weight"))
    del ar_state, dit_state
    weight_bytes = profile_products.stored_weight_bytes(args.quantize, torch.bfloat16.itemsize)  # for the profile
    cfg = json.loads((out / "transformer" / "config.json").read_text())

    stamps: dict[str, list[float]] = {"ar": [], "denoise": []}
    fresh_at_steps: list[int] = []  # the block cache's fresh blocks so far, at each denoising step

    def progress(stage, step, total):
        # A no-op on the CPU. On a GPU the stamps then time finished work: each denoising step;
        # of the AR stage only the first token (the prefill done), since a wait per token would
        # stop the host from queueing ahead (the generator itself reads the device only every
        # 16 tokens); its end is taken when generate_prior_tokens returns, which read the tokens.
        if stage != "ar" or step == 1:
            sync(args.device)
        stamps.setdefault(stage, []).append(time.perf_counter())
        if stage == "denoise":
            fresh_at_steps.append(_testing.cpu_block_cache_stats()["fresh"])
        if stage == "ar" and step % 20 == 0 or stage != "ar":
            print(f"{stage} {step}/{total} at {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    # The VAE's weights into the page cache first: vae_s is timed in one call, with no later one
    # to take it from (the DiT's first step pages its own in and is left out), and the reference
    # has read its copy at load. After a run that needed the memory (the reference's 18 GB) they
    # would otherwise come from the disk inside the timing.
    for f in sorted((out / "vae").glob("*.safetensors")):
        with open(f, "rb") as fh:  # in 16 MB pieces: no copy of the file in this process's memory
            while fh.read(1 << 24):
                pass
    condition = None if args.condition is None else condition_image(args.condition)
    peak_anon = AnonPeak()  # from here to the image: the limits' own buffers are not the run's
    cache_before = _testing.cpu_block_cache_stats()
    t0 = time.perf_counter()
    if args.decoder_only:
        gen = torch.Generator().manual_seed(1)
        prior = torch.randint(0, cfg["prior_vq_quantizer_codebook_size"], (1, (args.size // 16) ** 2), generator=gen)
        ar_mapped_gb = ar_pmd_mapped_gb = ar_s_per_token = ar_prefill_s = None
    else:
        def ar_stage():
            return pipe.generate_prior_tokens(PROMPT, height=args.size, width=args.size, image=condition, seed=1,
                                              callback=progress, progress=False)

        prior = (profiled(ar_stage, Path(args.profile_ar), cuda, limits_before, weight_bytes) if args.profile_ar
                 else ar_stage())
        ar_mapped_gb, ar_pmd_mapped_gb = file_mapped_gb()
        ar = stamps["ar"]
        ar_s_per_token = (time.perf_counter() - ar[0]) / (len(ar) - 1)
        ar_prefill_s = ar[0] - t0
    t_dec = time.perf_counter()
    def denoise():
        return pipe(PROMPT, image=condition, prior_token_ids=prior, height=args.size, width=args.size,
                    num_inference_steps=args.steps, seed=1, callback=progress, progress=False,
                    first_block_cache=args.first_block_cache)

    if args.profile:
        output = profiled(denoise, Path(args.profile), cuda, limits_before, weight_bytes)
    else:
        output = denoise()
    sync(args.device)
    t_end = time.perf_counter()
    peak_anon_kib = peak_anon.stop()
    cache_after = _testing.cpu_block_cache_stats()
    peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    den = stamps["denoise"]
    # The mean of the steps after the first (which also pages or places the DiT in).
    dit_s_per_step = (den[-1] - den[0]) / (len(den) - 1) if len(den) > 1 else den[-1] - t_dec
    vae_s = t_end - den[-1]
    image = Path(args.image) if args.image else out.parent / "real_size.png"
    output.images[0].save(image)

    # The machine's limits, measured now, in the same process and thread count (and before the run).
    bandwidth, gemm = (max(pair) for pair in zip(limits_before, device_limits(args.device, args.threads)))
    glyph_rows = _testing.glyph_embeddings(pipe, [PROMPT]).shape[1]
    inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    # Per CFG pass with its own text: the prompt's glyph rows, then the empty text's one row; the
    # conditional pass's queries also attend to the condition cache's keys (the other skips it).
    cond_tokens = 0 if args.condition is None else (args.condition // 16) ** 2
    dit_flops = sum(2 * seq * dit_block_weights + 4 * seq * (seq + cached) * inner * cfg["num_layers"]
                    for seq, cached in ((glyph_rows + (args.size // 16) ** 2, cond_tokens),
                                        (1 + (args.size // 16) ** 2, 0)))

    result = {
        "bench": "real_size", "size": args.size, "steps": args.steps, "threads": args.threads, "dtype": "bfloat16",
        "device": args.device, "residency": args.residency, "layers": checkpoint_layers(out),
        "quantize": args.quantize, "ar_decode": args.ar_decode, "cpu_block_cache": not args.no_cpu_block_cache,
        "ar_decode_ran": None if args.decoder_only else prior.ar_decode,  # the path that produced the tokens
        "fused_kernels": _testing.fused_kernels_enabled(),
        "cfg": output.timings.get("cfg"),
        "first_block_cache": args.first_block_cache, "dit_passes_cached": output.timings.get("dit_passes_cached"),
        "load_s": round(load_s, 2),
        "ar_tokens": None if args.decoder_only else len(stamps["ar"]),
        "ar_tok_s": round(1 / ar_s_per_token, 1) if ar_s_per_token else None, "total_s": round(t_end - t0, 2),
        "ar_s_per_token": round(ar_s_per_token, 4) if ar_s_per_token else None,
        "ar_prefill_s": round(ar_prefill_s, 2) if ar_prefill_s is not None else None,
        "condition": args.condition, "condition_tokens": cond_tokens,
        "ar_roofline_s_per_token": round(ar_bytes / bandwidth, 4),
        # The decoder call to its first step's end: the T5s, the DiT paged in, and with --condition
        # the condition image's VAE encoding and the pass that writes the condition cache.
        "to_first_step_s": round(den[0] - t_dec, 2),
        "dit_s_per_step": round(dit_s_per_step, 4), "dit_roofline_s_per_step": round(dit_flops / gemm, 4),
        "vae_s": round(vae_s, 3),
        # The CPU block cache over the generation: blocks served again, new ones, and those freed at
        # its cap or to stay under the peak in use; new blocks per denoising step after the first.
        "block_cache": {k: cache_after[k] - cache_before[k] for k in ("reused", "fresh", "evicted", "trimmed")},
        "block_cache_fresh_per_step": round((fresh_at_steps[-1] - fresh_at_steps[0]) / (len(fresh_at_steps) - 1), 1)
        if len(fresh_at_steps) > 1 else None,
        "peak_rss_mb": round(proc_status_kib("VmHWM") / 1024, 1), "peak_anon_mb": round(peak_anon_kib / 1024, 1),
        "ar_bytes_per_token_gb": round(ar_bytes / 1e9, 2), "bandwidth_gb_s": round(bandwidth / 1e9, 2),
        "ar_mapped_gb": round(ar_mapped_gb, 2) if ar_mapped_gb is not None else None,
        "ar_pmd_mapped_gb": round(ar_pmd_mapped_gb, 2) if ar_pmd_mapped_gb is not None else None,
        "dit_tflop_per_step": round(dit_flops / 1e12, 2), "bf16_gemm_tflop_s": round(gemm / 1e12, 3),
        "image": str(image),
        # The SDPA kernel each attention site gets at this size (math = the unfused fallback).
        "sdpa": _testing.attention_backends(pipe, args.size, args.size),
    }
    if cuda:
        result["peak_gpu_mb"] = round(peak_gpu_mb, 1)
    if args.reference:
        del pipe, output  # free our weights before the reference loads its own
        if cuda:
            torch.cuda.empty_cache()
        cmd = [sys.executable, __file__, "--side", "reference", "--out", str(out), "--size", str(args.size),
               "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device,
               "--residency", args.residency]
        if args.decoder_only:
            cmd += ["--decoder-only", "--glyph-rows", str(glyph_rows)]
        ref = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        result.update(ref)
        if "ref_total_s" in ref:
            result["speedup_total"] = round(ref["ref_total_s"] / result["total_s"], 2)
        if ref.get("ref_dit_s_per_step"):
            result["speedup_dit_step"] = round(ref["ref_dit_s_per_step"] / dit_s_per_step, 2)
        if args.decoder_only:
            result["speedup_vae"] = round(ref["ref_vae_s"] / vae_s, 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
