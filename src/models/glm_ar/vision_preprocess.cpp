#include "models/glm_ar/vision_preprocess.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/parallel.h"
#include "glmimage/errors.h"

namespace glmimage {

namespace {

// PIL (libImaging/Resample.c) arithmetic, reimplemented: coefficients are computed in
// double, normalized to sum 1, then stored as integers scaled by 2^22; each output sample is
// the integer sum plus a rounding half, shifted down and clipped to [0, 255].
constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic_kernel(double x) {
    constexpr double a = -0.5;  // PIL's choice (Keys' cubic convolution)
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

// PIL's Lanczos: sinc(x) * sinc(x / 3) on [-3, 3).
double lanczos_kernel(double x) {
    auto sinc = [](double v) {
        if (v == 0.0) return 1.0;
        v *= M_PI;
        return std::sin(v) / v;
    };
    return (x >= -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0;
}

struct Coeffs {
    int64_t ksize = 0;
    std::vector<int64_t> first, count;  // per output sample: first input index, taps
    std::vector<int32_t> k;             // [out, ksize] fixed-point weights
};

Coeffs filter_coeffs(int64_t in_size, int64_t out_size, ResampleFilter filter) {
    const double kSupport = filter == ResampleFilter::kLanczos ? 3.0 : 2.0;
    double (*kernel)(double) = filter == ResampleFilter::kLanczos ? lanczos_kernel : bicubic_kernel;
    const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
    const double filterscale = std::max(scale, 1.0);  // widen the kernel when downscaling
    const double support = kSupport * filterscale;
    Coeffs c;
    c.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
    c.first.resize(out_size);
    c.count.resize(out_size);
    c.k.assign(out_size * c.ksize, 0);
    std::vector<double> w(c.ksize);
    for (int64_t o = 0; o < out_size; ++o) {
        const double center = (static_cast<double>(o) + 0.5) * scale;
        const double inv = 1.0 / filterscale;
        // (int) truncates toward zero, as in C: negative starts clamp to 0 afterwards.
        int64_t lo = static_cast<int>(center - support + 0.5);
        int64_t hi = static_cast<int>(center + support + 0.5);
        lo = std::max<int64_t>(lo, 0);
        hi = std::min(hi, in_size);
        const int64_t n = hi - lo;
        double total = 0.0;
        for (int64_t i = 0; i < n; ++i) {
            w[i] = kernel((static_cast<double>(i + lo) - center + 0.5) * inv);
            total += w[i];
        }
        for (int64_t i = 0; i < n; ++i) {
            const double v = total != 0.0 ? w[i] / total : w[i];
            const double scaled = v * static_cast<double>(1 << kPrecisionBits);
            c.k[o * c.ksize + i] = static_cast<int32_t>(v < 0 ? scaled - 0.5 : scaled + 0.5);
        }
        c.first[o] = lo;
        c.count[o] = n;
    }
    return c;
}

inline uint8_t clip8(int64_t acc) {
    const int64_t v = acc >> kPrecisionBits;
    return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One separable pass along the width: in [rows, in_w, C] -> out [rows, out_w, C].
void resample_rows(const uint8_t* in, int64_t in_w, uint8_t* out, int64_t out_w, int64_t rows, int64_t ch,
                   const Coeffs& c) {
    parallel_for_cpu(rows, 16, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const uint8_t* src = in + r * in_w * ch;
            uint8_t* dst = out + r * out_w * ch;
            for (int64_t o = 0; o < out_w; ++o) {
                const int32_t* k = c.k.data() + o * c.ksize;
                const uint8_t* s = src + c.first[o] * ch;
                for (int64_t ci = 0; ci < ch; ++ci) {
                    int64_t acc = int64_t{1} << (kPrecisionBits - 1);
                    for (int64_t i = 0; i < c.count[o]; ++i) acc += static_cast<int64_t>(s[i * ch + ci]) * k[i];
                    dst[o * ch + ci] = clip8(acc);
                }
            }
        }
    });
}

// One separable pass along the height: in [in_h, width*C] -> out [out_h, width*C].
void resample_cols(const uint8_t* in, uint8_t* out, int64_t out_h, int64_t row_len, const Coeffs& c) {
    parallel_for_cpu(out_h, 4, [&](int64_t r0, int64_t r1) {
        std::vector<int64_t> acc(row_len);
        for (int64_t o = r0; o < r1; ++o) {
            std::fill(acc.begin(), acc.end(), int64_t{1} << (kPrecisionBits - 1));
            const int32_t* k = c.k.data() + o * c.ksize;
            for (int64_t i = 0; i < c.count[o]; ++i) {
                const uint8_t* s = in + (c.first[o] + i) * row_len;
                const int64_t ki = k[i];
                for (int64_t x = 0; x < row_len; ++x) acc[x] += static_cast<int64_t>(s[x]) * ki;
            }
            uint8_t* dst = out + o * row_len;
            for (int64_t x = 0; x < row_len; ++x) dst[x] = clip8(acc[x]);
        }
    });
}

// A condition image as RGB uint8 [H, W, 3] on the CPU, converted as the reference's
// convert_to_rgb does: grey ([H, W] or [H, W, 1]) is replicated, RGBA is composited onto white.
at::Tensor to_rgb(const at::Tensor& img, size_t index) {
    const auto where = detail::str_cat("image ", index, ": ");
    if (!img.defined()) throw InputError(where + "undefined tensor");
    const int64_t channels = img.dim() == 2 ? 1 : (img.dim() == 3 ? img.size(2) : 0);
    if (channels != 1 && channels != 3 && channels != 4)
        throw InputError(where + "expected an image of shape [height, width] or [height, width, 1|3|4], got " +
                         detail::str_cat(img.sizes()));
    if (img.scalar_type() != at::kByte)
        throw InputError(where + "expected uint8 pixels, got " + std::string(c10::toString(img.scalar_type())));
    if (img.size(0) == 0 || img.size(1) == 0) throw InputError(where + "empty image " + detail::str_cat(img.sizes()));
    const at::Tensor hwc = (img.dim() == 2 ? img.unsqueeze(2) : img).to(at::kCPU);
    if (channels == 3) return hwc.contiguous();
    if (channels == 1) return hwc.expand({-1, -1, 3}).contiguous();
    // out = round((a*c + (255 - a)*255) / 255): never a tie (2*num is even, 255*(2k+1) odd), so
    // the integer form below equals both the reference's float64 and PIL's alpha_composite.
    const at::Tensor src = hwc.contiguous();
    at::Tensor out = at::empty({src.size(0), src.size(1), 3}, src.options());
    const uint8_t* s = src.data_ptr<uint8_t>();
    uint8_t* d = out.data_ptr<uint8_t>();
    const int64_t n = src.size(0) * src.size(1);
    parallel_for_cpu(n, 4096, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const int32_t a = s[4 * i + 3];
            for (int c = 0; c < 3; ++c) {
                const int32_t num = a * s[4 * i + c] + (255 - a) * 255;
                d[3 * i + c] = static_cast<uint8_t>((2 * num + 255) / 510);
            }
        }
    });
    return out;
}

}  // namespace

