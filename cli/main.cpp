// glmimage command-line tool: `glmimage [generate] PROMPT ...` makes PNGs from prompts (and
// optional condition images); `glmimage info MODEL_DIR` checks a checkpoint and prints it.
//
// Exit status: 0 ok, 1 runtime error (files, model, generation), 2 usage error (anything
// wrong on the command line itself), 130 interrupted. Errors are one line on stderr.
#include <cctype>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "glmimage/glmimage.h"
#include "png_writer.h"
#include "prompt_file.h"
#include "progress_bar.h"

namespace {

namespace fs = std::filesystem;
using glmimage::cli::ProgressBar;

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInterrupted = 130;  // 128 + SIGINT, as shells report it
constexpr const char* kDefaultModel = "models/tiny";

// Something wrong with the command line itself (exit 2).
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

volatile std::sig_atomic_t g_interrupted = 0;

// First Ctrl-C asks the pipeline to stop at its next step (see the progress callback); the
// handler then restores the default, so a second Ctrl-C ends the process at once.
void on_sigint(int) {
    g_interrupted = 1;
    std::signal(SIGINT, SIG_DFL);
}

void print_help(std::ostream& os) {
    os << "glmimage " << glmimage::version() << ": GLM-Image text-to-image and image-to-image, in C++ on LibTorch.\n"
R"(GLM-Image (zai-org/GLM-Image) is an open image model built for exact text in images: an
autoregressive model writes a grid of visual tokens, a diffusion decoder paints them.

usage:
  glmimage [generate] PROMPT [options]               make an image from a prompt
  glmimage [generate] --prompt-file FILE [options]   one image (or more) per line of FILE
  glmimage info MODEL_DIR [--dtype D] [--device D] [--residency R] [--threads N]
                                                     check a checkpoint and print its components
  glmimage --help | --version

generate options [default]:
  PROMPT                  what to draw; quote it. Text in "double quotes" inside the prompt is
                          the text the image should spell out
  --prompt-file FILE      read prompts from FILE, one per line, blank lines skipped ('-': stdin)
  --image PATH            condition image for image-to-image, PNG or JPEG; repeat for several.
                          GLM-Image wants the short side >= 512 and the long one <= 2048
  -o, --output FILE       PNG to write [out.png]; several images are numbered FILE-0.png,
                          FILE-1.png, ... Written atomically; prompt and settings are stored
                          in the PNG's text chunks
  --model DIR             checkpoint directory in the diffusers layout (model_index.json and one
                          folder per component) [models/tiny if it exists here, else required]
  --height N              image height in pixels, a multiple of 32 [1024]
  --width N               image width in pixels, a multiple of 32 [1024]
  --steps N               denoising steps, >= 1 [50]
  --guidance X            classifier-free guidance scale; <= 1 turns it off [1.5]
  --seed N                random seed; -1 picks one at random and prints it [0]
  --temperature X         token sampling temperature, > 0
  --top-p X               token nucleus sampling, in (0, 1]; 1 turns it off
  --top-k N               token top-k sampling; 0 turns it off
                          [these three: the checkpoint's own, from its
                          vision_language_encoder/generation_config.json; where that file is
                          silent, transformers' defaults: temperature 1, top-p 1, top-k 50.
                          'glmimage info MODEL_DIR' prints them]
  --greedy                pick the most likely token instead of sampling (flat images) [off]
  --images-per-prompt N   images per prompt; they share one token grid [1]
  --first-block-cache T   approximate: where a step's first DiT block changes the image by at
                          most T (relative) from the last full step, skip the other blocks and
                          reuse their last change; 0.05-0.2 usual; prints how many passes it
                          served [0: off, the reference's images]
  --dtype D               auto, float32, bfloat16 or float16 [auto: as stored in the checkpoint]
  --device D              cpu, cuda or cuda:N [cpu]
  --residency R           resident (every component on its device from the start) or staged
                          (each stage's weights placed on the device only while it runs:
                          less memory, identical images) [resident]
  --quantize Q            none, int8 or fp8, for the AR decoder and DiT linears, quantized at
                          load (close, not identical): int8 weight-only, per channel (half the
                          weight bytes of bf16); fp8 e4m3 weights and per-row inputs through the
                          scaled matmul (Hopper GPUs; CPUs where LibTorch has it) [none]
  --ar-decode M           auto, eager, static or graph: how AR decode steps run (same tokens).
                          graph: one fixed-shape step captured as a CUDA graph, replayed per
                          token [auto: graph on a CUDA device when this build has CUDA, else eager]
  --cfg-passes M          auto, joint or apart: guidance's two DiT passes as one forward or two
                          (apart is diffusers' way; joint reads the weights once a step) [auto:
                          joint on a CUDA device and where the CPU runs the DiT's products as
                          float32 GEMMs, apart where oneDNN's bf16 kernels run]
  --no-cpu-block-cache    take fresh pages for every large CPU block instead of reusing the
                          generation's freed ones (same images; slower, less memory held while
                          it runs) [reuse, up to 4 GiB, given back when the generation ends]
  --threads N             CPU threads for the process; 0 keeps LibTorch's default [0]
  --progress              draw progress bars even when stderr is not a terminal [only on a terminal]
  -q, --quiet             print nothing but errors (no file names, no seed, no progress)
  -h, --help              show this help
  --version               show the version

The files written are printed on stdout, one per line; progress and errors go to stderr.

examples:
  glmimage "A poster that says \"Hello\", red on white" -o hello.png
  glmimage --model GLM-Image --device cuda --dtype bfloat16 --seed -1 \
           --image photo.png "Turn it into a watercolor" -o watercolor.png

exit status: 0 done, 1 runtime error, 2 usage error, 130 interrupted
)";
}

void print_short_usage(std::ostream& os) {
    os << "usage: glmimage [generate] PROMPT [-o out.png] [options]\n"
          "       glmimage info MODEL_DIR\n"
          "try 'glmimage --help' for every option\n";
}

// The error text on one line: LibTorch appends backtraces after the first line, and
// WeightError lists issues on indented lines; those become "; "-separated.
std::string one_line(const std::string& what) {
    std::string out;
    size_t pos = 0;
    while (pos <= what.size()) {
        size_t end = what.find('\n', pos);
        if (end == std::string::npos) end = what.size();
        std::string line = what.substr(pos, end - pos);
        pos = end + 1;
        if (line.rfind("Exception raised from", 0) == 0) break;
        const size_t a = line.find_first_not_of(" \t\r");
        if (a == std::string::npos) continue;
        line = line.substr(a, line.find_last_not_of(" \t\r") + 1 - a);
        if (!out.empty()) out += (out.back() == ':' ? " " : "; ");
        out += line;
    }
    constexpr size_t kMax = 1000;
    if (out.size() > kMax) out = out.substr(0, kMax) + " ...";
    return out.empty() ? "unknown error" : out;
}

int fail(int code, const std::string& what) {
    std::cerr << "glmimage: " << one_line(what) << "\n";
    return code;
}

// ---- argument parsing --------------------------------------------------------------------

// Walks argv; understands "--opt value", "--opt=value" and "--" (only positionals after).
class Args {
  public:
    Args(int argc, char** argv, int first) : args_(argv + first, argv + argc) {}

