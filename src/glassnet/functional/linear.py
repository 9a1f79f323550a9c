"""Products for linear layers: ``out += a @ b`` without a temporary.

Shapes: a (M, K), b (K, N), out (M, N). A weight gradient is a sum of such products (over
chunks of rows, or over the steps that accumulate into ``.grad``), so adding in place saves a
pass over ``out`` and an ``(M, N)`` temporary (see :mod:`glassnet.kernels.blas`).
"""

from __future__ import annotations

import numpy as np

from glassnet import kernels
from glassnet.kernels import blas as blas_kernels

_ROWS_PER_BLOCK = 8192


def add_matmul(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``out += a @ b``; returns ``out``.

    One BLAS gemm with beta = 1 where the kernels are on and NumPy's BLAS is OpenBLAS;
    otherwise NumPy's ``out += a @ b``, the same sum rounded once more, in blocks of rows of
    ``out`` (so that its temporary stays small: LinearCrossEntropy's dL/dW has C rows).

    >>> out = np.ones((2, 2))
    >>> add_matmul(out, np.eye(2), np.full((2, 2), 3.0))
    array([[4., 4.],
           [4., 4.]])
    """
    if kernels.enabled() and blas_kernels.add_matmul(out, a, b):
        return out
    for start in range(0, max(1, len(out)), _ROWS_PER_BLOCK):
        rows = slice(start, start + _ROWS_PER_BLOCK)
        out[rows] += a[rows] @ b
    return out
