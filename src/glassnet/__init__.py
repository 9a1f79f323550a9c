"""glassnet: a see-through neural-network library in NumPy.

The names below load on first use (PEP 562), so ``import glassnet`` and ``glassnet --help``
stay fast: NumPy and Numba are imported by the first name that needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

# First, before anything loads NumPy: OpenBLAS settings it reads once (see _environment).
from glassnet import _environment  # noqa: F401  # isort: skip

__version__ = "0.1.0"

# public name -> the module that defines it (a submodule when the name is the module)
_EXPORTS = {
    "functional": "glassnet.functional",
    "nn": "glassnet.nn",
    "optim": "glassnet.optim",
    "data": "glassnet.data",
    "onnx": "glassnet.onnx",
    "GradcheckResult": "glassnet.finite_differences",
    "gradcheck": "glassnet.finite_differences",
    "gradcheck_layer": "glassnet.finite_differences",
    "format_trace": "glassnet.inspect",
    "summary": "glassnet.inspect",
    "trace": "glassnet.inspect",
    "load_model": "glassnet.model_file",
    "save_model": "glassnet.model_file",
    "is_grad_enabled": "glassnet.nn.module",
    "no_grad": "glassnet.nn.module",
    "evaluate": "glassnet.train.loop",
    "fit": "glassnet.train.loop",
    "predict": "glassnet.train.loop",
}
__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'glassnet' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if module.__name__ == f"glassnet.{name}" else getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