    // Next token; false at the end. Sets `option` when it is an option (value split off).
    bool next(std::string& token, bool& option) {
        if (i_ >= args_.size()) return false;
        token = args_[i_++];
        inline_value_.reset();
        option = !positional_only_ && token.size() > 1 && token[0] == '-';
        if (option && token == "--") {
            positional_only_ = true;
            return next(token, option);
        }
        if (option && token.rfind("--", 0) == 0) {
            const size_t eq = token.find('=');
            if (eq != std::string::npos) {
                inline_value_ = token.substr(eq + 1);
                token.resize(eq);
            }
        }
        return true;
    }
    std::string value(const std::string& flag) {
        if (inline_value_) return *std::exchange(inline_value_, std::nullopt);
        if (i_ >= args_.size()) throw UsageError(flag + " needs a value");
        return args_[i_++];
    }
    // For flags without a value: "--quiet=yes" is a mistake, not a silent yes.
    void no_value(const std::string& flag) const {
        if (inline_value_) throw UsageError(flag + " takes no value");
    }

  private:
    std::vector<std::string> args_;
    size_t i_ = 0;
    bool positional_only_ = false;
    std::optional<std::string> inline_value_;
};

int64_t parse_int(const std::string& flag, const std::string& s, int64_t min, int64_t max) {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno == ERANGE)
        throw UsageError(flag + ": expected an integer, got '" + s + "'");
    if (v < min || v > max)
        throw UsageError(flag + " must be " + (max == INT64_MAX ? ">= " + std::to_string(min)
                                                                  : "in [" + std::to_string(min) + ", " + std::to_string(max) + "]") +
                         ", got " + s);
    return v;
}

