"""2-D convolution (cross-correlation, as in PyTorch) as im2col + one matrix product.

Shapes: x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,),
out (N, C_out, H_out, W_out) with H_out = (H + pad_top + pad_bottom - kH) // sH + 1 (same for
W); L = H_out * W_out output pixels per image, K = C_in * kH * kW numbers per patch.

Geometry, as ``torch.nn.functional.conv2d``: ``stride`` is an int or (sH, sW); ``padding`` an
int, (pH, pW), "valid" (no padding) or "same" (stride 1 only: k - 1 zeros in total, the odd one
at the bottom/right for an even kernel). :func:`geometry` turns these into (top, bottom, left,
right) pads and the output size, once, for this module and :mod:`glassnet.functional.pool`.

Memory layout. Shapes are NCHW, as in PyTorch, but the outputs here are *channels-last in
memory*: ``out`` is a transposed view of an (N, H_out, W_out, C_out) array (PyTorch calls this
the ``channels_last`` memory format). That is the layout a product over patches produces, and
the one the next layers want: a ReLU keeps it, max pooling and the next im2col read whole
channel vectors from it. Any layout is accepted as input; ``np.ascontiguousarray`` turns an
output into ordinary NCHW memory if you need it.

"cols" holds every patch an output pixel sees, in one of two layouts (:func:`unfold` picks):
  pixel-major (N * L, K + 1)        a row per output pixel, (i, j, c) order, then a 1: copies
                                    move C contiguous channels; for many input channels
  tap-major   (K + 1, N, H_out, W_out)  a row per kernel tap (c, i, j) plus a row of ones:
                                    K copies of whole shifted images; for few input channels
                                    (the first layer), where the pixel-major copies would move
                                    1-3 numbers at a time.
In both the ones carry the bias through the product (no pass over the output to add it), and
bring dL/db out of dL/dW's product (no pass over the gradient to sum it). :func:`im2col` alone
gives the plain (N * L, K) rows, the adjoint of :func:`col2im`; the functions below take those
too.
The loops in :mod:`glassnet.functional.reference` are the oracle for both; pixel-major im2col
and its adjoint have Numba kernels (:mod:`glassnet.kernels.conv`) that the tests hold to the
NumPy code here. They run when :func:`glassnet.kernels.enabled` says so.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from glassnet import kernels
from glassnet._environment import cache_bytes

try:  # Numba versions of the same operations; they run when kernels.enabled()
    from glassnet.kernels import conv as conv_kernels
except ImportError:  # no Numba: kernels.enabled() is False, the NumPy code below runs
    conv_kernels = None

# Below this many input channels the tap-major layout is faster (measured on the seeds'
# convnet: C_in = 1 forward 0.9 ms vs 3.9 ms pixel-major; at 32 channels pixel-major wins).
TAP_MAJOR_MAX_IN_CHANNELS = 7
PADDING_STRINGS = ("same", "valid")

Stride = int | tuple[int, int]
Padding = int | tuple[int, int] | str


class Geometry(NamedTuple):
    """Where the windows of a convolution or pooling sit on an (H, W) input."""

    stride: tuple[int, int]  # (sH, sW)
    pads: tuple[int, int, int, int]  # (top, bottom, left, right)
    out: tuple[int, int]  # (H_out, W_out)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def as_pair(value: object, name: str, minimum: int = 1) -> tuple[int, int]:
    """``value`` as (height, width): an int stands for both. Raises ValueError naming ``name``."""
    pair = (value, value) if _is_int(value) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(_is_int(v) and v >= minimum for v in pair)
    ):
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum} or a pair of them")
    return int(pair[0]), int(pair[1])


def conv_padding(
    padding: Padding, kernel_size: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``padding`` as ``torch.nn.functional.conv2d`` takes it -> (top, bottom, left, right).

    "same" pads k - 1 in total, top = (k - 1) // 2 and the rest at the bottom (PyTorch's split
    for an even kernel); it needs stride 1, as in PyTorch.
    """
    if not isinstance(padding, str):
        ph, pw = as_pair(padding, "padding", minimum=0)
        return ph, ph, pw, pw
    if padding not in PADDING_STRINGS:
        raise ValueError(f"{padding=} must be an integer, a pair of them, 'same' or 'valid'")
    if padding == "valid":
        return 0, 0, 0, 0
    if stride != (1, 1):
        raise ValueError(f"padding='same' needs stride 1 (as in PyTorch), got stride={stride}")
    (kh, kw) = kernel_size
    top, left = (kh - 1) // 2, (kw - 1) // 2
    return top, kh - 1 - top, left, kw - 1 - left


