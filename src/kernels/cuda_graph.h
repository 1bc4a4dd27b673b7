// CUDA graph capture and replay of one fixed-shape step (the AR decode step), behind an
// interface that compiles in every LibTorch build: the CUDA side is built only where LibTorch
// has CUDA (GLMI_WITH_CUDA_GRAPHS); elsewhere cuda_graphs_unsupported_reason() says why.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>

namespace glmimage::kernels {

// Empty when `device` can capture CUDA graphs with this build, else the reason it cannot.
std::string cuda_graphs_unsupported_reason(const at::Device& device);

// While it lives, work on `device` is queued on a side stream (a graph cannot be captured on
// the default stream); the stream that was current waits for it on destruction, so tensors
// made inside are safe to use after. Usage: run the step eagerly once (warm-up: cuBLAS
// workspaces, kernel choices), capture() it, then replay() it per token.
class StepGraph {
  public:
    explicit StepGraph(const at::Device& device);  // UnsupportedError where the reason above is set
    ~StepGraph();
    StepGraph(const StepGraph&) = delete;
    StepGraph& operator=(const StepGraph&) = delete;

    // Records `step` (not run). `generator`'s state is registered with the graph so that each
    // replay draws fresh random numbers, as eager calls would.
    void capture(const std::function<void()>& step, const at::Generator& generator);
    void replay();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace glmimage::kernels
