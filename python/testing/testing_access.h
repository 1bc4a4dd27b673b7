// What the research hooks reach inside a loaded pipeline.
#pragma once

#include "pipeline/model_impl.h"

namespace glmimage::python {

inline const Model::Impl& impl_of(const Pipeline& p) { return p.model().impl(); }

}  // namespace glmimage::python
