#include "models/dit/transformer.h"

#include <cmath>
#include <string>
#include <tuple>

#include "core/check.h"
#include "kernels/attention.h"
#include "kernels/cpu_products.h"
#include "kernels/gelu.h"
#include "kernels/layer_norm.h"
#include "kernels/mul_add.h"

namespace glmimage {

namespace {

constexpr double kNormEps = 1e-5;  // every DiT LayerNorm (AdaLN, qk, norm_out): no affine

at::Tensor layer_norm(const at::Tensor& x) { return kernels::layer_norm(x, kNormEps); }

// a * g + c with g one vector per sample ([B, D]) and c either a's shape or such a vector: one pass
// on the CPU (kernels::mul_add), with the bits of LibTorch's mul then add. Written into y where
// given (a's shape, rows contiguous: rows of a longer buffer the next op reads), else into a new
// tensor.
at::Tensor mul_add(const at::Tensor& a, const at::Tensor& g_rows, const at::Tensor& c, at::Tensor y = {}) {
    const auto g = g_rows.unsqueeze(1).contiguous();  // [B, 1, D]: a copy only for a batch of several
    if (!y.defined()) return kernels::mul_add_takes(a, g, c) ? kernels::mul_add(a, g, c) : a * g + c;
    if (kernels::mul_add_into_takes(a, g, c, y)) {
        kernels::mul_add_into(a, g, c, y);
    } else {
        at::add_out(y, a * g, c);
    }
    return y;
}

// norm * (1 + scale) + shift, the vectors broadcast over the sequence (into y as mul_add).
at::Tensor modulate(const at::Tensor& norm, const at::Tensor& scale, const at::Tensor& shift, at::Tensor y = {}) {
    return mul_add(norm, scale + 1, shift.unsqueeze(1).contiguous(), std::move(y));
}

// diffusers get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0): [cos | sin],
// float32, with the reference's op sequence so the values agree bit for bit.
at::Tensor sinusoid(const at::Tensor& t, int64_t dim) {
    const int64_t half = dim / 2;
    auto exponent = at::arange(0, half, t.options().dtype(at::kFloat)) * (-std::log(10000.0));
    auto freqs = at::exp(exponent / half);
    auto args = t.reshape({-1, 1}).to(at::kFloat) * freqs.unsqueeze(0);
    return at::cat({at::cos(args), at::sin(args)}, -1);
}

void check_rows(const char* name, const at::Tensor& t, int64_t batch, int64_t cols) {
    const bool rows_ok = t.dim() == (cols ? 2 : 1) && (t.size(0) == batch || t.size(0) == 1);
    if (!rows_ok || (cols && t.size(1) != cols) || t.is_complex() || t.scalar_type() == at::kBool)
        throw InputError(detail::str_cat("dit: '", name, "': expected a real tensor of shape [", batch,
                                         cols ? detail::str_cat(", ", cols) : std::string(), "] (or 1 row), got ",
                                         t.sizes(), " ", t.scalar_type()));
}

}  // namespace

// One [rows, D] buffer for every sample's attention rows, so that one projection covers every row
// of the batch whatever the groups' text lengths.
DiTBlock::JointRows::JointRows(const std::vector<at::Tensor>& texts, int64_t n_image_) : n_image(n_image_) {
    int64_t sample = 0;
    for (const auto& t : texts) {
        first.push_back(rows);
        first_sample.push_back(sample);
        sample += t.size(0);
        samples.push_back(t.size(0));
        n_text.push_back(t.size(1));
        rows += t.size(0) * (t.size(1) + n_image);
    }
}

at::Tensor DiTBlock::JointRows::group(const at::Tensor& buffer, size_t g) const {
    const int64_t n = n_text[g] + n_image;
    return buffer.narrow(0, first[g], samples[g] * n).view({samples[g], n, buffer.size(-1)});
}

at::Tensor DiTBlock::JointRows::samples_of(const at::Tensor& batch, size_t g) const {
    return batch.narrow(0, first_sample[g], samples[g]);
}

at::Tensor DiTBlock::JointRows::text(const at::Tensor& buffer, size_t g) const {
    return group(buffer, g).slice(1, 0, n_text[g]);
}

at::Tensor DiTBlock::JointRows::image(const at::Tensor& buffer, size_t g) const {
    return group(buffer, g).slice(1, n_text[g]);
}

DiTFeedForward::DiTFeedForward(int64_t in, int64_t hidden, int64_t out, Activation act_, at::TensorOptions o)
    : ParamModule(o), act(act_) {
    auto net = child("net", std::make_shared<ModuleScope>(o));
    auto net0 = net->add("0", std::make_shared<ModuleScope>(o));
    proj_in = net0->add("proj", std::make_shared<Linear>(in, hidden, true, o));
    proj_out = net->add("2", std::make_shared<Linear>(hidden, out, true, o));
}

at::Tensor DiTFeedForward::forward(const at::Tensor& x) const { return forward_each({x}).front(); }

std::vector<at::Tensor> DiTFeedForward::forward_each(const std::vector<at::Tensor>& xs) const {
    std::vector<at::Tensor> h;
    h.reserve(xs.size());
    for (const auto& x : xs) h.push_back(proj_in->forward(x));
    for (auto& t : h) {
        switch (act) {
            case Activation::kGeluExact: t = kernels::gelu(t); break;
            case Activation::kGeluTanh: t = kernels::gelu(t, "tanh"); break;
            case Activation::kSilu: t = at::silu(t); break;
        }
    }
    for (auto& t : h) t = proj_out->forward(t);
    return h;
}

DiTTimeConditionEmbed::DiTTimeConditionEmbed(const DiTConfig& c, at::TensorOptions o)
    : ParamModule(o), time_dim(c.time_embed_dim), condition_dim(c.condition_dim) {
    const int64_t t = c.time_embed_dim;
    auto te = child("timestep_embedder", std::make_shared<ModuleScope>(o));
    t_linear_1 = te->add("linear_1", std::make_shared<Linear>(t, t, true, o));
    t_linear_2 = te->add("linear_2", std::make_shared<Linear>(t, t, true, o));
    auto ce = child("condition_embedder", std::make_shared<ModuleScope>(o));
    c_linear_1 = ce->add("linear_1", std::make_shared<Linear>(4 * c.condition_dim, t, true, o));
    c_linear_2 = ce->add("linear_2", std::make_shared<Linear>(t, t, true, o));
}

at::Tensor DiTTimeConditionEmbed::forward(const at::Tensor& timestep, const at::Tensor& target_size,
                                          const at::Tensor& crop_coords, at::ScalarType dtype) const {
    auto t_sin = sinusoid(timestep, time_dim);
    // Crop first, then target size; within each, first coordinate then second.
    auto crop_sin = sinusoid(crop_coords.flatten(), condition_dim).reshape({crop_coords.size(0), -1});
    auto size_sin = sinusoid(target_size.flatten(), condition_dim).reshape({target_size.size(0), -1});
    auto c_sin = at::cat({crop_sin, size_sin}, 1);
    auto t_emb = t_linear_2->forward(at::silu(t_linear_1->forward(t_sin.to(dtype))));
    auto c_emb = c_linear_2->forward(at::silu(c_linear_1->forward(c_sin.to(dtype))));
    return at::silu(t_emb + c_emb);
}

DiTBlock::DiTBlock(const DiTConfig& c, at::TensorOptions o)
    : ParamModule(o), n_heads(c.num_attention_heads), head_dim(c.attention_head_dim) {
    const int64_t d = c.inner_dim();
    auto norm1 = child("norm1", std::make_shared<ModuleScope>(o));
    adaln = norm1->add("linear", std::make_shared<Linear>(c.time_embed_dim, 12 * d, true, o));
    auto attn = child("attn1", std::make_shared<ModuleScope>(o));
    to_q = attn->add("to_q", std::make_shared<Linear>(d, d, true, o));
    to_k = attn->add("to_k", std::make_shared<Linear>(d, d, true, o));
    to_v = attn->add("to_v", std::make_shared<Linear>(d, d, true, o));
    auto out = attn->add("to_out", std::make_shared<ModuleScope>(o));
    to_out = out->add("0", std::make_shared<Linear>(d, d, true, o));
    ff = child("ff", std::make_shared<DiTFeedForward>(d, 4 * d, d, DiTFeedForward::Activation::kGeluTanh, o));
}

at::Tensor DiTBlock::attention(const at::Tensor& seq, const JointRows& rows, const DiTRope& rope, DiTKVCache* kv,
                               int64_t layer) const {
    at::Tensor q, k, v;
    if (qkv) {
        auto parts = qkv->forward(seq);
        q = parts[0], k = parts[1], v = parts[2];
    } else {
        q = to_q->forward(seq), k = to_k->forward(seq), v = to_v->forward(seq);
    }
    // Attention within each group: its own text length, and the condition cache for the first.
    std::vector<at::Tensor> outs;
    for (size_t g = 0; g < rows.samples.size(); ++g) {
        const int64_t nb = rows.samples[g], n_text = rows.n_text[g], n = n_text + rows.n_image;
        auto heads = [&](const at::Tensor& t) { return rows.group(t, g).view({nb, n, n_heads, head_dim}); };
        // [B_g, heads, seq, head_dim] views; the layouts as kernels/rotary.h says why
        auto qg = apply_dit_rope_to_image_tokens(layer_norm(heads(q)), rope, n_text,
                                                 kernels::RotaryLayout::kTokenMajor)
                      .transpose(1, 2);
        auto kg = apply_dit_rope_to_image_tokens(layer_norm(heads(k)), rope, n_text,
                                                 kernels::RotaryLayout::kHeadMajor)
                      .transpose(1, 2);
        auto vg = heads(v).transpose(1, 2);
        if (kv && g == 0) std::tie(kg, vg) = kv->apply(layer, kg, vg);
        outs.push_back(kernels::attention(qg, kg, vg).transpose(1, 2).reshape({nb * n, n_heads * head_dim}));
    }
    return to_out->forward(outs.size() == 1 ? outs.front() : at::cat(outs));
}

std::pair<at::Tensor, std::vector<at::Tensor>> DiTBlock::forward(const at::Tensor& x,
                                                                 const std::vector<at::Tensor>& texts,
                                                                 const at::Tensor& modulation, const DiTRope& rope,
                                                                 DiTKVCache* kv, int64_t layer) const {
    // Chunk order: shift, c_shift, scale, c_scale, gate, c_gate for attention, then the same for the MLP.
    auto m = modulation.chunk(12, 1);
    const int64_t d = x.size(2);
    // The modulated streams written straight into the attention's rows (no concatenation).
    const JointRows rows(texts, x.size(1));
    auto of_group = [&](const at::Tensor& t, size_t g) { return rows.samples_of(t, g); };
    const auto seq = at::empty({rows.rows, d}, x.options());
    const auto x_norm = layer_norm(x);
    for (size_t g = 0; g < texts.size(); ++g) {
        modulate(layer_norm(texts[g]), of_group(m[3], g), of_group(m[1], g), rows.text(seq, g));
        modulate(of_group(x_norm, g), of_group(m[2], g), of_group(m[0], g), rows.image(seq, g));
    }
    const auto o = attention(seq, rows, rope, kv, layer);
    // Gated residuals (x + out * gate), then one feed-forward shared by both streams.
    const auto x1 = at::empty_like(x, at::MemoryFormat::Contiguous);
    std::vector<at::Tensor> c1;
    std::vector<Modulated> c_ff_in;
    for (size_t g = 0; g < texts.size(); ++g) {
        mul_add(rows.image(o, g), of_group(m[4], g), of_group(x, g), of_group(x1, g));
        c1.push_back(mul_add(rows.text(o, g), of_group(m[5], g), texts[g]));
        c_ff_in.push_back({layer_norm(c1[g]), of_group(m[9], g), of_group(m[7], g)});
    }
    auto [x_ff, c_ff] = feed_forward({layer_norm(x1), m[8], m[6]}, c_ff_in);
    auto x2 = mul_add(x_ff, m[10], x1);
    std::vector<at::Tensor> c_out;
    for (size_t g = 0; g < texts.size(); ++g) c_out.push_back(mul_add(c_ff[g], of_group(m[11], g), c1[g]));
    return {x2, std::move(c_out)};
}

std::pair<at::Tensor, std::vector<at::Tensor>> DiTBlock::feed_forward(const Modulated& x,
                                                                      const std::vector<Modulated>& texts) const {
    // The reference runs the feed-forward per stream and, for the text, per CFG pass: row counts
    // by which oneDNN's bf16 kernels and MKL's float32 GEMM may pick their kernels (below
    // kRowBitsMinRows rows they do), so those calls keep them. Where a row's bits do not depend on
    // the call's other rows (products_keep_row_bits, probed), the image rows and every text group
    // of kRowBitsMinRows rows or more share one call, with the same bits: the text groups' products
    // then run at the image rows' GEMM rate (a 25-row call ran at 70 GFLOP/s against 160 for 512
    // rows, 2-core AVX2 EPYC) and, in bf16 computed in float32, their weights are not widened
    // again per group. (The GELU between is per value too, except LibTorch's float32 scalar loop
    // at the end of a thread's piece where the piece is not whole vectors, which may round a value
    // one step from its vector loop: with the model's hidden widths and 2 threads the pieces are
    // whole vectors.)
    const int64_t d = x.norm.size(-1);
    const auto rows_of = [&](const at::Tensor& t) { return t.numel() / d; };
    const bool share = kernels::products_keep_row_bits(x.norm.device(), x.norm.scalar_type()) &&
                       rows_of(x.norm) >= kernels::kRowBitsMinRows;
    std::vector<size_t> shared, own;  // the text groups in the image rows' call / in calls of their own
    int64_t shared_rows = rows_of(x.norm);
    for (size_t g = 0; g < texts.size(); ++g) {
        const bool joins = share && rows_of(texts[g].norm) >= kernels::kRowBitsMinRows;
        (joins ? shared : own).push_back(g);
        if (joins) shared_rows += rows_of(texts[g].norm);
    }
    std::vector<at::Tensor> inputs;
    if (shared.empty()) {
        inputs.push_back(modulate(x.norm, x.scale, x.shift).view({-1, d}));  // [rows, d] as below
    } else {
        // [rows, d]: the image rows, then each joining group's, each stream modulated straight
        // into its place (no concatenation)
        const auto rows = at::empty({shared_rows, d}, x.norm.options());
        int64_t row = 0;
        const auto place = [&](const Modulated& m) {
            modulate(m.norm, m.scale, m.shift, rows.narrow(0, row, rows_of(m.norm)).view(m.norm.sizes()));
            row += rows_of(m.norm);
        };
        place(x);
        for (size_t g : shared) place(texts[g]);
        inputs.push_back(rows);
    }
    // The groups of few rows (the unconditional pass's one empty-text token) right after the
    // many rows, layer by layer: a product of a row or two reads the whole weight, which the
    // larger product has just left in the cache (a 1-row 512 -> 2048 product: 0.18 ms right after
    // a 537-row one, 0.36-0.40 from memory; float32, 2-core EPYC). Each call's values do not
    // depend on the order of the calls.
    for (size_t g : own) inputs.push_back(modulate(texts[g].norm, texts[g].scale, texts[g].shift));
    const auto outs = ff->forward_each(inputs);
    std::vector<at::Tensor> text_out(texts.size());
    const auto& y = outs.front();
    int64_t row = rows_of(x.norm);
    for (size_t g : shared) {
        text_out[g] = y.narrow(0, row, rows_of(texts[g].norm)).view(texts[g].norm.sizes());
        row += rows_of(texts[g].norm);
    }
    for (size_t i = 0; i < own.size(); ++i) text_out[own[i]] = outs[1 + i];
    return {y.narrow(0, 0, rows_of(x.norm)).view(x.norm.sizes()), std::move(text_out)};
}

GlmImageTransformer::GlmImageTransformer(const DiTConfig& c, at::TensorOptions o) : ParamModule(o), config(c) {
    using Act = DiTFeedForward::Activation;
    const int64_t d = c.inner_dim();
    const int64_t p2 = c.patch_size * c.patch_size;
    auto ip = child("image_projector", std::make_shared<ModuleScope>(o));
    image_projector = ip->add("proj", std::make_shared<Linear>(c.in_channels * p2, d, true, o));
    glyph_projector =
        child("glyph_projector", std::make_shared<DiTFeedForward>(c.text_embed_dim, d, d, Act::kGeluExact, o));
    prior_token_embedding =
        child("prior_token_embedding", std::make_shared<Embedding>(c.prior_vq_quantizer_codebook_size, d, o));
    prior_projector = child("prior_projector", std::make_shared<DiTFeedForward>(d, d, d, Act::kSilu, o));
    time_condition_embed = child("time_condition_embed", std::make_shared<DiTTimeConditionEmbed>(c, o));
    auto list = child("transformer_blocks", std::make_shared<ModuleScope>(o));
    for (int64_t i = 0; i < c.num_layers; ++i)
        blocks.push_back(list->add(std::to_string(i), std::make_shared<DiTBlock>(c, o)));
    auto no = child("norm_out", std::make_shared<ModuleScope>(o));
    norm_out = no->add("linear", std::make_shared<Linear>(c.time_embed_dim, 2 * d, true, o));
    proj_out = child("proj_out", std::make_shared<Linear>(d, p2 * c.out_channels, true, o));
}

size_t GlmImageTransformer::fuse_projections() {
    size_t n = 0;
    for (auto& b : blocks) {
        b->qkv = FusedLinear::fuse({b->to_q.get(), b->to_k.get(), b->to_v.get()});
        n += b->qkv != nullptr;
    }
    return n;
}

void GlmImageTransformer::check_latent(const at::Tensor& hs) const {
    const int64_t p = config.patch_size;
    if (hs.dim() != 4 || hs.size(1) != config.in_channels || !hs.is_floating_point())
        throw InputError(detail::str_cat("dit: 'hidden_states': expected a float tensor [B, ", config.in_channels,
                                         ", H, W], got ", hs.sizes(), " ", hs.scalar_type()));
    if (hs.size(0) < 1 || hs.size(2) < p || hs.size(3) < p || hs.size(2) % p != 0 || hs.size(3) % p != 0)
        throw InputError(detail::str_cat("dit: 'hidden_states': batch must be positive and H, W positive multiples of ",
                                         "the patch size ", p, ", got ", hs.sizes()));
}

DiTRope GlmImageTransformer::make_rope(int64_t latent_h, int64_t latent_w) const {
    const int64_t p = config.patch_size;
    if (latent_h < p || latent_w < p || latent_h % p != 0 || latent_w % p != 0)
        throw InputError(detail::str_cat("dit: latent size ", latent_h, "x", latent_w,
                                         ": expected positive multiples of the patch size ", p));
    return make_dit_rope(config.attention_head_dim, latent_h / p, latent_w / p, device());
}

at::Tensor GlmImageTransformer::project_text(const at::Tensor& ehs) const {
    if (ehs.dim() != 3 || ehs.size(2) != config.text_embed_dim || !ehs.is_floating_point())
        throw InputError(detail::str_cat("dit: 'encoder_hidden_states': expected a float tensor [B, L, ",
                                         config.text_embed_dim, "], got ", ehs.sizes(), " ", ehs.scalar_type()));
    return glyph_projector->forward(ehs.to(device(), dtype()));
}

at::Tensor GlmImageTransformer::project_prior(const at::Tensor& ids_in, const at::Tensor& drop_in, int64_t batch,
                                              int64_t n_tokens) const {
    const bool integral = at::isIntegralType(ids_in.scalar_type(), /*includeBool=*/false);
    // A 1-D id list is one sample's (the pipeline's condition-image call passes it that way).
    auto ids = ids_in.dim() == 1 && batch == 1 ? ids_in.unsqueeze(0) : ids_in;
    if (!integral || ids.dim() != 2 || ids.size(0) != batch || ids.size(1) != n_tokens)
        throw InputError(detail::str_cat("dit: 'prior_token_id': expected integer ids [", batch, ", ", n_tokens,
                                         "] (one per ", config.patch_size, "x", config.patch_size,
                                         " patch), got ", ids_in.sizes(), " ", ids_in.scalar_type()));
    ids = ids.to(device(), at::kLong);
    if (ids.numel() > 0) {
        const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
        if (lo < 0 || hi >= config.prior_vq_quantizer_codebook_size)
            throw InputError(detail::str_cat("dit: 'prior_token_id': ids must lie in [0, ",
                                             config.prior_vq_quantizer_codebook_size, "), got values in [", lo,
                                             ", ", hi, "]"));
    }
    auto emb = prior_token_embedding->forward(ids);  // [B, S, D]
    if (drop_in.defined()) {
        if (drop_in.scalar_type() != at::kBool || drop_in.sizes() != ids_in.sizes())
            throw InputError(detail::str_cat("dit: 'prior_token_drop': expected a bool tensor shaped like ",
                                             "prior_token_id ", ids_in.sizes(), ", got ", drop_in.sizes(), " ",
                                             drop_in.scalar_type()));
        // Dropped tokens: the looked-up row times 0 (the projector bias still contributes).
        auto drop = drop_in.reshape(ids.sizes()).to(device()).unsqueeze(-1);
        emb = at::where(drop, emb * 0.0, emb);
    }
    return prior_projector->forward(emb);
}

at::Tensor GlmImageTransformer::embed_time(const at::Tensor& timestep, const at::Tensor& target_size,
                                           const at::Tensor& crop_coords, int64_t batch) const {
    if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1) || timestep.is_complex() ||
        timestep.scalar_type() == at::kBool)
        throw InputError(detail::str_cat("dit: 'timestep': expected a real tensor [", batch, "] (or one value), got ",
                                         timestep.sizes(), " ", timestep.scalar_type()));
    check_rows("target_size", target_size, batch, 2);
    check_rows("crop_coords", crop_coords, batch, 2);
    auto temb = time_condition_embed->forward(timestep.to(device()).reshape({-1}), target_size.to(device()),
                                              crop_coords.to(device()), dtype());
    return temb.expand({batch, -1});
}

