"""A convolution and the 2 x 2 max pooling after it in one kernel (functional.conv2d_max_pool2d,
and Sequential's Conv2d -> MaxPool2d [-> ReLU]): the pair's numbers up to the rounding of the
sums' order, the pair's argmax, and the same training step, without the convolution's output."""

import numpy as np
import pytest

from glassnet import kernels, nn
from glassnet.functional.conv import conv2d
from glassnet.functional.pool import (
    FUSED_POOL_MAX_OUT_CHANNELS,
    conv2d_max_pool2d,
    conv_max_pool_fuses,
    max_pool2d,
)
from glassnet.nn import module as module_
from tests import kernel_paths

kernel_path = kernel_paths.kernel_path  # the fixture: each test runs on Numba, then NumPy

# (C_in, C_out, kernel, stride, padding, pool stride): the seeds' first layer, 3 channels and
# a C_out that is no multiple of a vector, an even and a non-square kernel with padding,
# stride 2, overlapping pooling windows.
GEOMETRIES = [
    (1, 32, 3, 1, 0, None),
    (3, 20, 3, 1, 1, None),
    (2, 8, (2, 4), 1, "same", 2),
    (1, 16, 5, 2, 2, None),
    (3, 17, 3, 1, 0, 1),
]
TOLERANCE = {np.float32: 2e-6, np.float64: 1e-13}


def _inputs(c_in, c_out, kernel, dtype, rng, bias=True):
    x = rng.standard_normal((3, c_in, 13, 12)).astype(dtype)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    weight = rng.standard_normal((c_out, c_in, kh, kw)).astype(dtype)
    return x, weight, rng.standard_normal(c_out).astype(dtype) if bias else None


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=range(len(GEOMETRIES)))
def test_the_fused_kernel_is_the_pair(kernel_path, geometry, dtype, relu):
    c_in, c_out, kernel, stride, padding, pool_stride = geometry
    rng = np.random.default_rng(0)
    x, weight, bias = _inputs(c_in, c_out, kernel, dtype, rng)
    args = (stride, padding, 2, pool_stride, 0)
    assert conv_max_pool_fuses(x, weight, bias, *args) == (kernel_path == "numba")
    got, got_argmax = conv2d_max_pool2d(x, weight, bias, *args, relu=relu)
    want, want_argmax = max_pool2d(conv2d(x, weight, bias, stride, padding), 2, pool_stride,
                                   relu=relu)  # fmt: skip
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    np.testing.assert_array_equal(got_argmax, want_argmax)
    if relu:
        assert (got_argmax == -1).any() and (got == 0).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_bias_nan_and_exact_ties_follow_max_pool2ds_rule(kernel_path, dtype):
    rng = np.random.default_rng(1)
    x, weight, _ = _inputs(1, 16, 3, dtype, rng, bias=False)
    x[0, 0, :6, :6] = 0.0  # every output of those windows is 0: a tie, argmax stays at 0
    x[1, 0, 5, 5] = np.nan  # NaN outputs: out is NaN, argmax the last strictly greater
    for relu in (False, True):
        got, got_argmax = conv2d_max_pool2d(x, weight, None, relu=relu)
        want, want_argmax = max_pool2d(conv2d(x, weight), 2, relu=relu)
        np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
        np.testing.assert_array_equal(got_argmax, want_argmax)
        assert np.isnan(got).any()
        assert (got_argmax[0, :, :2, :2] == (-1 if relu else 0)).all()


def test_the_fused_kernel_runs_only_where_it_was_measured_to_pay():
    rng = np.random.default_rng(2)
    x, weight, bias = _inputs(1, 8, 3, np.float32, rng)
    assert conv_max_pool_fuses(x, weight, bias)
    assert conv_max_pool_fuses(x, weight, bias, 1, 0, 2, 1)  # overlapping 2 x 2 windows
    assert not conv_max_pool_fuses(x, weight, bias, 1, 0, 3)  # 3 x 3 windows
    assert not conv_max_pool_fuses(x, weight, bias, 1, 0, 2, 2, 1)  # pooling's padding
    assert not conv_max_pool_fuses(x, weight, bias.astype(np.float64))  # mixed dtypes
    assert not conv_max_pool_fuses(x, weight, bias[:-1])  # (the pair reports the bad bias)
    assert not conv_max_pool_fuses(x.astype(np.float16), weight.astype(np.float16))
    many_in, wide = _inputs(8, 8, 3, np.float32, rng), _inputs(1, 257, 3, np.float32, rng)
    assert FUSED_POOL_MAX_OUT_CHANNELS == 256
    assert not conv_max_pool_fuses(*many_in) and not conv_max_pool_fuses(*wide)
    with kernels.disabled():
        assert not conv_max_pool_fuses(x, weight, bias)


def _unfused(monkeypatch):
    monkeypatch.setattr(module_, "_fuses_forward", lambda layer, after: False)


def _train_step(model, x, target, need_input_grad=False):
    loss_fn = nn.CrossEntropyLoss()
    model.zero_grad()
    loss = float(loss_fn(model(x), target))
    grad_x = model.backward(loss_fn.backward(), need_input_grad=need_input_grad)
    return loss, {name: p.grad.copy() for name, p in model.named_parameters()}, grad_x


@pytest.mark.parametrize("need_input_grad", [False, True])
def test_the_convnets_step_is_the_unfused_ones(kernel_path, monkeypatch, need_input_grad):
    """Both the first layer's fused weight gradient (backward_through, no dL/dx) and the plain
    backward pass (dL/dx wanted: the pooling's gradient, then the convolution's, whose
    patches are rebuilt) run from what the fused forward kept."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 1, 28, 28)).astype(np.float64)
    target = rng.integers(0, 10, size=6)

    def model():  # no Dropout: the two runs draw no masks
        return nn.convnet(rng=np.random.default_rng(4), dropout=0.0, dtype=np.float64)

    fused = model()
    got = _train_step(fused, x, target, need_input_grad)
    if kernel_path == "numba":
        assert fused[0]._cols is None  # the patches were never made
    _unfused(monkeypatch)
    want = _train_step(model(), x, target, need_input_grad)
    assert got[0] == pytest.approx(want[0], rel=1e-13)
    for name, grad in want[1].items():
        np.testing.assert_allclose(got[1][name], grad, rtol=1e-10, atol=1e-13, err_msg=name)
    if need_input_grad:
        np.testing.assert_allclose(got[2], want[2], rtol=1e-10, atol=1e-13)


def test_inference_in_slices_and_eval_mode_give_the_unfused_outputs(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 1, 28, 28)).astype(np.float32)
    net = nn.convnet(rng=np.random.default_rng(6)).eval()
    with nn.no_grad():
        got = net(x)
    _unfused(monkeypatch)
    with nn.no_grad():
        want = net(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


def test_a_watched_convolution_runs_on_its_own():
    """A trace (glassnet.inspect) replaces a layer's forward on the instance: that layer and
    its pooling then run one by one, so the trace sees the convolution's own output."""
    net = nn.convnet(rng=np.random.default_rng(7))
    seen = []
    plain_forward = net[0].forward

    def watched(x):
        out = plain_forward(x)
        seen.append(out.shape)
        return out

    net[0].forward = watched  # (a throwaway model: nothing to undo)
    net(np.zeros((2, 1, 28, 28), np.float32))
    assert seen == [(2, 32, 26, 26)]
