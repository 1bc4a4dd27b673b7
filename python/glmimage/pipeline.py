"""The user-facing GLM-Image pipeline: diffusers-style arguments in front of the C++ core.

Everything here is argument handling: converting PIL images, torch generators and tensors into
the plain data the native ``glmimage._C.Pipeline`` takes, checking arguments early so mistakes are
``ValueError`` with the argument's name, and shaping the result like diffusers'
``GlmImagePipelineOutput``. The work itself runs in C++ with the GIL released.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from . import _C
from ._C import InputError

ProgressFn = Callable[[str, int, int], Any]

_DTYPES = {
    "auto": "auto",
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}
_TORCH_DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
# diffusers' output_type -> what the C++ request returns.
_OUTPUTS = {"pil": _C.GenerateRequest.Output.images, "np": _C.GenerateRequest.Output.float_images,
            "pt": _C.GenerateRequest.Output.float_images, "latent": _C.GenerateRequest.Output.latents}
# A component's compute dtype as ComponentInfo names it -> torch's.
_WEIGHT_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def _fail(message: str) -> InputError:
    # InputError is a ValueError: one exception type for bad arguments, whether Python or C++
    # noticed them first.
    return InputError(message)


def _normalize_dtype(dtype: Union[str, torch.dtype, None]) -> str:
    if dtype is None:
        return "auto"
    if isinstance(dtype, torch.dtype):
        if dtype not in _TORCH_DTYPES:
            raise _fail(f"unsupported dtype {dtype}: expected torch.float32, torch.bfloat16 or torch.float16")
        return _TORCH_DTYPES[dtype]
    if isinstance(dtype, str):
        key = dtype.strip().lower()
        if key.startswith("torch."):
            key = key[len("torch."):]
        if key in _DTYPES:
            return _DTYPES[key]
    raise _fail(f"unknown dtype {dtype!r}: expected 'auto', 'float32', 'bfloat16', 'float16' or a torch.dtype")


def _normalize_device(device: Union[str, torch.device, None]) -> str:
    if device is None:
        return "cpu"
    if isinstance(device, torch.device):
        if device.type == "cpu":
            return "cpu"
        if device.type == "cuda":
            return "cuda" if device.index is None else f"cuda:{device.index}"
        raise _fail(f"unsupported device {device}: expected cpu or cuda")
    if isinstance(device, str):
        d = device.strip().lower()
        if d == "cpu" or d == "cuda":
            return d
        if d.startswith("cuda:") and d[5:].isdigit():
            return d
    raise _fail(f"unknown device {device!r}: expected 'cpu', 'cuda', 'cuda:N' or a torch.device")


# Type conversion only: the value rules (ranges, multiples of 32, ...) are the C++ request
# validation's (GenerateRequest.validate), which every call runs before any work.
def _check_int(name: str, value: Any) -> int:
    # bool is an int subclass; True as a step count is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(f"{name} must be an integer, got {type(value).__name__}")
    if not -2**63 <= value < 2**63:
        raise _fail(f"{name} is out of range: {value}")
    return int(value)


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(f"{name} must be a str, got {type(value).__name__}")
    return value


def _schedule_list(name: str, value: Any) -> List[float]:
    """A custom schedule (diffusers' `timesteps` / `sigmas`: a list, array or 1-D tensor of real
    numbers) as floats; their ranges are the C++ request's rule."""
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise _fail(f"{name} must be a sequence of numbers: {e}") from None
    if t.dtype.is_complex or t.dtype == torch.bool or t.dim() != 1 or t.numel() == 0:
        raise _fail(f"{name} must be a non-empty 1-D sequence of real numbers, got {type(value).__name__} "
                    f"of shape {list(t.shape)} and dtype {t.dtype}")
    return t.detach().cpu().to(torch.float64).tolist()


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _normalize_components(components: Optional[Dict[str, Dict[str, Any]]]) -> Dict[str, Dict[str, str]]:
    if components is None:
        return {}
    if not isinstance(components, dict):
        raise _fail(f"components must be a dict {{folder: {{key: value}}}}, got {type(components).__name__}")
    out: Dict[str, Dict[str, str]] = {}
    for folder, fields in components.items():
        if not isinstance(folder, str) or not isinstance(fields, dict):
            raise _fail("components must map folder names to dicts of device / dtype / residency")
        conv = {"device": _normalize_device, "dtype": _normalize_dtype, "residency": lambda v: _check_str("residency", v)}
        out[folder] = {}
        for key, value in fields.items():
            if key not in conv:
                raise _fail(f"components[{folder!r}]: unknown key {key!r} (expected device, dtype, residency)")
            out[folder][key] = conv[key](value)
    return out


def _diffusers_load_names(dtype: Any, device: Any, components: Optional[Dict[str, Dict[str, Any]]],
                          torch_dtype: Any, device_map: Any) -> Tuple[Any, Any, Optional[Dict[str, Dict[str, Any]]]]:
    """diffusers' from_pretrained names, torch_dtype= and device_map=, as dtype / device /
    components. A dict torch_dtype is diffusers' per-component form: its "default" (float32 where
    none is given, as diffusers) for every component, the others' own as components overrides."""
    if torch_dtype is not None:
        if dtype != "auto":
            raise _fail("give dtype or torch_dtype (diffusers' name for it), not both")
        dtype = torch_dtype
        if isinstance(torch_dtype, dict):
            dtype = torch_dtype.get("default", torch.float32)
            components = {f: dict(v) if isinstance(v, dict) else v for f, v in (components or {}).items()}
            for folder, value in torch_dtype.items():
                if folder == "default":
                    continue
                if "dtype" in components.get(folder, {}):
                    raise _fail(f"the dtype of {folder!r} is given in both torch_dtype and components")
                components.setdefault(folder, {})["dtype"] = value
    if device_map is not None:
        if device != "cpu":
            raise _fail("give device or device_map (diffusers' name for it), not both")
        if not isinstance(device_map, (str, torch.device)) or str(device_map) in ("balanced", "auto"):
            raise _fail(f"device_map {device_map!r}: glmimage takes one device (\"cpu\", \"cuda\", \"cuda:N\"); "
                        f"components={{folder: {{\"device\": ...}}}} places a component elsewhere")
        device = device_map
    return dtype, device, components


_DTYPE_OF_NAME = {name: dtype for dtype, name in _TORCH_DTYPES.items()}


