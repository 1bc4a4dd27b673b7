// The DiT's fused elementwise kernels (dit_fused_cuda.h says what each computes), with the element
// formulas of fused_math.h that the CPU loops (rotary.cpp, mul_add.cpp) share and the CPU tests
// hold to LibTorch's op sequences bit for bit. Each streams its [B, S, heads x D] activations once,
// where the op sequences they replace make several passes into fresh memory.
// The kernels alone (no launch syntax): dit_fused.cu launches them, and
// tests/unit/test_cuda_emulated.cpp runs them on the CPU, block by block, to check their indexing.
#pragma once

#include "kernels/cuda/dit_fused_cuda.h"
#include "kernels/cuda/grid.cuh"
#include "kernels/fused_math.h"

namespace glmimage::kernels::cuda {

using fused::bf16_t;

// Row r of the output in the output's own order: (b, h, s) head-major, (b, s, h) token-major.
template <typename T>
__global__ void rope_kernel(const T* x, const float* cos, const float* sin, T* out, RopeArgs a) {
    const int64_t half = a.D / 2, rows = a.B * a.S * a.H;
    GLMI_FOR_ROWS(r, rows) {
        int64_t s, h, b;
        if (a.head_major) {
            s = r % a.S;
            h = (r / a.S) % a.H;
            b = r / (a.S * a.H);
        } else {
            h = r % a.H;
            s = (r / a.H) % a.S;
            b = r / (a.S * a.H);
        }
        const T* row = x + b * a.sb + s * a.ss + h * a.sh;
        T* y = out + r * a.D;
        if (s < a.skip) {
            GLMI_FOR_COLS(d, a.D) y[d] = row[d];
            continue;
        }
        const float* c = cos + (s - a.skip) * a.D;
        const float* n = sin + (s - a.skip) * a.D;
        GLMI_FOR_COLS(d, a.D) {
            const float partner = d < half ? -fused::to_float(row[d + half]) : fused::to_float(row[d - half]);
            y[d] = fused::rope_channel(row[d], partner, c[d], n[d]);
        }
    }
}

template <typename T>
__global__ void mul_add_kernel(const T* a, const T* g, const T* c, T* y, MulAddArgs m) {
    const int64_t rows = m.B * m.S;
    GLMI_FOR_ROWS(r, rows) {
        const int64_t s = r % m.S, b = r / m.S;
        const T* av = a + b * m.sa0 + s * m.sa1;
        const T* gv = g + (m.g_per_sample ? b * m.D : 0);
        const T* cv = m.c_full ? c + r * m.D : c + (m.c_per_sample ? b * m.D : 0);
        T* yv = y + b * m.sy0 + s * m.sy1;
        GLMI_FOR_COLS(d, m.D) yv[d] = fused::mul_add(av[d], gv[d], cv[d]);
    }
}

}  // namespace glmimage::kernels::cuda