double parse_double(const std::string& flag, const std::string& s) {
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v))
        throw UsageError(flag + ": expected a number, got '" + s + "'");
    return v;
}

struct GenerateArgs {
    std::vector<std::string> prompts;  // positional
    std::string prompt_file;
    std::vector<std::string> image_paths;
    std::string model;
    std::string output = "out.png";
    bool random_seed = false;
    bool quiet = false;
    bool force_progress = false;
    glmimage::GenerateRequest req;
    glmimage::LoadOptions load;
    int threads = 0;
};

bool parse_load_option(Args& a, const std::string& t, glmimage::LoadOptions& load, int& threads) {
    if (t == "--dtype") load.dtype = a.value(t);
    else if (t == "--device") load.device = a.value(t);
    else if (t == "--residency") load.residency = a.value(t);
    else if (t == "--quantize") load.quantize = a.value(t);
    else if (t == "--ar-decode") load.ar_decode = a.value(t);
    else if (t == "--cfg-passes") load.cfg_passes = a.value(t);
    else if (t == "--no-cpu-block-cache") load.cpu_block_cache = false;
    else if (t == "--threads") threads = static_cast<int>(parse_int(t, a.value(t), 0, 4096));
    else return false;
    return true;
}

// The library's own rules (LoadOptions::validate), as a usage error.
void check_load_options(const glmimage::LoadOptions& load) {
    try {
        load.validate();
    } catch (const glmimage::Error& e) {
        throw UsageError(e.what());
    }
}

GenerateArgs parse_generate(Args& a) {
    GenerateArgs g;
    auto& r = g.req;
    std::string t;
    bool option = false;
    while (a.next(t, option)) {
        if (!option) g.prompts.push_back(t);
        else if (t == "--prompt-file") g.prompt_file = a.value(t);
        else if (t == "--image") g.image_paths.push_back(a.value(t));
        else if (t == "-o" || t == "--output") g.output = a.value(t);
        else if (t == "--model") g.model = a.value(t);
        else if (t == "--height") r.height = parse_int(t, a.value(t), INT64_MIN, INT64_MAX);
        else if (t == "--width") r.width = parse_int(t, a.value(t), INT64_MIN, INT64_MAX);
        else if (t == "--steps") r.steps = parse_int(t, a.value(t), INT64_MIN, INT64_MAX);
        else if (t == "--guidance") r.guidance = parse_double(t, a.value(t));
        else if (t == "--seed") {
            const std::string v = a.value(t);
            g.random_seed = v == "-1";
            if (!g.random_seed) {
                errno = 0;
                char* end = nullptr;
                r.seed = std::strtoull(v.c_str(), &end, 10);
                if (v.empty() || v[0] == '-' || v[0] == '+' || *end != '\0' || errno == ERANGE)
                    throw UsageError("--seed: expected an integer >= 0, or -1 for a random seed, got '" + v + "'");
            }
        } else if (t == "--temperature") r.ar.temperature = parse_double(t, a.value(t));
        else if (t == "--top-p") r.ar.top_p = parse_double(t, a.value(t));
        else if (t == "--top-k") r.ar.top_k = parse_int(t, a.value(t), INT64_MIN, INT64_MAX);
        else if (t == "--greedy") {
            a.no_value(t);
            r.ar.do_sample = false;
        }
        else if (t == "--images-per-prompt") r.images_per_prompt = parse_int(t, a.value(t), INT64_MIN, INT64_MAX);
        else if (t == "--first-block-cache") r.first_block_cache = parse_double(t, a.value(t));
        else if (t == "--progress") {
            a.no_value(t);
            g.force_progress = true;
        } else if (t == "--quiet" || t == "-q") {
            a.no_value(t);
            g.quiet = true;
        }
        else if (!parse_load_option(a, t, g.load, g.threads)) throw UsageError("unknown option '" + t + "' (try --help)");
    }

    if (!g.prompt_file.empty() && !g.prompts.empty())
        throw UsageError("give a prompt or --prompt-file, not both");
    if (g.prompt_file.empty() && g.prompts.empty()) throw UsageError("no prompt given (try --help)");
    if (g.prompts.size() > 1)
        throw UsageError("got " + std::to_string(g.prompts.size()) + " prompts ('" + g.prompts[0] + "', '" +
                         g.prompts[1] + "', ...): quote the prompt, or use --prompt-file for several");
    std::string ext = fs::path(g.output).extension().string();
    for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (ext != ".png") throw UsageError("--output must name a .png file, got '" + g.output + "'");
    check_load_options(g.load);
    // The library's request rules (GenerateRequest::validate), before any loading; prompts from
    // a file are checked when read, so a placeholder stands in for them here.
    try {
        glmimage::GenerateRequest probe = r;
        probe.prompts = g.prompts.empty() ? std::vector<std::string>{"placeholder"} : g.prompts;
        probe.validate();
    } catch (const glmimage::Error& e) {
        throw UsageError(e.what());
    }
    return g;
}

