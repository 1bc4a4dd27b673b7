#include "models/t5/config.h"

#include "core/check.h"
#include "io/json_config.h"

namespace glmimage {

using detail::str_cat;

T5Config T5Config::from_file(const std::string& path) {
    auto j = io::JsonConfig::load(path);
    T5Config c;
    c.vocab_size = j.get_int("vocab_size");
    c.d_model = j.get_int("d_model");
    c.d_kv = j.get_int("d_kv");
    c.d_ff = j.get_int("d_ff");
    c.num_heads = j.get_int("num_heads");
    c.num_layers = j.get_int("num_layers");
    c.relative_attention_num_buckets = j.get_int("relative_attention_num_buckets", 32);
    c.relative_attention_max_distance = j.get_int("relative_attention_max_distance", 128);
    c.layer_norm_epsilon = j.get_double("layer_norm_epsilon", 1e-6);
    c.feed_forward_proj = j.get_string("feed_forward_proj", "relu");
    if (c.feed_forward_proj == "gated-gelu") c.gated = true;
    else if (c.feed_forward_proj == "relu") c.gated = false;
    else throw UnsupportedError(str_cat(path, ": feed_forward_proj '", c.feed_forward_proj,
                                        "' (implemented: gated-gelu, relu)"));
    for (int64_t v : {c.vocab_size, c.d_model, c.d_kv, c.d_ff, c.num_heads, c.num_layers,
                      c.relative_attention_num_buckets, c.relative_attention_max_distance})
        if (v <= 0) throw ConfigError(str_cat(path, ": sizes must be positive, got ", v));
    return c;
}

std::string T5Config::to_string() const {
    return str_cat("T5 encoder: ", num_layers, " layers, d_model ", d_model, ", ", num_heads, "x", d_kv,
                   " heads, d_ff ", d_ff, " (", feed_forward_proj, "), vocab ", vocab_size, ", ",
                   relative_attention_num_buckets, " buckets up to ", relative_attention_max_distance);
}

}  // namespace glmimage
