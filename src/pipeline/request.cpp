// Validation and description of the public request types.
#include <sstream>

#include "core/check.h"
#include "glmimage/glmimage.h"

namespace glmimage {

using detail::str_cat;

void Image::validate(const std::string& what) const {
    if (height <= 0 || width <= 0) throw InputError(str_cat(what, ": empty image (", height, "x", width, ")"));
    if (rgb.size() != static_cast<size_t>(height * width * 3))
        throw InputError(str_cat(what, ": ", height, "x", width, " RGB needs ", height * width * 3, " bytes, got ",
                                 rgb.size()));
}

void GenerateRequest::validate() const {
    if (prompts.empty()) throw InputError("no prompt given");
    for (size_t i = 0; i < prompts.size(); ++i)
        if (prompts[i].find_first_not_of(" \t\r\n") == std::string::npos)
            throw InputError(str_cat("prompt ", i, " is empty"));
    if (height <= 0 || width <= 0 || height % 32 != 0 || width % 32 != 0)
        throw InputError(str_cat("height and width must be positive multiples of 32, got ", height, "x", width));
    if (steps < 1) throw InputError(str_cat("steps must be >= 1, got ", steps));
    if (!(guidance >= 0)) throw InputError(str_cat("guidance must be >= 0, got ", guidance));
    if (images_per_prompt < 1) throw InputError(str_cat("images_per_prompt must be >= 1, got ", images_per_prompt));
    if (max_sequence_length < 1) throw InputError("max_sequence_length must be >= 1");
    if (ar.do_sample) {
        if (!(ar.temperature > 0)) throw InputError(str_cat("temperature must be > 0, got ", ar.temperature));
        if (!(ar.top_p > 0 && ar.top_p <= 1)) throw InputError(str_cat("top_p must be in (0, 1], got ", ar.top_p));
        if (ar.top_k < 0) throw InputError(str_cat("top_k must be >= 0, got ", ar.top_k));
    }
    if (timestep_label != "0.39" && timestep_label != "0.40")
        throw InputError(str_cat("timestep_label must be '0.39' or '0.40', got '", timestep_label, "'"));
    if (!images.empty()) {
        if (images.size() != prompts.size())
            throw InputError(str_cat("image-to-image needs one list of condition images per prompt: ", prompts.size(),
                                     " prompt(s), ", images.size(), " list(s)"));
        for (size_t i = 0; i < images.size(); ++i) {
            if (images[i].empty()) throw InputError(str_cat("prompt ", i, " has no condition image"));
            if (images[i].size() != images[0].size())
                throw InputError("every prompt needs the same number of condition images");
            for (size_t j = 0; j < images[i].size(); ++j) images[i][j].validate(str_cat("condition image ", j, " of prompt ", i));
        }
    }
}

std::string GenerateRequest::to_string() const {
    std::ostringstream os;
    os << "size=" << width << "x" << height << " steps=" << steps << " guidance=" << guidance << " seed=" << seed
       << " images_per_prompt=" << images_per_prompt << " ar=" << (ar.do_sample ? "sample" : "greedy");
    if (ar.do_sample) os << "(temperature=" << ar.temperature << " top_p=" << ar.top_p << " top_k=" << ar.top_k << ")";
    os << " timestep_label=" << timestep_label;
    if (!images.empty()) os << " condition_images=" << images[0].size();
    return os.str();
}

}  // namespace glmimage
