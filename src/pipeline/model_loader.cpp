// Model::load: each component's config, module tree, weights and placement, with the stage
// named in every error.
#include <type_traits>
#include <utility>

#include "core/check.h"
#include "core/paths.h"
#include "io/json_config.h"
#include "io/tensor_loader.h"
#include "io/weight_binder.h"
#include "kernels/cuda_graph.h"
#include "pipeline/model_impl.h"

namespace glmimage {

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

// Builds the module on the meta device (no memory), then binds the folder's weights where its
// placement says: on its device in its dtype (resident), or as views of the file (staged).
// Quantizes the Linear layers whose names start with one of `prefixes` ("int8" or "fp8", from the
// bound weights, on their device). Returns how many took it.
size_t quantize_linears(ParamModule& root, const std::vector<std::string>& prefixes, const std::string& kind,
                        at::ScalarType compute) {
    size_t n = 0;
    for (const auto& item : root.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
        auto* lin = dynamic_cast<Linear*>(item.value().get());
        if (!lin) continue;
        bool wanted = false;
        for (const auto& p : prefixes) wanted = wanted || item.key().rfind(p, 0) == 0;
        if (!wanted) continue;
        if (kind == "int8") {
            lin->quantize_int8(compute);
            ++n;
        } else if (lin->quantize_fp8(compute)) {
            ++n;
        }
    }
    return n;
}

template <typename M, typename = void>
struct has_fuse_projections : std::false_type {};
template <typename M>
struct has_fuse_projections<M, std::void_t<decltype(std::declval<M&>().fuse_projections())>> : std::true_type {};

template <typename Module, typename Config>
std::shared_ptr<Module> load_component(Model::Impl& m, const std::string& folder, const Config& config,
                                       const std::map<std::string, std::string>& ignored,
                                       const std::vector<std::string>& quantize_prefixes = {},
                                       std::vector<ResidencyPart> parts = {}) {
    const std::string dir = detail::join_path(m.model_dir, folder);
    const ComponentPlacement place = m.options.placement(folder);
    const at::Device device = parse_device_option(place.device);
    const bool staged = place.residency == "staged";
    auto weights = io::WeightIndex::open_dir(dir);
    auto requested = parse_dtype_option(place.dtype);
    auto file_dtype = io::dominant_float_dtype(weights);
    const at::ScalarType dtype = requested ? *requested : file_dtype.value_or(at::kFloat);
    auto module = std::make_shared<Module>(config, at::TensorOptions().device(at::kMeta).dtype(dtype));
    io::BindOptions bind;
    bind.dtype = dtype;
    bind.device = device;
    bind.ignored_keys = ignored;
    bind.views_only = staged;
    auto report = io::bind_weights(folder, *module, weights, bind);
    const std::string& kind = m.options.quantize;
    if (kind == "fp8" && !quantize_prefixes.empty())
        if (auto why = Linear::fp8_unsupported_reason(device); !why.empty())
            throw UnsupportedError(str_cat("quantize 'fp8': ", why));
    const size_t quantized = kind != "none" ? quantize_linears(*module, quantize_prefixes, kind, dtype) : 0;
    // q/k/v as one matmul where the weights are copies already (on a device, cast, or quantized):
    // fusing them then costs no memory. Zero-copy file views stay as they are (fusing would copy
    // them into anonymous memory), and staged weights are swapped per stage, so neither fuses.
    const bool copies = device.type() != at::kCPU || (file_dtype && dtype != *file_dtype) || quantized > 0;
    size_t fused = 0;
    if constexpr (has_fuse_projections<Module>::value)
        if (!staged && copies) fused = module->fuse_projections();

    ComponentInfo info;
    info.folder = folder;
    info.class_name = m.index.components.at(folder).second;
    info.summary = config.to_string();
    info.dtype = io::scalar_type_name(dtype);
    info.device = device.str();
    info.residency = staged ? "staged" : "resident";
    info.num_tensors = report.bound;
    info.num_parameters = report.num_parameters;
    info.zero_copy = staged ? 0 : report.zero_copy - std::min(report.zero_copy, quantized);
    info.quantized = quantized;
    info.fused = fused;
    m.infos.push_back(info);
    m.residency[folder] = std::make_unique<ComponentResidency>(folder, *module, std::move(weights), device, dtype, staged,
                                                               std::move(parts));
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
    return detail::join_path(detail::join_path(dir, folder), file);
}

// What transformers' generate() samples with when the request leaves a value unset: the
// checkpoint's generation_config.json where it states it, else transformers' own fallback
// (GenerationConfig: temperature 1.0, top_p 1.0, top_k 50). A missing file states nothing.
void read_sampling_defaults(Model::Impl& m) {
    const std::string path = config_path(m.model_dir, "vision_language_encoder", "generation_config.json");
    std::optional<io::JsonConfig> j;
    if (detail::path_exists(path)) j = io::JsonConfig::load(path);
    std::string source;
    auto from = [&](const char* key, auto fallback, auto read) {
        const bool stated = j && j->has(key);
        source += str_cat(source.empty() ? "" : ", ", key, ": ", stated ? "generation_config.json" : "transformers default");
        return stated ? read(key) : fallback;
    };
    ArSettings& d = m.sampling_defaults;
    d.temperature = from("temperature", 1.0, [&](const char* k) { return j->get_double(k); });
    d.top_p = from("top_p", 1.0, [&](const char* k) { return j->get_double(k); });
    d.top_k = from("top_k", int64_t{50}, [&](const char* k) { return j->get_int(k); });
    m.sampling_defaults_source = source;
    try {
        d.validate();
    } catch (const InputError& e) {
        throw ConfigError(str_cat(path, ": ", e.what()));
    }
}

}  // namespace

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

