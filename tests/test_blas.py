"""``out += a @ b`` in one gemm (glassnet.kernels.blas) against NumPy's expression."""

import numpy as np
import pytest

from glassnet import kernels
from glassnet.functional.linear import add_matmul
from glassnet.kernels import blas


def _layouts(array: np.ndarray) -> dict[str, np.ndarray]:
    """The same numbers as C order, Fortran order, and a column slice of a wider array."""
    wide = np.zeros((array.shape[0], array.shape[1] + 3), array.dtype)
    wide[:, 1 : 1 + array.shape[1]] = array
    return {"C": array.copy(), "F": np.asfortranarray(array), "slice": wide[:, 1:-2]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 5, 3), (1, 9, 4), (130, 1, 65)])
def test_one_gemm_adds_the_product_for_every_layout_blas_takes(dtype, shape):
    if blas._gemm(np.dtype(dtype)) is None:
        pytest.skip("NumPy's BLAS here is not the OpenBLAS of NumPy's wheels")
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    start = rng.standard_normal((m, n)).astype(dtype)
    expected = start + a.astype(np.float64) @ b.astype(np.float64)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for name_a, layout_a in _layouts(a).items():
        for name_b, layout_b in _layouts(b).items():
            out = start.copy()
            assert blas.add_matmul(out, layout_a, layout_b), (name_a, name_b)
            np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


def test_what_gemm_cannot_take_falls_back_to_numpy():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 4)).astype(np.float32)
    b = rng.standard_normal((4, 5)).astype(np.float32)
    base = rng.standard_normal((6, 5)).astype(np.float32)
    strided_a = np.repeat(a, 2, axis=1)[:, ::2]  # neither row nor column stride is 1
    cases = {
        "out not C-contiguous": (np.asfortranarray(base), a, b),
        "mixed dtypes": (base, a.astype(np.float64), b),
        "integer out": (base.astype(np.int64), a.astype(np.int64), b.astype(np.int64)),
        "strided operand": (base, strided_a, b),
    }
    for name, (out, x, y) in cases.items():
        expected = out + x @ y
        assert not blas.add_matmul(out, x, y), name
        np.testing.assert_allclose(add_matmul(out, x, y), expected, rtol=1e-6, err_msg=name)
    shared = np.ones((4, 4), np.float32)
    assert not blas.add_matmul(shared, shared, shared)  # out overlaps an operand
    with kernels.disabled():  # the NumPy expression, whatever the BLAS
        out = base.copy()
        add_matmul(out, a, b)
        np.testing.assert_array_equal(out, base + a @ b)