def _copy_load_args(load: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if load is None:
        return None
    return {**load, "components": {folder: dict(fields) for folder, fields in load["components"].items()}}


def _to_arguments(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Any, Any]:
    """(dtype, device) from diffusers' to() arguments, read as diffusers reads them (each None when
    not given)."""
    dtype, device = kwargs.pop("dtype", None), kwargs.pop("device", None)
    kwargs.pop("silence_dtype_warnings", None)
    if kwargs:
        raise _fail(f"to() got unexpected keyword arguments: {', '.join(sorted(kwargs))}")
    dtype_arg = device_arg = None
    if len(args) == 1:
        if isinstance(args[0], torch.dtype):
            dtype_arg = args[0]
        else:
            device_arg = args[0]
    elif len(args) == 2:
        if isinstance(args[0], torch.dtype):
            raise _fail("to(): with two arguments the first is the device and the second the dtype")
        device_arg, dtype_arg = args
    elif len(args) > 2:
        raise _fail("to() takes at most two arguments (device and dtype)")
    if dtype is not None and dtype_arg is not None:
        raise _fail("to(): dtype given both as an argument and as a keyword")
    if device is not None and device_arg is not None:
        raise _fail("to(): device given both as an argument and as a keyword")
    dtype = dtype if dtype is not None else dtype_arg
    device = device if device is not None else device_arg
    if isinstance(dtype, str) and dtype.strip().lower() == "auto":
        raise _fail("to(): dtype 'auto' names no dtype")
    return dtype, device


def _check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise _fail(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_model_dir(path: Union[str, os.PathLike]) -> str:
    # The checkpoint's own checks (missing folders, model_index.json) are the C++ loader's.
    try:
        return os.fspath(path)
    except TypeError:
        raise _fail(f"model path must be a str or os.PathLike, got {type(path).__name__}") from None


# ---------------------------------------------------------------------------------------------
# Images


def _to_rgb_array(img: Any, what: str) -> np.ndarray:
    """One condition image -> a C-contiguous uint8 [H, W, 3] array."""
    from PIL import Image as PILImage

    if isinstance(img, (str, os.PathLike)):
        import stat

        # A FIFO or device would block PIL's open() forever (or read without end): refused first.
        try:
            mode = os.stat(img).st_mode
        except OSError as e:
            raise _fail(f"{what}: cannot read image file '{os.fspath(img)}': {e.strerror}") from None
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise _fail(f"{what}: image file '{os.fspath(img)}' is {kind}")
        try:
            with PILImage.open(img) as opened:
                opened.load()
                img = opened.copy()
        except Exception as e:  # PIL raises several types for unreadable files
            raise _fail(f"{what}: cannot read image file '{os.fspath(img)}': {e}") from None
    if isinstance(img, PILImage.Image):
        if img.width <= 0 or img.height <= 0:
            raise _fail(f"{what}: empty image ({img.width}x{img.height})")
        try:
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            arr = np.asarray(rgb, dtype=np.uint8)
        except Exception as e:  # lazily opened files fail only here when truncated or corrupt
            raise _fail(f"{what}: cannot read image: {e}") from None
    elif isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise _fail(f"{what}: numpy images must be uint8 [H, W, 3], got dtype {img.dtype}")
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)  # grayscale, as PIL's convert("RGB") would
        if img.ndim != 3 or img.shape[2] != 3:
            raise _fail(f"{what}: numpy images must have shape [H, W, 3], got {list(img.shape)}")
        arr = img
    else:
        raise _fail(f"{what}: expected a PIL.Image, a uint8 numpy array [H, W, 3] or a file path, "
                    f"got {type(img).__name__}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise _fail(f"{what}: empty image ({arr.shape[1]}x{arr.shape[0]})")
    return np.ascontiguousarray(arr)


def _is_single_image(x: Any) -> bool:
    from PIL import Image as PILImage

    return isinstance(x, (PILImage.Image, str, os.PathLike)) or (isinstance(x, np.ndarray) and x.ndim in (2, 3))


def _normalize_images(image: Any, batch_size: int) -> Optional[List[List[np.ndarray]]]:
    """The forms diffusers' GlmImagePipeline._validate_and_normalize_images accepts, plus a single
    image and a 4-D numpy batch, -> one list of uint8 arrays per prompt."""
    if image is None:
        return None
    if _is_single_image(image):
        image = [image]
    elif isinstance(image, np.ndarray) and image.ndim == 4:
        image = list(image)
    elif not isinstance(image, (list, tuple)):
        raise _fail(f"image: expected a PIL.Image, a numpy array, or a list of them, got {type(image).__name__}")
    if len(image) == 0:
        return None
    first = image[0]
    if batch_size == 1:
        if not isinstance(first, (list, tuple)):
            nested = [list(image)]
        elif len(image) != 1:
            raise _fail(f"for one prompt with a list of image lists, expected 1 image list, got {len(image)}")
        else:
            nested = [list(first)]
    else:
        if not isinstance(first, (list, tuple)):
            raise _fail(f"for {batch_size} prompts, image must be a list of image lists (one list per prompt), "
                        f"got a list of {type(first).__name__}")
        if len(image) != batch_size:
            raise _fail(f"number of image lists ({len(image)}) must match the number of prompts ({batch_size})")
        for i, imgs in enumerate(image):
            if not isinstance(imgs, (list, tuple)):
                raise _fail(f"image[{i}]: expected a list of images, got {type(imgs).__name__}")
            if len(imgs) != len(first):
                raise _fail(f"every prompt needs the same number of condition images: prompt 0 has {len(first)}, "
                            f"prompt {i} has {len(imgs)}")
        nested = [list(imgs) for imgs in image]
    if any(len(imgs) == 0 for imgs in nested):
        raise _fail("image: an empty list of condition images; pass image=None for text-to-image")
    return [[_to_rgb_array(img, f"image[{i}][{j}]") for j, img in enumerate(imgs)] for i, imgs in enumerate(nested)]


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class PriorTokenOutput:
    """What the autoregressive stage produced; feed it back as ``pipe(..., prior_token_ids=...)``.

    Unpacks like diffusers' ``generate_prior_tokens`` tuple:
    ``ids, image_ids, grid_thw = pipe.generate_prior_tokens(...)``, and those three passed as
    ``pipe(..., prior_token_ids=ids, prior_token_image_ids=image_ids, source_image_grid_thw=grid_thw)``
    decode as in diffusers.
    """

    prior_token_ids: torch.Tensor  # [num_prompts, (height/16) * (width/16)] int64
    # Per prompt, per condition image: its 1-D VQ ids (upsampled 2x); None for text-to-image.
    # (diffusers gives one tensor per prompt, the images' ids concatenated; both forms are taken.)
    prior_token_image_ids: Optional[List[List[torch.Tensor]]]
    # Per prompt: [images, 3] int64, each condition image's (1, rows, columns) of those ids, as
    # diffusers' source_image_grid_thw; None for text-to-image.
    source_image_grid_thw: Optional[List[torch.Tensor]]
    height: int
    width: int
    native: _C.PriorTokens = field(repr=False)

    def __iter__(self):
        return iter((self.prior_token_ids, self.prior_token_image_ids, self.source_image_grid_thw))

    def to(self, device: torch.device) -> "PriorTokenOutput":
        """The same tokens with their tensors on ``device``."""
        if device.type == "cpu":
            return self
        image_ids, grids = self.prior_token_image_ids, self.source_image_grid_thw
        return PriorTokenOutput(self.prior_token_ids.to(device),
                                None if image_ids is None else [[t.to(device) for t in p] for p in image_ids],
                                None if grids is None else [t.to(device) for t in grids],
                                self.height, self.width, self.native)

    @property
    def ar_decode(self) -> str:
        """The AR decode path that produced them: "graph", "static" or "eager" (``ar_decode`` of
        ``from_pretrained``; "static (CUDA graph capture failed: ...)" where "auto" fell back)."""
        return self.native.ar_decode


@dataclass
class PipelineOutput:
    """Like diffusers' ``GlmImagePipelineOutput``: ``images`` plus what produced them."""

    images: Any  # as diffusers' output_type: "pil" a list of PIL.Image; "np" float32 [N, H, W, 3]
                 # in [0, 1] (numpy); "pt" the same values [N, 3, H, W] in the VAE's dtype (torch,
                 # CPU); "latent" the float32 latents [N, C, H / 8, W / 8] (torch, CPU)
    prior_token_ids: torch.Tensor        # [num_prompts, S]; shared by a prompt's images
    prior_token_image_ids: Optional[List[List[torch.Tensor]]]
    timings: Dict[str, Any]              # seconds per stage; "ar_decode": the AR decode path that ran;
                                         # "cfg": how the CFG passes ran ("joint", "apart" or "none");
                                         # "dit_passes", "dit_passes_cached": the denoising loop's DiT
                                         # passes and those the first-block cache served


def _prior_output(native: _C.PriorTokens, height: int, width: int) -> PriorTokenOutput:
    ids = torch.tensor(native.ids, dtype=torch.int64)
    cond = native.condition_ids
    image_ids = ([[torch.tensor(c, dtype=torch.int64) for c in per_prompt] for per_prompt in cond]
                 if any(len(p) for p in cond) else None)
    grids = native.condition_grids
    grid_thw = ([torch.tensor([[1, rows, cols] for rows, cols in per_prompt], dtype=torch.int64).reshape(-1, 3)
                 for per_prompt in grids] if any(len(p) for p in grids) else None)
    return PriorTokenOutput(ids, image_ids, grid_thw, height, width, native)


def _ids_list(name: str, value: Any) -> List[int]:
    t = torch.as_tensor(value)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise _fail(f"{name} must hold integer token ids, got dtype {t.dtype}")
    t = t.detach().cpu().to(torch.int64).reshape(-1)
    if t.numel() and int(t.min()) < 0:
        raise _fail(f"{name} holds negative token ids")
    return t.tolist()


# ---------------------------------------------------------------------------------------------
# Progress


class _Progress:
    """The one Python callable the C++ progress hook calls: the user's callback and/or tqdm bars."""

    def __init__(self, callback: Optional[ProgressFn], show: bool, bar_config: Dict[str, Any]):
        self.callback = callback
        self.tqdm = None
        self.bar_config = {k: v for k, v in bar_config.items() if k != "disable"}
        if show and not bar_config.get("disable", False):
            try:
                from tqdm.auto import tqdm

                self.tqdm = tqdm
            except ImportError:  # tqdm is optional
                pass
        self.bar = None
        self.stage = None

    def __call__(self, stage: str, step: int, total: int) -> None:
        if self.tqdm is not None:
            if stage != self.stage:
                self.close()
                self.stage = stage
                desc = {"ar": "tokens", "denoise": "denoise"}.get(stage, stage)
                self.bar = self.tqdm(total=total, **{"desc": desc, "leave": False, **self.bar_config})
            if self.bar is not None and step > self.bar.n:
                self.bar.update(step - self.bar.n)
        if self.callback is not None:
            self.callback(stage, step, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# The names diffusers' GlmImage DiT block already passes its attention processor: given again in
# attention_kwargs, diffusers fails on them (a keyword given twice).
_ATTENTION_ARGUMENTS = ("attention_mask", "image_rotary_emb", "kv_cache")


def _check_attention_kwargs(kwargs: Any) -> None:
    """diffusers' ``attention_kwargs``: its DiT hands them to its attention processor, and the
    pipeline's own (GlmImageAttnProcessor) takes none of them: diffusers warns that they are
    ignored and gives the same images. glmimage's attention is that processor's, so it does too."""
    if kwargs is None:
        return
    if not isinstance(kwargs, dict):
        raise _fail(f"attention_kwargs must be a dict or None, got {type(kwargs).__name__}")
    clash = [k for k in _ATTENTION_ARGUMENTS if k in kwargs]
    if clash:
        raise _fail(f"attention_kwargs {clash}: the DiT passes these to its attention itself (diffusers fails "
                    f"on them too)")
    if kwargs:
        warnings.warn(f"attention_kwargs {sorted(kwargs)} are not used by the DiT's attention and are ignored "
                      f"(as diffusers' GlmImageAttnProcessor ignores them)", stacklevel=3)


def _float32_values(t: torch.Tensor) -> np.ndarray:
    """A caller's floating-point tensor as float32 values on the CPU, flat, for the C++ request
    (exact for bf16 and fp16: float32 holds each of their values)."""
    return t.detach().to("cpu", torch.float32).contiguous().numpy().reshape(-1)


class _StepEnd:
    """diffusers' ``callback_on_step_end(pipe, i, t, callback_kwargs)`` as the C++ step hook:
    ``t`` is the step's sigma (what diffusers' GlmImagePipeline passes, ``scheduler.sigmas[i]``),
    ``callback_kwargs["latents"]`` the float32 latents after the step (on the CPU, sharing the
    values the next step starts from: changed in place or returned in the dict, they replace
    them); ``pipe._interrupt = True`` ends the denoising there, the images decoded from them;
    ``pipe._guidance_scale`` set to another value guides the steps after with it, as diffusers'
    loop reads it at every step (at or below 1: the conditional pass alone). While it runs
    ``pipe.current_timestep`` is the step's timestep, as in diffusers' loop."""

    def __init__(self, pipe: "Pipeline", fn: Callable[..., Any], tensor_inputs: List[str]):
        self.pipe, self.fn, self.tensor_inputs = pipe, fn, tensor_inputs

    @staticmethod
    def make(pipe: "Pipeline", fn: Any, tensor_inputs: Any) -> Optional["_StepEnd"]:
        if fn is None:
            return None
        if not callable(fn):
            raise _fail(f"callback_on_step_end must be callable (pipe, step, t, callback_kwargs), got "
                        f"{type(fn).__name__}")
        # diffusers' PipelineCallback / MultiPipelineCallbacks name their own inputs.
        inputs = getattr(fn, "tensor_inputs", tensor_inputs)
        if isinstance(inputs, str) or not all(isinstance(k, str) for k in inputs):
            raise _fail(f"callback_on_step_end_tensor_inputs must be a list of names, got {inputs!r}")
        other = [k for k in inputs if k != "latents"]
        if other:
            raise _fail(f"callback_on_step_end_tensor_inputs: glmimage hands the callback 'latents' only "
                        f"(not {other})")
        return _StepEnd(pipe, fn, list(inputs))

    def __call__(self, step: int, total: int, sigma: float, timestep: float, guidance: float,
                 latents: np.ndarray) -> Tuple[np.ndarray, bool, float]:
        given = torch.from_numpy(latents)
        kwargs = {"latents": given} if "latents" in self.tensor_inputs else {}
        self.pipe._current_timestep = torch.tensor(timestep, dtype=torch.float32)
        out = self.fn(self.pipe, step, torch.tensor(sigma, dtype=torch.float32), kwargs)
        guidance = self.pipe._guidance_scale  # the callback may have set it (its thread's value)
        if isinstance(guidance, torch.Tensor) and guidance.numel() == 1:
            guidance = guidance.item()
        guidance = _check_float("pipe._guidance_scale (set by callback_on_step_end)", guidance)
        if not isinstance(out, dict):
            raise _fail(f"callback_on_step_end must return a dict (its callback_kwargs), got {type(out).__name__}")
        unknown = [k for k in ("prompt_embeds", "negative_prompt_embeds") if k in out]
        if unknown:
            raise _fail(f"callback_on_step_end returned {unknown}: glmimage takes back 'latents' only")
        back = out.get("latents", given)
        if not isinstance(back, (torch.Tensor, np.ndarray)):
            raise _fail(f"callback_on_step_end returned latents of type {type(back).__name__}, not a tensor")
        back = torch.as_tensor(back)
        if tuple(back.shape) != tuple(latents.shape) or not back.is_floating_point():
            raise _fail(f"callback_on_step_end returned latents of shape {list(back.shape)} and dtype {back.dtype}; "
                        f"expected floating-point values of shape {list(latents.shape)}")
        if back is not given:
            latents = _float32_values(back).reshape(latents.shape)
        return latents, bool(self.pipe._interrupt), guidance


# ---------------------------------------------------------------------------------------------
# The pipeline


class _PerThread:
    """diffusers' call-time attributes (``pipe._interrupt``, ``pipe._guidance_scale``, ...) with one
    value per thread: a call and its step-end callback run in the calling thread, and a call on the
    same pipeline from another thread (queued behind it) must neither see nor change its values (a
    guidance set at its start would otherwise guide the running call's later steps)."""

    def __init__(self, default: Any):
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return getattr(obj._call_state, self.name, self.default)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj._call_state, self.name, value)


class Pipeline(_C.Pipeline):
    """GLM-Image text-to-image and image-to-image, with diffusers' ``GlmImagePipeline`` arguments.

    Subclasses the native pipeline, so ``components``, ``summary()`` and ``cancel()`` come from C++.
    Calls on one pipeline run one at a time: a call from a second thread waits for the first.
    ``new_session()`` gives another pipeline over the same loaded weights (no copy) whose calls
    run concurrently with this one's. ``cancel()`` may be called from any thread or from the
    progress callback; it stops this pipeline's running call, or its next one if none runs.
    """

    _interrupt = _PerThread(False)
    _guidance_scale = _PerThread(0.0)
    _current_timestep = _PerThread(None)
    _num_timesteps = _PerThread(0)
    _attention_kwargs = _PerThread(None)

    def __init__(self, path: Union[str, os.PathLike, "Pipeline"], dtype: Union[str, torch.dtype, None] = "auto",
                 device: Union[str, torch.device, None] = "cpu", residency: str = "resident",
                 components: Optional[Dict[str, Dict[str, Any]]] = None, quantize: Optional[str] = None,
                 ar_decode: str = "auto", cfg_passes: str = "auto", cpu_block_cache: bool = True):
        self._placing = threading.Lock()  # one to() / enable_model_cpu_offload() at a time
        self._call_state = threading.local()  # the _PerThread attributes' values
        try:
            if isinstance(path, _C.Pipeline):
                super().__init__(path)  # shares the loaded weights
                # how they were loaded, for to(); a native pipeline's is unknown
                self._load_args: Optional[Dict[str, Any]] = _copy_load_args(getattr(path, "_load_args", None))
                return
            load = dict(path=_check_model_dir(path), dtype=_normalize_dtype(dtype), device=_normalize_device(device),
                        residency=_check_str("residency", residency), components=_normalize_components(components),
                        quantize="none" if quantize is None else _check_str("quantize", quantize),
                        ar_decode=_check_str("ar_decode", ar_decode), cfg_passes=_check_str("cfg_passes", cfg_passes),
                        cpu_block_cache=_check_bool("cpu_block_cache", cpu_block_cache))
            super().__init__(**load)
            self._load_args = load
        except BaseException:
            # A failed load leaves this instance without its C++ pipeline, and pybind11 would hand
            # any method raw memory in its place: the repr that pytest, debuggers and rich
            # tracebacks make of the traceback's locals crashed the process. Only this frame holds
            # the instance, so drop it from the frame before the error travels up.
            del self
            raise

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], dtype: Union[str, torch.dtype, None] = "auto",
                        device: Union[str, torch.device, None] = "cpu", residency: str = "resident",
                        components: Optional[Dict[str, Dict[str, Any]]] = None,
                        quantize: Optional[str] = None, ar_decode: str = "auto", cfg_passes: str = "auto",
                        cpu_block_cache: bool = True, torch_dtype: Any = None, device_map: Any = None) -> "Pipeline":
        """Loads a local GLM-Image checkpoint directory (diffusers layout, e.g. ``zai-org/GLM-Image``).

        dtype: "auto" (the checkpoint's), "float32", "bfloat16", "float16" or a torch.dtype.
        device: "cpu", "cuda", "cuda:N" or a torch.device.
        residency: "resident" (every component on its device from load on) or "staged" (weights
        stay in the memory-mapped files and each component is placed on its device only while its
        stage runs, as diffusers' ``enable_model_cpu_offload``; identical images, less memory).
        components: per-component overrides, e.g. ``{"vae": {"dtype": "float32"}}``; folders
        "vision_language_encoder", "text_encoder", "transformer", "vae"; keys device, dtype, residency.
        quantize: None, "int8" or "fp8", for the AR text decoder's and the DiT's linear layers,
        quantized at load: "int8" weight-only, per output channel (half the weight bytes of bf16);
        "fp8" e4m3 weights (per output channel) and inputs (per row, at each call) through the
        row-wise scaled matmul (Hopper GPUs, and CPUs where LibTorch has the kernel).
        ar_decode: how the AR model runs its decode steps, the tokens the same every way: "auto"
        ("graph" on a CUDA device when the build has CUDA, else "eager"), "eager", "static" (one
        fixed-shape step over the whole KV cache, run eagerly) or "graph" (that step captured once
        per generation as a CUDA graph and replayed per token). The path that ran is in the
        timings, key "ar_decode".
        cfg_passes: how guidance's conditional and unconditional DiT passes run: "joint" (one
        forward over both: fewer weight reads and kernel launches), "apart" (two, as diffusers) or
        "auto" (joint on a CUDA device, and on the CPU where the DiT's products are float32 GEMMs:
        float32, or bf16 on a CPU without oneDNN bf16 kernels; apart where oneDNN's bf16 kernels
        run, which may compute the doubled row count with other kernels, moving bf16 images from
        diffusers'). The way that ran is in the timings, key "cfg" ("joint", "apart" or "none").
        cpu_block_cache: each generation reuses its large CPU blocks (1 MiB and more) instead of
        taking fresh pages from the kernel for every activation (a DiT step at 1024² on a CPU: 66.9 s
        against 80.5 s, same bits); up to 4 GiB of freed blocks are held while a generation runs, a
        stage's given back where the next stage begins (the AR stage, the condition images'
        encoding, the denoising loop), the rest when it ends. False: every block is new.
        torch_dtype, device_map: diffusers' names for dtype and device, so that its call
        ``from_pretrained(path, torch_dtype=torch.bfloat16, device_map="cuda")`` loads the same way;
        a dict torch_dtype (``{"transformer": torch.bfloat16, "default": torch.float32}``) sets each
        component's dtype as diffusers does (float32 for those it does not name and no "default").
        CPU threads are a process setting: ``glmimage.set_num_threads(n)``.
        """
        dtype, device, components = _diffusers_load_names(dtype, device, components, torch_dtype, device_map)
        return cls(path, dtype=dtype, device=device, residency=residency, components=components, quantize=quantize,
                   ar_decode=ar_decode, cfg_passes=cfg_passes, cpu_block_cache=cpu_block_cache)

    @property
    def sampling_defaults(self) -> Dict[str, Any]:
        """What unset temperature / top_p / top_k resolve to for this checkpoint, and from where."""
        d = self._sampling_defaults()
        return {"temperature": d.temperature, "top_p": d.top_p, "top_k": d.top_k,
                "source": self._sampling_defaults_source()}

    def new_session(self) -> "Pipeline":
        """Another pipeline over the same loaded weights (no second copy), with its own calls and cancel."""
        return type(self)(self)

    # -- placement after load (diffusers' to() and enable_model_cpu_offload()) -------------------

    def to(self, *args: Any, **kwargs: Any) -> "Pipeline":
        """diffusers' ``pipe.to(device)``, ``pipe.to(dtype)``, ``pipe.to(device, dtype)`` (or
        ``device=`` / ``dtype=``, and its ``silence_dtype_warnings=``, which changes nothing here):
        every component on that device and / or computing in that dtype (per-component overrides of
        that setting dropped; residency and quantization kept). Returns the pipeline itself,
        unchanged where every component is placed so already.

        The checkpoint is loaded again with the new placement and the pipeline's calls run on it from
        then on (a running call finishes on the old weights, freed when it ends; pipelines made
        earlier by ``new_session()`` keep them). So the weights come from the files: where the
        checkpoint holds more precision than the old dtype (a float32 checkpoint loaded in bf16, then
        ``to(torch.float32)``), the new weights have it, whereas diffusers' cast keeps the old
        rounding; the published checkpoint is bf16, so there the two agree. While it loads both
        placements are held. A failed load (no CUDA, no memory) raises and leaves the pipeline as it was.
        """
        dtype, device = _to_arguments(args, kwargs)
        with self._placing:
            load = self._placement_base("to")
            if dtype is not None:
                load["dtype"] = _normalize_dtype(dtype)
            if device is not None:
                load["device"] = _normalize_device(device)
            for fields in load["components"].values():
                for key, value in (("dtype", dtype), ("device", device)):
                    if value is not None:
                        fields.pop(key, None)
            if not self._placed_as(dtype=load["dtype"] if dtype is not None else None,
                                   device=load["device"] if device is not None else None):
                self._load_again(load)
        return self

    def enable_model_cpu_offload(self, gpu_id: Optional[int] = None,
                                 device: Union[str, torch.device, None] = None) -> None:
        """diffusers' ``enable_model_cpu_offload``: every component rests off the device and is placed
        on it only while its stage runs: glmimage's ``residency="staged"`` (its weights stay in the
        memory-mapped files; the same images). ``device`` (default: the pipeline's own accelerator,
        else CUDA where torch sees one, else a RuntimeError as diffusers raises) and ``gpu_id`` as
        diffusers takes them; ``device="cpu"`` stages on the CPU (the weights are read from the files
        for each stage: the least memory there). The checkpoint is loaded again, as for ``to()``."""
        with self._placing:
            load = self._placement_base("enable_model_cpu_offload")
            if device is None:
                own = self.device
                if own.type != "cpu":
                    device = own.type
                elif torch.cuda.is_available():
                    device = "cuda"
                else:
                    raise RuntimeError("enable_model_cpu_offload requires an accelerator, but none was found "
                                       "(device=\"cpu\" stages the components on the CPU)")
            try:
                target = torch.device(device)
            except (RuntimeError, TypeError) as e:
                raise _fail(f"enable_model_cpu_offload: device {device!r}: {e}") from None
            if gpu_id is not None:
                gpu_id = _check_int("gpu_id", gpu_id)
                if target.index is not None:
                    raise _fail(f"enable_model_cpu_offload: gpu_id={gpu_id} and the index of device={device!r} "
                                f"both given: give one")
            index = gpu_id if gpu_id is not None else (target.index or 0)
            load["device"] = "cpu" if target.type == "cpu" else _normalize_device(f"{target.type}:{index}")
            load["residency"] = "staged"
            for fields in load["components"].values():
                fields.pop("device", None)
                fields.pop("residency", None)
            if not (self._placed_as(dtype=None, device=load["device"])
                    and all(c.residency == "staged" for c in self.components)):
                self._load_again(load)

    def enable_sequential_cpu_offload(self, *args: Any, **kwargs: Any) -> None:
        """diffusers' per-layer offload has no counterpart here: a NotImplementedError that names the
        nearest one, rather than an AttributeError."""
        raise NotImplementedError("glmimage places whole components, not single layers: "
                                  "enable_model_cpu_offload() (residency=\"staged\") is the nearest, "
                                  "with quantize=\"int8\" or \"fp8\" for less device memory")

    def _placement_base(self, what: str) -> Dict[str, Any]:
        load = _copy_load_args(self._load_args)
        if load is None:
            raise _fail(f"{what}: this pipeline was not loaded through glmimage.Pipeline, so how to load it "
                        f"again is unknown")
        return load

    def _placed_as(self, dtype: Optional[str], device: Optional[str]) -> bool:
        """Whether every component already computes in `dtype` and on `device` (None: any)."""
        def same_device(have: str) -> bool:
            a, b = torch.device(have), torch.device(device)
            return a.type == b.type and (a.index or 0) == (b.index or 0)
        return all((dtype is None or _WEIGHT_DTYPES[c.dtype] == _DTYPE_OF_NAME[dtype])
                   and (device is None or same_device(c.device)) for c in self.components)

    def _load_again(self, load: Dict[str, Any]) -> None:
        fresh = _C.Pipeline(**load)  # raises before anything here changes
        self._replace_model(fresh)
        self._load_args = load

    # -- request building ----------------------------------------------------------------------

    @staticmethod
    def _prompts(prompt: Any) -> List[str]:
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, (list, tuple)):
            prompts = list(prompt)
            if not prompts:
                raise _fail("prompt: an empty list; give at least one prompt")
        else:
            raise _fail(f"prompt must be a str or a list of str, got {type(prompt).__name__}")
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise _fail(f"prompt[{i}] must be a str, got {type(p).__name__}")
            if not p.strip():
                raise _fail(f"prompt[{i}] is empty" if len(prompts) > 1 else "prompt is empty")
        return prompts

    @staticmethod
    def _seed(generator: Any, seed: Any) -> int:
        if generator is not None and seed is not None:
            raise _fail("give either generator or seed, not both")
        if isinstance(generator, (list, tuple)):
            # diffusers takes the first generator for the AR stage; one seed drives everything here.
            if not generator:
                raise _fail("generator: an empty list")
            generator = generator[0]
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise _fail(f"generator must be a torch.Generator, got {type(generator).__name__}")
            return int(generator.initial_seed())
        if seed is None:
            # Like diffusers without a generator: follow torch's global RNG, so torch.manual_seed()
            # makes runs repeatable.
            return int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise _fail(f"seed must be an integer, got {type(seed).__name__}")
        if not 0 <= seed < 2**64:  # the C++ seed is a uint64
            raise _fail(f"seed must be >= 0 and < 2**64, got {seed}")
        return int(seed)

    def _request(self, prompt: Any, image: Any, height: Any, width: Any, num_inference_steps: Any,
                 guidance_scale: Any, num_images_per_prompt: Any, generator: Any, seed: Any, do_sample: Any,
                 temperature: Any, top_p: Any, top_k: Any, max_sequence_length: Any,
                 timestep_label: str, keep_in_codebook: Any = True,
                 first_block_cache: Any = 0.0, timesteps: Any = None, sigmas: Any = None,
                 latents: Any = None, crops_coords_top_left: Any = (0, 0), prompt_embeds: Any = None,
                 negative_prompt_embeds: Any = None) -> _C.GenerateRequest:
        # diffusers takes prompt_embeds without a prompt (the decoder then needs no prompt).
        prompts = [] if prompt is None and prompt_embeds is not None else self._prompts(prompt)
        height = _check_int("height", height)
        width = _check_int("width", width)
        steps = _check_int("num_inference_steps", num_inference_steps)
        # As diffusers: custom timesteps set the step count; custom sigmas alone need one per step.
        timesteps = None if timesteps is None else _schedule_list("timesteps", timesteps)
        sigmas = None if sigmas is None else _schedule_list("sigmas", sigmas)
        if timesteps is not None:
            steps = len(timesteps)
        guidance = _check_float("guidance_scale", guidance_scale)
        per_prompt = _check_int("num_images_per_prompt", num_images_per_prompt)
        if not isinstance(do_sample, (bool, np.bool_)):
            raise _fail(f"do_sample must be a bool, got {type(do_sample).__name__}")
        # None: the checkpoint's generation_config.json value (transformers' default where it is silent).
        temperature = None if temperature is None else _check_float("temperature", temperature)
        top_p = None if top_p is None else _check_float("top_p", top_p)
        top_k = None if top_k is None else _check_int("top_k", top_k)

        req = _C.GenerateRequest()
        req.prompts = prompts
        req.height, req.width = height, width
        req.steps = steps
        req.guidance = guidance
        req.seed = self._seed(generator, seed)
        req.images_per_prompt = per_prompt
        ar = _C.ArSettings()
        ar.do_sample, ar.temperature, ar.top_p, ar.top_k = bool(do_sample), temperature, top_p, top_k
        if not isinstance(keep_in_codebook, (bool, np.bool_)):
            raise _fail(f"keep_in_codebook must be a bool, got {type(keep_in_codebook).__name__}")
        ar.keep_in_codebook = bool(keep_in_codebook)
        req.ar = ar
        req.max_sequence_length = _check_int("max_sequence_length", max_sequence_length)
        req.timestep_label = _check_str("timestep_label", timestep_label)
        req.first_block_cache = _check_float("first_block_cache", first_block_cache)
        req.timesteps = timesteps or []
        req.sigmas = sigmas or []
        if not isinstance(crops_coords_top_left, (tuple, list)) or len(crops_coords_top_left) != 2:
            raise _fail(f"crops_coords_top_left must be a (top, left) pair, got {crops_coords_top_left!r}")
        req.crop_top = _check_int("crops_coords_top_left[0]", crops_coords_top_left[0])
        req.crop_left = _check_int("crops_coords_top_left[1]", crops_coords_top_left[1])
        if latents is not None:
            if not isinstance(latents, (torch.Tensor, np.ndarray)):
                raise _fail(f"latents must be a tensor or array, got {type(latents).__name__}")
            t = torch.as_tensor(latents)
            if not t.dtype.is_floating_point:
                raise _fail(f"latents must hold floating-point values, got dtype {t.dtype}")
            # float32 holds every value of bf16, fp16 and float32 exactly (the loop's dtype for them).
            if t.dtype == torch.float64:
                raise _fail("latents must be float32, bfloat16 or float16 (diffusers' loop keeps them in that dtype)")
            req.latents_shape = list(t.shape)
            req.latents = _float32_values(t)
        for name, value in (("prompt_embeds", prompt_embeds), ("negative_prompt_embeds", negative_prompt_embeds)):
            if value is not None:
                shape, values = self._glyph_embeds(name, value)
                setattr(req, name + "_shape", shape)
                setattr(req, name, values)
        images = _normalize_images(image, req.num_prompts())
        if images is not None:
            req.set_images(images)
        self._validate(req)  # the request's rules, in C++, before anything else uses it
        return req

    def _glyph_embeds(self, name: str, value: Any) -> Tuple[List[int], np.ndarray]:
        """diffusers' prompt_embeds / negative_prompt_embeds -> (shape, float32 values). They must
        be in the DiT's dtype: diffusers draws its noise in their dtype and its DiT fails on
        another, so a mismatch is an error here rather than other images."""
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            raise _fail(f"{name} must be a tensor or array, got {type(value).__name__}")
        t = torch.as_tensor(value)
        want = self._compute_dtype("transformer")
        if t.dtype != want:
            raise _fail(f"{name} must be in the DiT's dtype {want} (as in diffusers, whose DiT takes them as they "
                        f"are), got {t.dtype}")
        return list(t.shape), _float32_values(t)

    def _native_prior(self, req: _C.GenerateRequest, prior_token_ids: Any, prior_token_image_ids: Any,
                      source_image_grid_thw: Any) -> _C.PriorTokens:
        n = req.num_prompts()
        gh, gw = req.height // 32, req.width // 32
        if isinstance(prior_token_ids, PriorTokenOutput):
            if (prior_token_ids.height, prior_token_ids.width) != (req.height, req.width):
                raise _fail(f"prior_token_ids were generated for {prior_token_ids.height}x{prior_token_ids.width}, "
                            f"not {req.height}x{req.width}")
            if len(prior_token_ids.native.ids) != n:
                raise _fail(f"prior_token_ids hold {len(prior_token_ids.native.ids)} prompt(s), got {n} prompt(s)")
            return prior_token_ids.native
        t = torch.as_tensor(prior_token_ids)
        want = (2 * gh) * (2 * gw)
        if t.dim() == 1 and n == 1:
            t = t.unsqueeze(0)
        if t.dim() != 2 or t.shape[0] != n or t.shape[1] != want:
            raise _fail(f"prior_token_ids must have shape [{n}, {want}] for {n} prompt(s) at "
                        f"{req.height}x{req.width}, got {list(t.shape)}")
        native = _C.PriorTokens()
        native.grid_h, native.grid_w = gh, gw
        native.ids = [_ids_list("prior_token_ids", row) for row in t]
        num_images = req.num_images
        if not num_images:
            if prior_token_image_ids is not None:
                raise _fail("prior_token_image_ids given without condition images (image=...)")
            native.condition_ids = []
            return native
        if prior_token_image_ids is None or len(prior_token_image_ids) != n:
            raise _fail("image-to-image with prior_token_ids also needs prior_token_image_ids: one entry per prompt")
        cond = []
        for i, entry in enumerate(prior_token_image_ids):
            k = num_images[i]
            if isinstance(entry, (list, tuple)):
                if len(entry) != k:
                    raise _fail(f"prior_token_image_ids[{i}]: {len(entry)} tensors for {k} condition image(s)")
                cond.append([_ids_list(f"prior_token_image_ids[{i}][{j}]", e) for j, e in enumerate(entry)])
                continue
            flat = _ids_list(f"prior_token_image_ids[{i}]", entry)
            if k == 1:
                cond.append([flat])
                continue
            # diffusers' flat per-prompt form: split by the per-image grids.
            if source_image_grid_thw is None:
                raise _fail("prior_token_image_ids as one flat tensor per prompt with several condition images "
                            "needs source_image_grid_thw (or pass one tensor per image)")
            sizes = [int(s) for s in torch.as_tensor(source_image_grid_thw[i]).reshape(-1, 3).prod(dim=-1)]
            if len(sizes) != k or sum(sizes) != len(flat):
                raise _fail(f"source_image_grid_thw[{i}] does not match prior_token_image_ids[{i}]")
            parts, at = [], 0
            for s in sizes:
                parts.append(flat[at:at + s])
                at += s
            cond.append(parts)
        native.condition_ids = cond
        return native

    def _run(self, fn: Callable[..., Any], *args: Any, callback: Optional[ProgressFn], progress: bool,
             step_end: Optional[_StepEnd] = None) -> Any:
        if callback is not None and not callable(callback):
            raise _fail(f"callback must be callable (stage, step, total), got {type(callback).__name__}")
        hook = _Progress(callback, bool(progress), getattr(self, "_progress_bar_config", {}))
        self._interrupt = False  # diffusers' flag, which a step-end callback sets to stop
        try:
            extra = (step_end,) if step_end is not None else ()
            return fn(*args, hook if (callback is not None or hook.tqdm is not None) else None, *extra)
        finally:
            self._current_timestep = None  # set by _StepEnd within the loop only
            hook.close()

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """diffusers' ``set_progress_bar_config``: tqdm's arguments for the bars of the calls that
        follow (``disable=True``: no bars, as ``progress=False`` per call). Arguments tqdm does not
        take are a ValueError here, not an error in the middle of a call."""
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is optional: no bars to configure
            tqdm = None
        if tqdm is not None:
            try:  # a bar made and closed off screen, with the arguments the calls will give
                tqdm(total=0, **{**kwargs, "disable": False, "file": io.StringIO()}).close()
            except Exception as e:  # noqa: BLE001 (tqdm raises its own key and type errors)
                raise _fail(f"set_progress_bar_config: tqdm does not take these arguments: {e}") from None
        self._progress_bar_config = dict(kwargs)

    @property
    def dtype(self) -> torch.dtype:
        """diffusers' ``pipe.dtype``: the pipeline's dtype, the DiT's (latents and embeddings)."""
        return self._compute_dtype("transformer")

    @property
    def device(self) -> torch.device:
        """diffusers' ``pipe.device``: where the DiT computes."""
        return torch.device(self._component("transformer").device)

    @property
    def interrupt(self) -> bool:
        """diffusers' ``pipe.interrupt``: set ``pipe._interrupt = True`` in ``callback_on_step_end``
        to end the denoising after that step."""
        return bool(self._interrupt)

    def get_glyph_texts(self, prompt: Union[str, List[str]]) -> List[List[str]]:
        """diffusers' ``get_glyph_texts``: per prompt, the quoted texts the decoder renders through
        the glyph encoder ('...', then “...”, then "...", then 「...」)."""
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            raise _fail(f"prompt must be a str or a list of str, got {type(prompt).__name__}")
        return [_C.glyph_texts(p) for p in prompts]

    @property
    def guidance_scale(self) -> float:
        """diffusers' ``pipe.guidance_scale``: the running (or last) call's guidance; a
        ``callback_on_step_end`` may set ``pipe._guidance_scale`` to guide the steps after with
        another (at or below 1: the conditional pass alone, half a step's DiT work saved)."""
        return float(self._guidance_scale)

    @property
    def do_classifier_free_guidance(self) -> bool:
        """diffusers' ``pipe.do_classifier_free_guidance``: guidance above 1."""
        return self.guidance_scale > 1

    @property
    def current_timestep(self) -> Optional[torch.Tensor]:
        """diffusers' ``pipe.current_timestep``: in a ``callback_on_step_end``, the step's
        scheduler timestep (float32); None outside the denoising loop."""
        return self._current_timestep

    @property
    def attention_kwargs(self) -> Optional[Dict[str, Any]]:
        """diffusers' ``pipe.attention_kwargs``: the running (or last) call's (unused by the DiT)."""
        return self._attention_kwargs

    @property
    def num_timesteps(self) -> int:
        """diffusers' ``pipe.num_timesteps``: the denoising steps of the running (or last) call."""
        return int(self._num_timesteps)

    def _component(self, folder: str) -> Any:
        return next(c for c in self.components if c.folder == folder)

    def _compute_dtype(self, folder: str) -> torch.dtype:
        return _WEIGHT_DTYPES[self._component(folder).dtype]

    def _output(self, images: List[np.ndarray], values: Optional[np.ndarray], prior: PriorTokenOutput,
                timings: Dict[str, float], output_type: str) -> PipelineOutput:
        """The call's result as diffusers' output_type gives it; ``values`` is the request's float32
        array (the latents, or the float images [N, H, W, 3] in [0, 1])."""
        if output_type == "latent":
            assert values is not None
            out: Any = torch.from_numpy(values)
        elif output_type == "np":
            assert values is not None
            out = values
        elif output_type == "pt":
            # diffusers' "pt" is the de-normalized VAE output as the VAE computed it: NCHW, its
            # dtype (the float32 values came from that dtype, so the cast back is exact).
            assert values is not None
            out = torch.from_numpy(values).permute(0, 3, 1, 2).to(self._compute_dtype("vae")).contiguous()
        else:
            from PIL import Image as PILImage

            out = [PILImage.fromarray(a) for a in images]
        return PipelineOutput(out, prior.prior_token_ids, prior.prior_token_image_ids, dict(timings))

    # -- public calls ----------------------------------------------------------------------------

    def __call__(
        self,
        prompt: Optional[Union[str, List[str]]] = None,
        image: Any = None,
        height: int = 1024,
        width: int = 1024,
        num_inference_steps: int = 50,
        timesteps: Optional[List[int]] = None,
        sigmas: Optional[List[float]] = None,
        guidance_scale: float = 1.5,
        num_images_per_prompt: int = 1,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        prompt_embeds: Optional[torch.Tensor] = None,
        negative_prompt_embeds: Optional[torch.Tensor] = None,
        prior_token_ids: Optional[Union[torch.Tensor, PriorTokenOutput]] = None,
        prior_token_image_ids: Optional[List[Any]] = None,
        source_image_grid_thw: Optional[List[torch.Tensor]] = None,
        crops_coords_top_left: Tuple[int, int] = (0, 0),
        output_type: str = "pil",
        return_dict: bool = True,
        attention_kwargs: Optional[Dict[str, Any]] = None,
        callback_on_step_end: Optional[Callable[..., Dict[str, Any]]] = None,
        callback_on_step_end_tensor_inputs: List[str] = ["latents"],  # noqa: B006 (diffusers' default, never mutated)
        max_sequence_length: int = 2048,
        seed: Optional[int] = None,
        do_sample: bool = True,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        keep_in_codebook: bool = True,
        callback: Optional[ProgressFn] = None,
        progress: bool = True,
        timestep_label: str = "0.39",
        first_block_cache: float = 0.0,
    ) -> Union[PipelineOutput, Tuple[Any]]:
        """Prompt(s) [+ condition images] -> images. Arguments as diffusers' GlmImagePipeline.

        ``prior_token_ids`` (from :meth:`generate_prior_tokens`, or a [num_prompts, S] tensor) skips
        the autoregressive stage. ``callback(stage, step, total)`` is called after each AR token
        (stage "ar") and each denoising step (stage "denoise"); ``progress`` shows tqdm bars.
        Ctrl-C cancels the run (KeyboardInterrupt); so does ``cancel()`` (``CancelledError``).
        ``temperature`` / ``top_p`` / ``top_k`` left as None are the checkpoint's own (its
        generation_config.json, else transformers' defaults 1.0 / 1.0 / 50), as diffusers' pipeline
        takes them; ``pipe.sampling_defaults`` shows them. ``keep_in_codebook`` (default on) keeps sampled token ids inside the VQ codebook within a
        grid, so an unlucky sample cannot end a grid early; the reference has no such guard.
        ``first_block_cache`` (default 0: off, the reference's images) is the First Block Cache's
        threshold, an approximation: where the change the DiT's first block makes at a step differs
        from that at the pass's last full step by at most this (relative mean absolute difference),
        the other blocks do not run and their last change is reused. 0.05-0.2 are the usual values
        (diffusers' FirstBlockCacheConfig default 0.05); the timings' "dit_passes_cached" counts the
        passes it served. ``timesteps`` / ``sigmas`` are diffusers' custom schedules: timesteps (the
        DiT's labels, truncated to integers) set the step count and, unless sigmas are given too,
        sigma = timestep / 1000; sigmas (before the resolution shift) need one per step.
        ``latents`` ([num_prompts * num_images_per_prompt, 16, height / 8, width / 8], float32, bf16
        or fp16) replace the seed's initial noise, as diffusers' ``latents=``;
        ``crops_coords_top_left`` is its crop conditioning. ``callback_on_step_end(pipe, i, t,
        callback_kwargs)`` is diffusers' step-end callback: after denoising step i, ``t`` the
        step's sigma as diffusers passes it, ``callback_kwargs["latents"]`` the float32 latents on
        the CPU (change them in place or return new ones in the dict; the next step starts from
        them); ``pipe._interrupt = True`` ends the denoising there and decodes those latents;
        ``pipe._guidance_scale = g`` guides the steps after with g (at or below 1: the conditional
        pass alone), as diffusers' loop reads it at every step.
        ``callback_on_step_end_tensor_inputs`` may name "latents" only (not "prompt_embeds").
        ``prompt_embeds`` / ``negative_prompt_embeds`` ([num_prompts, L, C] in the DiT's dtype, C
        its text_embed_dim) replace the glyph encoder's embeddings of each CFG pass, as diffusers'
        arguments; with prompt_embeds the prompt may be None where ``prior_token_ids`` are given.
        ``output_type`` as diffusers': "pil" (default) PIL images; "np" float32 [N, H, W, 3] in
        [0, 1]; "pt" those values as a [N, 3, H, W] tensor in the VAE's dtype (on the CPU);
        "latent" the denoised float32 latents ([N, 16, height / 8, width / 8], a CPU tensor, before
        the VAE's de-normalization; the VAE does not run). ``attention_kwargs``: taken as diffusers
        takes them with its GlmImageAttnProcessor, which uses none: a warning, the same images.
        """
        if output_type not in _OUTPUTS:
            raise _fail(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        _check_attention_kwargs(attention_kwargs)
        step_end = _StepEnd.make(self, callback_on_step_end, callback_on_step_end_tensor_inputs)
        req = self._request(prompt, image, height, width, num_inference_steps, guidance_scale,
                            num_images_per_prompt, generator, seed, do_sample, temperature, top_p, top_k,
                            max_sequence_length, timestep_label, keep_in_codebook, first_block_cache, timesteps,
                            sigmas, latents, crops_coords_top_left, prompt_embeds, negative_prompt_embeds)
        req.output = _OUTPUTS[output_type]
        self._num_timesteps = req.steps
        # diffusers' call-time state, read (and the guidance changed) by step-end callbacks
        self._guidance_scale, self._attention_kwargs = req.guidance, attention_kwargs
        if prior_token_ids is None:
            if prior_token_image_ids is not None or source_image_grid_thw is not None:
                raise _fail("prior_token_image_ids / source_image_grid_thw need prior_token_ids")
            if not req.prompts:
                raise _fail("prompt_embeds without a prompt need prior_token_ids: the AR stage needs the prompt")
            images, native, timings, values = self._run(self._generate, req, callback=callback,
                                                        progress=progress, step_end=step_end)
        else:
            prior = self._native_prior(req, prior_token_ids, prior_token_image_ids, source_image_grid_thw)
            images, native, timings, values = self._run(self._decode, req, prior, callback=callback,
                                                        progress=progress, step_end=step_end)
        out = self._output(images, values, _prior_output(native, req.height, req.width), timings, output_type)
        return out if return_dict else (out.images,)

    def generate_prior_tokens(
        self,
        prompt: Union[str, List[str]],
        height: int = 1024,
        width: int = 1024,
        image: Any = None,
        device: Union[str, torch.device, None] = None,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        seed: Optional[int] = None,
        do_sample: bool = True,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        keep_in_codebook: bool = True,
        callback: Optional[ProgressFn] = None,
        progress: bool = True,
    ) -> PriorTokenOutput:
        """Only the autoregressive stage: the prior tokens ``pipe(..., prior_token_ids=...)`` decodes.

        With the same prompt, size, images and seed, decoding them gives the same images as one call.
        The arguments as diffusers' (in its order); ``device`` is where the returned tensors are
        placed (default the CPU): the stage runs where the model was loaded.
        """
        place = torch.device(_normalize_device(device))
        req = self._request(prompt, image, height, width, 1, 1.5, 1, generator, seed, do_sample, temperature,
                            top_p, top_k, 2048, "0.39", keep_in_codebook)
        native = self._run(self._generate_prior_tokens, req, callback=callback, progress=progress)
        return _prior_output(native, req.height, req.width).to(place)

    def encode_prompt(
        self,
        prompt: Optional[Union[str, List[str]]] = None,
        do_classifier_free_guidance: bool = True,
        num_images_per_prompt: int = 1,
        prompt_embeds: Optional[torch.Tensor] = None,
        negative_prompt_embeds: Optional[torch.Tensor] = None,
        device: Union[str, torch.device, None] = None,
        dtype: Optional[torch.dtype] = None,
        max_sequence_length: int = 2048,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """diffusers' ``encode_prompt``: (prompt_embeds, negative_prompt_embeds), the glyph
        encoder's embeddings of each prompt's quoted text ([N, L, 1472]) and, with guidance, of no
        text ([N, 1, 1472]) for the unconditional pass, each repeated for num_images_per_prompt;
        given ones pass through as diffusers passes them (a given prompt_embeds repeated, a given
        negative returned as it is). They are what :meth:`__call__`'s ``prompt_embeds=`` /
        ``negative_prompt_embeds=`` take (at one image per prompt). ``dtype`` defaults to the DiT's
        (diffusers': its text encoder's; the same unless ``components=`` made them differ);
        ``device`` (default the CPU) is where the tensors are returned."""
        n = _check_int("num_images_per_prompt", num_images_per_prompt)
        if n < 1:
            raise _fail(f"num_images_per_prompt must be >= 1, got {n}")
        if not isinstance(do_classifier_free_guidance, bool):
            raise _fail("do_classifier_free_guidance must be a bool")
        if dtype is not None and dtype not in _TORCH_DTYPES:
            raise _fail(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
        place = dict(device=torch.device(_normalize_device(device)),
                     dtype=self._compute_dtype("transformer") if dtype is None else dtype)
        req = _C.GenerateRequest()
        req.max_sequence_length = _check_int("max_sequence_length", max_sequence_length)
        if prompt_embeds is not None:
            if not isinstance(prompt_embeds, torch.Tensor) or prompt_embeds.dim() != 3:
                raise _fail("prompt_embeds must be a 3-D tensor [prompts, L, C]")
            # They stand for the prompts' (as in diffusers, a prompt given too is not encoded); the
            # C++ call then makes the negative only, for as many prompts.
            req.prompt_embeds_shape = list(prompt_embeds.shape)
            req.prompt_embeds = _float32_values(prompt_embeds)
        elif prompt is not None:
            req.prompts = self._prompts(prompt)
        else:
            raise _fail("encode_prompt needs a prompt or prompt_embeds")
        need_negative = do_classifier_free_guidance and negative_prompt_embeds is None
        pe, negative = prompt_embeds, negative_prompt_embeds  # given ones pass through as they are
        if prompt_embeds is None or need_negative:
            made, made_negative = self._encode_prompts(req)
            if prompt_embeds is None:
                pe = torch.from_numpy(made).to(**place)
            if need_negative:
                negative = torch.from_numpy(made_negative).to(**place).repeat_interleave(n, 0)
        return pe.repeat_interleave(n, 0), negative

    def __repr__(self) -> str:
        return f"<glmimage.Pipeline: {len(self.components)} components>"
