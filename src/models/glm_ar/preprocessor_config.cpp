#include "models/glm_ar/preprocessor_config.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "io/json_config.h"

namespace glmimage {

using detail::str_cat;

PreprocessorConfig PreprocessorConfig::from_file(const std::string& path) {
    auto j = io::JsonConfig::load(path);
    PreprocessorConfig c;
    c.patch_size = j.get_int("patch_size");
    c.merge_size = j.get_int("merge_size", 1);
    // The reference reads size.{shortest,longest}_edge, overridden by min/max_pixels.
    if (j.has("size")) {
        auto size = j.get_object("size");
        c.min_pixels = size.get_int("shortest_edge", c.min_pixels);
        c.max_pixels = size.get_int("longest_edge", c.max_pixels);
    }
    c.min_pixels = j.get_int("min_pixels", c.min_pixels);
    c.max_pixels = j.get_int("max_pixels", c.max_pixels);
    auto mean = j.get_double_list("image_mean");
    auto std = j.get_double_list("image_std");
    if (mean.size() != 3 || std.size() != 3) throw ConfigError(path + ": image_mean and image_std must have 3 entries");
    std::copy(mean.begin(), mean.end(), c.image_mean.begin());
    std::copy(std.begin(), std.end(), c.image_std.begin());
    c.rescale_factor = j.get_double("rescale_factor", c.rescale_factor);
    c.do_rescale = j.get_bool("do_rescale", true);
    c.do_normalize = j.get_bool("do_normalize", true);
    if (!j.get_bool("do_resize", true)) throw UnsupportedError(path + ": do_resize false is not supported");
    if (j.get_int("resample", 3) != 3) throw UnsupportedError(path + ": only bicubic resampling (3) is supported");
    if (c.merge_size != 1) throw UnsupportedError(path + ": merge_size must be 1");
    if (j.get_int("temporal_patch_size", 1) != 1) throw UnsupportedError(path + ": temporal_patch_size must be 1");
    if (c.patch_size < 1 || c.min_pixels < 1 || c.max_pixels < c.min_pixels)
        throw ConfigError(path + ": bad patch_size / min_pixels / max_pixels");
    for (double s : c.image_std)
        if (s == 0.0) throw ConfigError(path + ": image_std must be non-zero");
    return c;
}

ImageSize PreprocessorConfig::resized(ImageSize image) const {
    return smart_resize(image.height, image.width, patch_size * merge_size, min_pixels, max_pixels);
}

namespace {

// Python's round() on a double: halves go to the even neighbour.
int64_t round_half_even(double x) {
    const double lo = std::floor(x);
    const double frac = x - lo;  // exact for the magnitudes here
    if (frac > 0.5) return static_cast<int64_t>(lo) + 1;
    if (frac < 0.5) return static_cast<int64_t>(lo);
    const auto l = static_cast<int64_t>(lo);
    return (l % 2 == 0) ? l : l + 1;
}

}  // namespace

ImageSize smart_resize(int64_t h, int64_t w, int64_t factor, int64_t min_pixels, int64_t max_pixels) {
    if (factor < 1 || min_pixels < 1 || max_pixels < min_pixels)
        throw InputError(str_cat("smart_resize: bad factor ", factor, " or pixel bounds [", min_pixels, ", ",
                                 max_pixels, "]"));
    if (h < factor || w < factor)
        throw InputError(str_cat("image ", h, "x", w, " is too small: a side is smaller than the factor ", factor,
                                 " pixels"));
    const int64_t min_side = std::min(h, w), max_side = std::max(h, w);
    const double aspect = static_cast<double>(max_side) / static_cast<double>(min_side);
    if (aspect > 4.0) throw InputError(str_cat("aspect ratio of ", h, "x", w, " is ", aspect, ": at most 4 is allowed"));

    const int64_t shortest = round_half_even(std::sqrt(static_cast<double>(min_pixels)));
    const int64_t longest = round_half_even(std::sqrt(static_cast<double>(max_pixels)));
    double scale = 1.0;
    if (min_side < shortest) scale = static_cast<double>(shortest) / static_cast<double>(min_side);
    if (static_cast<double>(max_side) * scale > static_cast<double>(longest))
        scale = static_cast<double>(longest) / static_cast<double>(max_side);

    // The reference halves the input size before applying the scale (so a 1024^2 image
    // becomes 512^2); kept as is, it defines the token count the model was trained with.
    const int64_t h2 = h / 2, w2 = w / 2;
    const auto f = static_cast<double>(factor);
    const auto to_grid = [&](int64_t v) {
        return std::max(factor, round_half_even(static_cast<double>(v) * scale / f) * factor);
    };
    int64_t hb = to_grid(h2), wb = to_grid(w2);
    if (std::max(hb, wb) > longest) {
        const double beta = static_cast<double>(std::max(hb, wb)) / static_cast<double>(longest);
        const auto shrink = [&](int64_t v) {
            return std::max(factor, static_cast<int64_t>(std::floor(static_cast<double>(v) / beta / f)) * factor);
        };
        hb = shrink(hb);
        wb = shrink(wb);
    }
    return {hb, wb};
}

}  // namespace glmimage
