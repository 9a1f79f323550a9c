"""Input validation shared by the functional ops: one place for the error messages."""

from __future__ import annotations

import numpy as np

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction=} must be one of {', '.join(map(repr, REDUCTIONS))}")


def as_float_array(x: object, name: str) -> np.ndarray:
    """Return ``x`` as a floating ndarray, or raise TypeError naming ``name``."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{name} must be a floating-point array (float16, float32 or float64), "
            f"got dtype {arr.dtype}"
        )
    return arr


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32; float32 and float64 stay as they are."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def normalize_axis(axis: int, ndim: int, name: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} dimensions")
    return axis % ndim
