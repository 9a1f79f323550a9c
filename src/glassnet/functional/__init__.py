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
from glassnet.functional.softmax import (
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
    softmax_jacobian,
)

__all__ = [
    "CrossEntropyCache",
    "cross_entropy",
    "cross_entropy_backward",
    "cross_entropy_backward_from_cache",
    "cross_entropy_backward_jacobian",
    "cross_entropy_forward",
    "log_softmax",
    "log_softmax_backward",
    "softmax",
    "softmax_backward",
    "softmax_jacobian",
]
