"""Elementwise activations (sigmoid, tanh, GELU, leaky ReLU), their backward passes, and erf.

Shapes: any ``(...)``; every output and gradient has the input's shape and dtype (float16 is
computed in float32). Sigmoid and tanh differentiate from their *output* ``y``, which a layer
keeps anyway; GELU and leaky ReLU from their input. NumPy has no ``erf``, so :func:`erf` and
:func:`erfc` implement W. J. Cody's rational Chebyshev approximations (Math. Comp. 23, 1969),
accurate to a few units in the last place of float64.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from glassnet.functional._checks import as_float_array, compute_dtype

GeluApproximation = Literal["none", "tanh"]
GELU_APPROXIMATIONS = ("none", "tanh")

# Cody's coefficients: erf on |x| <= 0.46875 (A / B), erfc on (0.46875, 4] (C / D) and
# erfc on (4, inf) as exp(-x^2) / x * (1/sqrt(pi) - R(1/x^2)) (P / Q).
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)  # fmt: skip
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)  # fmt: skip
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)  # fmt: skip
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)  # fmt: skip
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)  # fmt: skip
_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)  # fmt: skip
_SMALL, _BIG = 0.46875, 26.543  # erfc(x) underflows float64 beyond _BIG
_INV_SQRT_PI = 1 / math.sqrt(math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)  # GELU's tanh approximation
_KAPPA = 0.044715


def _float_input(x: object, name: str = "x") -> tuple[np.ndarray, np.dtype]:
    """``x`` as an array of its compute dtype, and the dtype to return."""
    x = as_float_array(x, name)
    return x.astype(compute_dtype(x.dtype), copy=False), x.dtype


def _erf_small(x: np.ndarray) -> np.ndarray:
    """erf(x) for |x| <= 0.46875: x * A(x^2) / B(x^2)."""
    ysq = x * x
    num, den = _A[4] * ysq, ysq
    for a, b in zip(_A[:3], _B[:3], strict=True):
        num = (num + a) * ysq
        den = (den + b) * ysq
    return x * (num + _A[3]) / (den + _B[3])


def _erfc_large(y: np.ndarray) -> np.ndarray:
    """erfc(y) for 0.46875 < y < 26.543, as exp(-y^2) times a rational function."""
    medium = y <= 4
    ym, yl = y[medium], y[~medium]
    num, den = _C[8] * ym, ym
    for c, d in zip(_C[:7], _D[:7], strict=True):
        num = (num + c) * ym
        den = (den + d) * ym
    ratio = np.empty_like(y)
    ratio[medium] = (num + _C[7]) / (den + _D[7])
    inv_sq = 1 / (yl * yl)
    num, den = _P[5] * inv_sq, inv_sq
    for p, q in zip(_P[:4], _Q[:4], strict=True):
        num = (num + p) * inv_sq
        den = (den + q) * inv_sq
    ratio[~medium] = (_INV_SQRT_PI - inv_sq * (num + _P[4]) / (den + _Q[4])) / yl
    # exp(-y^2) = exp(-r^2) * exp(-(y - r)(y + r)) with r = y rounded down to 1/16: r^2 is
    # exact, so the large exponent carries no rounding error.
    rounded = np.trunc(y * 16) / 16
    return np.exp(-rounded * rounded) * np.exp(-(y - rounded) * (y + rounded)) * ratio


def _erf_and_erfc(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both erf(x) and erfc(x), each from the formula that is accurate where x lies."""
    y = np.abs(x)
    erf_x, erfc_x = np.empty_like(x), np.empty_like(x)
    small = y <= _SMALL
    erf_x[small] = _erf_small(x[small])
    erfc_x[small] = 1 - erf_x[small]
    large = ~small & ~np.isnan(x)
    tail = np.zeros_like(y[large])  # erfc(|x|); it underflows to 0 beyond _BIG
    finite = y[large] < _BIG
    tail[finite] = _erfc_large(y[large][finite])
    sign = np.sign(x[large])
    erf_x[large] = sign * (1 - tail)
    erfc_x[large] = np.where(sign > 0, tail, 2 - tail)
    erf_x[np.isnan(x)] = erfc_x[np.isnan(x)] = np.nan
    return erf_x, erfc_x


def erf(x: np.ndarray) -> np.ndarray:
    """The error function ``erf(x) = 2 / sqrt(pi) * integral_0^x exp(-t^2) dt``, elementwise.

    Args:
        x: any shape, float16/32/64.
    Returns:
        erf(x), x's shape and dtype; within a few ulps of ``math.erf`` in float64.

    Matches ``torch.special.erf`` (Cody's rational approximations; NumPy has none).

    >>> erf(np.array([-1.0, 0.0, 0.5])).round(6)
    array([-0.842701,  0.      ,  0.5205  ])
    """
    x, dtype = _float_input(x)
    return _erf_and_erfc(x)[0].astype(dtype, copy=False)


