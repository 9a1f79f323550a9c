"""Kernels (Numba) for ReLU and its backward pass on flat arrays (any layout, made 1-D).

The NumPy expressions in :mod:`glassnet.functional.activation` are the reference.
"""

from __future__ import annotations

from numba import njit

from glassnet.kernels.first_run import follows
from glassnet.kernels.threads import parallel_for


def _same(a, b):
    """Whether two equally laid-out 1-D arrays are the same memory (views included)."""
    return a.ctypes.data == b.ctypes.data


def relu(x, out):
    """out = max(x, 0) elementwise on 1-D arrays (NaN stays NaN, as np.maximum); out may be x."""
    if _same(out, x):  # one array: LLVM vectorises the loop (two names for it defeat that)
        parallel_for(_relu_inplace, x.shape[0], x)
    else:
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
    """grad_x = grad_out where y > 0, else 0, elementwise on 1-D arrays (y is the ReLU's
    output); grad_x may be grad_out."""
    if _same(grad_x, grad_out):
        parallel_for(_relu_backward_inplace, y.shape[0], grad_x, y)
    else:
        parallel_for(_relu_backward, y.shape[0], grad_out, y, grad_x)
    return grad_x


@njit(nogil=True, cache=True)
def _relu_inplace(x, first, last):
    x = x[first:last]
    for i in range(x.shape[0]):
        v = x[i]
        x[i] = 0 if v <= 0 else v


@njit(nogil=True, cache=True)
def _relu_backward(grad_out, y, grad_x, first, last):
    grad_out, y, grad_x = grad_out[first:last], y[first:last], grad_x[first:last]
    for i in range(y.shape[0]):
        grad_x[i] = grad_out[i] if y[i] > 0 else 0  # a select: a NaN gradient gives 0 there


@njit(nogil=True, cache=True)
def _relu_backward_inplace(grad, y, first, last):
    grad, y = grad[first:last], y[first:last]
    for i in range(y.shape[0]):
        grad[i] = grad[i] if y[i] > 0 else 0


# What a training step runs after each forward kernel (see glassnet.kernels.first_run): an
# in-place ReLU takes its gradient in place too; another writes a new one, or, when the
# gradient comes in another layout (from a Flatten), copies it into y's and works in place.
follows(_relu_inplace, lambda x: (_relu_backward_inplace, (x, x)))
follows(
    _relu,
    lambda x, out: (_relu_backward_inplace, (out, x)),
    lambda x, out: (_relu_backward, (out, out, x)),
)
