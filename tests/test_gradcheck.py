"""gradcheck itself: it must catch wrong gradients, not only bless right ones."""

import numpy as np
import pytest

from glassnet import gradcheck


def test_accepts_a_correct_gradient_and_restores_inputs():
    x = np.array([0.3, -1.2, 2.0])
    w = np.array([[1.0, 2.0, 0.5], [0.1, -0.4, 3.0]])
    saved_x, saved_w = x.copy(), w.copy()
    result = gradcheck(
        lambda x, w: np.tanh(w @ x),
        lambda g, x, w: (
            w.T @ (g * (1 - np.tanh(w @ x) ** 2)),
            np.outer(g * (1 - np.tanh(w @ x) ** 2), x),
        ),
        [x, w],
    )
    assert result.ok and result.max_rel_error < 1e-7
    assert len(result.errors) == 2
    np.testing.assert_array_equal(x, saved_x)
    np.testing.assert_array_equal(w, saved_w)


def test_rejects_a_gradient_off_by_a_small_factor():
    x = np.array([0.5, 1.5, -2.0])
    result = gradcheck(lambda x: x**3, lambda g, x: 3 * x**2 * g * 1.001, [x])
    assert not result
    assert 5e-4 < result.max_rel_error < 2e-3


def test_rejects_a_gradient_with_a_sign_error():
    x = np.array([[0.2, 0.4], [0.6, 0.8]])
    assert not gradcheck(lambda x: np.sin(x), lambda g, x: -np.cos(x) * g, [x])


def test_input_errors():
    with pytest.raises(TypeError, match=r"inputs\[0\].*float64"):
        gradcheck(lambda x: x, lambda g, x: g, [np.zeros(3, dtype=np.float32)])
    with pytest.raises(ValueError, match="returned 1 gradients for 2 inputs"):
        gradcheck(lambda x, y: x + y, lambda g, x, y: g, [np.zeros(2), np.zeros(2)])
    with pytest.raises(ValueError, match="shape"):
        gradcheck(lambda x: x.sum(), lambda g, x: np.zeros(5), [np.zeros(3)])
