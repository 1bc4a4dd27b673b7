// Image files for the glmimage tool: PNG output with text metadata, written atomically, and
// PNG/JPEG input for image-to-image.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "glmimage/glmimage.h"

namespace glmimage::cli {

// One PNG text entry. Keywords are 1-79 printable Latin-1 characters (PNG spec 11.3.4);
// values are UTF-8 (written as tEXt when plain ASCII, as uncompressed iTXt otherwise,
// because tEXt is Latin-1 only and prompts are often Chinese).
using PngText = std::vector<std::pair<std::string, std::string>>;

// Encodes an RGB8 image as PNG bytes with the text entries inserted right after IHDR.
// Throws InputError for a malformed image or keyword, Error if encoding fails.
std::vector<uint8_t> encode_png(const Image& image, const PngText& text);

// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed to
// disk, then renamed over `path`. On any failure the temporary file is removed, an existing
// file at `path` is left as it was, and Error is thrown.
void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes);

// Throws Error unless a file could be created at `path` later: its directory exists and is
// writable and `path` is not a directory. Lets the tool fail before a long generation.
void check_writable(const std::string& path);

// Reads a PNG or JPEG file as RGB8, the same bytes as PIL's Image.open(path).convert("RGB") (the
// reference's reader): grey, palette, tRNS and alpha converted (alpha dropped, not composited),
// 16-bit reduced as PIL does (high byte; 16-bit grey clipped at 255), CMYK JPEG converted as PIL
// does, APNG's default image, EXIF orientation not applied. Throws InputError naming the file when
// it is missing, unreadable, not a regular file, empty, truncated, not a PNG or JPEG (GIF, BMP,
// WebP, TIFF are refused), or over 16384 pixels a side or 64 Mpixels (checked before decoding).
Image read_image(const std::string& path);

}  // namespace glmimage::cli
