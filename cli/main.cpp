// glmimage command-line tool. For now: `glmimage info MODEL_DIR` loads a checkpoint
// strictly and prints every component; generation arrives with the pipeline.
#include <cstring>
#include <iostream>
#include <string>

#include "glmimage/glmimage.h"

namespace {

void usage(std::ostream& os) {
    os << "usage: glmimage info MODEL_DIR [--dtype auto|float32|bfloat16|float16] [--device cpu|cuda]"
          " [--threads N]\n"
          "\n"
          "  info    load a GLM-Image checkpoint (diffusers layout: model_index.json and its folders),\n"
          "          check every weight against the model definition and print a summary\n"
          "\n"
          "glmimage " << glmimage::version() << "\n";
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
        usage(argc < 2 ? std::cerr : std::cout);
        return argc < 2 ? 2 : 0;
    }
    const std::string cmd = argv[1];
    if (cmd != "info") {
        std::cerr << "glmimage: unknown command '" << cmd << "' (try --help)\n";
        return 2;
    }
    std::string model_dir;
    glmimage::LoadOptions opts;
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](const char* flag) -> std::string {
            if (i + 1 >= argc) throw glmimage::InputError(std::string(flag) + " needs a value");
            return argv[++i];
        };
        try {
            if (a == "--dtype") opts.dtype = value("--dtype");
            else if (a == "--device") opts.device = value("--device");
            else if (a == "--threads") opts.threads = std::stoi(value("--threads"));
            else if (!a.empty() && a[0] == '-') throw glmimage::InputError("unknown option '" + a + "'");
            else if (model_dir.empty()) model_dir = a;
            else throw glmimage::InputError("more than one model directory given");
        } catch (const std::exception& e) {
            std::cerr << "glmimage: " << e.what() << "\n";
            return 2;
        }
    }
    if (model_dir.empty()) {
        std::cerr << "glmimage: info needs MODEL_DIR\n";
        return 2;
    }
    try {
        auto pipe = glmimage::Pipeline::load(model_dir, opts);
        std::cout << pipe->summary();
    } catch (const std::exception& e) {
        std::cerr << "glmimage: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