// ---- generate ------------------------------------------------------------------------------

// out.png -> out-3.png, keeping the directory.
std::string numbered(const std::string& output, size_t index) {
    const fs::path p(output);
    return (p.parent_path() / (p.stem().string() + "-" + std::to_string(index) + p.extension().string())).string();
}

std::string resolve_model(const std::string& given) {
    if (given.empty()) {
        if (fs::is_directory(kDefaultModel)) return kDefaultModel;
        throw UsageError("no model given: pass --model DIR (a GLM-Image checkpoint directory)");
    }
    return given;  // what a checkpoint must hold is Model::load's to check
}

std::string settings_json(const GenerateArgs& g, const glmimage::ArSettings& sampling, const std::string& model,
                          size_t index) {
    const auto& r = g.req;
    nlohmann::json j;
    j["model"] = model;
    j["width"] = r.width;
    j["height"] = r.height;
    j["steps"] = r.steps;
    j["guidance"] = r.guidance;
    j["seed"] = r.seed;
    if (sampling.do_sample)
        j["sampling"] = {{"temperature", *sampling.temperature}, {"top_p", *sampling.top_p}, {"top_k", *sampling.top_k}};
    else
        j["sampling"] = "greedy";
    j["images_per_prompt"] = r.images_per_prompt;
    j["first_block_cache"] = r.first_block_cache;
    j["index"] = index;  // which of the prompt's images this is
    j["images"] = g.image_paths;
    j["dtype"] = g.load.dtype;
    j["device"] = g.load.device;
    j["quantize"] = g.load.quantize;
    j["ar_decode"] = g.load.ar_decode;
    j["cfg_passes"] = g.load.cfg_passes;
    j["version"] = glmimage::version();
    // Invalid UTF-8 in a path must not make writing a finished image fail.
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int run_generate(GenerateArgs& g) {
    const bool show_progress = !g.quiet && (g.force_progress || ProgressBar::stderr_is_terminal());
    std::vector<std::string> prompts;
    std::string model;
    std::vector<glmimage::Image> images;
    std::vector<std::string> outputs;
    try {
        model = resolve_model(g.model);
    } catch (const UsageError& e) {
        return fail(kExitUsage, e.what());
    } catch (const std::exception& e) {
        return fail(kExitRuntime, e.what());
    }
    try {
        prompts = g.prompt_file.empty() ? g.prompts : glmimage::cli::read_prompt_file(g.prompt_file);
        const size_t per_prompt = static_cast<size_t>(g.req.images_per_prompt);
        const size_t total = prompts.size() * per_prompt;
        for (size_t i = 0; i < total; ++i) outputs.push_back(total == 1 ? g.output : numbered(g.output, i));
        // Fail before the (long) generation, not after it.
        for (const auto& o : outputs) glmimage::cli::check_writable(o);
        for (const auto& path : g.image_paths) images.push_back(glmimage::cli::read_image(path));
    } catch (const std::exception& e) {
        return fail(kExitRuntime, e.what());
    }

    if (g.random_seed) {
        std::random_device rd;
        // 53 bits: exact in JSON readers and Python floats, still plenty of seeds.
        g.req.seed = ((static_cast<uint64_t>(rd()) << 32) | rd()) & ((1ull << 53) - 1);
        if (!g.quiet) std::cerr << "glmimage: seed " << g.req.seed << "\n";
    }

    std::signal(SIGINT, on_sigint);
    // Past a file-size limit (ulimit -f) a write must fail with EFBIG, so the PNG writer reports
    // it and removes its temporary file, instead of the process dying by SIGXFSZ.
    std::signal(SIGXFSZ, SIG_IGN);
    ProgressBar bar(stderr, show_progress);
    try {
        glmimage::set_num_threads(g.threads);
        if (show_progress) std::cerr << "loading " << model << "\n";
        auto pipe = glmimage::Pipeline::load(model, g.load);
        const glmimage::ArSettings sampling = g.req.ar.with_defaults(pipe->model().sampling_defaults());
        size_t written = 0;
        for (size_t i = 0; i < prompts.size(); ++i) {
            if (g_interrupted) throw glmimage::CancelledError("interrupted");
            glmimage::GenerateRequest req = g.req;
            req.prompts = {prompts[i]};
            if (!images.empty()) req.images = {images};
            if (prompts.size() > 1)
                bar.set_prefix(std::string("[") + std::to_string(i + 1) + "/" + std::to_string(prompts.size()) + "] ");
            auto on_progress = [&](const glmimage::Progress& p) {
                if (g_interrupted) pipe->cancel();
                bar.update(p);
            };
            glmimage::GenerateResult res = pipe->generate(req, on_progress);
            bar.finish();
            if (!g.quiet && req.first_block_cache > 0)
                std::cerr << "glmimage: first-block cache served " << res.dit_passes_cached << " of " << res.dit_passes
                          << " DiT passes\n";
            if (res.images.size() != static_cast<size_t>(req.images_per_prompt))
                throw glmimage::Error("expected " + std::to_string(req.images_per_prompt) + " images, got " +
                                      std::to_string(res.images.size()));
            for (size_t k = 0; k < res.images.size(); ++k) {
                const glmimage::cli::PngText text = {
                    {"prompt", prompts[i]},
                    {"glmimage", settings_json(g, sampling, model, k)},
                    {"Software", std::string("glmimage ") + glmimage::version()},
                };
                const std::string& out = outputs[written++];
                glmimage::cli::write_file_atomic(out, glmimage::cli::encode_png(res.images[k], text));
                if (!g.quiet) std::cout << out << std::endl;
            }
        }
    } catch (const glmimage::CancelledError&) {
        bar.finish();
        return fail(kExitInterrupted, "interrupted");
    } catch (const std::exception& e) {
        bar.finish();
        return fail(kExitRuntime, e.what());
    }
    return 0;
}

// ---- info ----------------------------------------------------------------------------------

int run_info(Args& a) {
    std::string model_dir;
    glmimage::LoadOptions load;
    int threads = 0;
    try {
        std::string t;
        bool option = false;
        while (a.next(t, option)) {
            if (!option) {
                if (!model_dir.empty()) throw UsageError("info takes one MODEL_DIR");
                model_dir = t;
            } else if (!parse_load_option(a, t, load, threads)) {
                throw UsageError("unknown option '" + t + "' for info (try --help)");
            }
        }
        if (model_dir.empty()) throw UsageError("info needs MODEL_DIR");
        check_load_options(load);
    } catch (const std::exception& e) {
        return fail(kExitUsage, e.what());
    }
    try {
        resolve_model(model_dir);
        glmimage::set_num_threads(threads);
        auto pipe = glmimage::Pipeline::load(model_dir, load);
        std::cout << pipe->summary();
    } catch (const std::exception& e) {
        return fail(kExitRuntime, e.what());
    }
    return 0;
}

bool is_help(const std::string& s) { return s == "-h" || s == "--help" || s == "help"; }

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        print_short_usage(std::cerr);
        return kExitUsage;
    }
    // Help and version win wherever they appear, like most tools (before "--" only).
    for (int i = 1; i < argc; ++i) {
        const std::string s = argv[i];
        if (s == "--") break;
        if (is_help(s) && (i == 1 || s != "help")) {
            print_help(std::cout);
            return 0;
        }
        if (s == "--version" || (i == 1 && s == "version")) {
            std::cout << "glmimage " << glmimage::version() << "\n";
            return 0;
        }
    }
    const std::string cmd = argv[1];
    try {
        if (cmd == "info") {
            Args a(argc, argv, 2);
            return run_info(a);
        }
        // Anything else is a generate command line, with or without the word "generate".
        Args a(argc, argv, cmd == "generate" ? 2 : 1);
        GenerateArgs g;
        try {
            g = parse_generate(a);
        } catch (const std::exception& e) {
            std::cerr << "glmimage: " << one_line(e.what()) << "\n";
            return kExitUsage;
        }
        return run_generate(g);
    } catch (const std::exception& e) {
        // Nothing should get here; still one line and no abort.
        return fail(kExitRuntime, e.what());
    } catch (...) {
        return fail(kExitRuntime, "unexpected error");
    }
}
