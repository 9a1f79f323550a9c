"""Stateless maths: NumPy arrays in, NumPy arrays out.

float32 stays float32 and float64 stays float64; float16 is computed in float32 and returned as
float16. Shapes and semantics follow ``torch.nn.functional``.
"""

from glassnet.functional.cross_entropy import (
    CrossEntropyCache,
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_backward_from_cache,
    cross_entropy_backward_jacobian,
    cross_entropy_forward,
)
from glassnet.functional.elementwise import (
    erf,
    erfc,
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from glassnet.functional.losses import (
    mse_loss,
    mse_loss_backward,
    nll_loss,
    nll_loss_backward,
    nll_loss_backward_from_cache,
    nll_loss_forward,
)
from glassnet.functional.normalization import (
    BatchNormCache,
    batch_norm,
    batch_norm_backward,
    batch_norm_forward,
)
from glassnet.functional.softmax import (
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
    softmax_jacobian,
)

__all__ = [
    "BatchNormCache",
    "CrossEntropyCache",
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_forward",
    "cross_entropy",
    "cross_entropy_backward",
    "cross_entropy_backward_from_cache",
    "cross_entropy_backward_jacobian",
    "cross_entropy_forward",
    "erf",
    "erfc",
    "gelu",
    "gelu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "log_softmax",
    "log_softmax_backward",
    "mse_loss",
    "mse_loss_backward",
    "nll_loss",
    "nll_loss_backward",
    "nll_loss_backward_from_cache",
    "nll_loss_forward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "softmax_jacobian",
    "tanh",
    "tanh_backward",
]