DiTStepConditioning::DiTStepConditioning(std::vector<std::shared_ptr<Linear>> adaln, at::Tensor temb,
                                         at::Tensor norm_out)
    : products_(std::make_shared<Products>()), temb_(temb), norm_out_(std::move(norm_out)) {
    products_->modulation.resize(adaln.size());
    products_->adaln = std::move(adaln);
    products_->temb = std::move(temb);
}

at::Tensor DiTStepConditioning::block(size_t i) const {
    GLMI_CHECK(i < num_blocks(), "block ", i, " of a step conditioning for ", num_blocks());
    at::Tensor& m = products_->modulation[i];
    if (!m.defined()) m = products_->adaln[i]->forward(products_->temb);
    return index_.defined() ? m.index_select(0, index_) : m;
}

DiTStepConditioning DiTStepConditioning::rows(const at::Tensor& index) const {
    GLMI_CHECK(index.dim() == 1 && index.scalar_type() == at::kLong, "row index ", index.sizes(), " ",
               index.scalar_type());
    DiTStepConditioning out = *this;
    const auto at_device = index.to(temb_.device());  // no copy where the caller made it there
    out.index_ = index_.defined() ? index_.index_select(0, at_device) : at_device;
    out.temb_ = temb_.index_select(0, at_device);
    out.norm_out_ = norm_out_.index_select(0, at_device);
    return out;
}

