"""A first convolution's weight gradient taken through the max pooling after it
(functional.pool.conv2d_weight_grad_through_max_pool, Sequential's fused backward): the same
numbers as the pooling's backward followed by the convolution's, on both kernel paths."""

import numpy as np
import pytest

from glassnet import kernels, nn
from glassnet.functional.conv import conv2d, conv2d_backward
from glassnet.functional.pool import (
    conv2d_weight_grad_through_max_pool,
    max_pool2d,
    max_pool2d_backward,
)
from glassnet.inspect import trace
from tests import kernel_paths

kernel_path = kernel_paths.kernel_path  # the fixture: each test runs on Numba, then NumPy

CASES = [  # (x shape, weight shape, conv stride, conv padding, pool size, stride, padding)
    ((4, 1, 12, 12), (6, 1, 3, 3), 1, 0, 2, None, 0),  # the seeds' first layer, smaller
    ((3, 3, 11, 13), (5, 3, 3, 3), 1, 1, 2, None, 0),  # RGB, padded, odd sizes
    ((2, 2, 10, 9), (4, 2, 2, 3), (2, 1), 0, 2, None, 0),  # strided, non-square kernel
    ((2, 1, 9, 9), (3, 1, 3, 3), 1, "same", 2, 1, 0),  # overlapping windows
    ((2, 1, 10, 10), (3, 1, 3, 3), 1, 0, 2, 2, 1),  # padded pooling
    ((2, 8, 8, 8), (4, 8, 3, 3), 1, 0, 2, None, 0),  # many input channels: the plain pair
    ((2, 1, 11, 11), (3, 1, 3, 3), 1, 0, 3, 2, 0),  # 3 x 3 windows: the plain pair
]


def _pair(grad_out, argmax, x, weight, stride, padding, pool_size, pool_stride, pool_padding):
    conv_out_shape = conv2d(x, weight, None, stride, padding).shape
    grad_conv = max_pool2d_backward(
        grad_out, argmax, conv_out_shape, pool_size, pool_stride, pool_padding
    )
    _, grad_w, grad_b = conv2d_backward(grad_conv, x, weight, None, stride, padding, False)
    return grad_w, grad_b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_the_fused_weight_gradient_is_the_pair_of_backward_passes(kernel_path, case, dtype):
    x_shape, w_shape, stride, padding, pool_size, pool_stride, pool_padding = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    x[0, :, :3, :3] = 0.5  # flat patches: ties in the pooling, the first one wins
    weight = rng.standard_normal(w_shape).astype(dtype)
    out = conv2d(x, weight, None, stride, padding)
    pooled, argmax = max_pool2d(out, pool_size, pool_stride, pool_padding)
    grad_out = rng.standard_normal(pooled.shape).astype(dtype)
    pool = (pool_size, pool_stride, pool_padding)
    got_w, got_b = conv2d_weight_grad_through_max_pool(
        grad_out, argmax, x, w_shape, stride, padding, *pool
    )
    with kernels.disabled():  # the NumPy pair is the reference
        want_w, want_b = _pair(grad_out, argmax, x, weight, stride, padding, *pool)
    assert got_w.shape == w_shape and got_w.dtype == dtype and got_b.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(got_w, want_w, rtol=tol, atol=tol)
    np.testing.assert_allclose(got_b, want_b, rtol=tol, atol=tol)


def test_the_fused_weight_gradient_does_not_depend_on_the_threads():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 1, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    pooled, argmax = max_pool2d(conv2d(x, weight), 2)
    grad_out = rng.standard_normal(pooled.shape).astype(np.float32)
    results = []
    for threads in (1, 2):
        previous = kernels.get_num_threads()
        kernels.set_num_threads(threads)
        try:
            results.append(conv2d_weight_grad_through_max_pool(grad_out, argmax, x, weight.shape))
        finally:
            kernels.set_num_threads(previous)
    for one, two in zip(*results, strict=True):
        np.testing.assert_array_equal(one, two)  # image by image, then summed: bit for bit


def _convnet_grads(model, x, y, need_input_grad=False):
    loss = nn.CrossEntropyLoss()
    model.zero_grad()
    loss(model(x), y)
    grad_x = model.backward(loss.backward(), need_input_grad=need_input_grad)
    return grad_x, [p.grad.copy() for p in model.parameters()]


def _inputs():
    rng = np.random.default_rng(2)
    return rng.random((6, 1, 28, 28), dtype=np.float32), np.arange(6) % 10


def test_a_convnet_gets_the_same_gradients_with_its_first_pair_fused(kernel_path, monkeypatch):
    x, y = _inputs()
    calls = []
    real_backward = nn.MaxPool2d.backward
    monkeypatch.setattr(
        nn.MaxPool2d,
        "backward",
        lambda self, *a, **k: calls.append(self) or real_backward(self, *a, **k),
    )
    model = nn.convnet(rng=np.random.default_rng(0))  # (two alike: the same dropout masks)
    _, fused = _convnet_grads(model, x, y)
    assert calls == [model[5]], "the first pooling's backward ran: no fusion"
    monkeypatch.setattr(nn.Conv2d, "backward_fuses_with", ())
    calls.clear()
    _, plain = _convnet_grads(nn.convnet(rng=np.random.default_rng(0)), x, y)
    assert len(calls) == 2
    for got, want in zip(fused, plain, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_no_fusion_where_the_input_gradient_is_wanted_or_a_layer_is_watched():
    x, y = _inputs()
    model = nn.convnet(rng=np.random.default_rng(0))
    grad_x, _ = _convnet_grads(model, x, y, need_input_grad=True)
    assert grad_x is not None and grad_x.shape == x.shape
    steps = trace(model, (1, 28, 28))  # a trace watches every layer: each runs its backward
    pool = next(step for step in steps if step.layer.endswith("MaxPool2d"))
    assert pool.grad_shape == (1, 32, 26, 26)
