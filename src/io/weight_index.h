// The tensors of one component folder: a single *.safetensors file or shards listed by a
// *.safetensors.index.json (the layout transformers and diffusers write).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace glmimage::io {

struct TensorRef {
    std::shared_ptr<const SafetensorsFile> file;
    const TensorInfo* info;
};

class WeightIndex {
  public:
    // Opens the checkpoint files of a component directory. Throws FormatError when there
    // is no checkpoint, more than one candidate, a shard listed in the index is missing,
    // or the index and the shards disagree.
    static WeightIndex open_dir(const std::string& dir);
    // Opens a single safetensors file.
    static WeightIndex open_file(const std::string& path);

    const std::map<std::string, TensorRef>& tensors() const { return tensors_; }
    const TensorRef* find(const std::string& name) const;
    const std::vector<std::shared_ptr<const SafetensorsFile>>& files() const { return files_; }
    size_t size() const { return tensors_.size(); }

  private:
    void add_file(std::shared_ptr<const SafetensorsFile> f);
    std::vector<std::shared_ptr<const SafetensorsFile>> files_;
    std::map<std::string, TensorRef> tensors_;
};

}  // namespace glmimage::io
