"""2-D pooling: max, average and adaptive average, and their backward passes.

Shapes: x (N, C, H, W) -> out (N, C, H_out, W_out). For a kH x kW window with stride (sH, sW)
and padding (pH, pW): H_out = (H + 2 pH - kH) // sH + 1 (floor mode, PyTorch's default: a last
partial window is dropped; same for W). ``kernel_size``, ``stride`` and ``padding`` are ints
or (height, width) pairs; stride defaults to the kernel size; padding is at most half the
kernel, as PyTorch requires, so every window overlaps the input. Max pooling pads with -inf,
average pooling with 0. ``argmax`` (N, C, H_out, W_out) holds the flat offset ``i * kW + j``
of each window's maximum; ties go to the first, as in PyTorch.

The NumPy code below is the reference. For float32/float64 (and :func:`glassnet.kernels.enabled`)
a Numba kernel computes the same max pooling on channels-last memory (one vector compare per
16 channels); its outputs are then channels-last too (NCHW-shaped views, see
:mod:`glassnet.functional.conv`). Average pooling is a few whole-array NumPy operations.
"""

from __future__ import annotations

import numpy as np

from glassnet.functional.conv import (
    TAP_MAJOR_MAX_IN_CHANNELS,
    Geometry,
    as_pair,
    channels_last,
    conv2d,
    conv2d_backward,
    geometry,
    nchw_view,
    pad_spatial,
    use_kernels,
)

try:  # the Numba max pooling; it runs when glassnet.kernels.enabled()
    from glassnet.kernels import pool as pool_kernels
except ImportError:  # no Numba: kernels.enabled() is False
    pool_kernels = None

Size = int | tuple[int, int]


def pool_geometry(
    x_shape: tuple[int, ...], kernel_size: Size, stride: Size | None, padding: Size
) -> tuple[tuple[int, int], Geometry]:
    """(kH, kW) and the window geometry, with PyTorch's checks on the arguments."""
    if len(x_shape) != 4:
        raise ValueError(f"pooling expects x (N, C, H, W), got shape {tuple(x_shape)}")
    kernel = as_pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else as_pair(stride, "stride")
    ph, pw = as_pair(padding, "padding", minimum=0)
    if 2 * ph > kernel[0] or 2 * pw > kernel[1]:
        raise ValueError(
            f"padding={padding!r} must be at most half of kernel_size={kernel_size!r} "
            "(as in PyTorch)"
        )
    return kernel, geometry(x_shape, kernel, stride, (ph, pw))


def _window_view(x: np.ndarray, i: int, j: int, geo: Geometry) -> np.ndarray:
    """The elements at offset (i, j) of every window of the padded x: (N, C, H_out, W_out)."""
    (sh, sw), (h_out, w_out) = geo.stride, geo.out
    return x[:, :, i : i + sh * h_out : sh, j : j + sw * w_out : sw]


def _unpad(grad_padded: np.ndarray, x_shape: tuple[int, ...], geo: Geometry) -> np.ndarray:
    """The part of a gradient on the padded input that belongs to x itself."""
    top, _, left, _ = geo.pads
    h, w = x_shape[2:]
    return grad_padded[:, :, top : top + h, left : left + w]


def _taps_inside(
    size: int, kernel: int, stride: int, pad: int, n_out: int
) -> tuple[np.ndarray, np.ndarray]:
    """(first, count) per output index: the window's first tap inside the input, and how many."""
    start = stride * np.arange(n_out) - pad
    first = np.maximum(-start, 0)
    return first, np.minimum(start + kernel, size) - np.maximum(start, 0)


