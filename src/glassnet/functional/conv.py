"""2-D convolution (cross-correlation, as in PyTorch) by im2col + matrix products.

Shapes: x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,),
out (N, C_out, H_out, W_out) with H_out = (H + 2 * padding - kH) // stride + 1 (same for W);
L = H_out * W_out output pixels per image, K = C_in * kH * kW numbers per patch.

"cols" holds every input patch an output pixel sees, in one of two layouts:
  channels-last  (N * L, kH * kW * C_in): one row per output pixel, one big matrix product;
                 copies run over whole channel vectors (good for many input channels)
  per-image      (N, C_in * kH * kW, L): one product per image whose result is already NCHW;
                 copies run along image rows (good for few input channels, e.g. C_in = 1)
:func:`unfold` picks the layout; :func:`conv2d` and :func:`conv2d_backward` accept either.
The plain loop versions in :mod:`glassnet.functional.reference` are the oracle for both.
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


def _add_patches(
    parts: np.ndarray, x_shape, stride: int, padding: int, channels_last: bool
) -> np.ndarray:
    """Sum per-offset gradients back onto the pixels they came from; returns NCHW.

    ``parts[i, j]`` is the gradient of the strided view of x that kernel offset (i, j) reads,
    (N, H_out, W_out, C) when ``channels_last`` else (N, C, H_out, W_out); the views of
    neighbouring offsets overlap, so their gradients add up.
    """
    n, c, h, w = x_shape
    kh, kw = parts.shape[:2]
    h_out, w_out = parts.shape[3:5] if channels_last else parts.shape[4:6]
    padded = (h + 2 * padding, w + 2 * padding)
    grad = np.zeros((n, *padded, c) if channels_last else (n, c, *padded), dtype=parts.dtype)
    lead = (slice(None),) if channels_last else (slice(None), slice(None))  # axes before H, W
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride * h_out, stride)
            cols = slice(j, j + stride * w_out, stride)
            grad[(*lead, rows, cols)] += parts[i, j]
    grad = grad[(*lead, slice(padding, padding + h), slice(padding, padding + w))]
    return np.ascontiguousarray(grad.transpose(0, 3, 1, 2)) if channels_last else grad


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
    parts = grad_cols.reshape(n, h_out, w_out, kh, kw, c).transpose(3, 4, 0, 1, 2, 5)
    return _add_patches(parts, x_shape, stride, padding, channels_last=True)


def im2col_per_image(
    x: np.ndarray, kernel_size: tuple[int, int], stride: int = 1, padding: int = 0
) -> np.ndarray:
    """Patches of ``x`` (N, C, H, W) as (N, C * kH * kW, L): one column per output pixel."""
    kh, kw = kernel_size
    output_size(x.shape[2], kh, stride, padding)  # raises a clear error for a too-small input
    output_size(x.shape[3], kw, stride, padding)
    windows = sliding_window_view(_pad(x, padding), (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]  # (N, C, H_out, W_out, kH, kW)
    n, c, h_out, w_out = windows.shape[:4]
    return windows.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, h_out * w_out)


def col2im_per_image(
    grad_cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel_size: tuple[int, int],
    stride: int = 1,
    padding: int = 0,
) -> np.ndarray:
    """The adjoint of :func:`im2col_per_image`."""
    n, c, h, w = x_shape
    kh, kw = kernel_size
    h_out, w_out = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    parts = grad_cols.reshape(n, c, kh, kw, h_out, w_out).transpose(2, 3, 0, 1, 4, 5)
    return _add_patches(parts, x_shape, stride, padding, channels_last=False)


def unfold(
    x: np.ndarray, kernel_size: tuple[int, int], stride: int = 1, padding: int = 0
) -> np.ndarray:
    """im2col in the layout that is faster for ``x``: per-image below 8 input channels."""
    if x.shape[1] < 8:
        return im2col_per_image(x, kernel_size, stride, padding)
    return im2col(x, kernel_size, stride, padding)


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
        cols: ``unfold(x, ...)`` (either layout) if the caller already has it.
    Returns:
        out (N, C_out, H_out, W_out).

    Matches ``torch.nn.functional.conv2d`` (a cross-correlation: the kernel is not flipped).
    """
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    h_out, w_out = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)
    if cols is None:
        cols = unfold(x, (kh, kw), stride, padding)
    if cols.ndim == 3:  # per-image: (C_out, K) @ (N, K, L) -> (N, C_out, L), already NCHW
        out = np.matmul(weight.reshape(c_out, -1), cols)
        if bias is not None:
            out += bias[:, None]
        return out.reshape(n, c_out, h_out, w_out)
    out = cols @ weight_matrix(weight).T  # (N * L, C_out)
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
    """Gradients of :func:`conv2d` given ``grad_out`` (N, C_out, H_out, W_out) and its ``cols``.

    Returns:
        (grad_x (N, C_in, H, W) or None, grad_w like weight, grad_b (C_out,)).
    """
    n, c_out = grad_out.shape[:2]
    kernel = weight.shape[2:]
    if cols.ndim == 3:
        grad_3d = grad_out.reshape(n, c_out, -1)  # (N, C_out, L)
        # dL/dW = sum over images of grad cols^T; dL/db = sum over images and pixels
        grad_w = np.matmul(grad_3d, cols.transpose(0, 2, 1)).sum(axis=0).reshape(weight.shape)
        grad_b = grad_3d.sum(axis=(0, 2))
        if not need_grad_x:
            return None, grad_w, grad_b
        grad_cols = np.matmul(weight.reshape(c_out, -1).T, grad_3d)  # (N, K, L)
        return col2im_per_image(grad_cols, x_shape, kernel, stride, padding), grad_w, grad_b

    grad_2d = grad_out.transpose(0, 2, 3, 1).reshape(-1, c_out)  # (N * L, C_out)
    # dL/dW = grad^T cols: every output pixel adds (its gradient) x (the patch it saw)
    grad_w = (grad_2d.T @ cols).reshape(c_out, *kernel, -1)
    grad_w = np.ascontiguousarray(grad_w.transpose(0, 3, 1, 2))
    grad_b = grad_2d.sum(axis=0)
    if not need_grad_x:
        return None, grad_w, grad_b
    # dL/dx: kernel offset (i, j) read a strided view of x, whose gradient is grad @ W[:, :, i, j].
    # One product per offset (this is col2im(grad @ weight_matrix) with contiguous pieces).
    per_offset = weight.transpose(2, 3, 0, 1).reshape(-1, c_out, weight.shape[1])
    parts = np.matmul(grad_2d, per_offset)  # (kH * kW, N * L, C_in)
    h_out, w_out = grad_out.shape[2:]
    parts = parts.reshape(*kernel, n, h_out, w_out, weight.shape[1])
    return _add_patches(parts, x_shape, stride, padding, channels_last=True), grad_w, grad_b
