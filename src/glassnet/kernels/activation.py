"""Kernels (Numba) for ReLU and its backward pass on flat arrays (any layout, made 1-D).

The NumPy expressions in :mod:`glassnet.functional.activation` are the reference.
"""

from __future__ import annotations

from numba import njit, prange


@njit(parallel=True, cache=True)
def relu(x, out):
    """out = max(x, 0) elementwise on 1-D arrays (NaN stays NaN, as np.maximum)."""
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = 0 if v <= 0 else v
    return out


@njit(parallel=True, cache=True)
def relu_backward(grad_out, y, grad_x):
    """grad_x = grad_out * (y > 0) elementwise on 1-D arrays (y is the ReLU's output)."""
    for i in prange(y.shape[0]):
        grad_x[i] = grad_out[i] * (1 if y[i] > 0 else 0)
    return grad_x
