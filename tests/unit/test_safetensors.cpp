// Safetensors reader and shard index: good files parse, every kind of malformed file
// gives a FormatError naming the problem. Also built with ASan + UBSan.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/paths.h"
#include "glmimage/errors.h"
#include "io/safetensors.h"
#include "io/weight_index.h"
#include "st_writer.h"

namespace glmimage {
namespace {

using io::SafetensorsFile;
using io::WeightIndex;
using testing::f32_bytes;
using testing::make_temp_dir;
using testing::safetensors_bytes;
using testing::safetensors_file;
using testing::write_file;

// Expects FormatError whose message contains `needle`.
template <typename F>
void expect_format_error(F&& f, const std::string& needle) {
    try {
        f();
        FAIL() << "expected FormatError containing '" << needle << "'";
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
}

std::string write_tmp(const std::string& bytes, const std::string& name = "t.safetensors") {
    auto dir = make_temp_dir("st");
    auto path = dir + "/" + name;
    write_file(path, bytes);
    return path;
}

TEST(Safetensors, ReadsWellFormedFile) {
    auto path = write_tmp(safetensors_file({{"a.weight", "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, 6})},
                                            {"b", "BF16", {4}, std::string(8, '\x3f')},
                                            {"empty", "F32", {0, 5}, ""}}));
    auto f = SafetensorsFile::open(path);
    ASSERT_EQ(f->tensors().size(), 3u);
    const auto* a = f->find("a.weight");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->dtype, io::DType::kF32);
    EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
    float v[6];
    std::memcpy(v, f->data(*a), sizeof v);
    EXPECT_EQ(v[5], 6.0f);
    EXPECT_EQ(f->find("b")->dtype, io::DType::kBF16);
    EXPECT_EQ(f->find("empty")->numel(), 0);
    EXPECT_EQ(f->metadata().at("format"), "pt");
    EXPECT_EQ(f->find("nope"), nullptr);
}

TEST(Safetensors, EmptyAndTruncatedFiles) {
    expect_format_error([&] { SafetensorsFile::open(write_tmp("")); }, "truncated");
    expect_format_error([&] { SafetensorsFile::open(write_tmp("abc")); }, "truncated");
    auto good = safetensors_file({{"x", "F32", {4}, f32_bytes({1, 2, 3, 4})}});
    // Cut inside the data: the last tensor's range now ends past the file.
    expect_format_error([&] { SafetensorsFile::open(write_tmp(good.substr(0, good.size() - 3))); },
                        "outside the data section");
    // Cut inside the header.
    expect_format_error([&] { SafetensorsFile::open(write_tmp(good.substr(0, 20))); }, "past the end");
}

TEST(Safetensors, HeaderLengthPastEndOrHuge) {
    std::string bytes = safetensors_bytes("{}", "");
    bytes[0] = 100;  // claims 100 header bytes, file has 2
    expect_format_error([&] { SafetensorsFile::open(write_tmp(bytes)); }, "past the end");
    std::string huge(8, '\xff');
    expect_format_error([&] { SafetensorsFile::open(write_tmp(huge + "{}")); }, "exceeds the limit");
}

TEST(Safetensors, OffsetsOutsideFile) {
    auto h = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
    expect_format_error([&] { SafetensorsFile::open(write_tmp(safetensors_bytes(h, std::string(8, 0)))); },
                        "outside the data section");
    auto h2 = R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})";
    expect_format_error([&] { SafetensorsFile::open(write_tmp(safetensors_bytes(h2, std::string(8, 0)))); },
                        "begin 8 > end 4");
    auto h3 = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551615,18446744073709551615]}})";
    expect_format_error([&] { SafetensorsFile::open(write_tmp(safetensors_bytes(h3, std::string(8, 0)))); },
                        "outside the data section");
}

TEST(Safetensors, OverlappingRanges) {
    auto h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
    expect_format_error([&] { SafetensorsFile::open(write_tmp(safetensors_bytes(h, std::string(12, 0)))); },
                        "overlapping");
}

TEST(Safetensors, UnknownDtype) {
    auto h = R"({"a":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})";
    expect_format_error([&] { SafetensorsFile::open(write_tmp(safetensors_bytes(h, std::string(8, 0)))); },
                        "unknown dtype 'F7'");
}

TEST(Safetensors, ShapeNotMatchingByteRange) {
    auto h = R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
    expect_format_error([&] { SafetensorsFile::open(write_tmp(safetensors_bytes(h, std::string(8, 0)))); },
                        "needs 12 bytes");
    auto neg = R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})";
    expect_format_error([&] { SafetensorsFile::open(write_tmp(safetensors_bytes(neg, std::string(8, 0)))); },
                        "non-negative");
    auto big = R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})";
    expect_format_error([&] { SafetensorsFile::open(write_tmp(safetensors_bytes(big, std::string(8, 0)))); },
                        "overflows");
}

