// Session: per-call state over a shared Model (the call queue and the cancel request), and
// Pipeline, one Model with one Session.
#include <chrono>
#include <optional>

#include "core/cpu_block_cache.h"
#include "pipeline/model_impl.h"

namespace glmimage {

// One running call: holds the session's call lock (later calls queue behind it) and owns the
// cancel flag cancel() sets while it runs; a cancel made before it started is carried over.
class Session::Call {
  public:
    // `model`: the one the call validated its request against and runs on, whatever
    // replace_model() does meanwhile.
    Call(Session& s, const Model& model) : session_(s), lock_(s.call_mutex_) {
        std::lock_guard<std::mutex> state(s.state_mutex_);
        flag_ = std::make_shared<std::atomic<bool>>(std::exchange(s.pending_cancel_, false));
        s.running_cancel_ = flag_;
        if (model.impl().options.cpu_block_cache) blocks_.emplace();
    }
    ~Call() {
        std::lock_guard<std::mutex> state(session_.state_mutex_);
        session_.running_cancel_.reset();
    }
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;

    CallContext context(const ProgressCallback& progress, const DenoiseStepCallback& on_step_end = {}) const {
        return {flag_.get(), progress, on_step_end};
    }

  private:
    Session& session_;
    std::lock_guard<std::mutex> lock_;
    std::shared_ptr<std::atomic<bool>> flag_;
    std::optional<CpuBlockCacheScope> blocks_;  // the call's large CPU blocks reused (LoadOptions::cpu_block_cache)
};

Session::Session(std::shared_ptr<const Model> model) : model_(std::move(model)) {
    if (!model_) throw InputError("session: no model");
}
Session::~Session() = default;

std::shared_ptr<const Model> Session::shared_model() const {
    std::lock_guard<std::mutex> state(state_mutex_);
    return model_;
}

void Session::replace_model(std::shared_ptr<const Model> model) {
    if (!model) throw InputError("replace_model: no model");
    std::lock_guard<std::mutex> state(state_mutex_);
    model_.swap(model);
    // the old model (now in `model`) is released after the lock: its weights may take a while to free
}

void Session::cancel() {
    std::lock_guard<std::mutex> state(state_mutex_);
    if (running_cancel_)
        running_cancel_->store(true);
    else
        pending_cancel_ = true;
}

GenerateResult Session::generate(const GenerateRequest& request, const ProgressCallback& progress,
                                 const DenoiseStepCallback& on_step_end) {
    const auto model = shared_model();  // this call's, whatever replace_model() does meanwhile
    model->validate(request);            // before queueing: a bad request fails at once
    Call call(*this, *model);
    const auto ctx = call.context(progress, on_step_end);
    GenerateResult r;
    auto t0 = std::chrono::steady_clock::now();
    r.prior_tokens = run_ar_stage(model->impl(), request, ctx);
    r.timings.push_back({"ar", seconds_since(t0), r.prior_tokens.ar_decode});
    run_decoder_stage(model->impl(), request, r.prior_tokens, ctx, r);
    return r;
}

PriorTokens Session::generate_prior_tokens(const GenerateRequest& request, const ProgressCallback& progress) {
    const auto model = shared_model();
    model->validate(request);
    Call call(*this, *model);
    return run_ar_stage(model->impl(), request, call.context(progress));
}

PromptEmbeddings Session::encode_prompts(const GenerateRequest& request) {
    const auto model = shared_model();
    model->validate(request);
    Call call(*this, *model);
    return run_prompt_encoder(model->impl(), request);
}

GenerateResult Session::decode_prior_tokens(const GenerateRequest& request, const PriorTokens& prior,
                                            const ProgressCallback& progress,
                                            const DenoiseStepCallback& on_step_end) {
    const auto model = shared_model();
    model->validate(request);
    Call call(*this, *model);
    GenerateResult r;
    run_decoder_stage(model->impl(), request, prior, call.context(progress, on_step_end), r);
    r.prior_tokens = prior;
    return r;
}

Pipeline::Pipeline(std::shared_ptr<const Model> model) : session_(std::move(model)) {}

std::unique_ptr<Pipeline> Pipeline::load(const std::string& model_dir, const LoadOptions& options) {
    return std::make_unique<Pipeline>(Model::load(model_dir, options));
}

}  // namespace glmimage
