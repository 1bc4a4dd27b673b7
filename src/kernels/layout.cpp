#include "kernels/layout.h"

#include <algorithm>
#include <cstdint>

#include "core/check.h"
#include "core/parallel.h"
#include "kernels/profile_scope.h"

#if defined(__x86_64__) || defined(_M_X64)
#define GLMI_LAYOUT_SSE2 1
#include <emmintrin.h>
#endif

namespace glmimage::kernels {

namespace {

// 32 x 32 tiles: each line of a 16-bit tile is one 64-byte cache line.
constexpr int64_t kTile = 32;

#ifdef GLMI_LAYOUT_SSE2
// An 8 x 8 block of 16-bit elements: s (row stride ss) to d (row stride ds), transposed in
// registers in three rounds of interleaves (16-, 32-, then 64-bit). SSE2 is part of x86-64.
inline void transpose8x8_u16(const uint16_t* s, int64_t ss, uint16_t* d, int64_t ds) {
    __m128i r[8], a[8], b[8];
    for (int k = 0; k < 8; ++k) r[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k * ss));
    for (int k = 0; k < 8; k += 2) {  // rows k, k+1 interleaved: columns 0-3, then 4-7
        a[k] = _mm_unpacklo_epi16(r[k], r[k + 1]);
        a[k + 1] = _mm_unpackhi_epi16(r[k], r[k + 1]);
    }
    for (int h = 0; h < 2; ++h) {  // rows 0-3 (h = 0) and 4-7: pairs of columns, four rows each
        const int o = 4 * h;
        b[o] = _mm_unpacklo_epi32(a[o], a[o + 2]);      // columns 0, 1
        b[o + 1] = _mm_unpackhi_epi32(a[o], a[o + 2]);  // 2, 3
        b[o + 2] = _mm_unpacklo_epi32(a[o + 1], a[o + 3]);  // 4, 5
        b[o + 3] = _mm_unpackhi_epi32(a[o + 1], a[o + 3]);  // 6, 7
    }
    for (int k = 0; k < 4; ++k) {  // column 2k and 2k+1: rows 0-3 from b[k], 4-7 from b[k + 4]
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 2 * k * ds), _mm_unpacklo_epi64(b[k], b[k + 4]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + (2 * k + 1) * ds), _mm_unpackhi_epi64(b[k], b[k + 4]));
    }
}
#endif

// d[j, i] = s[i, j] for an ni x nj block (ni, nj <= kTile), in registers where they can be used.
template <typename T>
void transpose_block(const T* s, int64_t ss, T* d, int64_t ds, int64_t ni, int64_t nj) {
    int64_t i8 = 0, j8 = 0;
#ifdef GLMI_LAYOUT_SSE2
    if constexpr (sizeof(T) == 2) {
        // Scalar, 16-bit elements went at under half the speed (bf16, 64 MB, one thread: 32 ms
        // against 26 one way, 45 against 22 the other).
        i8 = ni / 8 * 8, j8 = nj / 8 * 8;
        for (int64_t i = 0; i < i8; i += 8)
            for (int64_t j = 0; j < j8; j += 8)
                transpose8x8_u16(reinterpret_cast<const uint16_t*>(s + i * ss + j), ss,
                                 reinterpret_cast<uint16_t*>(d + j * ds + i), ds);
    }
#endif
    for (int64_t i = 0; i < i8; ++i)  // the columns the blocks left, then the rows
        for (int64_t j = j8; j < nj; ++j) d[j * ds + i] = s[i * ss + j];
    for (int64_t i = i8; i < ni; ++i)
        for (int64_t j = 0; j < nj; ++j) d[j * ds + i] = s[i * ss + j];
}

// For each of `planes` [rows, cols] row-major matrices in src, its transpose [cols, rows] in dst.
// A thread's run of tiles goes down a band of 32 columns of src, so that it fills whole rows of
// dst one after the other (and the fresh pages under them in order). Measured here, bf16, 64 MB
// into a fresh tensor, 2 threads: 18-19 ms either way; going along a band of rows of src instead
// took 33 ms to channels-last, and staging each tile through local buffers did not help.
template <typename T>
void transpose_planes(const T* src, T* dst, int64_t planes, int64_t rows, int64_t cols) {
    const int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
    const int64_t per_plane = row_tiles * col_tiles;
    const int64_t tile_bytes = 2 * kTile * kTile * static_cast<int64_t>(sizeof(T));  // read + written
    const int64_t grain = std::max<int64_t>(1, parallel_min_piece_bytes() / tile_bytes);
    parallel_for_cpu(planes * per_plane, grain, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
            const int64_t p = t / per_plane, r = t % per_plane;
            const int64_t j0 = (r / row_tiles) * kTile, i0 = (r % row_tiles) * kTile;
            transpose_block(src + p * rows * cols + i0 * cols + j0, cols, dst + p * rows * cols + j0 * rows + i0, rows,
                            std::min(rows - i0, kTile), std::min(cols - j0, kTile));
        }
    });
}

// Moves elements as unsigned integers of their size: a copy, whatever the floating type.
void transpose_planes_bytes(const void* src, void* dst, size_t elem, int64_t planes, int64_t rows, int64_t cols) {
    switch (elem) {
        case 1: transpose_planes(static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), planes, rows, cols); break;
        case 2: transpose_planes(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), planes, rows, cols); break;
        case 4: transpose_planes(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), planes, rows, cols); break;
        case 8: transpose_planes(static_cast<const uint64_t*>(src), static_cast<uint64_t*>(dst), planes, rows, cols); break;
        default: GLMI_CHECK(false, "layout: no transpose for ", elem, "-byte elements");
    }
}

bool tiled(const at::Tensor& x) {
    const auto e = x.element_size();
    return x.is_cpu() && x.dim() == 4 && !x.is_complex() && (e == 1 || e == 2 || e == 4 || e == 8) && x.numel() > 0;
}

}  // namespace

at::Tensor to_channels_last(const at::Tensor& x) {
    if (!tiled(x)) return x.contiguous(at::MemoryFormat::ChannelsLast);
    if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x;
    GLMI_KERNEL_SCOPE("glmimage::to_channels_last", x);
    const auto src = x.contiguous();
    auto out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast));
    // Per image: [C, H*W] -> [H*W, C].
    transpose_planes_bytes(src.data_ptr(), out.data_ptr(), x.element_size(), x.size(0), x.size(1),
                           x.size(2) * x.size(3));
    return out;
}

at::Tensor to_channels_first(const at::Tensor& x) {
    if (!tiled(x)) return x.contiguous();
    if (x.is_contiguous()) return x;
    GLMI_KERNEL_SCOPE("glmimage::to_channels_first", x);
    const auto src = x.contiguous(at::MemoryFormat::ChannelsLast);
    auto out = at::empty(x.sizes(), x.options());
    // Per image: [H*W, C] -> [C, H*W].
    transpose_planes_bytes(src.data_ptr(), out.data_ptr(), x.element_size(), x.size(0),
                           x.size(2) * x.size(3), x.size(1));
    return out;
}

}  // namespace glmimage::kernels
