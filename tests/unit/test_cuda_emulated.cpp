// The CUDA kernels (src/kernels/cuda/*_kernels.cuh) run on the CPU through a stand-in for CUDA's
// runtime header (cuda_emulation/cuda_runtime.h), every thread of the grid their launchers use, one
// after the other, against the CPU implementations of the same functions (kernels/decoder_fused.h,
// rotary.h, mul_add.h), which the other tests hold to LibTorch's op sequences. What this checks is
// the kernels' indexing: rows, strides, cache slots, layouts, and the grid-stride loops (one case
// has a row longer than a grid's columns). Their device arithmetic is checked on a GPU
// (tests/python/test_fused_kernels.py).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "kernels/cuda/decoder_fused_kernels.cuh"
#include "kernels/cuda/dit_fused_kernels.cuh"
#include "kernels/decoder_fused.h"
#include "kernels/fused_math_cpu.h"
#include "kernels/mul_add.h"
#include "kernels/rotary.h"

namespace glmimage::kernels {
namespace {

using cuda::RowGrid;
using fused::bf16_t;
using fused::data;

// Runs kernel() once for every (block, thread) of the grid `g`.
template <typename F>
void emulate(const RowGrid& g, F&& kernel) {
    glmi_emulation::grid_dim = g.blocks;
    glmi_emulation::block_dim = dim3(g.threads);
    for (unsigned bx = 0; bx < g.blocks.x; ++bx)
        for (unsigned by = 0; by < g.blocks.y; ++by)
            for (unsigned tx = 0; tx < g.threads; ++tx) {
                glmi_emulation::block_idx = dim3(bx, by);
                glmi_emulation::thread_idx = dim3(tx);
                kernel();
            }
}

void expect_equal(const at::Tensor& got, const at::Tensor& want, const char* what) {
    ASSERT_EQ(got.sizes(), want.sizes()) << what;
    const double diff = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
    std::printf("emulated %s: max abs diff %g\n", what, diff);
    EXPECT_EQ(diff, 0.0) << what;
}

template <typename T>
void check_norms(at::ScalarType dt, int64_t rows, int64_t D) {
    const double eps = 1e-5;
    const auto x = (at::randn({rows, D}) * 3).to(dt), h = (at::randn({rows, D}) * 40).to(dt);
    const auto w = at::randn({D}).to(dt);
    auto sq = at::empty({rows, D}, at::kFloat);
    emulate(cuda::row_grid(rows, D), [&] { cuda::squares_kernel<T>(data<T>(x), data<float>(sq), rows, D); });
    expect_equal(sq, squares(x), "squares");
    const auto mean = sq.mean(-1, true).contiguous();
    auto y = at::empty_like(x);
    emulate(cuda::row_grid(rows, D), [&] {
        cuda::rms_scale_kernel<T>(data<T>(x), data<float>(mean), data<T>(w), static_cast<float>(eps), data<T>(y), rows, D);
    });
    expect_equal(y, rms_norm(x, squares(x), w, eps), "rms_scale");
    const auto mean_h = squares(h).mean(-1, true).contiguous();
    auto out = at::empty_like(h);
    auto out_sq = at::empty({rows, D}, at::kFloat);
    emulate(cuda::row_grid(rows, D), [&] {
        cuda::residual_rms_scale_kernel<T>(data<T>(x), data<T>(h), data<float>(mean_h), data<T>(w), static_cast<float>(eps),
                                           data<T>(out), data<float>(out_sq), rows, D);
    });
    const auto want = residual_rms_norm(x, h, w, eps);
    expect_equal(out, want.out, "residual_rms_scale");
    expect_equal(out_sq, squares(want.out), "residual_rms_scale squares");
}

TEST(CudaEmulated, Norms) {
    check_norms<float>(at::kFloat, 5, 96);
    check_norms<bf16_t>(at::kBFloat16, 3, 4608);  // a row longer than the grid's 16 x 256 columns
}

template <typename T>
void check_rotary_qkv(at::ScalarType dt, int64_t rd, bool device_slot) {
    const int64_t B = 2, hq = 4, hkv = 2, D = 16, cap = 9, S = device_slot ? 1 : 3;
    const auto proj = (at::randn({B, S, (hq + 2 * hkv) * D}) * 2).to(dt);
    const auto parts = proj.split_with_sizes({hq * D, hkv * D, hkv * D}, -1);
    const auto table = at::randn({B, S + 4, 2 * rd}).to(dt);
    const auto cos = table.narrow(1, 2, S).narrow(2, 0, rd), sin = table.narrow(1, 2, S).narrow(2, rd, rd);
    auto slot = at::full({1}, 6, at::kLong);
    const int64_t slot0 = 2;
    auto ck = at::zeros({B, hkv, cap, D}, dt), cv = at::zeros_like(ck);
    auto want_k = at::zeros_like(ck), want_v = at::zeros_like(cv);
    const auto want_q = rotary_qkv_to_cache(parts[0], parts[1], parts[2], cos, sin, D,
                                            device_slot ? slot : at::Tensor(), slot0, want_k, want_v);
    auto q_out = at::empty({B, hq, S, D}, dt);
    cuda::RotaryQkvArgs a{B,        S,        hq,       hkv,           D,
                          rd,       cap,      parts[0].stride(1),      parts[1].stride(1),
                          parts[2].stride(1), cos.stride(0), cos.stride(1),
                          device_slot ? data<int64_t>(slot) : nullptr, slot0};
    emulate(cuda::row_grid(B * S * (hq + 2 * hkv), D), [&] {
        cuda::rotary_qkv_kernel<T>(data<T>(parts[0]), data<T>(parts[1]), data<T>(parts[2]), data<T>(cos), data<T>(sin),
                                   data<T>(q_out), data<T>(ck), data<T>(cv), a);
    });
    expect_equal(q_out, want_q, "rotary q");
    expect_equal(ck, want_k, "rotary k cache");
    expect_equal(cv, want_v, "rotary v cache");
}

TEST(CudaEmulated, RotaryQkv) {
    for (bool device_slot : {false, true}) {
        check_rotary_qkv<float>(at::kFloat, 8, device_slot);
        check_rotary_qkv<bf16_t>(at::kBFloat16, 16, device_slot);
    }
}

TEST(CudaEmulated, SiluMul) {
    const int64_t rows = 3, I = 300;
    const auto gu = (at::randn({rows, 2 * I}) * 4).to(at::kBFloat16);
    auto act = at::empty({rows, I}, at::kBFloat16);
    emulate(cuda::row_grid(rows, I), [&] { cuda::silu_mul_kernel<bf16_t>(data<bf16_t>(gu), data<bf16_t>(act), rows, I); });
    // The exp here is the C library's, LibTorch's CPU silu takes its own: one bf16 step apart at most.
    const auto want = silu_mul(gu).to(at::kFloat);
    const double rel = ((act.to(at::kFloat) - want).abs() / (want.abs() + 1e-3)).max().item<double>();
    std::printf("emulated silu_mul: max relative diff %g (tolerance one bf16 step, 0.0079)\n", rel);
    EXPECT_LE(rel, 0.0079);
}

template <typename T>
void check_rope(at::ScalarType dt, RotaryLayout layout) {
    const int64_t B = 2, S = 7, H = 3, D = 16, skip = 2;
    const auto qkv = (at::randn({B, S, 3, H, D}) * 3).to(dt);
    const auto x = qkv.select(2, 1);  // strided: the token stride is 3 * H * D
    const auto table = at::randn({S - skip, D});
    const auto cos = table.cos().contiguous(), sin = table.sin().contiguous();
    const auto want = rotary_half(x, cos, sin, skip, layout);
    const bool head_major = layout == RotaryLayout::kHeadMajor;
    auto out = head_major ? at::empty({B, H, S, D}, dt) : at::empty({B, S, H, D}, dt);
    cuda::RopeArgs a{B, S, H, D, x.stride(0), x.stride(1), x.stride(2), skip, head_major};
    emulate(cuda::row_grid(B * S * H, D), [&] {
        cuda::rope_kernel<T>(data<T>(x), data<float>(cos), data<float>(sin), data<T>(out), a);
    });
    expect_equal(head_major ? out.transpose(1, 2) : out, want, head_major ? "rope head-major" : "rope token-major");
}

TEST(CudaEmulated, DitRope) {
    for (auto layout : {RotaryLayout::kTokenMajor, RotaryLayout::kHeadMajor}) {
        check_rope<float>(at::kFloat, layout);
        check_rope<bf16_t>(at::kBFloat16, layout);
    }
}

TEST(CudaEmulated, MulAdd) {
    const int64_t B = 2, S = 5, D = 48;
    const auto a = (at::randn({B, S + 3, D}) * 5).to(at::kBFloat16).narrow(1, 3, S);  // rows of a longer a
    const auto g = at::randn({B, 1, D}).to(at::kBFloat16);
    for (const auto& c : {at::randn({B, 1, D}).to(at::kBFloat16), at::randn({B, S, D}).to(at::kBFloat16),
                          at::randn({1, 1, D}).to(at::kBFloat16)}) {
        // y: rows of a longer sequence too (mul_add_into's case), its other rows left as they are
        const auto y_buffer = at::zeros({B, S + 2, D}, at::kBFloat16);
        auto y = y_buffer.narrow(1, 2, S);
        const bool c_full = c.sizes() == a.sizes();
        cuda::MulAddArgs m{B,      S,      D, a.stride(0), a.stride(1), true, c_full, !c_full && c.size(0) == B,
                           y.stride(0), y.stride(1)};
        emulate(cuda::row_grid(B * S, D), [&] {
            cuda::mul_add_kernel<bf16_t>(data<bf16_t>(a), data<bf16_t>(g), data<bf16_t>(c), data<bf16_t>(y), m);
        });
        expect_equal(y, mul_add(a, g, c), "mul_add");
        EXPECT_EQ(y_buffer.narrow(1, 0, 2).abs().max().item<float>(), 0.0f) << "wrote outside y's rows";
    }
}

}  // namespace
}  // namespace glmimage::kernels
