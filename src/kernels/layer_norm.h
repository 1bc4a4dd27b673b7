// LayerNorm over the last dimension without weight or bias (the DiT's: the adaLN streams', the
// per-head q/k norms, norm_out) as LibTorch's at::layer_norm computes it on the CPU, faster.
//
// Profile-led: LibTorch's CPU kernel normalizes a row that has no weight or bias in a scalar loop;
// LibTorch's profiler put the DiT's layer norms at about 6 ms of a 115-125 ms float32 step (small
// preset, 256², 2 threads, 2-core AVX2 EPYC). Timed alone (test_kernels prints it) a [1, 281, 8, 64]
// call took 0.12 ms and a [2, 256, 512] one 0.13 ms there; this loop 0.09 and 0.06.
//
// The bits: a row's mean and variance are LibTorch's (ATen/native/cpu/moments_utils.h: Welford
// over vectors of 8 lanes in chunks of 16 vectors, the chunks merged in a binary cascade, then
// the 8 lanes merged in order), then each value is (x + (-mean)) * rstd, rstd = 1 / sqrt(var + eps),
// with the same roundings in the same order as LibTorch's AVX2 kernel. Which of that kernel's
// multiply-adds its compiler fused into one rounding is not in the source: it was measured (the
// lanes' scalar merge fused, the vector merge's mean not), and is checked by a probe at first use
// that compares rows of several widths with at::layer_norm: the loop runs only where it finds
// LibTorch's bits. It does under capability AVX2, and under AVX512, where LibTorch runs the AVX2
// build of this kernel (it registers no AVX-512 one: a 2-core Xeon gave the same bits with
// ATEN_CPU_CAPABILITY=avx2 as without, torch 2.13); not under its generic kernel (which rounds every
// product; test_kernels runs a second time there). Anywhere else at::layer_norm runs.
//
// bf16 rows follow LibTorch's mixed-type kernel: its moments take vectors of 16 values, each
// widened into two float vectors with moments of their own through a chunk, merged one after the
// other; then y = x * rstd + (-rstd * mean) in float32 (times 1, plus 0), rounded once to bf16.
// Whether that product and sum were fused is the bf16 probe's finding. Measured on a 2-core Zen 4
// EPYC (test_kernels' timing lines, 2 threads): bf16 [1, 281, 8, 64] 0.07 ms against LibTorch's
// 0.08-0.09, float32 0.04-0.07 against 0.10-0.14; on the DiT's strided views of the q/k/v rows,
// which LibTorch copies first, bf16 0.07-0.08 against 0.08-0.10, float32 0.05-0.07 against 0.11-0.19.
#pragma once

#include <ATen/ATen.h>

namespace glmimage::kernels {

// Whether layer_norm() runs its own loop for x (and the fused kernels' switch of fused_switch.h is
// on): a CPU tensor of up to 5 dimensions with its last one contiguous (the others any strides: the
// loop reads a view's rows where they are), float32 with that dimension a positive multiple of 8,
// or bf16 with it a multiple of 16, on a CPU where the dtype's probe found LibTorch's bits
// (capability AVX2 or AVX512, as tested).
bool layer_norm_by_kernel(const at::Tensor& x);

// at::layer_norm(x, {x.size(-1)}, {}, {}, eps): by the loop where layer_norm_by_kernel(x),
// LibTorch's op otherwise.
at::Tensor layer_norm(const at::Tensor& x, double eps);

namespace detail {
// The probe: whether the loop gives at::layer_norm's bits on this CPU with the kernels LibTorch
// picked (rows of widths 8 to 4096 of varied scale). False where the loop cannot run (no AVX2 and
// FMA, or not an x86-64 build).
bool layer_norm_loop_matches_libtorch();
// The same for bf16 rows, where LibTorch's mixed-type kernel computes in float32 vectors and rounds
// once: of the two ways its compiler may have built x * rstd + (-rstd * mean), the one that gives
// LibTorch's bits ("fused multiply-add" or "multiply, then add"), or "none".
const char* layer_norm_bf16_probe();
}  // namespace detail

}  // namespace glmimage::kernels