std::shared_ptr<const Model> Model::load(const std::string& model_dir, const LoadOptions& options) {
    options.validate();
    auto m = std::make_unique<Impl>();
    m->model_dir = model_dir;
    m->options = options;
    m->index = ModelIndex::load(model_dir);
    const std::string& dir = model_dir;

    m->scheduler_config = stage("loading scheduler", [&] {
        return SchedulerConfig::from_file(config_path(dir, "scheduler", "scheduler_config.json"));
    });
    m->scheduler = std::make_unique<FlowMatchEulerScheduler>(m->scheduler_config);
    m->glyph_tokenizer = stage("loading tokenizer", [&] {
        return std::make_unique<ByT5Tokenizer>(ByT5Tokenizer::from_dir(detail::join_path(dir, "tokenizer")));
    });
    m->preprocessor = stage("loading processor", [&] {
        return PreprocessorConfig::from_file(config_path(dir, "processor", "preprocessor_config.json"));
    });
    m->processor = stage("loading processor", [&] {
        return std::make_unique<PromptProcessor>(
            PromptProcessor::from_dir(detail::join_path(dir, "processor"), m->preprocessor));
    });
    m->ar = stage("loading vision_language_encoder", [&] {
        auto c = GlmArConfig::from_file(config_path(dir, "vision_language_encoder", "config.json"));
        // The text decoder and its lm_head: what the AR decode reads per token. The vision
        // encoder runs once per condition image and stays in the compute dtype.
        // Staged, its parts are placed apart: the vision encoder + VQ only for condition images
        // (2.4 GB of the real model's 20.2), the token table (1.4 GB) never: a decode step reads
        // one row of it, which goes to the device alone.
        std::vector<ResidencyPart> parts = {
            {kArTextPart, {"model.language_model.layers.", "model.language_model.norm.", "lm_head."}, false},
            {kArEmbeddingPart, {"model.language_model.embed_tokens."}, true},
            {kArVisionPart, {"model.visual.", "model.vqmodel."}, false}};
        return load_component<GlmArModel>(*m, "vision_language_encoder", c, {}, {"model.language_model.", "lm_head"},
                                          std::move(parts));
    });
    m->ar_generator = std::make_unique<ArGenerator>(*m->ar);
    if (options.ar_decode == "graph") {  // said at load, not at the first generation
        // The device the decode runs on: staged, the weights rest on the host until the AR stage
        // places them there (each generation captures its own graph after that).
        const at::Device runs_on = parse_device_option(m->options.placement("vision_language_encoder").device);
        const std::string why = kernels::cuda_graphs_unsupported_reason(runs_on);
        if (!why.empty()) throw UnsupportedError(str_cat("ar_decode 'graph': ", why));
    }
    stage("loading vision_language_encoder", [&] { read_sampling_defaults(*m); });
    m->text_encoder = stage("loading text_encoder", [&] {
        auto c = T5Config::from_file(config_path(dir, "text_encoder", "config.json"));
        // transformers ties encoder.embed_tokens to shared; some writers store both copies.
        return load_component<T5Encoder>(*m, "text_encoder", c,
                                          {{"encoder.embed_tokens.weight", "tied to shared.weight"}});
    });
    m->transformer = stage("loading transformer", [&] {
        auto c = DiTConfig::from_file(config_path(dir, "transformer", "config.json"));
        return load_component<GlmImageTransformer>(*m, "transformer", c, {}, {""});
    });
    m->vae = stage("loading vae", [&] {
        auto c = VAEConfig::from_file(config_path(dir, "vae", "config.json"));
        return load_component<AutoencoderKL>(*m, "vae", c, {});
    });
    return std::shared_ptr<const Model>(new Model(std::move(m)));
}

const std::vector<ComponentInfo>& Model::components() const { return impl_->infos; }
const ArSettings& Model::sampling_defaults() const { return impl_->sampling_defaults; }
std::string Model::sampling_defaults_source() const { return impl_->sampling_defaults_source; }

std::string Model::summary() const {
    std::string s = str_cat("GLM-Image checkpoint ", impl_->model_dir, " (", impl_->options.to_string(), ")\n");
    long long total = 0;
    for (const auto& c : impl_->infos) {
        s += str_cat("  ", c.folder, " [", c.class_name, "]: ", c.num_tensors, " tensors, ", c.num_parameters,
                     " parameters, ", c.dtype, " on ", c.device, " (", c.residency, "), ", c.zero_copy,
                     " zero-copy", c.quantized ? str_cat(", ", c.quantized, " linears ", impl_->options.quantize) : std::string(),
                     c.fused ? str_cat(", ", c.fused, " q/k/v fused") : std::string(),
                     "\n    ");
        for (char ch : c.summary) s += ch == '\n' ? std::string("\n    ") : std::string(1, ch);
        s += "\n";
        total += c.num_parameters;
    }
    const ArSettings& d = impl_->sampling_defaults;
    s += str_cat("  ", impl_->scheduler_config.to_string(), "\n  AR sampling defaults: temperature ", *d.temperature,
                 ", top_p ", *d.top_p, ", top_k ", *d.top_k, " (", impl_->sampling_defaults_source, ")\n",
                 "  total parameters: ", total, "\n");
    return s;
}

const char* version() { return GLMIMAGE_VERSION; }

}  // namespace glmimage
