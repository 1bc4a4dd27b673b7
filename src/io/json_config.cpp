#include "io/json_config.h"

#include <fstream>

#include "core/check.h"

namespace glmimage::io {

using detail::str_cat;

namespace {

const char* type_name(const nlohmann::json& v) {
    if (v.is_number_integer()) return "integer";
    if (v.is_number_float()) return "number";
    return v.type_name();
}

}  // namespace

JsonConfig JsonConfig::load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw FormatError(str_cat(path, ": cannot open"));
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw FormatError(str_cat(path, ": not valid JSON: ", e.what()));
    }
    return from_json(std::move(j), path);
}

JsonConfig JsonConfig::from_json(nlohmann::json j, std::string where) {
    if (!j.is_object()) throw ConfigError(str_cat(where, ": expected a JSON object, got ", type_name(j)));
    JsonConfig c;
    c.j_ = std::move(j);
    c.where_ = std::move(where);
    return c;
}

bool JsonConfig::has(const std::string& key) const {
    auto it = j_.find(key);
    return it != j_.end() && !it->is_null();
}

const nlohmann::json& JsonConfig::require(const std::string& key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null())
        throw ConfigError(str_cat(where_, ": missing required key '", key, "'"));
    return *it;
}

void JsonConfig::type_error(const std::string& key, const char* expected) const {
    throw ConfigError(str_cat(where_, ": key '", key, "': expected ", expected, ", got ",
                              type_name(j_.at(key))));
}

int64_t JsonConfig::get_int(const std::string& key) const {
    const auto& v = require(key);
    if (!v.is_number_integer()) type_error(key, "integer");
    return v.get<int64_t>();
}

double JsonConfig::get_double(const std::string& key) const {
    const auto& v = require(key);
    if (!v.is_number()) type_error(key, "number");
    return v.get<double>();
}

bool JsonConfig::get_bool(const std::string& key) const {
    const auto& v = require(key);
    if (!v.is_boolean()) type_error(key, "boolean");
    return v.get<bool>();
}

std::string JsonConfig::get_string(const std::string& key) const {
    const auto& v = require(key);
    if (!v.is_string()) type_error(key, "string");
    return v.get<std::string>();
}

std::vector<int64_t> JsonConfig::get_int_list(const std::string& key) const {
    const auto& v = require(key);
    if (!v.is_array()) type_error(key, "list of integers");
    std::vector<int64_t> out;
    for (const auto& e : v) {
        if (!e.is_number_integer()) type_error(key, "list of integers");
        out.push_back(e.get<int64_t>());
    }
    return out;
}

std::vector<double> JsonConfig::get_double_list(const std::string& key) const {
    const auto& v = require(key);
    if (!v.is_array()) type_error(key, "list of numbers");
    std::vector<double> out;
    for (const auto& e : v) {
        if (!e.is_number()) type_error(key, "list of numbers");
        out.push_back(e.get<double>());
    }
    return out;
}

std::vector<std::string> JsonConfig::get_string_list(const std::string& key) const {
    const auto& v = require(key);
    if (!v.is_array()) type_error(key, "list of strings");
    std::vector<std::string> out;
    for (const auto& e : v) {
        if (!e.is_string()) type_error(key, "list of strings");
        out.push_back(e.get<std::string>());
    }
    return out;
}

JsonConfig JsonConfig::get_object(const std::string& key) const {
    const auto& v = require(key);
    if (!v.is_object()) type_error(key, "object");
    return from_json(v, str_cat(where_, ": ", key));
}

int64_t JsonConfig::get_int(const std::string& key, int64_t def) const {
    return has(key) ? get_int(key) : def;
}
double JsonConfig::get_double(const std::string& key, double def) const {
    return has(key) ? get_double(key) : def;
}
bool JsonConfig::get_bool(const std::string& key, bool def) const {
    return has(key) ? get_bool(key) : def;
}
std::string JsonConfig::get_string(const std::string& key, const std::string& def) const {
    return has(key) ? get_string(key) : def;
}

}  // namespace glmimage::io
