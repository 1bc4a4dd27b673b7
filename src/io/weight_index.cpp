#include "io/weight_index.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/check.h"
#include "core/paths.h"

namespace glmimage::io {

using detail::str_cat;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

nlohmann::json read_json_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw FormatError(str_cat(path, ": cannot open"));
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw FormatError(str_cat(path, ": not valid JSON: ", e.what()));
    }
}

}  // namespace

const TensorRef* WeightIndex::find(const std::string& name) const {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
}

void WeightIndex::add_file(std::shared_ptr<const SafetensorsFile> f) {
    for (const auto& t : f->tensors()) {
        auto [it, inserted] = tensors_.emplace(t.name, TensorRef{f, &t});
        if (!inserted)
            throw FormatError(str_cat(f->path(), ": tensor '", t.name, "' also stored in ",
                                      it->second.file->path()));
    }
    files_.push_back(std::move(f));
}

WeightIndex WeightIndex::open_file(const std::string& path) {
    WeightIndex w;
    w.add_file(SafetensorsFile::open(path));
    return w;
}

WeightIndex WeightIndex::open_dir(const std::string& dir) {
    std::string why;
    if (!detail::is_directory(dir, &why)) throw FormatError(str_cat(dir, ": not a directory", detail::reason_suffix(why)));
    std::vector<std::string> names, indexes, singles;
    if (!detail::list_folder(dir, names, why)) throw FormatError(str_cat(dir, ": cannot list the folder (", why, ")"));
    for (const auto& name : names) {
        if (ends_with(name, ".safetensors.index.json")) indexes.push_back(detail::join_path(dir, name));
        else if (ends_with(name, ".safetensors")) singles.push_back(detail::join_path(dir, name));
    }
    std::sort(indexes.begin(), indexes.end());
    std::sort(singles.begin(), singles.end());
    if (indexes.size() > 1)
        throw FormatError(str_cat(dir, ": more than one *.safetensors.index.json"));

    WeightIndex w;
    if (indexes.empty()) {
        if (singles.empty()) throw FormatError(str_cat(dir, ": no *.safetensors checkpoint found"));
        if (singles.size() > 1)
            throw FormatError(str_cat(dir, ": ", singles.size(),
                                      " *.safetensors files but no *.safetensors.index.json naming the shards"));
        w.add_file(SafetensorsFile::open(singles[0]));
        return w;
    }

    const std::string& index_path = indexes[0];
    nlohmann::json index = read_json_file(index_path);
    auto wm = index.find("weight_map");
    if (!index.is_object() || wm == index.end() || !wm->is_object())
        throw FormatError(str_cat(index_path, ": no 'weight_map' object"));

    std::map<std::string, std::string> key_to_shard;
    std::set<std::string> shards;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
        if (!it.value().is_string())
            throw FormatError(str_cat(index_path, ": weight_map entry '", it.key(), "' is not a string"));
        std::string shard = it.value().get<std::string>();
        // Shard names are plain file names in the same folder; anything else is rejected so
        // an index cannot make us open files elsewhere.
        if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
            throw FormatError(str_cat(index_path, ": shard name '", shard, "' is not a file name"));
        key_to_shard[it.key()] = shard;
        shards.insert(shard);
    }
    for (const auto& shard : shards) {
        const std::string p = detail::join_path(dir, shard);
        if (!detail::path_exists(p, &why))
            throw FormatError(str_cat(index_path, ": shard '", shard, "' listed in the index is missing",
                                      detail::reason_suffix(why)));
        w.add_file(SafetensorsFile::open(p));
    }
    for (const auto& [key, shard] : key_to_shard) {
        const TensorRef* ref = w.find(key);
        if (!ref || detail::file_name(ref->file->path()) != shard)
            throw FormatError(str_cat(index_path, ": tensor '", key, "' is not in shard '", shard, "'"));
    }
    if (w.tensors_.size() != key_to_shard.size()) {
        for (const auto& [key, ref] : w.tensors_)
            if (!key_to_shard.count(key))
                throw FormatError(str_cat(ref.file->path(), ": tensor '", key,
                                          "' is not listed in ", index_path));
    }
    return w;
}

}  // namespace glmimage::io