DiTStepConditioning GlmImageTransformer::condition_step(const at::Tensor& temb) const {
    std::vector<std::shared_ptr<Linear>> adaln;
    adaln.reserve(blocks.size());
    for (const auto& b : blocks) adaln.push_back(b->adaln);
    return DiTStepConditioning(std::move(adaln), temb, norm_out->forward(temb.to(dtype())));
}

at::Tensor GlmImageTransformer::forward_projected(const at::Tensor& hidden_states,
                                                  const std::vector<at::Tensor>& text_groups,
                                                  const at::Tensor& prior_tokens, const DiTStepConditioning& step,
                                                  const DiTRope& rope, DiTKVCache* kv_cache,
                                                  const FirstBlockCachePasses& first_block_cache) const {
    const at::Tensor& temb = step.temb();
    check_latent(hidden_states);
    const int64_t batch = hidden_states.size(0), channels = hidden_states.size(1), p = config.patch_size;
    const int64_t gh = hidden_states.size(2) / p, gw = hidden_states.size(3) / p, d = config.inner_dim();
    if (rope.grid_h != gh || rope.grid_w != gw || rope.cos.size(1) != config.attention_head_dim)
        throw InputError(detail::str_cat("dit: rope tables are for a ", rope.grid_h, "x", rope.grid_w,
                                         " patch grid, the latent has ", gh, "x", gw));
    GLMI_CHECK(!text_groups.empty(), "no text group");
    int64_t grouped = 0;
    for (const auto& t : text_groups) {
        GLMI_CHECK(t.dim() == 3 && t.size(0) > 0 && t.size(2) == d, "text tokens ", t.sizes());
        grouped += t.size(0);
    }
    GLMI_CHECK(grouped == batch, "text groups of ", grouped, " samples for a batch of ", batch);
    GLMI_CHECK(first_block_cache.empty() || first_block_cache.size() == text_groups.size(),
               first_block_cache.size(), " first-block cache passes for ", text_groups.size(), " text groups");
    GLMI_CHECK(!kv_cache || text_groups.size() == 1 || kv_cache->mode() == DiTKVCache::Mode::kRead ||
                   kv_cache->mode() == DiTKVCache::Mode::kOff,
               "several text groups read the condition cache or leave it; they cannot write it");
    GLMI_CHECK(prior_tokens.sizes() == at::IntArrayRef({batch, gh * gw, d}), "prior tokens ", prior_tokens.sizes());
    GLMI_CHECK(temb.dim() == 2 && temb.size(0) == batch && step.num_blocks() == blocks.size(), "temb ",
               temb.sizes(), ", ", step.num_blocks(), " block modulations for ", blocks.size(), " blocks");
    if (kv_cache && kv_cache->num_layers() != config.num_layers)
        throw InputError(detail::str_cat("dit: kv cache has ", kv_cache->num_layers(), " layers, the model ",
                                         config.num_layers));

    // Patchify: token (r, c) holds features in (channel, py, px) order.
    auto x = hidden_states.to(device(), dtype())
                 .reshape({batch, channels, gh, p, gw, p})
                 .permute({0, 2, 4, 1, 3, 5})
                 .reshape({batch, gh * gw, channels * p * p});
    x = image_projector->forward(x) + prior_tokens;
    if (first_block_cache.empty()) {
        auto c = text_groups;
        run_blocks(x, c, step, rope, kv_cache, 0, blocks.size());
    } else {
        x = run_blocks_cached(x, text_groups, step, rope, kv_cache, first_block_cache);
    }

    // norm_out splits (scale, shift), the reverse of the blocks' order.
    auto so = step.norm_out().chunk(2, 1);
    x = modulate(layer_norm(x), so[0], so[1]);
    x = proj_out->forward(x);
    // Unpatchify.
    return x.reshape({batch, gh, gw, -1, p, p}).permute({0, 3, 1, 4, 2, 5}).reshape({batch, -1, gh * p, gw * p});
}