TEST(Safetensors, BadJsonHeaders) {
    expect_format_error([&] { SafetensorsFile::open(write_tmp(safetensors_bytes("{\"a\":", ""))); }, "not valid JSON");
    expect_format_error([&] { SafetensorsFile::open(write_tmp(safetensors_bytes("[1,2]", ""))); }, "not a JSON object");
    expect_format_error([&] { SafetensorsFile::open(write_tmp(safetensors_bytes(R"({"a":3})", ""))); },
                        "not an object");
    expect_format_error(
        [&] { SafetensorsFile::open(write_tmp(safetensors_bytes(R"({"__metadata__":{"k":1}})", ""))); },
        "not a string");
    expect_format_error(
        [&] { SafetensorsFile::open(write_tmp(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1]}})", "1234"))); },
        "data_offsets");
}

TEST(Safetensors, MissingFileAndDirectory) {
    expect_format_error([&] { SafetensorsFile::open("/nonexistent/x.safetensors"); }, "cannot open");
    auto dir = make_temp_dir("st_dir");
    expect_format_error([&] { SafetensorsFile::open(dir); }, "not a regular file");
}

// The weights' mapping asks for huge pages (MADV_HUGEPAGE: "hg" among its VmFlags), so that a
// kernel with large page-cache folios maps them with 2 MB entries (src/io/safetensors.cpp says
// what that measured). Checked where the kernel has transparent huge pages at all.
TEST(Safetensors, MappingAsksForHugePages) {
    if (!std::filesystem::exists("/sys/kernel/mm/transparent_hugepage/enabled"))
        GTEST_SKIP() << "no transparent huge pages in this kernel";
    auto path = write_tmp(safetensors_file({{"w", "F32", {1024}, std::string(4096, '\0')}}));
    io::MappedFile mapped(path);
    const auto addr = reinterpret_cast<uintptr_t>(mapped.data());
    std::ifstream smaps("/proc/self/smaps");
    std::string line;
    bool inside = false, found = false;
    while (std::getline(smaps, line)) {
        unsigned long lo = 0, hi = 0;
        if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find(' ')) {
            inside = lo <= addr && addr < hi;  // a mapping's header line
        } else if (inside && line.rfind("VmFlags:", 0) == 0) {
            found = true;
            EXPECT_NE((line + " ").find(" hg "), std::string::npos) << line;
        }
    }
    EXPECT_TRUE(found) << "no VmFlags line for the mapping at " << std::hex << addr;
}

// Random corruption of a valid file must never crash: every outcome is a clean parse or
// a FormatError. Under ASan/UBSan this is a small fuzzer.
TEST(Safetensors, RandomCorruptionNeverCrashes) {
    auto good = safetensors_file({{"a", "F32", {2, 2}, f32_bytes({1, 2, 3, 4})},
                                  {"b", "I64", {1}, std::string(8, '\1')}});
    std::mt19937 rng(1234);
    auto dir = make_temp_dir("fuzz");
    int errors = 0;
    for (int iter = 0; iter < 1500; ++iter) {
        std::string bytes = good;
        int flips = 1 + rng() % 4;
        for (int k = 0; k < flips; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
        if (rng() % 5 == 0) bytes.resize(rng() % bytes.size());
        auto path = dir + "/f.safetensors";
        write_file(path, bytes);
        try {
            auto f = SafetensorsFile::open(path);
            for (const auto& t : f->tensors()) {
                // A tensor that parses must lie inside the file.
                volatile uint8_t sink = 0;
                for (uint64_t i = t.begin; i < t.end; ++i) sink = sink ^ f->data(t)[i - t.begin];
                (void)sink;
            }
        } catch (const FormatError&) {
            ++errors;
        }
    }
    EXPECT_GT(errors, 100);
}

// ---- shard index -----------------------------------------------------------------------

std::string make_sharded(const std::string& tag, const std::string& index_json, bool write_second = true) {
    auto dir = make_temp_dir(tag);
    write_file(dir + "/model-00001-of-00002.safetensors",
               safetensors_file({{"a", "F32", {1}, f32_bytes({1})}, {"b", "F32", {1}, f32_bytes({2})}}));
    if (write_second)
        write_file(dir + "/model-00002-of-00002.safetensors", safetensors_file({{"c", "F32", {1}, f32_bytes({3})}}));
    write_file(dir + "/model.safetensors.index.json", index_json);
    return dir;
}

const char* kGoodIndex = R"({"metadata":{"total_size":12},"weight_map":{
  "a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",
  "c":"model-00002-of-00002.safetensors"}})";

