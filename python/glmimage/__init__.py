"""glmimage: native GLM-Image inference (C++/LibTorch) with a diffusers-like Python front.

Text-to-image on the embedded tiny checkpoint (random weights: the picture is noise; the real
model is a local copy of ``zai-org/GLM-Image``, best with ``dtype="bfloat16", device="cuda"``):

```python
import glmimage

pipe = glmimage.Pipeline.from_pretrained("models/tiny", dtype="float32")
out = pipe('A poster that says "Hello"', height=64, width=64, num_inference_steps=2, seed=42)
out.images[0].save("hello.png")
print(out.images[0].size, out.prior_token_ids.shape, sorted(out.timings))
```

Arguments follow diffusers' ``GlmImagePipeline``: ``image=`` for image-to-image, ``generator=``
(or ``seed=``), ``num_images_per_prompt``, ``output_type`` ("pil", "np", "pt", "latent"), ``prior_token_ids=`` from
``pipe.generate_prior_tokens(...)``. ``callback(stage, step, total)`` reports progress (a tqdm bar
is shown when tqdm is installed); ``pipe.cancel()`` or Ctrl-C stops a run. diffusers'
``callback_on_step_end`` sees and may change the latents after each step.

Errors: bad arguments raise ``ValueError`` (``glmimage.InputError``); a malformed checkpoint
``FormatError`` / ``ConfigError`` / ``WeightError``, a cancelled run ``CancelledError`` (all
``glmimage.Error``, a ``RuntimeError``).

``import torch`` comes first: the extension links against the LibTorch that the torch package
ships, and torch must load its libraries before ours.
"""
import torch  # noqa: F401  (loads libtorch for the extension)

from ._C import (  # noqa: F401
    num_threads,
    set_num_threads,
    ArSettings,
    CancelledError,
    ComponentInfo,
    ConfigError,
    Error,
    FormatError,
    GenerateRequest,
    InputError,
    PriorTokens,
    UnsupportedError,
    WeightError,
    version,
)
from .pipeline import Pipeline, PipelineOutput, PriorTokenOutput  # noqa: F401

__version__ = version()
__all__ = [
    "Pipeline", "PipelineOutput", "PriorTokenOutput", "ComponentInfo", "Error", "InputError", "FormatError",
    "ConfigError", "WeightError", "UnsupportedError", "CancelledError", "version", "set_num_threads", "num_threads",
]
