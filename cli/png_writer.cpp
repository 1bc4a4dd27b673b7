// PNG output (stb_image_write plus our own text chunks), atomic file writes, and PNG/JPEG
// input (stb_image) for the glmimage tool.
#include "png_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

namespace {
// The allocations stb_image holds during one read (StbAllocations in read_image), so that a decoder
// check that throws out of stb (STBI_ASSERT below) leaks nothing: whatever the unwound decoder
// still held is freed with the guard. Outside a guard these are plain malloc/realloc/free.
thread_local std::vector<void*>* stb_live = nullptr;

void stb_forget(void* p) {
    if (!stb_live || !p) return;
    for (auto& q : *stb_live)
        if (q == p) {
            q = stb_live->back();
            stb_live->pop_back();
            return;
        }
}

void* stb_remember(void* p) {
    if (!stb_live || !p) return p;
    try {
        stb_live->push_back(p);
    } catch (...) {  // out of memory: give stb the failure it handles
        std::free(p);
        return nullptr;
    }
    return p;
}

void* stb_malloc(size_t size) { return stb_remember(std::malloc(size)); }

void* stb_realloc(void* p, size_t size) {
    size_t slot = 0;  // p's entry, found before realloc ends p's life
    while (stb_live && p && slot < stb_live->size() && (*stb_live)[slot] != p) ++slot;
    const bool remembered = stb_live && p && slot < stb_live->size();
    void* q = std::realloc(p, size);
    if (!q) return nullptr;  // p is still valid and still remembered
    if (!remembered) return stb_remember(q);
    (*stb_live)[slot] = q;
    return q;
}

void stb_free(void* p) {
    stb_forget(p);
    std::free(p);
}
}  // namespace

