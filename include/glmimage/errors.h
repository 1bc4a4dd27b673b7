// glmimage error hierarchy: every failure the library reports is one of these.
//
// Message format: "<component>: <problem> '<name>': expected <x>, got <y>" (lower case,
// no trailing period). Stages re-throw with a prefix ("loading transformer: ...").
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace glmimage {

// Base of every exception thrown by glmimage.
class Error : public std::runtime_error {
  public:
    explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A file that is not what it claims to be: bad safetensors header, truncated data,
// overlapping ranges, a shard index pointing at a missing file, unparsable JSON.
class FormatError : public Error {
  public:
    using Error::Error;
};

// A configuration file that parses but lacks a required key, has a key of the wrong
// type, or holds values that contradict each other.
class ConfigError : public Error {
  public:
    using Error::Error;
};

// One problem found while binding checkpoint tensors to a module tree.
struct WeightIssue {
    enum class Kind { kMissing, kUnexpected, kShapeMismatch, kDtypeMismatch };
    Kind kind;
    std::string name;      // checkpoint key
    std::string expected;  // e.g. "[4096, 64]" or "BF16"; empty for unexpected keys
    std::string got;       // empty for missing keys
};

// All binding problems of one component, reported together.
class WeightError : public Error {
  public:
    WeightError(const std::string& component, std::vector<WeightIssue> issues);
    const std::vector<WeightIssue>& issues() const { return issues_; }
    const std::string& component() const { return component_; }

  private:
    std::string component_;
    std::vector<WeightIssue> issues_;
};

// Bad arguments from the caller: sizes not multiple of 32, empty prompt, unreadable image.
class InputError : public Error {
  public:
    using Error::Error;
};

// A valid request the library does not (yet) support: unknown dtype or device, an
// architecture variant we do not implement.
class UnsupportedError : public Error {
  public:
    using Error::Error;
};

// The caller cancelled a running generation (through its cancellation flag).
class CancelledError : public Error {
  public:
    using Error::Error;
};

}  // namespace glmimage
