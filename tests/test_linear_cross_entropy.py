"""The fused, chunked final Linear + cross-entropy against the unfused pair."""

import tracemalloc

import numpy as np
import pytest

from glassnet import gradcheck
from glassnet.nn import CrossEntropyLoss, Linear, LinearCrossEntropy
from tests import kernel_paths

kernel_path = kernel_paths.kernel_path  # the fixture: each test runs on Numba, then NumPy

OPTIONS = [
    {},
    {"reduction": "sum", "label_smoothing": 0.1},
    {"weight": np.linspace(0.5, 2.0, 37), "ignore_index": 3},
    {"reduction": "none", "ignore_index": 0, "label_smoothing": 0.2},
]


def pair(options, dtype, bias, chunk_size, seed=0):
    fused = LinearCrossEntropy(
        16,
        37,
        bias=bias,
        chunk_size=chunk_size,
        rng=np.random.default_rng(seed),
        dtype=dtype,
        **options,
    )
    linear = Linear(16, 37, bias=bias, rng=np.random.default_rng(seed), dtype=dtype)
    loss_fn = CrossEntropyLoss(**options)
    return fused, linear, loss_fn


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunk_size", [1, 5, None])
@pytest.mark.parametrize("bias", [False, True])
def test_equals_linear_then_cross_entropy(kernel_path, options, dtype, chunk_size, bias):
    fused, linear, loss_fn = pair(options, dtype, bias, chunk_size)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((23, 16)).astype(dtype)
    target = rng.integers(0, 37, size=23)
    target[:3] = 3
    g = 1.0 if options.get("reduction") != "none" else None
    loss = fused(x, target)
    expected = loss_fn(linear(x), target)
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (1e-5, 1e-6)
    np.testing.assert_allclose(loss, expected, rtol=rtol, atol=atol)
    if g is None:
        return  # per-row grad_output is not supported by the fused layer (tested below)
    grad_x = fused.backward(0.7)
    expected_grad_x = linear.backward(loss_fn.backward(0.7))
    np.testing.assert_allclose(grad_x, expected_grad_x, rtol=rtol, atol=atol)
    np.testing.assert_allclose(fused.weight.grad, linear.weight.grad, rtol=rtol, atol=atol)
    if bias:
        np.testing.assert_allclose(fused.bias.grad, linear.bias.grad, rtol=rtol, atol=atol)
    assert [name for name, _ in fused.named_parameters()] == (
        ["weight", "bias"] if bias else ["weight"]
    )


def test_gradcheck_input_weight_and_bias():
    layer = LinearCrossEntropy(
        4,
        6,
        bias=True,
        chunk_size=2,
        label_smoothing=0.1,
        rng=np.random.default_rng(2),
        dtype=np.float64,
    )
    x = np.random.default_rng(3).standard_normal((5, 4))
    target = np.array([0, 5, 2, 2, 1])

    def forward(x, w, b):
        return layer.forward(x, target)

    def backward(g, x, w, b):
        layer.zero_grad()
        layer.forward(x, target)
        grad_x = layer.backward(g)
        return grad_x, layer.weight.grad.copy(), layer.bias.grad.copy()

    assert gradcheck(forward, backward, [x, layer.weight.data, layer.bias.data])


def test_peak_memory_is_a_fraction_of_the_unfused_path():
    rng = np.random.default_rng(4)
    n, d, c = 512, 32, 20000
    x = rng.standard_normal((n, d)).astype(np.float32)
    target = rng.integers(0, c, size=n)
    fused = LinearCrossEntropy(d, c, chunk_size=32, rng=rng)
    linear = Linear(d, c, rng=rng)
    loss_fn = CrossEntropyLoss()

    def peak(step):
        tracemalloc.start()
        step()
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_bytes

    unfused = peak(
        lambda: linear.backward(loss_fn.backward()) if loss_fn(linear(x), target) else None
    )
    chunked = peak(lambda: fused.backward() if fused(x, target) else None)
    assert chunked < unfused / 8, (chunked, unfused)


def test_bad_input():
    layer = LinearCrossEntropy(4, 6)
    with pytest.raises(ValueError, match=r"x \(N, 4\)"):
        layer(np.zeros((2, 5), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="target of shape"):
        layer(np.zeros((2, 4), np.float32), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"weight must have shape \(C,\) = \(6,\)"):
        LinearCrossEntropy(4, 6, weight=np.ones(5))
    weighted = LinearCrossEntropy(4, 6, weight=np.ones(6))
    with pytest.raises(ValueError, match=r"target holds class 9"):
        weighted(np.zeros((2, 4), np.float32), np.array([0, 9]))
    with pytest.raises(ValueError, match="chunk_size=0"):
        LinearCrossEntropy(4, 6, chunk_size=0)
    with pytest.raises(RuntimeError, match="needs a forward"):
        LinearCrossEntropy(4, 6).backward()
    with pytest.raises(ValueError, match="label_smoothing=2"):
        LinearCrossEntropy(4, 6, label_smoothing=2)
