"""2-D convolution (cross-correlation, as in PyTorch) by im2col + one matrix product.

Shapes: x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,),
out (N, C_out, H_out, W_out) with H_out = (H + 2 * padding - kH) // stride + 1 (same for W).
"cols" is the im2col matrix (N * H_out * W_out, kH * kW * C_in): one row per output pixel
holding the input patch it sees, ordered (kH, kW, C_in) so that channels are the contiguous
inner run; then ``out = cols @ weight_matrix(weight).T + bias``.
The plain loop versions in :mod:`glassnet.functional.reference` are the oracle for these.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"input size {size} with padding {padding} is smaller than the kernel ({kernel})"
        )
    return out


def _pad(x: np.ndarray, padding: int) -> np.ndarray:
    if padding == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def weight_matrix(weight: np.ndarray) -> np.ndarray:
    """weight (C_out, C_in, kH, kW) as the (C_out, kH * kW * C_in) matrix that multiplies cols."""
    return weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)


def im2col(
    x: np.ndarray, kernel_size: tuple[int, int], stride: int = 1, padding: int = 0
) -> np.ndarray:
    """Patches of ``x`` (N, C, H, W) as rows: (N * H_out * W_out, kH * kW * C)."""
    kh, kw = kernel_size
    output_size(x.shape[2], kh, stride, padding)  # raises a clear error for a too-small input
    output_size(x.shape[3], kw, stride, padding)
    # Channels last first, so every patch row is copied in runs of C contiguous numbers.
    x_nhwc = np.ascontiguousarray(_pad(x, padding).transpose(0, 2, 3, 1))
    windows = sliding_window_view(x_nhwc, (kh, kw), axis=(1, 2))  # (N, H', W', C, kH, kW)
    windows = windows[:, ::stride, ::stride]
    n, h_out, w_out, c = windows.shape[:4]
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * h_out * w_out, kh * kw * c)


def col2im(
    grad_cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel_size: tuple[int, int],
    stride: int = 1,
    padding: int = 0,
) -> np.ndarray:
    """The adjoint of :func:`im2col`: add every patch's gradient back where the patch came from."""
    n, c, h, w = x_shape
    kh, kw = kernel_size
    h_out, w_out = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    patches = grad_cols.reshape(n, h_out, w_out, kh, kw, c)
    grad = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=grad_cols.dtype)
    # One strided add per kernel offset; overlapping patches accumulate.
    for i in range(kh):
        for j in range(kw):
            grad[:, i : i + stride * h_out : stride, j : j + stride * w_out : stride] += patches[
                :, :, :, i, j
            ]
    grad = grad[:, padding : padding + h, padding : padding + w] if padding else grad
    return np.ascontiguousarray(grad.transpose(0, 3, 1, 2))


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int = 1,
    padding: int = 0,
    cols: np.ndarray | None = None,
) -> np.ndarray:
    """``out[n, o] = bias[o] + sum_{c,i,j} weight[o, c, i, j] * x_pad[n, c, s*y + i, s*x + j]``.

    Args:
        x: (N, C_in, H, W). weight: (C_out, C_in, kH, kW). bias: (C_out,) or None.
        stride, padding: as in PyTorch (the same for height and width; zero padding).
        cols: ``im2col(x, ...)`` if the caller already has it.
    Returns:
        out (N, C_out, H_out, W_out).

    Matches ``torch.nn.functional.conv2d`` (a cross-correlation: the kernel is not flipped).
    """
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    h_out, w_out = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    if cols is None:
        cols = im2col(x, (kh, kw), stride, padding)
    out = cols @ weight_matrix(weight).T  # (N * H_out * W_out, C_out)
    if bias is not None:
        out += bias
    return np.ascontiguousarray(out.reshape(n, h_out, w_out, c_out).transpose(0, 3, 1, 2))


def conv2d_backward(
    grad_out: np.ndarray,
    x_shape: tuple[int, int, int, int],
    weight: np.ndarray,
    cols: np.ndarray,
    stride: int = 1,
    padding: int = 0,
    need_grad_x: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d` given ``grad_out`` (N, C_out, H_out, W_out).

    Returns:
        (grad_x (N, C_in, H, W) or None, grad_w like weight, grad_b (C_out,)).
    """
    c_out = weight.shape[0]
    grad_2d = grad_out.transpose(0, 2, 3, 1).reshape(-1, c_out)  # (N * H_out * W_out, C_out)
    # dL/dW = grad^T cols: every output pixel adds (its gradient) x (the patch it saw)
    grad_w = (grad_2d.T @ cols).reshape(weight.shape[0], *weight.shape[2:], -1)
    grad_w = np.ascontiguousarray(grad_w.transpose(0, 3, 1, 2))
    grad_b = grad_2d.sum(axis=0)
    if not need_grad_x:
        return None, grad_w, grad_b
    # dL/dcols = grad W; col2im sends each patch's gradient back to its pixels
    grad_cols = grad_2d @ weight_matrix(weight)
    grad_x = col2im(grad_cols, x_shape, weight.shape[2:], stride, padding)
    return grad_x, grad_w, grad_b
