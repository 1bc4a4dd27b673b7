"""glmimage: native GLM-Image inference (C++/LibTorch) with a thin Python front.

``import torch`` comes first: the extension links against the LibTorch that the torch
package ships, and torch must load its libraries before ours.
"""
import torch  # noqa: F401  (loads libtorch for the extension)

from ._C import (  # noqa: F401
    ComponentInfo,
    ConfigError,
    Error,
    FormatError,
    InputError,
    Pipeline,
    UnsupportedError,
    WeightError,
    version,
)

__version__ = version()
__all__ = [
    "Pipeline", "ComponentInfo", "Error", "InputError", "FormatError", "ConfigError", "WeightError",
    "UnsupportedError", "version",
]