at::Tensor resize_bicubic_u8(const at::Tensor& image_hwc, int64_t out_h, int64_t out_w) {
    return resize_u8(image_hwc, out_h, out_w, ResampleFilter::kBicubic);
}

at::Tensor resize_u8(const at::Tensor& image_hwc, int64_t out_h, int64_t out_w, ResampleFilter filter) {
    if (image_hwc.dim() != 3 || image_hwc.scalar_type() != at::kByte)
        throw InputError("resize: expected a uint8 [height, width, channels] image");
    if (out_h < 1 || out_w < 1 || image_hwc.size(0) < 1 || image_hwc.size(1) < 1 || image_hwc.size(2) < 1)
        throw InputError(detail::str_cat("resize: empty size ", image_hwc.sizes(), " -> ", out_h, "x", out_w));
    const at::Tensor in = image_hwc.to(at::kCPU).contiguous();
    const int64_t in_h = in.size(0), in_w = in.size(1), ch = in.size(2);
    const bool need_h = in_w != out_w, need_v = in_h != out_h;
    if (!need_h && !need_v) return in.clone();  // PIL copies too

    // Each pass rounds to uint8, so the pass order changes pixels. Pillow 13 (measured
    // against it: the tests pin both sides of the rule) runs the vertical pass first only when
    // the height shrinks by more than twice as many pixels as the width does.
    const bool horizontal_first = !(in_h > out_h && (in_h - out_h) > 2 * (in_w - out_w));
    Coeffs cv = filter_coeffs(in_h, out_h, filter);
    const Coeffs chz = filter_coeffs(in_w, out_w, filter);
    at::Tensor cur = in;
    if (horizontal_first) {
        // Only the input rows the vertical pass reads are resampled (no effect on values).
        int64_t first = 0, last = in_h;
        if (need_v) {
            first = cv.first.front();
            last = cv.first.back() + cv.count.back();
            for (auto& f : cv.first) f -= first;
        }
        at::Tensor tmp = at::empty({last - first, out_w, ch}, in.options());
        resample_rows(in.data_ptr<uint8_t>() + first * in_w * ch, in_w, tmp.data_ptr<uint8_t>(), out_w, last - first,
                      ch, chz);
        cur = tmp;
        if (need_v) {
            at::Tensor out = at::empty({out_h, out_w, ch}, in.options());
            resample_cols(cur.data_ptr<uint8_t>(), out.data_ptr<uint8_t>(), out_h, out_w * ch, cv);
            cur = out;
        }
        return cur;
    }
    if (need_v) {
        at::Tensor tmp = at::empty({out_h, in_w, ch}, in.options());
        resample_cols(in.data_ptr<uint8_t>(), tmp.data_ptr<uint8_t>(), out_h, in_w * ch, cv);
        cur = tmp;
    }
    if (need_h) {
        at::Tensor out = at::empty({out_h, out_w, ch}, in.options());
        resample_rows(cur.data_ptr<uint8_t>(), in_w, out.data_ptr<uint8_t>(), out_w, out_h, ch, chz);
        cur = out;
    }
    return cur;
}