void GlmImageTransformer::run_blocks(at::Tensor& x, std::vector<at::Tensor>& texts, const DiTStepConditioning& step,
                                     const DiTRope& rope, DiTKVCache* kv_cache, size_t from, size_t to) const {
    for (size_t i = from; i < to; ++i)
        std::tie(x, texts) = blocks[i]->forward(x, texts, step.block(i), rope, kv_cache, static_cast<int64_t>(i));
}

at::Tensor GlmImageTransformer::run_blocks_cached(at::Tensor x, std::vector<at::Tensor> texts,
                                                  const DiTStepConditioning& step, const DiTRope& rope,
                                                  DiTKVCache* kv_cache, const FirstBlockCachePasses& passes) const {
    const size_t n_blocks = blocks.size();
    const at::Tensor before = x;
    run_blocks(x, texts, step, rope, kv_cache, 0, 1);
    if (n_blocks == 1) return x;  // nothing after the first block to spare
    const at::Tensor head = x;
    const at::Tensor head_residual = head - before;

    // Group g's samples are rows [first[g], first[g] + count[g]) of the batch; each group's pass decides.
    const size_t n_groups = passes.size();
    std::vector<int64_t> first(n_groups), count(n_groups);
    std::vector<size_t> running;
    for (size_t g = 0, row = 0; g < n_groups; ++g) {
        first[g] = static_cast<int64_t>(row);
        count[g] = texts[g].size(0);
        row += static_cast<size_t>(count[g]);
        if (passes[g]->must_run(head_residual.narrow(0, first[g], count[g]))) running.push_back(g);
    }
    auto rows_of = [&](const at::Tensor& t, size_t g) { return t.narrow(0, first[g], count[g]); };

    std::vector<at::Tensor> after(n_groups);  // each running group's x after the last block
    if (running.size() == n_groups) {
        run_blocks(x, texts, step, rope, kv_cache, 1, n_blocks);
        for (size_t g = 0; g < n_groups; ++g) after[g] = rows_of(x, g);
    } else if (!running.empty()) {
        // Some groups' blocks run, others' do not: the running groups alone, as a forward of
        // their own samples would run them. The condition cache is the first group's alone.
        std::vector<at::Tensor> xs, group_texts, index;
        for (size_t g : running) {
            xs.push_back(rows_of(x, g));
            group_texts.push_back(texts[g]);
            index.push_back(at::arange(first[g], first[g] + count[g], x.options().dtype(at::kLong)));
        }
        at::Tensor xr = xs.size() == 1 ? xs[0] : at::cat(xs);
        run_blocks(xr, group_texts, step.rows(at::cat(index)), rope, running.front() == 0 ? kv_cache : nullptr, 1,
                   n_blocks);
        int64_t row = 0;
        for (size_t g : running) {
            after[g] = xr.narrow(0, row, count[g]);
            row += count[g];
        }
    }

    for (size_t g : running) passes[g]->keep_tail(after[g] - rows_of(head, g));
    if (running.size() == n_groups) return x;
    // A skipping group: the first block's output plus the later blocks' change kept at its last full step.
    std::vector<at::Tensor> out;
    for (size_t g = 0; g < n_groups; ++g)
        out.push_back(after[g].defined() ? after[g] : passes[g]->tail_residual() + rows_of(head, g));
    return out.size() == 1 ? out[0] : at::cat(out);
}