def max_pool2d(
    x: np.ndarray,
    kernel_size: Size,
    stride: Size | None = None,
    padding: Size = 0,
    relu: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``out[n, c, y, x] = max of x_pad over the kH x kW window at (sH * y, sW * x)``.

    Args:
        x: (N, C, H, W). kernel_size, stride (default: kernel_size), padding: ints or pairs.
        relu: also apply a ReLU to the maxima (``relu(max_pool2d(x))`` in one pass); argmax
            is then -1 wherever the output is not positive, so :func:`max_pool2d_backward`
            sends no gradient back from there, as the ReLU's backward would not.
    Returns:
        (out, argmax), both (N, C, H_out, W_out): the maxima and their offsets in the window.

    Matches ``torch.nn.functional.max_pool2d(x, kernel_size, stride, padding)`` (no dilation
    or ceil mode). A NaN in a window is its maximum; argmax then keeps the last value
    strictly greater before it (PyTorch's points at the NaN).
    """
    (kh, kw), geo = pool_geometry(x.shape, kernel_size, stride, padding)
    (sh, sw), (top, _, left, _), (h_out, w_out) = geo
    n, c, h, w = x.shape
    index_dtype = np.int8 if kh * kw <= 127 else np.int32
    if use_kernels(x):
        out = np.empty((n, h_out, w_out, c), dtype=x.dtype)
        argmax = np.empty(out.shape, dtype=index_dtype)
        pool_kernels.max_pool2d(channels_last(x), kh, kw, sh, sw, top, left, out, argmax, relu)
        return nchw_view(out), nchw_view(argmax)
    lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    xp = pad_spatial(x, geo.pads, lowest)
    out = _window_view(xp, 0, 0, geo).copy(order="K")  # keeps x's layout
    argmax = np.zeros_like(out, dtype=index_dtype)
    if any(geo.pads):  # a window that starts in the padding starts at its first tap inside x
        i_first, _ = _taps_inside(h, kh, sh, top, h_out)
        j_first, _ = _taps_inside(w, kw, sw, left, w_out)
        argmax[...] = i_first[:, None] * kw + j_first
    # A running max over the kH * kW offsets, visited in increasing order. Plain arithmetic, no
    # masked writes: since every earlier offset is < o, max(argmax, better * o) records o
    # exactly where the candidate is strictly greater (ties stay with the first maximum; the
    # padding's -inf is never greater, so offsets before a window's first tap inside x never
    # win).
    for offset in range(1, kh * kw):
        candidate = _window_view(xp, *divmod(offset, kw), geo)
        better = candidate > out
        np.maximum(out, candidate, out=out)
        np.maximum(argmax, better * argmax.dtype.type(offset), out=argmax)
    if relu:
        argmax[~(out > 0)] = -1  # NaN included: ReLU's backward passes nothing there either
        out[out <= 0] = 0
    return out, argmax


def max_pool2d_backward(
    grad_out: np.ndarray,
    argmax: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel_size: Size,
    stride: Size | None = None,
    padding: Size = 0,
) -> np.ndarray:
    """dL/dx (N, C, H, W) from ``grad_out`` and ``argmax`` (N, C, H_out, W_out) of the forward."""
    (kh, kw), geo = pool_geometry(x_shape, kernel_size, stride, padding)
    (sh, sw), (top, bottom, left, right), _ = geo
    n, c, h, w = x_shape
    if use_kernels(grad_out):
        grad_x = np.empty((n, h, w, c), dtype=grad_out.dtype)
        pool_kernels.max_pool2d_backward(
            channels_last(grad_out), channels_last(argmax), kh, kw, sh, sw, top, left, grad_x
        )
        return nchw_view(grad_x)
    # dL/dx = grad_out at each window's argmax, 0 elsewhere (summed where windows overlap)
    grad = np.zeros((n, c, h + top + bottom, w + left + right), dtype=grad_out.dtype)
    for offset in range(kh * kw):
        target = _window_view(grad, *divmod(offset, kw), geo)
        routed = grad_out * (argmax == offset)
        if sh >= kh and sw >= kw:
            target[...] = routed  # windows are disjoint: every input is written at most once
        else:
            target += routed
    return _unpad(grad, x_shape, geo)


# The fused convolution + pooling forward kernel is built per output-channel count (a
# constant there, see kernels.pool._conv_max_pool_2x2): up to this many.
FUSED_POOL_MAX_OUT_CHANNELS = 256


def conv2d_max_pool2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: Size = 1,
    padding: Size | str = 0,
    pool_size: Size = 2,
    pool_stride: Size | None = None,
    pool_padding: Size = 0,
    relu: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``max_pool2d(conv2d(x, weight, bias, stride, padding), pool_size, pool_stride,
    pool_padding, relu)``: the pooling's (out, argmax) of a convolution's output.

    Where :func:`conv_max_pool_fuses` says so (few input channels, as a first layer has; 2 x 2
    windows) a kernel computes it without the convolution's output: each window's four
    outputs are made in registers and only their maximum is stored, so the (N, C_out, H1, W1)
    array, four times the pooled one, is never written or read. The numbers are the pair's up
    to the rounding of the sums' order (the pair's product sums in BLAS's); elsewhere the pair
    runs.
    """
    if not conv_max_pool_fuses(x, weight, bias, stride, padding, pool_size, pool_stride,
                               pool_padding):  # fmt: skip
        out = conv2d(x, weight, bias, stride, padding)
        return max_pool2d(out, pool_size, pool_stride, pool_padding, relu)
    c_out, _, kh, kw = weight.shape
    conv_geo = geometry(x.shape, (kh, kw), stride, padding)
    (sh, sw), pads, conv_out = conv_geo
    _, ((psh, psw), _, (h_p, w_p)) = pool_geometry((1, 1, *conv_out), pool_size, pool_stride, 0)
    xp = channels_last(pad_spatial(x, pads))
    w = np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(-1, c_out))  # (i, j, c) rows
    b = np.zeros(c_out, x.dtype) if bias is None else bias
    out = np.empty((x.shape[0], h_p, w_p, c_out), x.dtype)
    argmax = np.empty(out.shape, np.int8)
    pool_kernels.conv_max_pool_2x2(xp, w, b, kh, kw, sh, sw, psh, psw, relu, out, argmax)
    return nchw_view(out), nchw_view(argmax)


def conv_max_pool_fuses(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: Size = 1,
    padding: Size | str = 0,
    pool_size: Size = 2,
    pool_stride: Size | None = None,
    pool_padding: Size = 0,
) -> bool:
    """Whether :func:`conv2d_max_pool2d` runs its fused kernel for these arguments: kernels
    on, one float dtype, few input channels (a first layer's, as the fused weight gradient),
    at most FUSED_POOL_MAX_OUT_CHANNELS output channels, and a 2 x 2 pooling without padding."""
    arrays = (x, weight) if bias is None else (x, weight, bias)
    if not (
        x.ndim == 4
        and weight.ndim == 4
        and x.shape[1] == weight.shape[1]
        and (bias is None or bias.shape == weight.shape[:1])
        and weight.shape[0] <= FUSED_POOL_MAX_OUT_CHANNELS
        and _fused_weight_grad_runs(x, *arrays)
    ):
        return False
    conv_out = geometry(x.shape, weight.shape[2:], stride, padding).out
    window, geo = pool_geometry((1, 1, *conv_out), pool_size, pool_stride, pool_padding)
    return window == (2, 2) and not any(geo.pads)


def conv2d_weight_grad_through_max_pool(
    grad_out: np.ndarray,
    argmax: np.ndarray,
    x: np.ndarray,
    weight_shape: tuple[int, int, int, int],
    stride: Size = 1,
    padding: Size | str = 0,
    pool_size: Size = 2,
    pool_stride: Size | None = None,
    pool_padding: Size = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(dL/dW, dL/db) of a convolution whose output went straight into a max pooling, from the
    pooling's ``grad_out`` and ``argmax``, for a first layer (no dL/dx wanted).

    It equals :func:`max_pool2d_backward` followed by ``conv2d_backward(need_grad_x=False)``,
    and that pair is what runs in general. For 2 x 2 windows and few input channels (a first
    layer) a kernel computes it without making the pair's (N, C_out, H1, W1) intermediate,
    three quarters zeros: each pooled gradient meets the input under its window's argmax.

    Args:
        grad_out, argmax: (N, C_out, H_p, W_p), the pooling's. x: the convolution's input
            (N, C_in, H, W). weight_shape: (C_out, C_in, kH, kW). stride, padding: the
            convolution's. pool_size, pool_stride, pool_padding: the pooling's.
    """
    kernel = tuple(weight_shape[2:])
    conv_geo = geometry(x.shape, kernel, stride, padding)
    conv_shape = (x.shape[0], weight_shape[0], *conv_geo.out)
    (pkh, pkw), pool_geo = pool_geometry(conv_shape, pool_size, pool_stride, pool_padding)
    if (pkh, pkw) != (2, 2) or not _fused_weight_grad_runs(x, grad_out):
        grad_conv = max_pool2d_backward(
            grad_out, argmax, conv_shape, pool_size, pool_stride, pool_padding
        )
        weight = np.broadcast_to(np.zeros((), x.dtype), weight_shape)  # only its shape is read
        _, grad_w, grad_b = conv2d_backward(grad_conv, x, weight, None, stride, padding, False)
        return grad_w, grad_b
    (psh, psw), (ptop, _, pleft, _), (h_p, w_p) = pool_geo
    (sh, sw), (top, _, left, _), _ = conv_geo
    c_out, c_in = weight_shape[:2]
    # Pad x so that every read is inside it: the convolution's pads, a pixel's worth for
    # each row or column of the pooling's, and at the end what the last window reaches.
    n, _, h, w = x.shape
    pad_top, pad_left = top + sh * ptop, left + sw * pleft
    pad_bottom = max(0, sh * (psh * (h_p - 1) + 1) + kernel[0] - pad_top - h)
    pad_right = max(0, sw * (psw * (w_p - 1) + 1) + kernel[1] - pad_left - w)
    xp = channels_last(pad_spatial(x, (pad_top, pad_bottom, pad_left, pad_right)))
    per_image = np.empty((n, kernel[0] * kernel[1] * c_in + 1, c_out), x.dtype)
    pool_kernels.conv_weight_grad_2x2(
        channels_last(grad_out), channels_last(argmax), psh, psw, xp, *kernel, sh, sw, per_image
    )
    both = per_image.sum(axis=0)  # per image first: the same sums on any number of threads
    grad_w = both[:-1].T.reshape(c_out, *kernel, c_in).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(grad_w), both[-1]


def expect_weight_grad_through_max_pool(x: np.ndarray, weight_shape: tuple[int, ...]) -> None:
    """Name the kernel :func:`conv2d_weight_grad_through_max_pool` would run for this input
    and weight, so that a first run on an empty kernel cache compiles it in the background
    (``glassnet.kernels.first_run``); nothing where that kernel would not run."""
    if x.ndim == 4 and _fused_weight_grad_runs(x):
        pool_kernels.expect_conv_weight_grad_2x2(*weight_shape[2:], x.shape[1], x.dtype)


def _fused_weight_grad_runs(x: np.ndarray, *arrays: np.ndarray) -> bool:
    """Whether the fused kernel takes a convolution's input ``x`` (with ``arrays``, of 2 x 2
    windows): kernels on, one float dtype, and few input channels (a first layer's, where
    it was measured to pay)."""
    return x.shape[1] <= TAP_MAJOR_MAX_IN_CHANNELS and use_kernels(x, *arrays)


def _avg_divisor(
    x_shape: tuple[int, ...], kernel: tuple[int, int], geo: Geometry, count_include_pad: bool
) -> np.ndarray | int:
    """kH * kW, or with ``count_include_pad=False`` the (H_out, W_out) counts of taps inside x."""
    if count_include_pad:
        return kernel[0] * kernel[1]
    (sh, sw), (top, _, left, _), (h_out, w_out) = geo
    _, rows = _taps_inside(x_shape[2], kernel[0], sh, top, h_out)
    _, cols = _taps_inside(x_shape[3], kernel[1], sw, left, w_out)
    return np.outer(rows, cols)


def avg_pool2d(
    x: np.ndarray,
    kernel_size: Size,
    stride: Size | None = None,
    padding: Size = 0,
    count_include_pad: bool = True,
) -> np.ndarray:
    """``out[n, c, y, x] = sum of x_pad over the kH x kW window at (sH y, sW x) / divisor``.

    Args:
        x: (N, C, H, W). kernel_size, stride (default: kernel_size), padding: ints or pairs.
        count_include_pad: divide by kH * kW (True) or by the taps inside x (False).
    Returns:
        out (N, C, H_out, W_out), x's dtype.

    Matches ``torch.nn.functional.avg_pool2d`` with ceil_mode=False, divisor_override=None.
    """
    kernel, geo = pool_geometry(x.shape, kernel_size, stride, padding)
    xp = pad_spatial(x, geo.pads)
    out = np.zeros((*x.shape[:2], *geo.out), dtype=x.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            out += _window_view(xp, i, j, geo)
    out /= np.asarray(_avg_divisor(x.shape, kernel, geo, count_include_pad), dtype=x.dtype)
    return out


def avg_pool2d_backward(
    grad_out: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel_size: Size,
    stride: Size | None = None,
    padding: Size = 0,
    count_include_pad: bool = True,
) -> np.ndarray:
    """dL/dx (N, C, H, W) of :func:`avg_pool2d` given ``grad_out`` (N, C, H_out, W_out)."""
    kernel, geo = pool_geometry(x_shape, kernel_size, stride, padding)
    (top, bottom, left, right), (h, w) = geo.pads, x_shape[2:]
    divisor = _avg_divisor(x_shape, kernel, geo, count_include_pad)
    # dL/dx = sum over the windows that hold x of grad_out / divisor
    share = grad_out / np.asarray(divisor, dtype=grad_out.dtype)
    grad = np.zeros((*x_shape[:2], h + top + bottom, w + left + right), dtype=grad_out.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            _window_view(grad, i, j, geo)[...] += share
    return _unpad(grad, x_shape, geo)


def adaptive_output_size(output_size: object, x_shape: tuple[int, ...]) -> tuple[int, int]:
    """``output_size`` as (H_out, W_out); None in a pair keeps that input size, as in PyTorch."""
    if len(x_shape) != 4:
        raise ValueError(f"adaptive pooling expects x (N, C, H, W), got shape {tuple(x_shape)}")
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(x_shape[2 + k] if v is None else v for k, v in enumerate(output_size))
    return as_pair(output_size, "output_size")


def _bin_matrix(size: int, n_out: int, dtype: np.dtype) -> np.ndarray:
    """(n_out, size): row i averages bin i = [floor(i size / n_out), ceil((i + 1) size / n_out))."""
    i = np.arange(n_out)
    start = i * size // n_out
    end = -(-(i + 1) * size // n_out)
    taps = np.arange(size)
    inside = (taps >= start[:, None]) & (taps < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def adaptive_avg_pool2d(
    x: np.ndarray, output_size: Size | tuple[int | None, int | None]
) -> np.ndarray:
    """Average over PyTorch's adaptive bins: out = A_H x A_W^T per image and channel.

    Args:
        x: (N, C, H, W). output_size: int or (H_out, W_out) (None keeps that input size).
    Returns:
        out (N, C, H_out, W_out); A_H (H_out, H) averages rows floor(i H / H_out) up to
        ceil((i + 1) H / H_out) (bins overlap when H_out does not divide H). For 1 (global
        average pooling) it is a plain mean.

    Matches ``torch.nn.functional.adaptive_avg_pool2d``.
    """
    h_out, w_out = adaptive_output_size(output_size, x.shape)
    if (h_out, w_out) == (1, 1):
        return x.mean(axis=(2, 3), keepdims=True)
    rows = _bin_matrix(x.shape[2], h_out, x.dtype)
    cols = _bin_matrix(x.shape[3], w_out, x.dtype)
    return rows @ x @ cols.T


def adaptive_avg_pool2d_backward(
    grad_out: np.ndarray,
    x_shape: tuple[int, int, int, int],
    output_size: Size | tuple[int | None, int | None],
) -> np.ndarray:
    """dL/dx (N, C, H, W) of :func:`adaptive_avg_pool2d` given ``grad_out`` (N, C, H_out, W_out)."""
    h_out, w_out = adaptive_output_size(output_size, x_shape)
    h, w = x_shape[2:]
    if (h_out, w_out) == (1, 1):
        # dL/dx = grad_out / (H W) at every pixel
        grad = np.empty(x_shape, dtype=grad_out.dtype)
        grad[...] = grad_out / grad_out.dtype.type(h * w)
        return grad
    # dL/dx = A_H^T grad_out A_W
    rows = _bin_matrix(h, h_out, grad_out.dtype)
    cols = _bin_matrix(w, w_out, grad_out.dtype)
    return rows.T @ grad_out @ cols
