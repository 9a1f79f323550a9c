"""glassnet: a see-through neural-network library in NumPy."""

# First, before anything loads NumPy: OpenBLAS settings it reads once (see _environment).
from glassnet import _environment  # noqa: F401  # isort: skip
from glassnet import functional, nn, optim
from glassnet.gradcheck import GradcheckResult, gradcheck, gradcheck_layer
from glassnet.inspect import format_trace, summary, trace
from glassnet.model_file import load_model, save_model
from glassnet.nn.module import is_grad_enabled, no_grad
from glassnet.train.loop import evaluate, fit, predict

__version__ = "0.1.0"
__all__ = [
    "GradcheckResult",
    "__version__",
    "evaluate",
    "fit",
    "format_trace",
    "functional",
    "gradcheck",
    "gradcheck_layer",
    "is_grad_enabled",
    "load_model",
    "nn",
    "no_grad",
    "optim",
    "predict",
    "save_model",
    "summary",
    "trace",
]