at::Tensor GlmImageTransformer::forward(const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
                                        const at::Tensor& prior_token_id, const at::Tensor& prior_token_drop,
                                        const at::Tensor& timestep, const at::Tensor& target_size,
                                        const at::Tensor& crop_coords, DiTKVCache* kv_cache,
                                        const DiTRope* rope) const {
    check_latent(hidden_states);
    const int64_t batch = hidden_states.size(0), p = config.patch_size;
    const int64_t n_tokens = (hidden_states.size(2) / p) * (hidden_states.size(3) / p);
    if (encoder_hidden_states.dim() != 3 || encoder_hidden_states.size(0) != batch)
        throw InputError(detail::str_cat("dit: 'encoder_hidden_states': expected [", batch, ", L, ",
                                         config.text_embed_dim, "], got ", encoder_hidden_states.sizes()));
    auto text = project_text(encoder_hidden_states);
    auto prior = project_prior(prior_token_id, prior_token_drop, batch, n_tokens);
    auto temb = embed_time(timestep, target_size, crop_coords, batch);
    if (rope) return forward_projected(hidden_states, text, prior, temb, *rope, kv_cache);
    return forward_projected(hidden_states, text, prior, temb, make_rope(hidden_states.size(2), hidden_states.size(3)),
                             kv_cache);
}

}  // namespace glmimage
