// Torch-free probe of the CLI's condition-image reader, for tests/python/test_condition_images.py:
//   read_image_probe IN OUT
// reads IN with glmimage::cli::read_image and writes the RGB8 result to OUT as a binary PPM (P6);
// on an InputError prints "InputError: <message>" to stderr and exits 1; any other exception exits 2.
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>

#include "../../cli/png_writer.h"

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: read_image_probe IN OUT\n";
        return 2;
    }
    try {
        const glmimage::Image img = glmimage::cli::read_image(argv[1]);
        std::ofstream out(argv[2], std::ios::binary);
        out << "P6\n" << img.width << " " << img.height << "\n255\n";
        out.write(reinterpret_cast<const char*>(img.rgb.data()), static_cast<std::streamsize>(img.rgb.size()));
        if (!out) {
            std::cerr << "cannot write " << argv[2] << "\n";
            return 2;
        }
        return 0;
    } catch (const glmimage::InputError& e) {
        std::cerr << "InputError: " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "other error: " << e.what() << "\n";
        return 2;
    }
}
