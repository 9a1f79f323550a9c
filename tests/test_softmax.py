"""softmax, log_softmax, their backward passes and the explicit Jacobian."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from glassnet import gradcheck
from glassnet.functional import (
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
    softmax_jacobian,
)

finite_rows = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
    elements=st.floats(-50, 50),
)


@given(finite_rows)
def test_rows_sum_to_one_and_are_probabilities(x):
    p = softmax(x, axis=-1)
    assert np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)


@given(finite_rows, st.floats(-1e3, 1e3))
def test_shift_invariance(x, shift):
    np.testing.assert_allclose(softmax(x + shift), softmax(x), atol=1e-12)
    np.testing.assert_allclose(
        log_softmax(x + shift) - log_softmax(x), 0.0, atol=1e-9 * (1 + abs(shift))
    )


@given(finite_rows)
def test_log_softmax_is_log_of_softmax(x):
    np.testing.assert_allclose(np.exp(log_softmax(x)), softmax(x), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_axis_argument_matches_moving_the_axis(axis):
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    expected = np.moveaxis(softmax(np.moveaxis(x, axis, -1)), -1, axis)
    np.testing.assert_allclose(softmax(x, axis=axis), expected)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_is_kept(dtype):
    x = np.array([[1.0, 2.0, 3.0]], dtype=dtype)
    for fn in (softmax, log_softmax):
        assert fn(x).dtype == dtype
    p = softmax(x)
    assert softmax_backward(np.ones_like(x), p).dtype == dtype
    assert softmax_jacobian(p).dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_stay_finite_and_exact(dtype):
    x = np.array([[1e4, -1e4, 1e4 - 1.0]], dtype=dtype)
    p = softmax(x)
    expected = np.array([1 / (1 + np.exp(-1.0)), 0.0, np.exp(-1.0) / (1 + np.exp(-1.0))])
    np.testing.assert_allclose(p[0], expected, rtol=1e-6)
    assert np.isfinite(log_softmax(x)).all()
    np.testing.assert_allclose(log_softmax(x)[0, 1], -2e4 - np.log1p(np.exp(-1.0)), rtol=1e-6)


def test_float16_is_computed_in_float32():
    # The result is the float32 computation rounded once to float16, not float16 all the way.
    x = np.array([12.0, 0.0, -3.0, 11.9], dtype=np.float16)
    for fn in (softmax, log_softmax):
        np.testing.assert_array_equal(fn(x), fn(x.astype(np.float32)).astype(np.float16))


def test_masked_entries_get_zero_probability():
    x = np.array([[1.0, -np.inf, 2.0], [-np.inf, -np.inf, -np.inf]])
    p = softmax(x)
    assert p[0, 1] == 0.0
    np.testing.assert_allclose(p[0].sum(), 1.0)
    np.testing.assert_array_equal(p[1], 0.0)  # a fully masked row has no distribution
    assert np.all(log_softmax(x)[1] == -np.inf)
    assert log_softmax(x)[0, 1] == -np.inf


@pytest.mark.parametrize("shape,axis", [((5,), -1), ((3, 4), 1), ((2, 4, 3), 1), ((2, 3, 4), -1)])
def test_gradcheck_softmax_and_log_softmax(shape, axis):
    x = np.random.default_rng(1).standard_normal(shape)
    assert gradcheck(
        lambda x: softmax(x, axis), lambda g, x: softmax_backward(g, softmax(x, axis), axis), [x]
    )
    assert gradcheck(
        lambda x: log_softmax(x, axis),
        lambda g, x: log_softmax_backward(g, log_softmax(x, axis), axis),
        [x],
    )


@given(finite_rows, st.randoms(use_true_random=False))
def test_vector_jacobian_product_equals_jacobian_times_vector(x, random):
    rng = np.random.default_rng(random.randint(0, 2**32))
    p = softmax(x)
    g = rng.standard_normal(x.shape)
    via_jacobian = np.einsum("...i,...ij->...j", g, softmax_jacobian(p))
    np.testing.assert_allclose(softmax_backward(g, p), via_jacobian, atol=1e-12)


def test_jacobian_is_diag_p_minus_outer_p():
    p = softmax(np.array([[-0.8, 1.1, 0.1], [0.0, 0.0, 0.0]]))
    jac = softmax_jacobian(p)
    assert jac.shape == (2, 3, 3)
    for row, j in zip(p, jac, strict=True):
        np.testing.assert_allclose(j, np.diag(row) - np.outer(row, row), atol=1e-15)
        np.testing.assert_allclose(j, j.T)
        np.testing.assert_allclose(j.sum(axis=0), 0.0, atol=1e-15)


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal((4, 7, 3))
    g = np.random.default_rng(3).standard_normal((4, 7, 3))
    for ours, theirs in ((softmax, torch.softmax), (log_softmax, torch.log_softmax)):
        xt = torch.tensor(x, requires_grad=True)
        out = theirs(xt, 1)
        out.backward(torch.tensor(g))
        np.testing.assert_allclose(ours(x, axis=1), out.detach().numpy(), rtol=1e-12)
        back = softmax_backward if ours is softmax else log_softmax_backward
        np.testing.assert_allclose(back(g, ours(x, axis=1), axis=1), xt.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize(
    "call,error,words",
    [
        (lambda: softmax(np.array([1, 2, 3])), TypeError, ["x", "int64", "floating"]),
        (lambda: softmax(np.zeros((2, 3)), axis=2), ValueError, ["axis=2"]),
        (lambda: log_softmax(np.float64(1.0), axis=1), ValueError, ["axis=1", "1 dimensions"]),
        (lambda: softmax_backward(np.zeros(3), np.zeros(4)), ValueError, ["grad_out", "(3,)"]),
        (lambda: softmax_jacobian(np.float64(1.0)), ValueError, ["probs", "scalar"]),
    ],
)
def test_bad_input_is_named(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value)
