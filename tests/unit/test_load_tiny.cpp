// The embedded tiny checkpoint (written by the reference's own save_pretrained) loads
// through the public API with zero missing or unexpected keys, in its dtype and cast.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "glmimage/glmimage.h"
#include "io/weight_index.h"
#include "st_writer.h"

namespace glmimage {
namespace {

namespace fs = std::filesystem;
const std::string kTiny = std::string(GLMI_MODELS_DIR) + "/tiny";

size_t tensors_in(const std::string& folder) { return io::WeightIndex::open_dir(kTiny + "/" + folder).size(); }

TEST(LoadTiny, EveryTensorBinds) {
    auto pipe = Pipeline::load(kTiny);
    ASSERT_EQ(pipe->components().size(), 4u);
    for (const auto& c : pipe->components()) {
        // Strict binding threw nothing: every expected key was found. Nothing unbound is left
        // in the file either (the T5 tied alias is the only listed exception).
        size_t in_file = tensors_in(c.folder);
        EXPECT_TRUE(c.num_tensors == in_file || (c.folder == "text_encoder" && c.num_tensors + 1 == in_file))
            << c.folder << ": bound " << c.num_tensors << " of " << in_file;
        EXPECT_EQ(c.zero_copy, c.num_tensors) << c.folder;
        EXPECT_EQ(c.dtype, "F32");
    }
    std::printf("%s", pipe->summary().c_str());
}

TEST(LoadTiny, CastsToBFloat16OnRequest) {
    LoadOptions o;
    o.dtype = "bfloat16";
    auto pipe = Pipeline::load(kTiny, o);
    for (const auto& c : pipe->components()) {
        EXPECT_EQ(c.dtype, "BF16");
        EXPECT_EQ(c.zero_copy, 0u);
    }
}

TEST(LoadTiny, BadInputsGiveClearErrors) {
    EXPECT_THROW(Pipeline::load("/nonexistent/model"), InputError);
    LoadOptions bad_dtype;
    bad_dtype.dtype = "float8";
    EXPECT_THROW(Pipeline::load(kTiny, bad_dtype), InputError);
    LoadOptions bad_device;
    bad_device.device = "tpu";
    EXPECT_THROW(Pipeline::load(kTiny, bad_device), InputError);
    // A checkpoint with one folder removed.
    const fs::path dir = testing::make_temp_dir("incomplete");
    fs::copy(kTiny, dir, fs::copy_options::recursive);
    fs::remove_all(dir / "vae");
    try {
        Pipeline::load(dir.string());
        FAIL();
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("missing component folder(s) vae/"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace glmimage

namespace glmimage {
namespace {

GenerateRequest small_request(uint64_t seed, int64_t steps = 2) {
    GenerateRequest r;
    r.prompts = {"A poster that says \"Hi\""};
    r.height = 64;
    r.width = 64;
    r.steps = steps;
    r.seed = seed;
    return r;
}

TEST(Session, SessionsShareOneModelAndRunConcurrently) {
    auto model = Model::load(kTiny);
    Session a(model), b(model);
    const auto want = a.generate(small_request(7)).images.at(0).rgb;
    std::vector<uint8_t> got_a, got_b;
    std::thread ta([&] { got_a = a.generate(small_request(7)).images.at(0).rgb; });
    std::thread tb([&] { got_b = b.generate(small_request(7)).images.at(0).rgb; });
    ta.join();
    tb.join();
    EXPECT_EQ(got_a, want);
    EXPECT_EQ(got_b, want);
}

TEST(Session, CancelBeforeACallIsNotLostAndOnlyStopsThatSession) {
    auto model = Model::load(kTiny);
    Session a(model), b(model);
    a.cancel();
    EXPECT_THROW(a.generate(small_request(1)), CancelledError);   // the pending cancel
    EXPECT_NO_THROW(b.generate(small_request(1)));                 // another session: unaffected
    EXPECT_EQ(a.generate(small_request(1)).images.at(0).rgb,       // consumed: the next call runs
              b.generate(small_request(1)).images.at(0).rgb);
}

TEST(Session, CancelStopsTheRunningCall) {
    auto model = Model::load(kTiny);
    Session s(model);
    int64_t steps_seen = 0;
    auto req = small_request(2);
    req.steps = 50;
    EXPECT_THROW(s.generate(req,
                            [&](const Progress& p) {
                                if (p.stage == "denoise" && ++steps_seen == 2) s.cancel();
                            }),
                 CancelledError);
    EXPECT_EQ(steps_seen, 2);
}

TEST(Session, ReplaceModelServesTheNextCallAndFreesTheOldOneAfterTheRunningCall) {
    LoadOptions bf16;
    bf16.dtype = "bfloat16";
    const auto want_f32 = Session(Model::load(kTiny)).generate(small_request(4)).images.at(0).rgb;
    const auto want_bf16 = Session(Model::load(kTiny, bf16)).generate(small_request(4)).images.at(0).rgb;
    ASSERT_NE(want_f32, want_bf16);  // the two models tell apart

    std::shared_ptr<const Model> f32 = Model::load(kTiny);
    const std::weak_ptr<const Model> old = f32;
    Session s(std::move(f32));
    bool replaced = false, old_alive_in_call = false;
    const auto during = s.generate(small_request(4), [&](const Progress& p) {
        if (p.stage != "denoise" || replaced) return;
        s.replace_model(Model::load(kTiny, bf16));  // from inside the call: must not wait for it
        replaced = true;
        old_alive_in_call = !old.expired();  // the running call still holds its model
    });
    EXPECT_TRUE(replaced);
    EXPECT_TRUE(old_alive_in_call);
    EXPECT_EQ(during.images.at(0).rgb, want_f32);  // finished on the model it started with
    EXPECT_TRUE(old.expired());                     // and let it go when it ended
    EXPECT_EQ(s.model().components().at(0).dtype, "BF16");
    EXPECT_EQ(s.generate(small_request(4)).images.at(0).rgb, want_bf16);
    EXPECT_THROW(s.replace_model(nullptr), InputError);
}

TEST(Session, FirstBlockCacheIsCountedAndOffByDefault) {
    auto model = Model::load(kTiny);
    Session s(model);
    auto req = small_request(3, 12);
    const auto exact = s.generate(req);
    EXPECT_EQ(exact.dit_passes, 24);  // both CFG passes of every step
    EXPECT_EQ(exact.dit_passes_cached, 0);
    req.first_block_cache = 0.3;  // skips some of the tiny model's steps (test_first_block_cache.py)
    const auto cached = s.generate(req);
    EXPECT_EQ(cached.dit_passes, 24);
    EXPECT_GT(cached.dit_passes_cached, 0);
    EXPECT_LT(cached.dit_passes_cached, 22);  // each pass runs every block at its first step
    EXPECT_EQ(cached.prior_tokens.ids, exact.prior_tokens.ids);  // the AR stage is not touched
    EXPECT_NE(cached.images.at(0).rgb, exact.images.at(0).rgb);
    req.guidance = 1.0;
    EXPECT_EQ(s.generate(req).dit_passes, 12);
    for (double bad : {-0.5, std::nan(""), HUGE_VAL}) {
        req.first_block_cache = bad;
        EXPECT_THROW(s.generate(req), InputError) << bad;
    }
}

TEST(Session, StepEndCallbackAndLatentOutput) {
    auto model = Model::load(kTiny);
    Session s(model);
    auto req = small_request(3, 4);
    const auto plain = s.generate(req);
    std::vector<DenoiseStep> seen;
    auto record = [&](DenoiseStep& step) { seen.push_back(step); };
    const auto watched = s.generate(req, {}, record);
    EXPECT_EQ(watched.images.at(0).rgb, plain.images.at(0).rgb);  // watching changes nothing
    ASSERT_EQ(seen.size(), 4u);
    for (size_t i = 0; i < seen.size(); ++i) {
        EXPECT_EQ(seen[i].step, static_cast<int64_t>(i));
        EXPECT_EQ(seen[i].total, 4);
        EXPECT_EQ(seen[i].shape, (std::vector<int64_t>{1, 4, req.height / 8, req.width / 8}));
        EXPECT_EQ(seen[i].latents.size(), static_cast<size_t>(4 * req.height / 8 * req.width / 8));
        if (i > 0) {
            EXPECT_LT(seen[i].sigma, seen[i - 1].sigma);  // the noise level the step started from
        }
    }
    EXPECT_EQ(seen[0].sigma, 1.0);

    // Stopping after step 1 decodes that step's latents.
    auto stop = [](DenoiseStep& step) { step.stop = step.step == 1; };
    const auto stopped = s.generate(req, {}, stop);
    EXPECT_EQ(stopped.dit_passes, 4);
    EXPECT_NE(stopped.images.at(0).rgb, plain.images.at(0).rgb);
    // Changed latents carry on.
    auto halve = [](DenoiseStep& step) {
        if (step.step != 2) return;
        for (float& v : step.latents) v *= 0.5f;
    };
    EXPECT_NE(s.generate(req, {}, halve).images.at(0).rgb, plain.images.at(0).rgb);

    // The guidance of the steps after: seen as the request's, turned off after step 0 (the other
    // three steps run the conditional pass alone), never raised where the call started without it.
    std::vector<double> guidance_seen;
    auto guidance_off = [&](DenoiseStep& step) {
        guidance_seen.push_back(step.guidance);
        if (step.step == 0) step.guidance = 1.0;
    };
    const auto unguided_after_0 = s.generate(req, {}, guidance_off);
    EXPECT_EQ(guidance_seen, (std::vector<double>{1.5, 1.0, 1.0, 1.0}));
    EXPECT_EQ(unguided_after_0.dit_passes, 2 + 3);
    EXPECT_NE(unguided_after_0.images.at(0).rgb, plain.images.at(0).rgb);
    auto raise = [](DenoiseStep& step) { step.guidance = 2.0; };
    GenerateRequest unguided = req;
    unguided.guidance = 1.0;
    EXPECT_THROW(s.generate(unguided, {}, raise), InputError);
    auto nan_guidance = [](DenoiseStep& step) { step.guidance = std::nan(""); };
    EXPECT_THROW(s.generate(req, {}, nan_guidance), InputError);
    EXPECT_EQ(seen[1].timestep, 750.0);  // the scheduler's timesteps: 1000, 750, 500, 250

    auto shrink = [](DenoiseStep& step) { step.latents.pop_back(); };
    EXPECT_THROW(s.generate(req, {}, shrink), InputError);
    auto poison = [](DenoiseStep& step) { step.latents[7] = std::nanf(""); };
    EXPECT_THROW(s.generate(req, {}, poison), InputError);
    EXPECT_EQ(s.generate(req).images.at(0).rgb, plain.images.at(0).rgb);  // and the session carries on

    // Output::kLatents: the latents the last step handed on, no images.
    req.output = GenerateRequest::Output::kLatents;
    const auto latent = s.generate(req);
    EXPECT_TRUE(latent.images.empty() && latent.float_images.empty());
    EXPECT_EQ(latent.latents_shape, seen.back().shape);
    EXPECT_EQ(latent.latents, seen.back().latents);
    EXPECT_TRUE(plain.latents.empty() && plain.latents_shape.empty() && plain.float_images.empty());

    // Output::kFloatImages: the image before its 8-bit rounding, in [0, 1], which rounds to it.
    req.output = GenerateRequest::Output::kFloatImages;
    const auto floats = s.generate(req);
    EXPECT_TRUE(floats.images.empty() && floats.latents.empty());
    const Image& rgb8 = plain.images.at(0);
    ASSERT_EQ(floats.float_images_shape, (std::vector<int64_t>{1, rgb8.height, rgb8.width, 3}));
    ASSERT_EQ(floats.float_images.size(), rgb8.rgb.size());
    size_t unrounded = 0;
    for (size_t i = 0; i < rgb8.rgb.size(); ++i) {
        const float v = floats.float_images[i];
        ASSERT_TRUE(v >= 0.0f && v <= 1.0f) << v;
        ASSERT_EQ(std::nearbyint(v * 255.0f), static_cast<float>(rgb8.rgb[i])) << i;
        unrounded += v * 255.0f != std::nearbyint(v * 255.0f);
    }
    EXPECT_GT(unrounded, 0u);  // the values are not the 8-bit levels again
    req.output = static_cast<GenerateRequest::Output>(7);
    EXPECT_THROW(req.validate(), InputError);
}

TEST(Session, GivenGlyphEmbeddingsStandForThePromptInTheDecoder) {
    auto model = Model::load(kTiny);
    Session s(model);
    auto req = small_request(3);
    const auto full = s.generate(req);
    GenerateRequest given = req;
    given.prompts.clear();
    given.prompt_embeds_shape = {1, 3, 32};  // the tiny DiT's text_embed_dim
    for (int i = 0; i < 3 * 32; ++i) given.prompt_embeds.push_back(0.01f * static_cast<float>(i % 17) - 0.08f);
    const auto decoded = s.decode_prior_tokens(given, full.prior_tokens);
    EXPECT_NE(decoded.images.at(0).rgb, full.images.at(0).rgb);
    // With the prompt too, the decoder reads the embeddings, not the prompt's quoted text.
    GenerateRequest both = given;
    both.prompts = req.prompts;
    EXPECT_EQ(s.decode_prior_tokens(both, full.prior_tokens).images.at(0).rgb, decoded.images.at(0).rgb);
    EXPECT_THROW(s.generate(given), InputError);  // the AR stage needs the prompt
    EXPECT_THROW(s.generate_prior_tokens(given), InputError);
    given.prompt_embeds_shape = {1, 4, 24};  // as many values, another width
    EXPECT_THROW(s.decode_prior_tokens(given, full.prior_tokens), InputError);

    // encode_prompts gives the decoder's own embeddings: handed back, the prompt's image.
    const PromptEmbeddings own = s.encode_prompts(req);
    ASSERT_EQ(own.prompt_embeds_shape.size(), 3u);
    EXPECT_EQ(own.prompt_embeds_shape[0], 1);
    EXPECT_EQ(own.prompt_embeds_shape[2], 32);
    EXPECT_EQ(own.negative_prompt_embeds_shape, (std::vector<int64_t>{1, 1, 32}));
    GenerateRequest round_trip = req;
    round_trip.prompts.clear();
    round_trip.prompt_embeds = own.prompt_embeds;
    round_trip.prompt_embeds_shape = own.prompt_embeds_shape;
    round_trip.negative_prompt_embeds = own.negative_prompt_embeds;
    round_trip.negative_prompt_embeds_shape = own.negative_prompt_embeds_shape;
    EXPECT_EQ(s.decode_prior_tokens(round_trip, full.prior_tokens).images.at(0).rgb, full.images.at(0).rgb);
    // Without prompts (the embeddings standing for them): the negative's only, for as many.
    const PromptEmbeddings negative_only = s.encode_prompts(round_trip);
    EXPECT_TRUE(negative_only.prompt_embeds.empty());
    EXPECT_EQ(negative_only.negative_prompt_embeds, own.negative_prompt_embeds);
}

TEST(Placement, StagedGivesTheResidentImageAndRestsAsFileViews) {
    LoadOptions resident;
    resident.dtype = "bfloat16";
    LoadOptions staged = resident;
    staged.residency = "staged";
    auto r = Pipeline::load(kTiny, resident);
    auto s = Pipeline::load(kTiny, staged);
    for (const auto& c : s->components()) {
        EXPECT_EQ(c.residency, "staged");
        EXPECT_EQ(c.dtype, "BF16");  // the compute dtype; at rest the weights are the file's F32 views
    }
    EXPECT_EQ(s->generate(small_request(3)).images.at(0).rgb, r->generate(small_request(3)).images.at(0).rgb);
}

TEST(Placement, PerComponentDtypeAndBadOptions) {
    LoadOptions o;
    o.components["vae"].dtype = "bfloat16";
    auto p = Pipeline::load(kTiny, o);
    for (const auto& c : p->components()) EXPECT_EQ(c.dtype, c.folder == "vae" ? "BF16" : "F32") << c.folder;
    EXPECT_EQ(p->generate(small_request(4)).images.size(), 1u);
    LoadOptions bad;
    bad.components["unet"].dtype = "float32";
    EXPECT_THROW(Pipeline::load(kTiny, bad), InputError);
    bad.components.clear();
    bad.residency = "offloaded";
    EXPECT_THROW(Pipeline::load(kTiny, bad), InputError);
}

}  // namespace
}  // namespace glmimage

namespace glmimage {
namespace {

// 4 threads x 3 generations each, mixed requests, on one shared Model: through 4 sessions
// (concurrent) and through one session (queued). Each image equals the same request run alone.
TEST(Concurrency, FourThreadsGiveTheSequentialImages) {
    auto model = Model::load(kTiny);
    auto request = [](int thread, int call) {
        GenerateRequest r = small_request(static_cast<uint64_t>(10 * thread + call));
        if ((thread + call) % 2) r.prompts = {"a red \"circle\"", "two words"};
        if (call == 2) r.images_per_prompt = 2;
        return r;
    };
    std::map<std::pair<int, int>, std::vector<std::vector<uint8_t>>> want;
    {
        Session alone(model);
        for (int t = 0; t < 4; ++t)
            for (int c = 0; c < 3; ++c)
                for (const auto& img : alone.generate(request(t, c)).images) want[{t, c}].push_back(img.rgb);
    }
    for (const bool shared_session : {false, true}) {
        Session shared(model);
        std::map<std::pair<int, int>, std::vector<std::vector<uint8_t>>> got;
        std::mutex got_mutex;
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t)
            threads.emplace_back([&, t] {
                Session own(model);
                Session& s = shared_session ? shared : own;
                for (int c = 0; c < 3; ++c) {
                    auto res = s.generate(request(t, c));
                    std::lock_guard<std::mutex> lock(got_mutex);
                    for (const auto& img : res.images) got[{t, c}].push_back(img.rgb);
                }
            });
        for (auto& th : threads) th.join();
        EXPECT_EQ(got, want) << (shared_session ? "one shared session" : "one session per thread");
    }
}

}  // namespace
}  // namespace glmimage
