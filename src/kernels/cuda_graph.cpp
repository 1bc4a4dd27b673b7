#include "kernels/cuda_graph.h"

#include <optional>

#include "glmimage/errors.h"

#ifdef GLMI_WITH_CUDA_GRAPHS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/Event.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/version.h>

// Capturing a sampling step needs its (non-default) generator registered with the graph before
// capture: CUDAGraph::register_generator_state(const Generator&), LibTorch 2.3 to 2.13
// (CMakeLists.txt asks for 2.5). From 2.14 a capture keeps a state of its own for each generator
// it draws from, and that overload is gone (its Python binding is a deprecated no-op).
#ifndef TORCH_VERSION_MINOR
#error "torch/version.h did not define TORCH_VERSION_MINOR, which says whether to register the generator"
#endif
#define GLMI_GRAPH_REGISTERS_GENERATORS (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 14)
#endif

namespace glmimage::kernels {

#ifdef GLMI_WITH_CUDA_GRAPHS

std::string cuda_graphs_unsupported_reason(const at::Device& device) {
    if (!device.is_cuda()) return "CUDA graphs need a CUDA device, not " + device.str();
    return {};
}

struct StepGraph::Impl {
    c10::cuda::CUDAStream previous, side;
    std::optional<c10::cuda::CUDAStreamGuard> on_side;
    at::cuda::CUDAGraph graph;
    bool captured = false;

    explicit Impl(const at::Device& device)
        : previous(c10::cuda::getCurrentCUDAStream(device.index())),
          side(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())) {
        c10::Event ready(c10::DeviceType::CUDA);  // the side stream starts after what is queued so far
        ready.record(previous);
        ready.block(side);
        on_side.emplace(side);
    }
};

StepGraph::StepGraph(const at::Device& device) {
    const std::string why = cuda_graphs_unsupported_reason(device);
    if (!why.empty()) throw UnsupportedError(why);
    impl_ = std::make_unique<Impl>(device);
}

StepGraph::~StepGraph() {
    if (!impl_) return;
    try {
        c10::Event done(c10::DeviceType::CUDA);
        done.record(impl_->side);
        done.block(impl_->previous);
    } catch (...) {  // a destructor must not throw; a failed record leaves a sticky CUDA error
    }
    impl_->on_side.reset();
}

void StepGraph::capture(const std::function<void()>& step, const at::Generator& generator) {
    if (impl_->captured) throw Error("StepGraph: already captured");
#if GLMI_GRAPH_REGISTERS_GENERATORS
    if (generator.defined()) impl_->graph.register_generator_state(generator);
#else
    (void)generator;  // the capture keeps its state by itself
#endif
    impl_->graph.capture_begin();
    try {
        step();
    } catch (...) {
        try {
            impl_->graph.capture_end();  // leave the stream out of capture mode
        } catch (...) {
        }
        throw;
    }
    impl_->graph.capture_end();
    impl_->captured = true;
}

void StepGraph::replay() {
    if (!impl_->captured) throw Error("StepGraph: replay before capture");
    impl_->graph.replay();
}

#else  // LibTorch without CUDA

std::string cuda_graphs_unsupported_reason(const at::Device& device) {
    return "this glmimage was built against a LibTorch without CUDA, so it cannot capture CUDA graphs (device " +
           device.str() + ")";
}

struct StepGraph::Impl {};

StepGraph::StepGraph(const at::Device& device) { throw UnsupportedError(cuda_graphs_unsupported_reason(device)); }
StepGraph::~StepGraph() = default;
void StepGraph::capture(const std::function<void()>&, const at::Generator&) {}
void StepGraph::replay() {}

#endif

}  // namespace glmimage::kernels