def geometry(
    x_shape: tuple[int, ...],
    kernel_size: tuple[int, int],
    stride: Stride = 1,
    padding: Padding = 0,
) -> Geometry:
    """Strides, pads and output size of a kH x kW window sliding over x (..., H, W).

    H_out = (H + top + bottom - kH) // sH + 1 (floor: a last partial window is dropped).
    Raises ValueError if the padded input is smaller than the kernel.
    """
    kh, kw = kernel_size
    sh, sw = as_pair(stride, "stride")
    pads = conv_padding(padding, kernel_size, (sh, sw))
    h, w = x_shape[-2:]
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    if hp < kh or wp < kw:
        raise ValueError(
            f"the padded input ({hp}x{wp}: input {h}x{w} with padding={padding!r}) is smaller "
            f"than the kernel ({kh}x{kw})"
        )
    return Geometry((sh, sw), pads, ((hp - kh) // sh + 1, (wp - kw) // sw + 1))


def channels_last(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) as a C-contiguous (N, H, W, C) array: free if x is channels-last."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def nchw_view(x_nhwc: np.ndarray) -> np.ndarray:
    """The NCHW-shaped view of a channels-last array."""
    return x_nhwc.transpose(0, 3, 1, 2)


def use_kernels(*arrays: np.ndarray) -> bool:
    """Whether the Numba kernels take these arrays: kernels on, one float32/float64 dtype."""
    dtype = arrays[0].dtype
    return (
        kernels.enabled()
        and dtype in (np.float32, np.float64)
        and all(a.dtype == dtype for a in arrays)
    )


def weight_matrix(weight: np.ndarray) -> np.ndarray:
    """weight (C_out, C_in, kH, kW) as the (C_out, kH * kW * C_in) matrix that multiplies cols."""
    return weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)


def pad_spatial(x: np.ndarray, pads: tuple[int, int, int, int], value: float = 0) -> np.ndarray:
    """x (N, C, H, W) with (top, bottom, left, right) rows/columns of ``value`` added (or x)."""
    if not any(pads):
        return x
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def im2col(
    x: np.ndarray,
    kernel_size: tuple[int, int],
    stride: Stride = 1,
    padding: Padding = 0,
    ones_column: bool = False,
) -> np.ndarray:
    """Patches of ``x`` (N, C, H, W) as rows: (N * H_out * W_out, kH * kW * C).

    Row ``(n, y, x)`` holds the zero-padded window at ``(sH * y, sW * x)``, ordered
    (i, j, c): channels innermost, so every copy moves C contiguous numbers. With
    ``ones_column`` each row ends in one more number, 1: it multiplies the bias in the
    product, as the tap-major layout's row of ones does.
    """
    kh, kw = kernel_size
    (sh, sw), pads, (h_out, w_out) = geometry(x.shape, kernel_size, stride, padding)
    n, c = x.shape[:2]
    k = kh * kw * c
    cols = np.empty((n * h_out * w_out, k + ones_column), dtype=x.dtype)
    x_nhwc = channels_last(x)
    if use_kernels(x):
        conv_kernels.im2col(x_nhwc, kh, kw, sh, sw, pads[0], pads[2], h_out, w_out, cols)
        return cols
    if any(pads):
        top, bottom, left, right = pads
        x_nhwc = np.pad(x_nhwc, ((0, 0), (top, bottom), (left, right), (0, 0)))
    windows = sliding_window_view(x_nhwc, (kh, kw), axis=(1, 2))  # (N, H', W', C, kH, kW)
    windows = windows[:, : sh * h_out : sh, : sw * w_out : sw]
    cols[:, :k].reshape(n, h_out, w_out, kh, kw, c)[...] = windows.transpose(0, 1, 2, 4, 5, 3)
    cols[:, k:] = 1
    return cols


def col2im(
    grad_cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel_size: tuple[int, int],
    stride: Stride = 1,
    padding: Padding = 0,
) -> np.ndarray:
    """The adjoint of :func:`im2col`: add every patch's gradient back where the patch came from.

    Returns (N, C, H, W), channels-last in memory.
    """
    n, c, h, w = x_shape
    kh, kw = kernel_size
    (sh, sw), (top, bottom, left, right), (h_out, w_out) = geometry(
        x_shape, kernel_size, stride, padding
    )
    parts = grad_cols.reshape(n, h_out, w_out, kh, kw, c)
    if use_kernels(grad_cols):
        grad = np.empty((n, h, w, c), dtype=grad_cols.dtype)
        return nchw_view(conv_kernels.col2im(np.ascontiguousarray(parts), sh, sw, top, left, grad))
    # Kernel offset (i, j) read a strided view of the padded input; those views overlap, so
    # the gradients of all kH * kW of them add up.
    grad = np.zeros((n, h + top + bottom, w + left + right, c), dtype=grad_cols.dtype)
    for i in range(kh):
        for j in range(kw):
            grad[:, i : i + sh * h_out : sh, j : j + sw * w_out : sw] += parts[:, :, :, i, j]
    return nchw_view(np.ascontiguousarray(grad[:, top : top + h, left : left + w]))


def tap_rows(
    x: np.ndarray, kernel_size: tuple[int, int], stride: Stride = 1, padding: Padding = 0
) -> np.ndarray:
    """Tap-major patches of ``x`` (N, C, H, W): (C * kH * kW + 1, N, H_out, W_out).

    Row ``(c, i, j)`` is channel c of the zero-padded input shifted by (i, j) and strided;
    the last row is all ones (it multiplies the bias).
    """
    kh, kw = kernel_size
    (sh, sw), pads, (h_out, w_out) = geometry(x.shape, kernel_size, stride, padding)
    n, c = x.shape[:2]
    xp = pad_spatial(x, pads)
    rows = np.empty((c * kh * kw + 1, n, h_out, w_out), dtype=x.dtype)
    for ch in range(c):
        for i in range(kh):
            for j in range(kw):
                shifted = xp[:, ch, i : i + sh * h_out : sh, j : j + sw * w_out : sw]
                rows[(ch * kh + i) * kw + j] = shifted
    rows[-1] = 1
    return rows


def unfold(
    x: np.ndarray, kernel_size: tuple[int, int], stride: Stride = 1, padding: Padding = 0
) -> np.ndarray:
    """Patches in the layout that is faster for ``x``, each with a 1 for the bias: tap-major
    (4-D) below 8 input channels, else pixel-major (2-D) with a ones column.
    :func:`conv2d` and :func:`conv2d_backward` take both, and :func:`im2col`'s plain rows."""
    if x.shape[1] <= TAP_MAJOR_MAX_IN_CHANNELS:
        return tap_rows(x, kernel_size, stride, padding)
    return im2col(x, kernel_size, stride, padding, ones_column=True)


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: Stride = 1,
    padding: Padding = 0,
    cols: np.ndarray | None = None,
    max_cols_bytes: int | None = None,
) -> np.ndarray:
    """``out[n, o, y, x] = b[o] + sum_{c,i,j} w[o, c, i, j] x_pad[n, c, sH y + i, sW x + j]``.

    Args:
        x: (N, C_in, H, W). weight: (C_out, C_in, kH, kW). bias: (C_out,) or None.
        stride: int or (sH, sW). padding: int, (pH, pW), "same" or "valid" (zeros; see above).
        cols: ``unfold(x, ...)`` (either layout; or ``im2col``'s plain rows) if the caller
            keeps it for the backward pass.
        max_cols_bytes: without ``cols``, pixel-major patches are built a batch slice at a
            time, at most this big, and multiplied while they are in cache (inference);
            default :func:`patch_piece_bytes`.
    Returns:
        out (N, C_out, H_out, W_out), channels-last in memory (see the module docstring).

    Matches ``torch.nn.functional.conv2d`` (a cross-correlation: the kernel is not flipped).
    """
    if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            "conv2d needs x (N, C_in, H, W) and weight (C_out, C_in, kH, kW) with the same "
            f"C_in, got x.shape={x.shape} and weight.shape={weight.shape}"
        )
    n, c_in = x.shape[:2]
    c_out, _, kh, kw = weight.shape
    h_out, w_out = geometry(x.shape, (kh, kw), stride, padding).out
    dtype = np.result_type(x, weight)
    out = np.empty((n, h_out, w_out, c_out), dtype=dtype)
    rows = out.reshape(n * h_out * w_out, c_out)
    if cols is None and c_in <= TAP_MAJOR_MAX_IN_CHANNELS:
        cols = tap_rows(x, (kh, kw), stride, padding)
    if cols is not None and cols.ndim == 4:  # tap-major: [taps; 1]^T @ [W^T; b]
        w_b = _with_bias_row(weight.reshape(c_out, -1).T, bias, dtype)  # (c, i, j) order
        np.matmul(cols.reshape(len(cols), -1).T, w_b, out=rows)
        return nchw_view(out)
    k = kh * kw * c_in
    w_b = _with_bias_row(weight_matrix(weight).T, bias, dtype)  # (i, j, c) order
    if cols is not None:  # pixel-major: [patch, 1] @ [W^T; b], or im2col's plain rows
        if cols.shape[1] == k + 1:
            np.matmul(cols, w_b, out=rows)
        else:
            np.matmul(cols, w_b[:k], out=rows)
            if bias is not None:
                rows += bias
        return nchw_view(out)
    per_image = h_out * w_out * (k + 1) * x.itemsize
    step = max(1, (max_cols_bytes or patch_piece_bytes()) // per_image)
    for start in range(0, n, step):
        piece = slice(start * h_out * w_out, (start + step) * h_out * w_out)
        patches = im2col(x[start : start + step], (kh, kw), stride, padding, ones_column=True)
        np.matmul(patches, w_b, out=rows[piece])
    return nchw_view(out)


def patch_piece_bytes() -> int:
    """How many bytes of patches :func:`conv2d` builds and multiplies at a time when it need
    not keep them: twice the L2 caches of the threads, so that the product reads them from
    L2, not from L3 or memory. (The seeds' second convolution on Zen 5, 1 MB of L2 per core,
    two threads, 190 images: 4.0 ms in pieces of 16 MB, 3.3 ms in pieces of 2-4 MB, 4.0 ms
    at 1 MB, 5.6 ms at 512 KB, where the products are too small for two BLAS threads.)"""
    return 2 * cache_bytes(2) * kernels.get_num_threads()


def _with_bias_row(w_t: np.ndarray, bias: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    """[W^T; b] (K + 1, C_out): what multiplies patches that end in a 1 (b = 0 if None).
    ``w_t`` is (K, C_out), its rows in the patches' order."""
    bias_row = np.zeros(w_t.shape[1], dtype) if bias is None else bias
    return np.concatenate([w_t, bias_row[None]]).astype(dtype, copy=False)


def conv2d_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    cols: np.ndarray | None = None,
    stride: Stride = 1,
    padding: Padding = 0,
    need_grad_x: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d` given ``grad_out`` (N, C_out, H_out, W_out).

    Args:
        x: the forward input. cols: its ``unfold`` if the forward pass kept it (else it is
            rebuilt from ``x``). stride, padding: as in the forward call.
    Returns:
        (grad_x (N, C_in, H, W), channels-last in memory, or None; grad_w like weight;
        grad_b (C_out,)).
    """
    c_out = grad_out.shape[1]
    kernel = weight.shape[2:]
    grad_2d = channels_last(grad_out).reshape(-1, c_out)  # (N * L, C_out); free if channels-last
    if cols is None:
        cols = unfold(x, kernel, stride, padding)
    if cols.ndim == 4:
        # tap-major: [taps; 1] @ grad = [dL/dW^T; dL/db] in one product
        both = cols.reshape(len(cols), -1) @ grad_2d
        grad_w = np.ascontiguousarray(both[:-1].T).reshape(weight.shape)
        grad_b = both[-1].copy()
    else:
        # dL/dW = grad^T cols: every output pixel adds (its gradient) x (the patch it saw);
        # the ones column gives dL/db in the same product
        both = grad_2d.T @ cols
        k = weight[0].size
        grad_w = both[:, :k].reshape(c_out, *kernel, -1)
        grad_w = np.ascontiguousarray(grad_w.transpose(0, 3, 1, 2))
        if cols.shape[1] == k + 1:
            grad_b = both[:, k].copy()
        else:
            grad_b = np.ones(len(grad_2d), grad_2d.dtype) @ grad_2d  # faster than a sum
    if not need_grad_x:
        return None, grad_w, grad_b
    # dL/dcols = grad W, then every patch's gradient goes back to the pixels it read
    grad_cols = grad_2d @ weight_matrix(weight)
    return col2im(grad_cols, x.shape, kernel, stride, padding), grad_w, grad_b
