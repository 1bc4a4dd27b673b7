// Options for loading a GLM-Image checkpoint. Every field has a default.
#pragma once

#include <map>
#include <string>

namespace glmimage {

// Where one component lives and in what dtype. Empty strings inherit LoadOptions' values.
struct ComponentPlacement {
    std::string device;     // "", "cpu", "cuda", "cuda:N"
    std::string dtype;      // "", "auto", "float32", "bfloat16", "float16"
    // "": LoadOptions::residency; "resident": on its device from load to the end;
    // "staged": weights stay in the memory-mapped files (page cache, no copy) and are placed on
    // the device, in the compute dtype, only while their stage runs (diffusers'
    // enable_model_cpu_offload). Images are identical either way.
    std::string residency;
};

struct LoadOptions {
    std::string device = "cpu";          // "cpu", "cuda", "cuda:N": every component's default
    std::string dtype = "auto";          // "auto" (the checkpoint's), "float32", "bfloat16", "float16"
    std::string residency = "resident";  // "resident" or "staged" (see ComponentPlacement)
    // Per-component overrides, keyed by the checkpoint folder: "vision_language_encoder",
    // "text_encoder", "transformer", "vae". E.g. {{"vae", {"cpu", "float32", ""}}}.
    std::map<std::string, ComponentPlacement> components;
    // Quantized at load from the checkpoint's weights, for every Linear of the AR text decoder
    // (and its lm_head) and of the DiT; the other components keep their dtype.
    //   "none"
    //   "int8": weight-only int8 with per-output-channel scales (half the bytes of bf16).
    //   "fp8":  e4m3 weights with per-output-channel scales, inputs quantized per row at each
    //           call, LibTorch's row-wise scaled matmul (Hopper GPUs; the CPU where LibTorch has
    //           the kernel). UnsupportedError at load where the device has no working kernel.
    // With "staged" residency the quantized weights rest in host memory (anonymous, quantized
    // once at load) and move to the device with their stage; the rest stays in the file.
    std::string quantize = "none";
    // How the AR model runs its decode steps (the tokens are the same every way):
    //   "auto":   "graph" where the AR model is on a CUDA device and this build can capture CUDA
    //             graphs (falling back to "static" if the capture fails), else "eager"
    //   "eager":  one step after the other over the keys written so far
    //   "static": one fixed-shape step (the whole KV cache under a mask; positions, rotary rows
    //             and sampling read from the device by step index), run eagerly
    //   "graph":  the static step captured once per generation as a CUDA graph and replayed
    //             per token, no host synchronisation between tokens; UnsupportedError at load
    //             where the AR model's device cannot capture graphs
    std::string ar_decode = "auto";
    // How the denoising loop runs classifier-free guidance's conditional and unconditional passes
    // (GenerateResult's decoder timing says which ran):
    //   "auto":  "joint" where the DiT is on a CUDA device, or on the CPU where its products are
    //            float32 GEMMs (float32, or bf16 on a CPU without oneDNN bf16 kernels); else "apart"
    //   "joint": one DiT forward over both passes (every linear over both passes' rows but the
    //            text's feed-forward, attention per pass): fewer weight reads and kernel launches
    //   "apart": two forwards, as diffusers runs them. Where oneDNN's bf16 kernels run (a CPU with
    //            AVX-512), they may compute the doubled row count with other kernels: bf16 images
    //            moved 8-9 levels from diffusers' at 256x256, so "auto" keeps the two passes there.
    std::string cfg_passes = "auto";
    // Each generation reuses its large CPU blocks (1 MiB and more) instead of taking fresh pages
    // from the kernel for every activation (src/core/cpu_block_cache.h): at 1024² on a CPU a DiT
    // step took 66.9 s against 80.5 s without it, with the same bits. The cache holds up to 4 GiB
    // of freed blocks while a generation runs; a stage's are returned where the next stage begins
    // (the AR stage, the condition images' encoding, the denoising loop), the rest when the
    // generation ends. In the VAE it never holds more than the most in use at once, so it adds
    // nothing to the peak there (docs/performance.md has the measured figures).
    // false: every block is new.
    bool cpu_block_cache = true;

    // Throws InputError / UnsupportedError for values outside the lists above.
    void validate() const;
    // The placement a component gets: its override, else the defaults above.
    ComponentPlacement placement(const std::string& folder) const;
    std::string to_string() const;
};

// LibTorch's intra-op CPU thread pool is one per process: this sets it for every model and
// session in the process (0 keeps LibTorch's default). Call it before starting generations.
void set_num_threads(int threads);
int num_threads();

}  // namespace glmimage
