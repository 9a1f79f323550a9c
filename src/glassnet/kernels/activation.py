"""Kernels (Numba) for ReLU and its backward pass on flat arrays (any layout, made 1-D).

The NumPy expressions in :mod:`glassnet.functional.activation` are the reference.
"""

from __future__ import annotations

from numba import njit

from glassnet.kernels.threads import parallel_for


def relu(x, out):
    """out = max(x, 0) elementwise on 1-D arrays (NaN stays NaN, as np.maximum)."""
    parallel_for(_relu, x.shape[0], x, out)
    return out


# The kernels below loop over slices from 0, not over range(first, last): an index that may
# be negative makes Numba wrap it around on every access, and that loop is not vectorised.


@njit(nogil=True, cache=True)
def _relu(x, out, first, last):
    x, out = x[first:last], out[first:last]
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = 0 if v <= 0 else v


def relu_backward(grad_out, y, grad_x):
    """grad_x = grad_out * (y > 0) elementwise on 1-D arrays (y is the ReLU's output)."""
    parallel_for(_relu_backward, y.shape[0], grad_out, y, grad_x)
    return grad_x


@njit(nogil=True, cache=True)
def _relu_backward(grad_out, y, grad_x, first, last):
    grad_out, y, grad_x = grad_out[first:last], y[first:last], grad_x[first:last]
    for i in range(y.shape[0]):
        grad_x[i] = grad_out[i] * (1 if y[i] > 0 else 0)