// The stb headers are third-party C; their warnings under -Wall -Wextra are not ours.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include "stb_image_write.h"
// PNG only. JPEG goes through libjpeg-turbo (decode_jpeg below): stb_image 2.27's JPEG decoder,
// fuzzed (tests/fuzz/fuzz_image), wrote past a Huffman table, read 265 bytes before another,
// shifted past 31 bits and aborted on internal asserts, all on small malformed files.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#define STBI_FAILURE_USERMSG
// 16384 per side keeps a decoded image under 1 GiB of RGB; condition images are ~1024.
#define STBI_MAX_DIMENSIONS 16384
#define STBI_MALLOC(size) stb_malloc(size)
#define STBI_REALLOC(p, size) stb_realloc(p, size)
#define STBI_FREE(p) stb_free(p)
// stb's internal asserts must never abort the tool on a malformed file: an InputError instead
// (the buffers stb held are freed by StbAllocations as the exception leaves read_image).
#define STBI_ASSERT(x)                                                                          \
    do {                                                                                        \
        if (!(x)) throw glmimage::InputError("malformed image data (decoder check '" #x "')"); \
    } while (0)
#include "stb_image.h"
#pragma GCC diagnostic pop

#include <csetjmp>
#include <cstdio>
#include <jpeglib.h>
#include <jerror.h>

namespace glmimage::cli {
namespace {

namespace fs = std::filesystem;

// Larger inputs are rejected before decoding: no sensible condition image is this big.
constexpr std::uintmax_t kMaxImageFileBytes = 256ull << 20;

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0) {
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t n = 0; n < 256; ++n) {
            uint32_t c = n;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }();
    crc = ~crc;
    for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
    out.push_back(static_cast<uint8_t>(v >> 24));
    out.push_back(static_cast<uint8_t>(v >> 16));
    out.push_back(static_cast<uint8_t>(v >> 8));
    out.push_back(static_cast<uint8_t>(v));
}

// length, type, data, CRC over type + data (PNG spec 5.3).
std::vector<uint8_t> make_chunk(const char type[4], const std::vector<uint8_t>& data) {
    std::vector<uint8_t> out;
    out.reserve(data.size() + 12);
    put_u32(out, static_cast<uint32_t>(data.size()));
    out.insert(out.end(), type, type + 4);
    out.insert(out.end(), data.begin(), data.end());
    put_u32(out, crc32(out.data() + 4, data.size() + 4));
    return out;
}

void check_keyword(const std::string& key) {
    bool ok = !key.empty() && key.size() <= 79 && key.front() != ' ' && key.back() != ' ';
    for (char c : key) ok = ok && c >= 0x20 && c <= 0x7E;
    if (!ok) throw InputError("png: bad text keyword '" + key + "': expected 1-79 printable ASCII characters");
}

// Replaces invalid UTF-8 (and NUL, the chunk separator) with U+FFFD, so metadata can never
// make writing an already generated image fail.
std::string sanitize_utf8(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    for (size_t i = 0; i < n;) {
        const unsigned char c = p[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
        bool ok = len > 0 && c != 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; ++k) ok = (p[i + k] & 0xC0) == 0x80;
        if (ok && len == 2) ok = c >= 0xC2;                                   // overlong
        if (ok && len == 3) ok = !(c == 0xE0 && p[i + 1] < 0xA0) && !(c == 0xED && p[i + 1] >= 0xA0);
        if (ok && len == 4) ok = !(c == 0xF0 && p[i + 1] < 0x90) && !(c == 0xF4 && p[i + 1] >= 0x90) && c <= 0xF4;
        if (ok) {
            out.append(s, i, len);
            i += len;
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return out;
}

std::vector<uint8_t> text_chunk(const std::string& key, const std::string& value) {
    check_keyword(key);
    const std::string v = sanitize_utf8(value);
    bool ascii = true;
    for (unsigned char c : v) ascii = ascii && c < 0x80;
    std::vector<uint8_t> data(key.begin(), key.end());
    data.push_back(0);
    if (ascii) {
        data.insert(data.end(), v.begin(), v.end());
        return make_chunk("tEXt", data);
    }
    // iTXt: keyword\0, compression flag 0, method 0, empty language tag\0, empty translated keyword\0, UTF-8 text.
    data.insert(data.end(), {0, 0, 0, 0});
    data.insert(data.end(), v.begin(), v.end());
    return make_chunk("iTXt", data);
}

void append_to_vector(void* context, void* data, int size) {
    auto* out = static_cast<std::vector<uint8_t>*>(context);
    const auto* bytes = static_cast<const uint8_t*>(data);
    out->insert(out->end(), bytes, bytes + size);
}

std::string errno_text(int err) { return std::strerror(err); }

constexpr int kMaxImageSide = 16384;
constexpr int64_t kMaxImagePixels = int64_t{64} << 20;

// Bounded before decoding: a small file can declare a huge canvas (a decompression bomb), and
// the decoder would allocate it. GLM-Image resizes condition images to at most 2048 a side.
void check_dimensions(const std::string& path, int64_t w, int64_t h) {
    if (w <= 0 || h <= 0 || w > kMaxImageSide || h > kMaxImageSide || w * h > kMaxImagePixels)
        throw InputError("image '" + path + "' is " + std::to_string(w) + "x" + std::to_string(h) + ": at most " +
                         std::to_string(kMaxImageSide) + " pixels a side and " + std::to_string(kMaxImagePixels >> 20) +
                         " Mpixels are accepted");
}

bool is_png(const std::vector<uint8_t>& b) {
    static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    return b.size() >= 8 && std::memcmp(b.data(), kSignature, 8) == 0;
}

// Every PNG chunk's declared length must fit in the file. stb_image sizes its IDAT buffer from the
// declared lengths before reading them, so a 349-byte file could make it allocate 2 GiB (found by
// tests/fuzz/fuzz_image); a valid PNG never declares more than it holds.
bool png_chunks_fit(const std::vector<uint8_t>& b) {
    if (!is_png(b)) return true;
    size_t i = 8;  // past the signature
    while (i + 8 <= b.size()) {
        const uint64_t len = (uint64_t{b[i]} << 24) | (uint64_t{b[i + 1]} << 16) | (uint64_t{b[i + 2]} << 8) | b[i + 3];
        if (len > b.size() - i - 8) return false;  // data (and at least no more than what is left)
        if (std::memcmp(&b[i + 4], "IEND", 4) == 0) return true;
        i += 12 + static_cast<size_t>(len);
    }
    return true;  // truncated before IEND: stb reports it
}

// IHDR, the first chunk of every PNG (PNG spec 11.2.2); read here so the dimensions are checked
// with our message before stb sees the file (stb refuses over 16384 a side as "not an image").
struct PngHeader {
    bool valid = false;
    int64_t width = 0, height = 0;
    int depth = 0, color_type = 0;
};

PngHeader png_header(const std::vector<uint8_t>& b) {
    PngHeader h;
    if (b.size() < 8 + 8 + 13 || std::memcmp(&b[8], "\0\0\0\x0dIHDR", 8) != 0) return h;
    auto u32 = [&](size_t i) {
        return (uint32_t{b[i]} << 24) | (uint32_t{b[i + 1]} << 16) | (uint32_t{b[i + 2]} << 8) | b[i + 3];
    };
    h.valid = true;
    h.width = u32(16);
    h.height = u32(20);
    h.depth = b[24];
    h.color_type = b[25];
    return h;
}

// Frees, when it goes, every stb_image allocation made while it lived and not freed by stb.
class StbAllocations {
public:
    StbAllocations() : previous_(stb_live) {
        live_.reserve(64);
        stb_live = &live_;
    }
    ~StbAllocations() {
        stb_live = previous_;
        for (void* p : live_) std::free(p);
    }
    StbAllocations(const StbAllocations&) = delete;
    StbAllocations& operator=(const StbAllocations&) = delete;

private:
    std::vector<void*> live_;
    std::vector<void*>* previous_;
};

// What a file that is neither PNG nor JPEG is, for the message.
std::string other_format(const std::vector<uint8_t>& b) {
    auto starts = [&](const char* magic, size_t n, size_t at = 0) {
        return b.size() >= at + n && std::memcmp(b.data() + at, magic, n) == 0;
    };
    if (starts("GIF87a", 6) || starts("GIF89a", 6)) return " (it is a GIF file)";
    if (starts("BM", 2)) return " (it looks like a BMP file)";
    if (starts("RIFF", 4) && starts("WEBP", 4, 8)) return " (it is a WebP file)";
    if (starts("II*\0", 4) || starts("MM\0*", 4)) return " (it is a TIFF file)";
    return "";
}

// libjpeg reports errors through a callback that must not return: it jumps back to decode_jpeg.
struct JpegErrors {
    jpeg_error_mgr mgr;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_fail(j_common_ptr c) {
    auto* e = reinterpret_cast<JpegErrors*>(c->err);
    (*c->err->format_message)(c, e->message);
    std::longjmp(e->jump, 1);
}

// Warnings (corrupt data libjpeg can recover from) are not printed and not errors, as in PIL, except
// the end of the data before the end of the image: libjpeg would pad the rest with grey, while PIL
// refuses a truncated JPEG ("image file is truncated"), so the reference never sees such an image.
void jpeg_message(j_common_ptr c, int level) {
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(c);
}

// Adobe CMYK (PIL assumes every 4-component JPEG stores inverted CMYK, as Photoshop writes it) to RGB
// the way PIL's convert("RGB") does: each channel (255 - C) * (255 - K) / 255, rounded.
void cmyk_row_to_rgb(const uint8_t* in, uint8_t* out, size_t width) {
    auto mul_div_255 = [](int a, int b) {
        const int t = a * b + 128;
        return ((t >> 8) + t) >> 8;
    };
    for (size_t x = 0; x < width; ++x, in += 4, out += 3) {
        const int not_k = in[3];  // stored inverted: 255 - K
        for (int ch = 0; ch < 3; ++ch) out[ch] = static_cast<uint8_t>(not_k - mul_div_255(255 - in[ch], not_k));
    }
}

// JPEG -> RGB8 with libjpeg-turbo, as PIL (the reference's reader) decodes it: the same integer
// DCT and fancy upsampling, so the same bytes. Only trivially destructible locals live here between
// setjmp and the calls that may jump; the buffers are the caller's (`img`, `cmyk_row`).
void decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& path, Image& img,
                 std::vector<uint8_t>& cmyk_row) {
    jpeg_decompress_struct cinfo{};
    JpegErrors errors{};
    cinfo.err = jpeg_std_error(&errors.mgr);
    errors.mgr.error_exit = jpeg_fail;
    errors.mgr.emit_message = jpeg_message;
    if (setjmp(errors.jump)) {
        jpeg_destroy_decompress(&cinfo);
        const bool truncated = errors.mgr.msg_code == JWRN_JPEG_EOF;
        throw InputError("cannot decode image '" + path + "': " + errors.message + (truncated ? " (truncated)" : ""));
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
    jpeg_read_header(&cinfo, TRUE);
    const int64_t w = cinfo.image_width, h = cinfo.image_height;
    if (w <= 0 || h <= 0 || w > kMaxImageSide || h > kMaxImageSide || w * h > kMaxImagePixels) {
        jpeg_destroy_decompress(&cinfo);
        check_dimensions(path, w, h);
    }
    // Grey and YCbCr convert to RGB in libjpeg; CMYK and YCCK come out as CMYK, converted below.
    const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    img.width = cinfo.output_width;
    img.height = cinfo.output_height;
    const size_t width = cinfo.output_width;
    img.rgb.resize(width * static_cast<size_t>(img.height) * 3);
    if (cmyk) cmyk_row.resize(width * 4);
    while (cinfo.output_scanline < cinfo.output_height) {
        uint8_t* out = img.rgb.data() + static_cast<size_t>(cinfo.output_scanline) * width * 3;
        JSAMPROW row = cmyk ? cmyk_row.data() : out;
        jpeg_read_scanlines(&cinfo, &row, 1);
        if (cmyk) cmyk_row_to_rgb(cmyk_row.data(), out, width);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
}

// The whole file, refusing what is not a regular file (a FIFO would block the read, a device never
// end) before opening it, and again after (O_NONBLOCK + fstat: the path may change in between).
std::vector<uint8_t> read_image_file(const std::string& path) {
    auto not_regular = [&](mode_t mode) {
        const char* what = S_ISFIFO(mode) ? "a FIFO" : S_ISSOCK(mode) ? "a socket" : S_ISCHR(mode) ? "a character device"
                           : S_ISBLK(mode) ? "a block device" : "not a file";
        return InputError("image '" + path + "' is not a regular file (" + what + ")");
    };
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        const int err = errno;
        if (err == ENOENT || err == ENOTDIR) throw InputError("image '" + path + "' does not exist");
        throw InputError("cannot read image '" + path + "': " + errno_text(err));
    }
    if (S_ISDIR(st.st_mode)) throw InputError("image '" + path + "' is a directory");
    if (!S_ISREG(st.st_mode)) throw not_regular(st.st_mode);
    const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) throw InputError("cannot read image '" + path + "': " + errno_text(errno));
    std::vector<uint8_t> bytes;
    std::string failure;
    if (::fstat(fd, &st) != 0) {
        failure = "cannot read image '" + path + "': " + errno_text(errno);
    } else if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        throw not_regular(st.st_mode);
    } else if (static_cast<std::uintmax_t>(st.st_size) > kMaxImageFileBytes) {
        failure = "image '" + path + "' is too large (" + std::to_string(st.st_size >> 20) + " MiB; at most " +
                  std::to_string(kMaxImageFileBytes >> 20) + " MiB are read)";
    } else {
        bytes.resize(static_cast<size_t>(st.st_size) + 1);  // one more: notices a file that grew
        size_t have = 0;
        while (failure.empty()) {
            if (have == bytes.size()) {
                if (bytes.size() > kMaxImageFileBytes) {
                    failure = "image '" + path + "' is too large (more than " + std::to_string(kMaxImageFileBytes >> 20) +
                              " MiB)";
                    break;
                }
                bytes.resize(bytes.size() * 2);
            }
            const ssize_t n = ::read(fd, bytes.data() + have, bytes.size() - have);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) failure = "cannot read image '" + path + "': " + errno_text(errno);
            if (n <= 0) break;
            have += static_cast<size_t>(n);
        }
        bytes.resize(have);
    }
    ::close(fd);
    if (!failure.empty()) throw InputError(failure);
    return bytes;
}


// Writes all of `bytes`, retrying short writes and EINTR; false with errno set on failure.
bool write_all(int fd, const uint8_t* bytes, size_t size) {
    while (size > 0) {
        const ssize_t n = ::write(fd, bytes, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        bytes += n;
        size -= static_cast<size_t>(n);
    }
    return true;
}

fs::path parent_dir(const fs::path& path) {
    fs::path dir = path.parent_path();
    return dir.empty() ? fs::path(".") : dir;
}

}  // namespace

std::vector<uint8_t> encode_png(const Image& image, const PngText& text) {
    if (image.height <= 0 || image.width <= 0 || image.height > INT_MAX / 3 || image.width > INT_MAX / 3 ||
        image.rgb.size() != static_cast<size_t>(image.height) * static_cast<size_t>(image.width) * 3)
        throw InputError("png: bad image: " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                         " with " + std::to_string(image.rgb.size()) + " bytes of RGB");
    std::vector<std::vector<uint8_t>> chunks;
    for (const auto& [key, value] : text) chunks.push_back(text_chunk(key, value));

    std::vector<uint8_t> png;
    const int w = static_cast<int>(image.width), h = static_cast<int>(image.height);
    if (!stbi_write_png_to_func(append_to_vector, &png, w, h, 3, image.rgb.data(), w * 3))
        throw Error("png: encoding failed");
    // Signature (8 bytes), then IHDR: length 13, "IHDR", 13 bytes, CRC: 33 bytes in all.
    constexpr size_t kAfterIhdr = 8 + 4 + 4 + 13 + 4;
    if (png.size() < kAfterIhdr || std::memcmp(png.data() + 12, "IHDR", 4) != 0)
        throw Error("png: encoder output does not start with IHDR");
    // Text goes before the image data so readers that stop early still see it.
    std::vector<uint8_t> out(png.begin(), png.begin() + kAfterIhdr);
    for (const auto& c : chunks) out.insert(out.end(), c.begin(), c.end());
    out.insert(out.end(), png.begin() + kAfterIhdr, png.end());
    return out;
}

void check_writable(const std::string& path) {
    if (path.empty()) throw InputError("output path is empty");
    const fs::path p(path);
    std::error_code ec;
    const auto st = fs::status(p, ec);
    if (fs::is_directory(st)) throw InputError("output '" + path + "' is a directory");
    if (fs::exists(st) && !fs::is_regular_file(st))
        throw InputError("output '" + path + "' exists and is not a regular file");
    const fs::path dir = parent_dir(p);
    const auto dst = fs::status(dir, ec);
    if (!fs::exists(dst)) throw InputError("output directory '" + dir.string() + "' does not exist");
    if (!fs::is_directory(dst)) throw InputError("output directory '" + dir.string() + "' is not a directory");
    if (::access(dir.c_str(), W_OK | X_OK) != 0)
        throw InputError("output directory '" + dir.string() + "' is not writable: " + errno_text(errno));
}

void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
    const fs::path target(path);
    // Same directory as the target, so rename() is atomic (same filesystem); hidden, so a
    // crash leaves nothing that looks like a finished image.
    std::string tmpl = (parent_dir(target) / (std::string(".") + target.filename().string() + ".tmp-XXXXXX")).string();
    std::vector<char> name(tmpl.begin(), tmpl.end());
    name.push_back('\0');
    const int fd = ::mkstemp(name.data());
    if (fd < 0) throw Error("cannot write '" + path + "': " + errno_text(errno));
    const std::string tmp(name.data());
    auto fail = [&](const std::string& what, int err) {
        ::unlink(tmp.c_str());
        throw Error("cannot write '" + path + "': " + what + ": " + errno_text(err));
    };
    // mkstemp creates 0600; give the file the permissions a plain open() would.
    const mode_t mask = ::umask(0);
    ::umask(mask);
    if (::fchmod(fd, 0666 & ~mask) != 0) {
        const int err = errno;
        ::close(fd);
        fail("chmod", err);
    }
    if (!write_all(fd, bytes.data(), bytes.size()) || ::fsync(fd) != 0) {
        const int err = errno;
        ::close(fd);
        fail("write", err);
    }
    if (::close(fd) != 0) fail("close", errno);
    if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename", errno);
    // Make the rename itself durable; failure here loses nothing already visible.
    const int dfd = ::open(parent_dir(target).c_str(), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

Image read_image(const std::string& path) {
    const std::vector<uint8_t> bytes = read_image_file(path);
    if (bytes.empty()) throw InputError("image '" + path + "' is empty (0 bytes)");
    if (bytes.size() > static_cast<size_t>(INT_MAX)) throw InputError("image '" + path + "' is too large");

    Image img;
    if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) {
        std::vector<uint8_t> cmyk_row;
        decode_jpeg(bytes, path, img, cmyk_row);
        return img;
    }
    if (!is_png(bytes)) throw InputError("image '" + path + "' is not a PNG or JPEG image" + other_format(bytes));
    const PngHeader header = png_header(bytes);
    if (header.valid) check_dimensions(path, header.width, header.height);
    if (!png_chunks_fit(bytes))
        throw InputError("image '" + path + "' is a malformed PNG (a chunk is longer than the file: truncated?)");
    const int len = static_cast<int>(bytes.size());
    const StbAllocations stb_allocations;
    int w = 0, h = 0, channels = 0;
    if (!stbi_info_from_memory(bytes.data(), len, &w, &h, &channels)) {
        const char* why = stbi_failure_reason();
        throw InputError("cannot decode image '" + path + "': " + (why ? why : "not a valid PNG"));
    }
    check_dimensions(path, w, h);
    auto pixels = [&] {  // of the image stb decoded
        img.height = h;
        img.width = w;
        return static_cast<size_t>(w) * static_cast<size_t>(h);
    };
    if (header.depth == 16 && header.color_type == 0) {
        // 16-bit grey: PIL opens it as mode "I;16", and convert("RGB") clips each sample at 255
        // instead of scaling (0..255 keep their value, 256..65535 all become white). That is what
        // the reference is given, so it is what we give too. Every other 16-bit PNG (grey + alpha,
        // RGB, RGBA) PIL reduces to its high byte, as stb does.
        stbi_us* grey = stbi_load_16_from_memory(bytes.data(), len, &w, &h, &channels, 1);
        if (!grey) {
            const char* why = stbi_failure_reason();
            throw InputError("cannot decode image '" + path + "': " + (why ? why : "unknown error"));
        }
        const size_t n = pixels();
        img.rgb.resize(n * 3);
        for (size_t i = 0; i < n; ++i) {
            const auto v = static_cast<uint8_t>(grey[i] > 255 ? 255 : grey[i]);
            img.rgb[3 * i] = img.rgb[3 * i + 1] = img.rgb[3 * i + 2] = v;
        }
        stbi_image_free(grey);
        return img;
    }
    stbi_uc* rgb = stbi_load_from_memory(bytes.data(), len, &w, &h, &channels, 3);
    if (!rgb) {
        const char* why = stbi_failure_reason();
        throw InputError("cannot decode image '" + path + "': " + (why ? why : "unknown error"));
    }
    img.rgb.assign(rgb, rgb + pixels() * 3);
    stbi_image_free(rgb);
    return img;
}

}  // namespace glmimage::cli