TEST(WeightIndex, ReadsShardedCheckpoint) {
    auto w = WeightIndex::open_dir(make_sharded("shards", kGoodIndex));
    EXPECT_EQ(w.size(), 3u);
    EXPECT_EQ(w.files().size(), 2u);
    ASSERT_NE(w.find("c"), nullptr);
    float v;
    std::memcpy(&v, w.find("c")->file->data(*w.find("c")->info), 4);
    EXPECT_EQ(v, 3.0f);
}

TEST(WeightIndex, MissingShard) {
    expect_format_error([&] { WeightIndex::open_dir(make_sharded("noshard", kGoodIndex, false)); },
                        "shard 'model-00002-of-00002.safetensors' listed in the index is missing");
}

TEST(WeightIndex, IndexAndShardsDisagree) {
    const char* wrong_shard = R"({"weight_map":{"a":"model-00002-of-00002.safetensors",
      "b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})";
    expect_format_error([&] { WeightIndex::open_dir(make_sharded("wrong", wrong_shard)); }, "is not in shard");
    const char* unlisted = R"({"weight_map":{"a":"model-00001-of-00002.safetensors",
      "c":"model-00002-of-00002.safetensors"}})";
    expect_format_error([&] { WeightIndex::open_dir(make_sharded("unlisted", unlisted)); }, "is not listed");
    const char* escape = R"({"weight_map":{"a":"../x.safetensors"}})";
    expect_format_error([&] { WeightIndex::open_dir(make_sharded("escape", escape)); }, "is not a file name");
    expect_format_error([&] { WeightIndex::open_dir(make_sharded("nomap", "{}")); }, "weight_map");
    expect_format_error([&] { WeightIndex::open_dir(make_sharded("badjson", "{")); }, "not valid JSON");
    // A shard name the file system cannot even look up (found by fuzz_json_config: std::filesystem
    // threw its own filesystem_error, which escaped as a non-glmimage exception).
    const std::string too_long = R"({"weight_map":{"a":")" + std::string(300, 'x') + R"(.safetensors"}})";
    expect_format_error([&] { WeightIndex::open_dir(make_sharded("toolong", too_long.c_str())); },
                        "listed in the index is missing (File name too long)");
}

TEST(WeightIndex, DirectoryProblems) {
    auto empty = make_temp_dir("empty");
    expect_format_error([&] { WeightIndex::open_dir(empty); }, "no *.safetensors");
    auto two = make_temp_dir("two");
    write_file(two + "/a.safetensors", safetensors_file({{"a", "F32", {1}, f32_bytes({1})}}));
    write_file(two + "/b.safetensors", safetensors_file({{"b", "F32", {1}, f32_bytes({1})}}));
    expect_format_error([&] { WeightIndex::open_dir(two); }, "no *.safetensors.index.json");
    expect_format_error([&] { WeightIndex::open_dir("/nonexistent/dir"); }, "not a directory");
    auto dup = make_temp_dir("dup");
    write_file(dup + "/s1.safetensors", safetensors_file({{"a", "F32", {1}, f32_bytes({1})}}));
    write_file(dup + "/s2.safetensors", safetensors_file({{"a", "F32", {1}, f32_bytes({1})}}));
    write_file(dup + "/model.safetensors.index.json",
               R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
    expect_format_error([&] { WeightIndex::open_dir(dup); }, "also stored in");
}

// The library's path helpers (POSIX, not std::filesystem: core/paths.h says why).
TEST(Paths, KindsJoinsNamesAndListings) {
    using namespace detail;
    auto dir = make_temp_dir("paths");
    write_file(dir + "/f.json", "{}");
    EXPECT_EQ(path_kind(dir), PathKind::kDirectory);
    EXPECT_EQ(path_kind(dir + "/f.json"), PathKind::kFile);
    EXPECT_EQ(path_kind("/dev/null"), PathKind::kOther);
    std::string why;
    EXPECT_EQ(path_kind(dir + "/missing", &why), PathKind::kAbsent);
    EXPECT_EQ(why, "");  // plain absence has no reason to report
    EXPECT_EQ(path_kind(dir + "/f.json/below", &why), PathKind::kAbsent);
    EXPECT_NE(why, "");  // a file used as a folder: the system's reason
    EXPECT_EQ(join_path("a", "b"), "a/b");
    EXPECT_EQ(join_path("a/", "b"), "a/b");
    EXPECT_EQ(join_path("", "b"), "b");
    EXPECT_EQ(file_name("a/b.json"), "b.json");
    EXPECT_EQ(file_name("b.json"), "b.json");
    EXPECT_EQ(file_name("a/b/"), "");
    std::vector<std::string> names;
    ASSERT_TRUE(list_folder(dir, names, why)) << why;
    EXPECT_EQ(names, std::vector<std::string>{"f.json"});
    names.clear();
    EXPECT_FALSE(list_folder(dir + "/missing", names, why));
    EXPECT_NE(why, "");
}

}  // namespace
}  // namespace glmimage
