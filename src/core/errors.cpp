#include "glmimage/errors.h"

#include <array>
#include <sstream>

namespace glmimage {
namespace {

const char* kind_label(WeightIssue::Kind k) {
    switch (k) {
        case WeightIssue::Kind::kMissing: return "missing";
        case WeightIssue::Kind::kUnexpected: return "unexpected";
        case WeightIssue::Kind::kShapeMismatch: return "wrong shape";
        case WeightIssue::Kind::kDtypeMismatch: return "wrong dtype";
    }
    return "?";
}

// Lists up to kMaxPerKind issues of each kind, with counts, so a checkpoint from the
// wrong model gives a readable message instead of thousands of lines.
std::string format_issues(const std::string& component, const std::vector<WeightIssue>& issues) {
    constexpr size_t kMaxPerKind = 20;
    const std::array<WeightIssue::Kind, 4> kinds = {
        WeightIssue::Kind::kMissing, WeightIssue::Kind::kUnexpected,
        WeightIssue::Kind::kShapeMismatch, WeightIssue::Kind::kDtypeMismatch};
    std::ostringstream os;
    os << component << ": checkpoint does not match the model:";
    for (auto kind : kinds) {
        size_t count = 0;
        for (const auto& is : issues) count += is.kind == kind;
        if (count == 0) continue;
        os << "\n  " << count << " " << kind_label(kind) << ":";
        size_t shown = 0;
        for (const auto& is : issues) {
            if (is.kind != kind) continue;
            if (shown++ == kMaxPerKind) {
                os << "\n    ... and " << (count - kMaxPerKind) << " more";
                break;
            }
            os << "\n    '" << is.name << "'";
            if (!is.expected.empty() || !is.got.empty()) {
                os << ": expected " << (is.expected.empty() ? "nothing" : is.expected)
                   << ", got " << (is.got.empty() ? "nothing" : is.got);
            }
        }
    }
    return os.str();
}

}  // namespace

WeightError::WeightError(const std::string& component, std::vector<WeightIssue> issues)
    : Error(format_issues(component, issues)), component_(component), issues_(std::move(issues)) {}

}  // namespace glmimage
