"""ReLU and its backward pass.

``relu(x) = max(x, 0)``; its gradient passes where the *output* was positive (at 0 it is 0, as
in PyTorch). The NumPy expressions below are the reference; for float32/float64 arrays that
are dense in memory (any axis order, e.g. a convolution's channels-last output) a threaded
Numba kernel computes the same numbers in one pass, and the result keeps the input's layout.
"""

from __future__ import annotations

import numpy as np

from glassnet import kernels

try:  # the Numba ReLU; it runs when kernels.enabled()
    from glassnet.kernels import activation as activation_kernels
except ImportError:  # no Numba: kernels.enabled() is False
    activation_kernels = None


def _flat(*arrays: np.ndarray) -> list[np.ndarray] | None:
    """1-D views of the arrays' memory, if they share one dense layout and a kernel dtype."""
    first = arrays[0]
    if not kernels.enabled() or first.dtype not in (np.float32, np.float64):
        return None
    if any(a.dtype != first.dtype or a.strides != first.strides for a in arrays):
        return None
    order = np.argsort(first.strides, kind="stable")[::-1]  # outermost axis first
    views = [a.transpose(order) for a in arrays]
    if not views[0].flags.c_contiguous:
        return None
    return [v.reshape(-1) for v in views]


def relu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``max(x, 0)`` elementwise (NaN stays NaN); the output has x's memory layout.

    ``out`` may be ``x`` itself (in place).
    """
    out = np.empty_like(x) if out is None else out
    flat = _flat(x, out)
    if flat is None:
        np.maximum(x, 0, out=out)
    else:
        activation_kernels.relu(*flat)
    return out


def relu_backward(grad_out: np.ndarray, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dL/dx = grad_out where y > 0, else 0, with y = relu(x) the forward output.

    A select, not a product: a NaN or inf in grad_out where y <= 0 gives 0, as PyTorch's
    ``threshold_backward`` does (a product with 0 would give NaN). ``out`` may be
    ``grad_out`` itself (in place).
    """
    grad = np.empty_like(y, dtype=np.result_type(grad_out, y)) if out is None else out
    flat = _flat(grad_out, y, grad)
    if flat is None and out is None and _flat(y, grad) is not None:
        # grad_out is laid out unlike y (e.g. NCHW from a Flatten, y channels-last): one
        # strided copy into y's layout, then the kernel in place
        np.copyto(grad, grad_out)
        flat = _flat(grad, y, grad)
    if flat is None:
        np.copyto(grad, np.where(y > 0, grad_out, 0))
    else:
        activation_kernels.relu_backward(*flat)
    return grad
