#include "models/glm_ar/ar_generator.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <tuple>

#include "core/check.h"
#include "glmimage/errors.h"
#include "kernels/cuda_graph.h"
#include "models/glm_ar/token_grid.h"

namespace glmimage {

namespace {

// The end-of-sequence test reads the device only every this many tokens: a read waits for the
// device to finish, which on a GPU would stall the host queueing the next token's kernels. The
// exact stopping step is recovered from a per-step record, so the tokens are the same.
constexpr int64_t kEosCheckInterval = 16;

}  // namespace

void check_prompt_ids(const GlmArConfig& config, const at::Tensor& input_ids) {
    if (!input_ids.defined() || input_ids.dim() != 2 || input_ids.size(0) < 1 || input_ids.size(1) < 1)
        throw InputError("ar: input_ids must be a non-empty [batch, length] tensor");
    if (at::isFloatingType(input_ids.scalar_type()) || input_ids.scalar_type() == at::kBool)
        throw InputError("ar: input_ids must be integer token ids");
    const int64_t lo = input_ids.min().item<int64_t>(), hi = input_ids.max().item<int64_t>();
    if (lo < 0 || hi >= config.text.vocab_size)
        throw InputError("ar: token id out of range: expected [0, " + std::to_string(config.text.vocab_size) +
                         "), got [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    if (input_ids.eq(config.image_token_id).any().item<bool>())
        throw InputError("ar: the prompt still holds image placeholders (id " + std::to_string(config.image_token_id) +
                         "): replace them with the source images' VQ ids before generation");
}

ArDecode parse_ar_decode(const std::string& name) {
    if (name == "auto") return ArDecode::kAuto;
    if (name == "eager") return ArDecode::kEager;
    if (name == "static") return ArDecode::kStatic;
    if (name == "graph") return ArDecode::kGraph;
    throw InputError("unknown ar_decode '" + name + "': expected auto, eager, static or graph");
}

const char* ar_decode_name(ArDecode mode) {
    switch (mode) {
        case ArDecode::kAuto: return "auto";
        case ArDecode::kEager: return "eager";
        case ArDecode::kStatic: return "static";
        case ArDecode::kGraph: return "graph";
    }
    return "?";
}

ArDecode ArGenerator::resolve(ArDecode requested) const {
    const std::string why = kernels::cuda_graphs_unsupported_reason(decoder_.device());
    if (requested == ArDecode::kAuto) return why.empty() ? ArDecode::kGraph : ArDecode::kEager;
    if (requested == ArDecode::kGraph && !why.empty()) throw UnsupportedError("ar_decode 'graph': " + why);
    return requested;
}

ArGenerator::ArGenerator(const GlmArModel& model)
    : model_(model), decoder_(model), rotary_(model.config.text) {}

at::Tensor ArGenerator::choose(at::Tensor scores, const ArSettings& s, at::Generator& gen) const {
    if (!s.do_sample) return scores.argmax(-1);
    GLMI_CHECK(s.temperature && s.top_p && s.top_k, "sampling settings not resolved");
    const double temperature = *s.temperature, top_p = *s.top_p;
    const int64_t top_k = *s.top_k;
    if (temperature != 1.0) scores = scores / temperature;
    if (top_k != 0) {
        const int64_t k = std::min<int64_t>(top_k, scores.size(-1));
        auto kth = std::get<0>(at::topk(scores, k)).narrow(-1, k - 1, 1);
        scores = scores.masked_fill(scores < kth, -std::numeric_limits<float>::infinity());
    }
    if (top_p < 1.0) {
        // Keep the smallest top set whose mass reaches top_p, boundary token included.
        auto sorted = at::sort(scores, -1, /*descending=*/false);
        auto cum = std::get<0>(sorted).softmax(-1).cumsum(-1);
        auto remove = cum.le(1.0 - top_p);
        remove.narrow(-1, remove.size(-1) - 1, 1).fill_(false);
        remove = remove.scatter(1, std::get<1>(sorted), remove);
        scores = scores.masked_fill(remove, -std::numeric_limits<float>::infinity());
    }
    return at::multinomial(scores.softmax(-1), 1, /*replacement=*/false, gen).squeeze(1);
}

ArResult ArGenerator::generate(const ArRequest& req, const ArGenerateOptions& opt) const {
    c10::InferenceMode guard;
    const auto& cfg = model_.config;
    check_prompt_ids(cfg, req.input_ids);
    const auto& s = opt.sampling;
    s.validate();
    const at::Device device = decoder_.device();
    const auto dtype = decoder_.dtype();
    auto ids = req.input_ids.to(device, at::kLong);
    const int64_t B = ids.size(0), L = ids.size(1);
    auto grids = split_grids(req.grids, req.images_per_sample, B);
    auto pos = build_mrope_positions(ids, req.attention_mask, grids, cfg.image_start_token_id, cfg.image_end_token_id);

    // Target grids = the grids after the prompt's complete images; generated last first.
    std::vector<GridThw> targets;
    for (int64_t b = 0; b < B; ++b) {
        const auto& g = grids[static_cast<size_t>(b)];
        const auto first = static_cast<size_t>(std::min<int64_t>(pos.complete_images[static_cast<size_t>(b)],
                                                                 static_cast<int64_t>(g.size())));
        std::vector<GridThw> t(g.begin() + static_cast<std::ptrdiff_t>(first), g.end());
        if (t.empty()) throw InputError("ar: sample " + std::to_string(b) + " has no target grid to generate");
        if (b == 0)
            targets = t;
        else if (t != targets)
            throw InputError("ar: every sample of a batch must generate the same target grids");
    }
    int64_t grid_tokens = 0;
    for (const auto& g : targets) grid_tokens += g[1] * g[2];
    ArResult res;
    res.grid_h = targets[0][1];
    res.grid_w = targets[0][2];
    res.grid_offset = grid_tokens - res.grid_h * res.grid_w;  // the later (preview) grids come first

    const int64_t N = opt.max_new_tokens < 0 ? grid_tokens + 1 : opt.max_new_tokens;
    if (N < 1) throw InputError("ar: max_new_tokens must be >= 1");
    // Checked before the cache is allocated: a prompt (with its image tokens) that leaves no room
    // for the grids in the trained context is an input error, not an out-of-memory.
    if (L + N - 1 > cfg.text.max_position_embeddings)
        throw InputError("ar: a prompt of " + std::to_string(L) + " tokens plus the " + std::to_string(N) +
                         " tokens to generate exceeds the AR model's context of " +
                         std::to_string(cfg.text.max_position_embeddings) + " tokens (max_position_embeddings)");
    const int64_t table = pos.decode.size(2);
    if (N - 1 > table)
        throw InputError("ar: max_new_tokens " + std::to_string(N) + " exceeds the " + std::to_string(table + 1) +
                         " tokens the target grids define");
    at::Tensor forced;
    if (req.forced_tokens.defined()) {
        if (req.forced_tokens.dim() != 2 || req.forced_tokens.size(0) != B)
            throw InputError("ar: forced_tokens must be [batch, steps]");
        forced = req.forced_tokens.to(device, at::kLong);
    }

    // The last chosen token is never fed back, so the cache needs L + N - 1 slots.
    const int64_t capacity = L + N - 1;
    KVCache cache = decoder_.make_cache(B, capacity);
    if (req.attention_mask.defined()) cache.set_prompt_mask(req.attention_mask);
    auto [pc, ps] = rotary_.cos_sin(pos.prefill.to(device), dtype);
    // Rotary tables for every decode step, computed once.
    at::Tensor dc, ds;
    if (N > 1) std::tie(dc, ds) = rotary_.cos_sin(pos.decode.to(device).narrow(2, 0, N - 1).permute({1, 0, 2}), dtype);

    auto hidden = decoder_.forward(ids, pc, ps, cache);
    const int64_t eos = cfg.text.eos_token_id, pad = cfg.text.pad_token_id;
    const int64_t V = cfg.text.vision_vocab_size, codebook = cfg.vq.num_embeddings;
    auto gen = at::globalContext().defaultGenerator(device).clone();
    gen.set_current_seed(opt.seed);

    // Per-step state in device buffers, updated in place: the step index too, so one token's
    // work is the same kernels at every step (what a captured graph replays) and the host
    // never waits for the device between tokens.
    const auto longs = at::TensorOptions().dtype(at::kLong).device(device);
    auto step_t = at::zeros({1}, longs);  // the step whose token is chosen next
    auto unfinished = at::ones({B}, longs);
    auto generated = at::empty({B, N}, longs);
    auto alive = at::empty({N}, longs);  // rows still unfinished after each step
    auto next = at::empty({B}, longs);   // the tokens chosen last
    at::Tensor logits_record;
    if (opt.record_logits) logits_record = at::empty({B, V}, longs.dtype(at::kFloat));
    const bool restrict_to_codebook = s.keep_in_codebook && codebook < V;
    // From the last position's hidden state to the recorded token of step `step_t`.
    auto choose_next = [&](const at::Tensor& last_hidden) {
        // Only the last position goes through lm_head; choices are made on fp32 logits.
        auto scores = decoder_.logits(last_hidden).to(at::kFloat).clone();
        if (opt.record_logits) logits_record.copy_(scores);
        if (restrict_to_codebook)  // while a grid is generated
            scores.narrow(1, codebook, V - codebook)
                .masked_fill_(step_t.lt(grid_tokens), -std::numeric_limits<float>::infinity());
        auto chosen = choose(scores, s, gen);
        if (forced.defined() && forced.size(1) > 0) {
            const int64_t n = forced.size(1);
            chosen = at::where(step_t.lt(n), forced.index_select(1, step_t.clamp_max(n - 1)).view({B}), chosen);
        }
        chosen = chosen * unfinished + pad * (1 - unfinished);  // finished rows get padding
        generated.index_copy_(1, step_t, chosen.view({B, 1}));
        unfinished.mul_(chosen.ne(eos));
        alive.index_copy_(0, step_t, unfinished.sum().view({1}));
        next.copy_(chosen);
        step_t.add_(1);
    };

    // The static step: feeds the embedded `next` (x_in) at cache slot L + step - 1, over the
    // whole capacity under a mask of the keys written so far (and the prompt's padding).
    const ArDecode mode = resolve(opt.decode);
    res.decode = ar_decode_name(mode);
    at::Tensor x_in, key_valid, key_pos;
    if (mode != ArDecode::kEager) {
        x_in = at::empty({B, 1, cfg.text.hidden_size}, at::TensorOptions().dtype(dtype).device(device));
        key_valid = cache.key_valid.view({B, 1, 1, capacity});
        key_pos = at::arange(capacity, longs).view({1, 1, 1, capacity});
    }
    auto static_step = [&] {
        auto fed = step_t - 1;
        auto slot = fed + L;
        auto mask = key_valid.logical_and(key_pos.le(slot));
        auto h = decoder_.forward_at_slot(x_in, dc.index_select(1, fed), ds.index_select(1, fed), slot, mask, cache);
        choose_next(h.select(1, 0));
    };
    // Declared after every buffer the graph reads, so it is destroyed (the caller's stream made
    // to wait for its work) before they are freed.
    std::unique_ptr<kernels::StepGraph> graph;
    if (mode == ArDecode::kGraph && N > 2)
        graph = std::make_unique<kernels::StepGraph>(device);
    else if (mode == ArDecode::kGraph)
        res.decode = "static";  // two tokens or fewer: nothing is left to replay after the warm-up

    int64_t done = 0, checked = 0;
    // One past the first step in [from, to) after which every row had finished; 0 if none did.
    auto stop_in = [&alive](int64_t from, int64_t to) -> int64_t {
        const auto finished = alive.narrow(0, from, to - from).eq(0).to(at::kCPU);
        const auto* f = finished.data_ptr<bool>();
        for (int64_t i = 0; i < to - from; ++i)
            if (f[i]) return from + i + 1;
        return 0;
    };
    for (int64_t step = 0; step < N; ++step) {
        if (opt.cancel && opt.cancel->load())
            throw CancelledError("cancelled at AR token " + std::to_string(step));
        if (step == 0) {
            choose_next(hidden.select(1, hidden.size(1) - 1));
        } else if (mode == ArDecode::kEager) {
            choose_next(decoder_.forward(next.view({B, 1}), dc.narrow(1, step - 1, 1), ds.narrow(1, step - 1, 1), cache)
                            .select(1, 0));
        } else {
            x_in.copy_(decoder_.embed(next.view({B, 1})));
            if (graph && step == 2) {  // step 1 ran eagerly on the graph's stream: the warm-up
                try {
                    graph->capture(static_step, gen);
                } catch (const std::exception& e) {
                    if (opt.decode == ArDecode::kGraph) throw;
                    graph.reset();  // auto: the same step, run eagerly
                    res.decode = std::string("static (CUDA graph capture failed: ") + e.what() + ")";
                }
            }
            if (graph && step >= 2)
                graph->replay();
            else
                static_step();
        }
        if (opt.record_logits) res.step_logits.push_back(logits_record.clone());
        done = step + 1;
        if (opt.on_token) opt.on_token(done, N);
        if (done - checked == kEosCheckInterval) {
            const int64_t stop = stop_in(checked, done);
            checked = done;
            if (stop) {
                done = stop;
                break;
            }
        }
    }
    if (checked < done)  // the steps since the last check
        if (const int64_t stop = stop_in(checked, done)) done = stop;
    res.generated = generated.narrow(1, 0, done);
    res.sequences = at::cat({ids, res.generated}, 1);

    // Main grid -> DiT prior ids, per row (the pipeline's slice of the generated tokens).
    // A run asked for fewer tokens than the grids need (a parity probe) has no prior ids.
    const int64_t main = res.grid_h * res.grid_w;
    if (N < res.grid_offset + main) return res;
    if (done < res.grid_offset + main)
        throw Error("ar: generation stopped after " + std::to_string(done) + " tokens, before the " +
                    std::to_string(res.grid_h) + "x" + std::to_string(res.grid_w) + " grid was complete");
    auto grid_ids = res.generated.narrow(1, res.grid_offset, main);
    if (grid_ids.lt(0).any().item<bool>() || grid_ids.ge(codebook).any().item<bool>())
        throw Error("ar: the generated grid holds ids outside the codebook [0, " + std::to_string(codebook) +
                    "); enable keep_in_codebook");
    std::vector<at::Tensor> rows;
    for (int64_t b = 0; b < B; ++b) rows.push_back(upsample_grid_2x(grid_ids[b], res.grid_h, res.grid_w));
    res.prior_ids = at::stack(rows);
    return res;
}

}  // namespace glmimage
