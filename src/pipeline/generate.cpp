// The two halves of a generation: the AR stage (processor -> condition images through
// the vision VQ -> GLM-4 generation -> prior ids) and the diffusion decoder, orchestration only.
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "core/check.h"
#include "models/glm_ar/vision_preprocess.h"
#include "models/glm_ar/vision_encoder.h"
#include "pipeline/model_impl.h"

namespace glmimage {

using detail::str_cat;

namespace {

at::Tensor rows_tensor(const std::vector<std::vector<int64_t>>& rows) {
    const int64_t b = static_cast<int64_t>(rows.size());
    const int64_t l = b ? static_cast<int64_t>(rows[0].size()) : 0;
    auto t = at::empty({b, l}, at::kLong);
    for (int64_t i = 0; i < b; ++i) {
        GLMI_CHECK(static_cast<int64_t>(rows[i].size()) == l, "ragged rows");
        std::copy(rows[i].begin(), rows[i].end(), t[i].data_ptr<int64_t>());
    }
    return t;
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
    auto c = t.to(at::kCPU, at::kLong).contiguous();
    return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// The decoder's copy of a condition image, as diffusers' VaeImageProcessor makes it: sides
// floored to multiples of `cell` (VAE scale x DiT patch), PIL-Lanczos resized when that changes them.
at::Tensor decoder_condition_pixels(const Image& img, int64_t cell) {
    const int64_t h = img.height / cell * cell, w = img.width / cell * cell;
    if (h < cell || w < cell)
        throw InputError(str_cat("condition image of ", img.height, "x", img.width, " is smaller than ", cell, " pixels"));
    at::Tensor px = image_to_tensor(img);
    return (h == img.height && w == img.width) ? px : resize_u8(px, h, w, ResampleFilter::kLanczos);
}

// A tensor's values as float32 on the CPU into a result's values and shape.
void take_values(const at::Tensor& t, std::vector<float>& values, std::vector<int64_t>& shape) {
    const at::Tensor c = t.to(at::kCPU, at::kFloat).contiguous();
    values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
    shape = c.sizes().vec();
}

}  // namespace

at::Tensor image_to_tensor(const Image& img) {
    return at::from_blob(const_cast<uint8_t*>(img.rgb.data()), {img.height, img.width, 3}, at::kByte).clone();
}

Image tensor_to_image(const at::Tensor& t) {
    if (t.dim() != 3 || t.size(2) != 3) throw InputError(str_cat("expected an [H, W, 3] image, got ", t.sizes()));
    const at::Tensor c = t.to(at::kCPU, at::kByte).contiguous();
    Image img;
    img.height = c.size(0);
    img.width = c.size(1);
    img.rgb.assign(c.data_ptr<uint8_t>(), c.data_ptr<uint8_t>() + c.numel());
    return img;
}

PromptEmbeddings run_prompt_encoder(const Model::Impl& m, const GenerateRequest& req) {
    c10::InferenceMode guard;
    const auto& d = m.decoder_models();
    PromptEmbeddings out;
    if (!req.prompts.empty())
        take_values(glyph_embeddings(d, req.prompts, req.max_sequence_length), out.prompt_embeds,
                    out.prompt_embeds_shape);
    take_values(negative_glyph_embeddings(d, req.num_prompts()), out.negative_prompt_embeds,
                out.negative_prompt_embeds_shape);
    return out;
}

PriorTokens run_ar_stage(const Model::Impl& m, const GenerateRequest& req, const CallContext& call) {
    if (req.prompts.empty())
        throw InputError("the AR stage needs the prompts (prompt_embeds stand for the glyph encoder's output only; "
                         "without prompts, give the prior tokens: decode_prior_tokens)");
    c10::InferenceMode guard;
    const int64_t batch = static_cast<int64_t>(req.prompts.size());
    const bool i2i = !req.images.empty();
    std::vector<std::vector<ImageSize>> sizes;
    std::vector<at::Tensor> flat_images;  // sample-major, as the processor orders the grids
    for (const auto& list : req.images) {
        sizes.emplace_back();
        for (const auto& img : list) {
            sizes.back().push_back({img.height, img.width});
            flat_images.push_back(image_to_tensor(img));
        }
    }
    PromptProcessorOutput proc = m.processor->process(req.prompts, sizes, req.height, req.width);
    at::Tensor input_ids = rows_tensor(proc.input_ids);
    at::Tensor mask = rows_tensor(proc.attention_mask);

    PriorTokens out;
    if (i2i) {
        auto vision_in_use = use_component(m.home("vision_language_encoder"), {kArVisionPart});
        // Condition images -> VQ ids: they replace the <|image|> placeholders in the prompt and,
        // upsampled 2x, condition the decoder's KV cache. Their sizes fit (Model::validate).
        ProcessedImages pi = preprocess_images(flat_images, m.preprocessor);
        at::Tensor ids = image_token_ids(*m.ar, pi.pixel_values, pi.grid_thw).to(at::kCPU);
        auto placeholders = input_ids.eq(m.processor->image_token_id());
        GLMI_CHECK(placeholders.sum().item<int64_t>() == ids.numel(), "placeholder count ",
                   placeholders.sum().item<int64_t>(), " != image tokens ", ids.numel());
        input_ids = input_ids.masked_scatter(placeholders, ids);
        at::Tensor up = upsample_token_ids_2x(ids, pi.grid_thw).to(at::kCPU);
        int64_t offset = 0, k = 0;
        for (int64_t b = 0; b < batch; ++b) {
            out.condition_ids.emplace_back();
            out.condition_grids.emplace_back();
            for (size_t j = 0; j < req.images[static_cast<size_t>(b)].size(); ++j, ++k) {
                const int64_t rows = 2 * pi.grid_thw[k][1].item<int64_t>();
                const int64_t cols = 2 * pi.grid_thw[k][2].item<int64_t>();
                out.condition_ids.back().push_back(to_vector(up.narrow(0, offset, rows * cols)));
                out.condition_grids.back().emplace_back(rows, cols);
                offset += rows * cols;
            }
        }
    }

    auto text_in_use = use_component(m.home("vision_language_encoder"), {kArTextPart, kArEmbeddingPart});
    ArRequest ar_req;
    ar_req.input_ids = input_ids;
    ar_req.attention_mask = mask;
    for (const auto& g : proc.image_grid_thw) ar_req.grids.push_back({g[0], g[1], g[2]});
    ar_req.images_per_sample = proc.images_per_sample;
    ArGenerateOptions opt;
    opt.sampling = req.ar.with_defaults(m.sampling_defaults);
    opt.seed = req.seed;
    opt.cancel = call.cancel;
    opt.decode = parse_ar_decode(m.options.ar_decode);
    if (call.progress) opt.on_token = [&](int64_t done, int64_t total) { call.progress({"ar", done, total}); };
    ArResult res = m.ar_generator->generate(ar_req, opt);
    out.ar_decode = res.decode;
    GLMI_CHECK(res.prior_ids.defined(), "AR stage produced no prior ids");
    out.grid_h = res.grid_h;
    out.grid_w = res.grid_w;
    for (int64_t b = 0; b < batch; ++b) out.ids.push_back(to_vector(res.prior_ids[b]));
    return out;
}

void run_decoder_stage(const Model::Impl& m, const GenerateRequest& req, const PriorTokens& prior,
                       const CallContext& call, GenerateResult& result) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t batch = req.num_prompts();
    const int64_t cell = m.patch_cell();
    const size_t per_prompt = static_cast<size_t>((req.height / cell) * (req.width / cell));
    if (static_cast<int64_t>(prior.ids.size()) != batch)
        throw InputError(str_cat("prior tokens: expected one list per prompt (", batch, "), got ", prior.ids.size()));
    for (const auto& ids : prior.ids)
        if (ids.size() != per_prompt)
            throw InputError(str_cat("prior tokens: ", req.height, "x", req.width, " needs ", per_prompt,
                                     " ids per prompt (the AR grid upsampled 2x), got ", ids.size()));
    std::vector<std::vector<ConditionImage>> conds;
    if (!req.images.empty()) {
        if (prior.condition_ids.size() != req.images.size())
            throw InputError("prior tokens: image-to-image needs the condition images' prior ids");
        for (size_t b = 0; b < req.images.size(); ++b) {
            if (prior.condition_ids[b].size() != req.images[b].size())
                throw InputError(str_cat("prior tokens: prompt ", b, " has ", req.images[b].size(),
                                         " condition images but ", prior.condition_ids[b].size(), " id lists"));
            conds.emplace_back();
            for (size_t k = 0; k < req.images[b].size(); ++k)
                conds.back().push_back({decoder_condition_pixels(req.images[b][k], cell),
                                        at::tensor(prior.condition_ids[b][k], at::kLong)});
        }
    }
    DecoderRuntime rt;
    if (m.options.cfg_passes != "auto") rt.batch_cfg = m.options.cfg_passes == "joint";
    rt.cancel = call.cancel;
    if (call.progress) rt.on_step = [&](int64_t step, int64_t total) { call.progress({"denoise", step, total}); };
    const std::string cfg = cfg_passes(rt, m.decoder_models().device(), m.decoder_models().dtype(), req.guidance);
    rt.on_step_end = call.on_step_end;
    int64_t passes = 0;
    rt.dit_passes = &passes;
    std::vector<std::vector<bool>> skips;
    rt.first_block_cache_skips = &skips;
    at::Tensor out = run_diffusion_decoder(m.decoder_models(), rows_tensor(prior.ids), conds, req, rt).contiguous();
    result.images.clear();
    switch (req.output) {
        case GenerateRequest::Output::kImages:
            for (int64_t i = 0; i < out.size(0); ++i) result.images.push_back(tensor_to_image(out[i]));
            break;
        case GenerateRequest::Output::kFloatImages:
            take_values(out, result.float_images, result.float_images_shape);
            break;
        case GenerateRequest::Output::kLatents: take_values(out, result.latents, result.latents_shape); break;
    }
    result.timings.push_back({"decoder", seconds_since(t0), cfg});
    result.dit_passes = passes;
    result.dit_passes_cached = 0;
    for (const auto& pass : skips) result.dit_passes_cached += std::count(pass.begin(), pass.end(), true);
}

}  // namespace glmimage
