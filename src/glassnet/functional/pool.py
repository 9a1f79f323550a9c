"""2-D max pooling and its backward pass.

Shapes: x (N, C, H, W) -> out (N, C, H_out, W_out), H_out = (H - k) // stride + 1 (floor mode,
as PyTorch's default: a last partial window is dropped). ``argmax`` (N, C, H_out, W_out) holds
the flat offset ``i * k + j`` of each window's maximum; ties go to the first, as in PyTorch.

The NumPy code below is the reference. For float32/float64 a Numba kernel computes the same
numbers on channels-last memory (one vector compare per 16 channels); its outputs are then
channels-last too (NCHW-shaped views, see :mod:`glassnet.functional.conv`).
"""

from __future__ import annotations

import numpy as np

from glassnet.functional import conv as _conv
from glassnet.functional.conv import _nchw, channels_last, output_size


def _window_view(x: np.ndarray, i: int, j: int, stride: int, h_out: int, w_out: int):
    """The elements at offset (i, j) of every window: a strided (N, C, H_out, W_out) view."""
    return x[:, :, i : i + stride * h_out : stride, j : j + stride * w_out : stride]


def max_pool2d(
    x: np.ndarray, kernel_size: int, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``out[n, c, y, x] = max over the k x k window at (stride * y, stride * x)``.

    Returns:
        (out, argmax): the pooled values and where each came from within its window.

    Matches ``torch.nn.functional.max_pool2d(x, kernel_size, stride)`` (stride defaults to the
    kernel size; no padding or dilation).
    """
    stride = kernel_size if stride is None else stride
    n, c, h, w = x.shape
    h_out, w_out = output_size(h, kernel_size, stride, 0), output_size(w, kernel_size, stride, 0)
    index_dtype = np.int8 if kernel_size**2 <= 127 else np.int32
    if _conv._use_kernels(x):
        out = np.empty((n, h_out, w_out, c), dtype=x.dtype)
        argmax = np.empty(out.shape, dtype=index_dtype)
        _conv._kernels.max_pool2d(channels_last(x), kernel_size, stride, out, argmax)
        return _nchw(out), _nchw(argmax)
    out = _window_view(x, 0, 0, stride, h_out, w_out).copy(order="K")  # keeps x's layout
    argmax = np.zeros_like(out, dtype=index_dtype)
    # A running max over the k * k offsets, visited in increasing order. Plain arithmetic, no
    # masked writes: since every earlier offset is < o, max(argmax, better * o) records o
    # exactly where the candidate is strictly greater (ties stay with the first maximum).
    for offset in range(1, kernel_size**2):
        candidate = _window_view(x, *divmod(offset, kernel_size), stride, h_out, w_out)
        better = candidate > out
        np.maximum(out, candidate, out=out)
        np.maximum(argmax, better * argmax.dtype.type(offset), out=argmax)
    return out, argmax


def max_pool2d_backward(
    grad_out: np.ndarray,
    argmax: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel_size: int,
    stride: int | None = None,
) -> np.ndarray:
    """dL/dx: each window's gradient goes to the input that was its maximum; the rest get 0."""
    stride = kernel_size if stride is None else stride
    h_out, w_out = grad_out.shape[2:]
    if _conv._use_kernels(grad_out):
        n, c, h, w = x_shape
        grad_x = np.empty((n, h, w, c), dtype=grad_out.dtype)
        argmax_nhwc = channels_last(argmax)
        _conv._kernels.max_pool2d_backward(
            channels_last(grad_out), argmax_nhwc, kernel_size, stride, grad_x
        )
        return _nchw(grad_x)
    grad_x = np.zeros(x_shape, dtype=grad_out.dtype)
    for offset in range(kernel_size**2):
        target = _window_view(grad_x, *divmod(offset, kernel_size), stride, h_out, w_out)
        routed = grad_out * (argmax == offset)
        if stride >= kernel_size:
            target[...] = routed  # windows are disjoint: every input is written at most once
        else:
            target += routed
    return grad_x
