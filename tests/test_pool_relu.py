"""A ReLU applied by the max pooling before it (functional.max_pool2d(relu=True), and
Sequential's MaxPool2d -> ReLU): the numbers of the pair, whose ReLU's backward then never
runs because the pooling's argmax sends no gradient from where the ReLU would zero it."""

import numpy as np
import pytest

from glassnet import nn
from glassnet.functional.activation import relu, relu_backward
from glassnet.functional.conv import conv2d
from glassnet.functional.pool import (
    conv2d_weight_grad_through_max_pool,
    max_pool2d,
    max_pool2d_backward,
)
from glassnet.nn.layers import ReLU
from tests import kernel_paths

kernel_path = kernel_paths.kernel_path  # the fixture: each test runs on Numba, then NumPy

WINDOWS = [(2, None, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (1, 2), (1, 0))]


def _activations(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, :4, :4] = 0.0  # windows whose maximum is exactly 0: ReLU passes no gradient
    x[0, 1, :4, :4] = -1.0
    x[1, 0, 2, 2] = np.nan  # a NaN stays in the output, and sends no gradient back
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("window", WINDOWS, ids=range(len(WINDOWS)))
def test_the_fused_relu_is_the_pair_forward_and_backward(kernel_path, window, dtype):
    rng = np.random.default_rng(0)
    x = _activations((3, 5, 9, 8), dtype, rng)
    pooled, argmax = max_pool2d(x, *window)
    got, got_argmax = max_pool2d(x, *window, relu=True)
    want = relu(pooled)
    np.testing.assert_array_equal(got, want)  # (NaNs in the same places)
    open_ = want > 0
    assert np.isnan(got).any() and not open_.all()
    np.testing.assert_array_equal(got_argmax, np.where(open_, argmax, -1))
    grad = rng.standard_normal(got.shape).astype(dtype)
    got_grad = max_pool2d_backward(grad, got_argmax, x.shape, *window)
    want_grad = max_pool2d_backward(grad * open_, argmax, x.shape, *window)
    np.testing.assert_array_equal(got_grad, want_grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_first_layers_weight_gradient_sees_the_fused_relus_mask(kernel_path, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 1, 12, 12)).astype(dtype)
    weight = rng.standard_normal((6, 1, 3, 3)).astype(dtype)
    out = conv2d(x, weight)
    pooled, argmax = max_pool2d(out, 2)
    fused, fused_argmax = max_pool2d(out, 2, relu=True)
    assert (fused_argmax < 0).any()
    grad = rng.standard_normal(fused.shape).astype(dtype)
    got = conv2d_weight_grad_through_max_pool(grad, fused_argmax, x, weight.shape)
    want = conv2d_weight_grad_through_max_pool(grad * (pooled > 0), argmax, x, weight.shape)
    for one, two in zip(got, want, strict=True):
        np.testing.assert_array_equal(one, two)


def _step(model, x, y, need_input_grad):
    loss = nn.CrossEntropyLoss()
    model.zero_grad()
    value = loss(model(x), y)
    grad_x = model.backward(loss.backward(), need_input_grad=need_input_grad)
    return value, grad_x, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("need_input_grad", [False, True])
def test_a_sequential_gives_the_unfused_numbers_bit_for_bit(monkeypatch, need_input_grad):
    """The seeds' convnet (both ReLUs after their poolings) with and without the fusion."""
    rng = np.random.default_rng(2)
    x = rng.random((6, 1, 28, 28), dtype=np.float32)
    y = np.arange(6) % 10
    calls = []
    real_relu_backward = ReLU.backward

    def counted_backward(self, *args, **kwargs):
        calls.append(self)
        return real_relu_backward(self, *args, **kwargs)

    monkeypatch.setattr(ReLU, "backward", counted_backward)
    model = nn.convnet(rng=np.random.default_rng(0))
    fused = _step(model, x, y, need_input_grad)
    assert calls == [] and all(pool.relu_applied for pool in (model[2], model[5]))
    monkeypatch.setattr(ReLU, "applied_by", ())
    plain_model = nn.convnet(rng=np.random.default_rng(0))  # (the same dropout masks)
    plain = _step(plain_model, x, y, need_input_grad)
    assert len(calls) == 2 and not plain_model[2].relu_applied
    assert fused[0] == plain[0]
    if need_input_grad:
        np.testing.assert_array_equal(fused[1], plain[1])
    for one, two in zip(fused[2], plain[2], strict=True):
        np.testing.assert_array_equal(one, two)


def test_a_watched_relu_runs_on_its_own():
    from glassnet.inspect import trace

    steps = trace(nn.convnet(rng=np.random.default_rng(0)), (1, 28, 28))
    relus = [step for step in steps if step.layer.endswith("ReLU")]
    assert len(relus) == 2 and all(step.grad_shape is not None for step in relus)


@pytest.mark.parametrize("in_place", [False, True])
def test_relus_gradient_is_a_select_as_pytorchs(kernel_path, in_place):
    """A NaN or inf gradient where the ReLU is closed gives 0 (PyTorch's threshold_backward),
    as the fused pooling's argmax -1 does; where it is open it passes as it is."""
    torch = pytest.importorskip("torch")
    x = np.tile(np.array([-1.0, 0.0, 2.0, -3.0, 4.0], np.float32), 20)
    grad = np.tile(np.array([np.nan, np.inf, 1.5, -np.inf, np.nan], np.float32), 20)
    y = relu(x)
    buffer = grad.copy()
    got = relu_backward(buffer, y, out=buffer if in_place else None)
    tx = torch.from_numpy(x).requires_grad_()
    torch.relu(tx).backward(torch.from_numpy(grad))
    np.testing.assert_array_equal(got, tx.grad.numpy())
