// Precompiled header: the LibTorch headers most translation units need. Files still
// include what they use; this only makes those includes cheap.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
