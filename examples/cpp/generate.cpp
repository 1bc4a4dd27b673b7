// A standalone consumer of an installed glmimage: loads a checkpoint, generates one small
// image and writes it as a binary PPM (P6), which needs no image library.
//
//   glmimage_generate MODEL_DIR OUTPUT.ppm ["PROMPT"]
//
// Uses only the public header; it is built against the installed package
// (find_package(glmimage)) by tests/install/test_install.sh.
#include <glmimage/glmimage.h>

#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

namespace {

// P6: "P6\n<width> <height>\n255\n", then the RGB bytes row by row, top to bottom, which is
// exactly glmimage::Image's layout.
void write_ppm(const glmimage::Image& image, const std::string& path) {
    std::ofstream out(path, std::ios::binary);
    if (!out) throw std::runtime_error("cannot open '" + path + "' for writing");
    out << "P6\n" << image.width << ' ' << image.height << "\n255\n";
    out.write(reinterpret_cast<const char*>(image.rgb.data()), static_cast<std::streamsize>(image.rgb.size()));
    // Check after closing: a full disk shows up only when the buffer is flushed.
    out.close();
    if (!out) throw std::runtime_error("cannot write '" + path + "'");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3 || argc > 4) {
        std::cerr << "usage: " << argv[0] << " MODEL_DIR OUTPUT.ppm [PROMPT]\n";
        return 2;
    }
    const std::string model_dir = argv[1];
    const std::string output = argv[2];
    const std::string prompt = argc == 4 ? argv[3] : "A small sign that says \"Hello\"";

    try {
        std::cout << "glmimage " << glmimage::version() << "\n";
        // The loaded weights (shareable between threads) and one caller's session over them.
        std::shared_ptr<const glmimage::Model> model = glmimage::Model::load(model_dir);
        glmimage::Session session(model);

        // Small and quick on a CPU: 64x64 is the smallest size with a 2x2 AR grid.
        glmimage::GenerateRequest request;
        request.prompts = {prompt};
        request.height = 64;
        request.width = 64;
        request.steps = 2;
        request.seed = 42;
        glmimage::GenerateResult result = session.generate(request);

        if (result.images.size() != 1) {
            std::cerr << "error: expected 1 image, got " << result.images.size() << "\n";
            return 1;
        }
        const glmimage::Image& image = result.images[0];
        image.validate("generated image");
        std::cout << "image: " << image.width << "x" << image.height << "\n";
        for (const glmimage::StageTiming& t : result.timings) {
            std::printf("  %-10s %.3f s\n", t.stage.c_str(), t.seconds);
        }
        write_ppm(image, output);
        std::cout << "wrote " << output << "\n";
    } catch (const glmimage::Error& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
