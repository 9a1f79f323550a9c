"""``out += a @ b`` in one BLAS call (gemm with beta = 1), where NumPy's BLAS lets us call it.

NumPy's ``out += a @ b`` makes the product in a temporary and adds it in a second pass over
``out``: for a weight gradient summed over chunks (LinearCrossEntropy's 256 MB dL/dW, 16
times per step) that pass costs as much memory traffic as the product's own output. gemm
computes ``C = alpha op(A) op(B) + beta C`` and adds as it goes. NumPy does not expose beta,
so this module finds gemm in the OpenBLAS that NumPy's wheels load (scipy-openblas, 64-bit
integers) through ctypes. Where it cannot (another BLAS, other layouts or dtypes)
:func:`add_matmul` says so and :func:`glassnet.functional.linear.add_matmul` takes the NumPy
expression, which the tests compare this with.
"""

from __future__ import annotations

import ctypes
import glob
import os
from functools import cache
from typing import Any

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_FUNCTIONS = {
    np.dtype(np.float32): "scipy_cblas_sgemm64_",
    np.dtype(np.float64): "scipy_cblas_dgemm64_",
}
_SCALARS = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}


@cache
def _gemm(dtype: np.dtype) -> Any:
    """cblas_?gemm of NumPy's own OpenBLAS (ILP64), or None."""
    here = os.path.dirname(np.__file__)
    libraries = [os.path.join(here, "..", "numpy.libs"), os.path.join(here, ".dylibs")]
    for path in (p for folder in libraries for p in glob.glob(os.path.join(folder, "*openblas*"))):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        function = getattr(library, _FUNCTIONS[dtype], None)
        if function is not None:
            i64, scalar = ctypes.c_int64, _SCALARS[dtype]
            pointer, enum = ctypes.c_void_p, ctypes.c_int
            function.argtypes = [enum, enum, enum, i64, i64, i64, scalar, pointer, i64, pointer,
                                 i64, scalar, pointer, i64]  # fmt: skip
            function.restype = None
            return function
    return None


def _operand(array: np.ndarray) -> tuple[int, int] | None:
    """(transpose flag, leading dimension) for a 2-D array BLAS takes as it is, else None."""
    rows, cols = array.shape
    if not array.flags.aligned or any(s % array.itemsize for s in array.strides):
        return None  # (a field of a structured array, a view at an odd byte offset)
    row_stride, col_stride = (s // array.itemsize for s in array.strides)
    if col_stride == 1 and row_stride >= max(1, cols):
        return _NO_TRANS, row_stride
    if row_stride == 1 and col_stride >= max(1, rows):
        return _TRANS, col_stride
    return None


def add_matmul(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """``out += a @ b`` in one gemm, for 2-D a (M, K), b (K, N) and a C-contiguous out (M, N)
    of one float dtype, neither a nor b overlapping out; False (nothing done) otherwise."""
    dtype = out.dtype
    gemm = _gemm(dtype) if dtype in _FUNCTIONS else None
    if not (
        gemm is not None
        and a.ndim == b.ndim == out.ndim == 2
        and a.dtype == b.dtype == dtype
        and out.flags.c_contiguous
        and out.flags.aligned
        and out.flags.writeable
        and a.shape[0] == out.shape[0]
        and b.shape[1] == out.shape[1]
        and a.shape[1] == b.shape[0]
        and min(a.shape[1], out.size) > 0
        and not np.may_share_memory(out, a)
        and not np.may_share_memory(out, b)
    ):
        return False
    layout_a, layout_b = _operand(a), _operand(b)
    if layout_a is None or layout_b is None:
        return False
    (m, k), n = a.shape, b.shape[1]
    one = _SCALARS[dtype](1.0)
    gemm(_ROW_MAJOR, layout_a[0], layout_b[0], m, n, k, one, a.ctypes.data, layout_a[1],
         b.ctypes.data, layout_b[1], one, out.ctypes.data, max(1, n))  # fmt: skip
    return True
