// Pipeline loading: each component's config, module tree and weights, with the stage
// named in every error.
#include <ATen/Parallel.h>

#include <filesystem>

#include "core/check.h"
#include "io/tensor_loader.h"
#include "io/weight_binder.h"
#include "pipeline/pipeline_impl.h"

namespace glmimage {

namespace fs = std::filesystem;
using detail::str_cat;

std::optional<at::ScalarType> parse_dtype_option(const std::string& dtype) {
    if (dtype == "auto") return std::nullopt;
    if (dtype == "float32") return at::kFloat;
    if (dtype == "bfloat16") return at::kBFloat16;
    if (dtype == "float16") return at::kHalf;
    throw InputError(str_cat("unknown dtype '", dtype, "'"));
}

at::Device parse_device_option(const std::string& device) {
    at::Device d(at::kCPU);
    try {
        d = at::Device(device);
    } catch (const std::exception&) {
        throw InputError(str_cat("unknown device '", device, "'"));
    }
    if (d.is_cuda() && !at::hasCUDA())
        throw UnsupportedError(str_cat("device '", device, "' requested but this LibTorch build has no CUDA"));
    return d;
}

namespace {

// Builds the module on the meta device (no memory), then binds the folder's weights.
template <typename Module, typename Config>
std::shared_ptr<Module> load_component(Pipeline::Impl& p, const std::string& folder, const Config& config,
                                       const std::map<std::string, std::string>& ignored) {
    const std::string dir = (fs::path(p.model_dir) / folder).string();
    auto weights = io::WeightIndex::open_dir(dir);
    auto requested = parse_dtype_option(p.options.dtype);
    auto file_dtype = io::dominant_float_dtype(weights);
    const at::ScalarType dtype = requested ? *requested : file_dtype.value_or(at::kFloat);
    auto module = std::make_shared<Module>(config, at::TensorOptions().device(at::kMeta).dtype(dtype));
    io::BindOptions bind;
    bind.dtype = dtype;
    bind.device = p.device;
    bind.ignored_keys = ignored;
    auto report = io::bind_weights(folder, *module, weights, bind);

    ComponentInfo info;
    info.folder = folder;
    info.class_name = p.index.components.at(folder).second;
    info.summary = config.to_string();
    info.dtype = io::scalar_type_name(dtype);
    info.num_tensors = report.bound;
    info.num_parameters = report.num_parameters;
    info.zero_copy = report.zero_copy;
    p.infos.push_back(info);
    return module;
}

template <typename F>
auto stage(const std::string& what, F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const WeightError&) {
        throw;  // already names its component
    } catch (const InputError& e) {
        throw InputError(str_cat(what, ": ", e.what()));
    } catch (const UnsupportedError& e) {
        throw UnsupportedError(str_cat(what, ": ", e.what()));
    } catch (const ConfigError& e) {
        throw ConfigError(str_cat(what, ": ", e.what()));
    } catch (const FormatError& e) {
        throw FormatError(str_cat(what, ": ", e.what()));
    }
}

std::string config_path(const std::string& dir, const char* folder, const char* file) {
    return (fs::path(dir) / folder / file).string();
}

}  // namespace

Pipeline::Pipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pipeline::~Pipeline() = default;

std::unique_ptr<Pipeline> Pipeline::load(const std::string& model_dir, const LoadOptions& options) {
    options.validate();
    auto p = std::make_unique<Impl>();
    p->model_dir = model_dir;
    p->options = options;
    p->device = parse_device_option(options.device);
    if (options.threads > 0) at::set_num_threads(options.threads);
    p->index = ModelIndex::load(model_dir);
    const std::string& dir = model_dir;

    p->scheduler = stage("loading scheduler", [&] {
        return SchedulerConfig::from_file(config_path(dir, "scheduler", "scheduler_config.json"));
    });
    p->sampler = std::make_unique<FlowMatchEulerScheduler>(p->scheduler);
    p->glyph_tokenizer = stage("loading tokenizer", [&] {
        return std::make_unique<ByT5Tokenizer>(ByT5Tokenizer::from_dir((fs::path(dir) / "tokenizer").string()));
    });
    p->processor = stage("loading processor", [&] {
        return std::make_unique<GlmProcessor>(GlmProcessor::from_dir((fs::path(dir) / "processor").string()));
    });
    p->image_config = stage("loading processor", [&] {
        return ImageProcessorConfig::from_file(config_path(dir, "processor", "preprocessor_config.json"));
    });
    p->ar = stage("loading vision_language_encoder", [&] {
        auto c = GlmArConfig::from_file(config_path(dir, "vision_language_encoder", "config.json"));
        return load_component<GlmImageModel>(*p, "vision_language_encoder", c, {});
    });
    p->ar_generator = std::make_unique<ArGenerator>(*p->ar);
    p->text_encoder = stage("loading text_encoder", [&] {
        auto c = T5Config::from_file(config_path(dir, "text_encoder", "config.json"));
        // transformers ties encoder.embed_tokens to shared; some writers store both copies.
        return load_component<T5Encoder>(*p, "text_encoder", c,
                                          {{"encoder.embed_tokens.weight", "tied to shared.weight"}});
    });
    p->transformer = stage("loading transformer", [&] {
        auto c = DiTConfig::from_file(config_path(dir, "transformer", "config.json"));
        return load_component<GlmImageTransformer>(*p, "transformer", c, {});
    });
    p->vae = stage("loading vae", [&] {
        auto c = VAEConfig::from_file(config_path(dir, "vae", "config.json"));
        return load_component<AutoencoderKL>(*p, "vae", c, {});
    });
    return std::unique_ptr<Pipeline>(new Pipeline(std::move(p)));
}

const std::vector<ComponentInfo>& Pipeline::components() const { return impl_->infos; }

std::string Pipeline::summary() const {
    std::string s = str_cat("GLM-Image checkpoint ", impl_->model_dir, " (", impl_->options.to_string(), ")\n");
    long long total = 0;
    for (const auto& c : impl_->infos) {
        s += str_cat("  ", c.folder, " [", c.class_name, "]: ", c.num_tensors, " tensors, ", c.num_parameters,
                     " parameters, ", c.dtype, ", ", c.zero_copy, " zero-copy\n    ");
        for (char ch : c.summary) s += ch == '\n' ? std::string("\n    ") : std::string(1, ch);
        s += "\n";
        total += c.num_parameters;
    }
    s += str_cat("  ", impl_->scheduler.to_string(), "\n  total parameters: ", total, "\n");
    return s;
}

const char* version() { return GLMIMAGE_VERSION; }

}  // namespace glmimage