def erfc(x: np.ndarray) -> np.ndarray:
    """The complementary error function ``erfc(x) = 1 - erf(x)``, without the cancellation.

    Args:
        x: any shape, float16/32/64.
    Returns:
        erfc(x), x's shape and dtype; accurate in relative terms even where it is tiny
        (erfc(10) = 2.1e-45), unlike ``1 - erf(x)``.

    Matches ``torch.special.erfc``.
    """
    x, dtype = _float_input(x)
    return _erf_and_erfc(x)[1].astype(dtype, copy=False)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function ``1 / (1 + exp(-x))``, elementwise.

    Args:
        x: any shape, float16/32/64.
    Returns:
        y in [0, 1], x's shape and dtype.

    Matches ``torch.sigmoid``. Computed from ``e = exp(-|x|) <= 1`` as ``1 / (1 + e)`` or
    ``e / (1 + e)``, so no exp overflows, however large |x|.

    >>> sigmoid(np.array([-800.0, 0.0, 2.0])).round(4)
    array([0.    , 0.5   , 0.8808])
    """
    x, dtype = _float_input(x)
    e = np.exp(-np.abs(x))
    return (np.where(x >= 0, 1, e) / (1 + e)).astype(dtype, copy=False)


def sigmoid_backward(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dL/dx = grad_out * y * (1 - y), with y = sigmoid(x) the forward output (same shape)."""
    return grad_out * (y * (1 - y))


def tanh(x: np.ndarray) -> np.ndarray:
    """The hyperbolic tangent ``(e^x - e^-x) / (e^x + e^-x)``, elementwise; matches ``torch.tanh``.

    Args:
        x: any shape, float16/32/64.
    Returns:
        y in [-1, 1], x's shape and dtype.
    """
    x, dtype = _float_input(x)
    return np.tanh(x).astype(dtype, copy=False)


def tanh_backward(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dL/dx = grad_out * (1 - y^2), with y = tanh(x) the forward output (same shape)."""
    return grad_out * (1 - y * y)


def check_approximate(approximate: str) -> None:
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"{approximate=} must be one of {GELU_APPROXIMATIONS}")


def gelu(x: np.ndarray, approximate: GeluApproximation = "none") -> np.ndarray:
    """Gaussian error linear unit ``x * Phi(x)``, Phi the standard normal CDF, elementwise.

    Args:
        x: any shape, float16/32/64.
        approximate: "none": ``Phi(x) = erfc(-x / sqrt(2)) / 2``; "tanh":
            ``Phi(x) ~ (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2``.
    Returns:
        y, x's shape and dtype.

    Matches ``torch.nn.functional.gelu``. PyTorch computes ``1 + erf(..)`` and ``1 + tanh(..)``,
    which lose relative precision for x < -5; ``erfc`` and ``2 * sigmoid(2u)`` keep it.

    >>> gelu(np.array([-1.0, 0.0, 1.0])).round(6)
    array([-0.158655,  0.      ,  0.841345])
    """
    check_approximate(approximate)
    x, dtype = _float_input(x)
    if approximate == "tanh":
        cdf = sigmoid(2 * _SQRT_2_OVER_PI * (x + _KAPPA * x * x * x))  # (1 + tanh(u)) / 2
    else:
        cdf = 0.5 * _erf_and_erfc(-x * math.sqrt(0.5))[1]
    return (x * cdf).astype(dtype, copy=False)


def gelu_backward(
    grad_out: np.ndarray, x: np.ndarray, approximate: GeluApproximation = "none"
) -> np.ndarray:
    """dL/dx of :func:`gelu` at its input x (grad_out and x of the same shape).

    Exact: ``grad_out * (Phi(x) + x * phi(x))``, phi the standard normal density. "tanh":
    with ``u = sqrt(2 / pi) * (x + 0.044715 x^3)`` and ``t = tanh(u)``, ``grad_out *
    ((1 + t) / 2 + x / 2 * (1 - t^2) * sqrt(2 / pi) * (1 + 3 * 0.044715 x^2))``.
    Matches ``x.grad`` after ``F.gelu(x, approximate=...).backward(grad_out)``.
    """
    check_approximate(approximate)
    x, dtype = _float_input(x)
    if approximate == "tanh":
        two_u = 2 * _SQRT_2_OVER_PI * (x + _KAPPA * x * x * x)
        du_dx = _SQRT_2_OVER_PI * (1 + 3 * _KAPPA * x * x)
        # dy/dx = (1 + t) / 2 + x / 2 * (1 - t^2) * du/dx, with (1 + t) / 2 = sigmoid(2u) = s
        # and (1 - t^2) / 4 = s * (1 - s) = sigmoid(2u) * sigmoid(-2u)
        s = sigmoid(two_u)
        local = s + 2 * x * s * sigmoid(-two_u) * du_dx
    else:
        cdf = 0.5 * _erf_and_erfc(-x * math.sqrt(0.5))[1]
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        # dy/dx = Phi(x) + x * phi(x)
        local = cdf + x * pdf
    return (grad_out * local).astype(np.result_type(grad_out, dtype), copy=False)


def leaky_relu(x: np.ndarray, negative_slope: float = 0.01, out: np.ndarray | None = None):
    """``x`` where x > 0, else ``negative_slope * x``, elementwise.

    Args:
        x: any shape, float16/32/64.
        negative_slope: the slope for x <= 0.
        out: where to write y; may be ``x`` itself (in place).
    Returns:
        y, x's shape and dtype.

    Matches ``torch.nn.functional.leaky_relu``.

    >>> leaky_relu(np.array([-2.0, 0.0, 3.0]), 0.1)
    array([-0.2,  0. ,  3. ])
    """
    x = as_float_array(x, "x")
    return np.multiply(x, np.where(x > 0, 1, negative_slope).astype(x.dtype), out=out)


def leaky_relu_backward(
    grad_out: np.ndarray, x: np.ndarray, negative_slope: float = 0.01
) -> np.ndarray:
    """dL/dx = grad_out where x > 0, else grad_out * negative_slope (at 0 too, as PyTorch).

    ``x`` is the input, or the output when ``negative_slope >= 0`` (it has the input's signs).
    """
    return grad_out * np.where(x > 0, 1, negative_slope).astype(x.dtype)
