"""glassnet: a see-through neural-network library in NumPy."""

from glassnet import functional, nn, optim
from glassnet.gradcheck import GradcheckResult, gradcheck, gradcheck_layer

__version__ = "0.1.0"
__all__ = [
    "GradcheckResult",
    "__version__",
    "functional",
    "gradcheck",
    "gradcheck_layer",
    "nn",
    "optim",
]
