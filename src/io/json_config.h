// Typed, strict access to a config.json: unknown keys are ignored (configs carry many
// keys we do not use), required keys that are missing or of the wrong type raise
// ConfigError naming the file and the key.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace glmimage::io {

class JsonConfig {
  public:
    // Reads and parses a JSON file; FormatError if unreadable or not JSON, ConfigError if
    // the top level is not an object.
    static JsonConfig load(const std::string& path);
    static JsonConfig from_json(nlohmann::json j, std::string where);

    const std::string& where() const { return where_; }
    bool has(const std::string& key) const;  // present and not null

    int64_t get_int(const std::string& key) const;
    double get_double(const std::string& key) const;  // integers are accepted
    bool get_bool(const std::string& key) const;
    std::string get_string(const std::string& key) const;
    std::vector<int64_t> get_int_list(const std::string& key) const;
    std::vector<double> get_double_list(const std::string& key) const;
    std::vector<std::string> get_string_list(const std::string& key) const;
    JsonConfig get_object(const std::string& key) const;

    // Optional keys: the default when absent or null; a present key of the wrong type is
    // still an error (a typo in a value must not silently select the default).
    int64_t get_int(const std::string& key, int64_t def) const;
    double get_double(const std::string& key, double def) const;
    bool get_bool(const std::string& key, bool def) const;
    std::string get_string(const std::string& key, const std::string& def) const;

    const nlohmann::json& raw() const { return j_; }

  private:
    const nlohmann::json& require(const std::string& key) const;
    [[noreturn]] void type_error(const std::string& key, const char* expected) const;
    nlohmann::json j_;
    std::string where_;
};

}  // namespace glmimage::io