ProcessedImages preprocess_images(const std::vector<at::Tensor>& images, const PreprocessorConfig& config) {
    if (images.empty()) throw InputError("image processor: no images given");
    const int64_t p = config.patch_size;
    // Per channel and byte value, the exact float32 the reference produces: the byte is
    // rescaled in float64 and rounded to float32, then (x - mean) / std in float32.
    std::array<std::array<float, 256>, 3> lut;
    for (int c = 0; c < 3; ++c) {
        const float mean = static_cast<float>(config.image_mean[c]), std = static_cast<float>(config.image_std[c]);
        for (int v = 0; v < 256; ++v) {
            float x = config.do_rescale ? static_cast<float>(static_cast<double>(v) * config.rescale_factor)
                                        : static_cast<float>(v);
            if (config.do_normalize) x = (x - mean) / std;
            lut[c][v] = x;
        }
    }

    std::vector<at::Tensor> resized;
    std::vector<int64_t> grids;
    int64_t total = 0;
    for (size_t i = 0; i < images.size(); ++i) {
        const at::Tensor rgb = to_rgb(images[i], i);
        std::pair<int64_t, int64_t> target;
        try {
            const ImageSize r = config.resized({rgb.size(0), rgb.size(1)});
            target = {r.height, r.width};
        } catch (const InputError& e) {
            throw InputError(detail::str_cat("image ", i, ": ", e.what()));
        }
        const auto [th, tw] = target;
        resized.push_back(resize_bicubic_u8(rgb, th, tw));
        grids.insert(grids.end(), {1, th / p, tw / p});
        total += (th / p) * (tw / p);
    }

    at::Tensor pixel_values = at::empty({total, 3 * p * p}, at::TensorOptions().dtype(at::kFloat));
    float* out = pixel_values.data_ptr<float>();
    int64_t row0 = 0;
    for (size_t i = 0; i < resized.size(); ++i) {
        const uint8_t* img = resized[i].data_ptr<uint8_t>();
        const int64_t gh = grids[3 * i + 1], gw = grids[3 * i + 2], width = gw * p;
        // Row (py*gw + px) holds the patch as [channel][y][x].
        parallel_for_cpu(gh * gw, 64, [&](int64_t b, int64_t e) {
            for (int64_t patch = b; patch < e; ++patch) {
                const int64_t py = patch / gw, px = patch % gw;
                float* row = out + (row0 + patch) * 3 * p * p;
                for (int64_t c = 0; c < 3; ++c)
                    for (int64_t y = 0; y < p; ++y) {
                        const uint8_t* src = img + ((py * p + y) * width + px * p) * 3 + c;
                        float* dst = row + (c * p + y) * p;
                        for (int64_t x = 0; x < p; ++x) dst[x] = lut[c][src[x * 3]];
                    }
            }
        });
        row0 += gh * gw;
    }
    at::Tensor grid = at::tensor(grids, at::TensorOptions().dtype(at::kLong)).view({-1, 3});
    return {pixel_values, grid};
}

}  // namespace glmimage
