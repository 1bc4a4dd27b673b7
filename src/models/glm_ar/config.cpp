#include "models/glm_ar/config.h"

#include "core/check.h"
#include "io/json_config.h"

namespace glmimage {

using detail::str_cat;

namespace {

void require_positive(const std::string& where, std::initializer_list<int64_t> values) {
    for (int64_t v : values)
        if (v <= 0) throw ConfigError(str_cat(where, ": sizes must be positive, got ", v));
}

GlmTextConfig parse_text(const io::JsonConfig& j) {
    GlmTextConfig c;
    c.vocab_size = j.get_int("vocab_size");
    c.vision_vocab_size = j.get_int("vision_vocab_size");
    c.hidden_size = j.get_int("hidden_size");
    c.intermediate_size = j.get_int("intermediate_size");
    c.num_hidden_layers = j.get_int("num_hidden_layers");
    c.num_attention_heads = j.get_int("num_attention_heads");
    c.num_key_value_heads = j.get_int("num_key_value_heads", c.num_attention_heads);
    require_positive(j.where(), {c.vocab_size, c.vision_vocab_size, c.hidden_size, c.intermediate_size,
                                 c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads});
    c.head_dim = j.get_int("head_dim", c.hidden_size / c.num_attention_heads);
    c.max_position_embeddings = j.get_int("max_position_embeddings", 131072);
    c.rms_norm_eps = j.get_double("rms_norm_eps", 1e-5);
    c.attention_bias = j.get_bool("attention_bias", true);
    c.pad_token_id = j.get_int("pad_token_id", 167841);
    c.eos_token_id = j.get_int("eos_token_id", 16385);
    const std::string act = j.get_string("hidden_act", "silu");
    if (act != "silu") throw UnsupportedError(str_cat(j.where(), ": hidden_act '", act, "'"));

    // Rope parameters: the current layout nests them in 'rope_parameters'; older files put
    // rope_theta at the top level (transformers folds it in the same way).
    c.rope_theta = j.get_double("rope_theta", 10000.0);
    if (j.has("rope_parameters")) {
        auto rp = j.get_object("rope_parameters");
        c.rope_theta = rp.get_double("rope_theta", c.rope_theta);
        const std::string type = rp.get_string("rope_type", rp.get_string("type", "default"));
        if (type != "default") throw UnsupportedError(str_cat(rp.where(), ": rope_type '", type, "'"));
        c.partial_rotary_factor = rp.get_double("partial_rotary_factor", 1.0);
        if (rp.has("mrope_section")) {
            auto s = rp.get_int_list("mrope_section");
            if (s.size() != 3)
                throw ConfigError(str_cat(rp.where(), ": key 'mrope_section': expected 3 integers, got ", s.size()));
            c.mrope_section = {s[0], s[1], s[2]};
        }
    }
    if (c.num_attention_heads % c.num_key_value_heads != 0)
        throw ConfigError(str_cat(j.where(), ": num_attention_heads ", c.num_attention_heads,
                                  " is not a multiple of num_key_value_heads ", c.num_key_value_heads));
    const int64_t pairs = c.mrope_section[0] + c.mrope_section[1] + c.mrope_section[2];
    if (c.rotary_dim() != 2 * pairs || c.rotary_dim() > c.head_dim)
        throw ConfigError(str_cat(j.where(), ": rotary dim ", c.rotary_dim(), " (head_dim x partial_rotary_factor) ",
                                  "must equal 2 x sum(mrope_section) = ", 2 * pairs));
    return c;
}

GlmVisionConfig parse_vision(const io::JsonConfig& j) {
    GlmVisionConfig c;
    c.depth = j.get_int("depth");
    c.hidden_size = j.get_int("hidden_size");
    c.num_heads = j.get_int("num_heads");
    c.intermediate_size = j.get_int("intermediate_size");
    c.in_channels = j.get_int("in_channels", 3);
    c.image_size = j.get_int("image_size");
    c.patch_size = j.get_int("patch_size");
    c.layer_norm_eps = j.get_double("layer_norm_eps", 1e-6);
    c.attention_bias = j.get_bool("attention_bias", true);
    c.spatial_merge_size = j.get_int("spatial_merge_size", 1);
    require_positive(j.where(), {c.depth, c.hidden_size, c.num_heads, c.intermediate_size, c.in_channels,
                                 c.image_size, c.patch_size});
    const std::string act = j.get_string("hidden_act", "gelu");
    if (act != "gelu") throw UnsupportedError(str_cat(j.where(), ": hidden_act '", act, "'"));
    if (c.hidden_size % c.num_heads != 0)
        throw ConfigError(str_cat(j.where(), ": hidden_size ", c.hidden_size, " is not a multiple of num_heads ",
                                  c.num_heads));
    if (c.spatial_merge_size != 1)
        throw UnsupportedError(str_cat(j.where(), ": spatial_merge_size ", c.spatial_merge_size));
    return c;
}

GlmVQConfig parse_vq(const io::JsonConfig& j) {
    GlmVQConfig c;
    c.embed_dim = j.get_int("embed_dim");
    c.num_embeddings = j.get_int("num_embeddings");
    c.latent_channels = j.get_int("latent_channels");
    require_positive(j.where(), {c.embed_dim, c.num_embeddings, c.latent_channels});
    return c;
}

}  // namespace

GlmArConfig GlmArConfig::from_file(const std::string& path) {
    auto j = io::JsonConfig::load(path);
    GlmArConfig c;
    c.text = parse_text(j.get_object("text_config"));
    c.vision = parse_vision(j.get_object("vision_config"));
    c.vq = parse_vq(j.get_object("vq_config"));
    c.image_token_id = j.get_int("image_token_id");
    c.image_start_token_id = j.get_int("image_start_token_id");
    c.image_end_token_id = j.get_int("image_end_token_id");
    c.dtype = j.get_string("dtype", j.get_string("torch_dtype", ""));
    if (c.vq.latent_channels != c.vision.hidden_size)
        throw ConfigError(str_cat(path, ": vq_config.latent_channels ", c.vq.latent_channels,
                                  " must equal vision_config.hidden_size ", c.vision.hidden_size));
    if (c.vq.num_embeddings > c.text.vision_vocab_size)
        throw ConfigError(str_cat(path, ": codebook of ", c.vq.num_embeddings, " entries exceeds vision_vocab_size ",
                                  c.text.vision_vocab_size));
    return c;
}

std::string GlmArConfig::to_string() const {
    return str_cat("AR text decoder: ", text.num_hidden_layers, " layers, hidden ", text.hidden_size, ", ",
                   text.num_attention_heads, "/", text.num_key_value_heads, " heads x ", text.head_dim,
                   " (rotary ", text.rotary_dim(), ", mrope ", text.mrope_section[0], "/", text.mrope_section[1], "/",
                   text.mrope_section[2], "), mlp ", text.intermediate_size, ", vocab ", text.vocab_size,
                   " (vision ", text.vision_vocab_size, ")\nAR vision encoder: ", vision.depth, " blocks, hidden ",
                   vision.hidden_size, ", ", vision.num_heads, " heads, patch ", vision.patch_size, ", image ",
                   vision.image_size, "\nAR VQ: ", vq.num_embeddings, " codes x ", vq.embed_dim);
}

}  // namespace glmimage
