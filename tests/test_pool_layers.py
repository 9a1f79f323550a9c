"""Pooling (max, average, adaptive average) and the Conv2d/pooling layers against PyTorch.

Functional ops run on both kernel paths (``kernel_path``) against the loop oracles and
``torch.nn.functional``; layers get float64 gradient checks, PyTorch parity with the state
dict copied over, PyTorch's attributes, and clear errors.
"""

import numpy as np
import pytest

import glassnet
from glassnet import gradcheck_layer
from glassnet.functional.pool import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)
from glassnet.functional.reference import (
    adaptive_avg_pool2d_backward_loops,
    adaptive_avg_pool2d_loops,
    avg_pool2d_backward_loops,
    avg_pool2d_loops,
    max_pool2d_backward_loops,
    max_pool2d_loops,
)
from glassnet.nn import Flatten, Linear, ReLU, Sequential
from glassnet.nn import layers as layers_module
from glassnet.nn.layers import Conv2d
from glassnet.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from tests import kernel_paths

kernel_path = kernel_paths.kernel_path  # the fixture: each test runs on Numba, then NumPy

WINDOWS = [  # (kernel_size, stride, padding)
    (2, None, 0),
    (3, 2, 1),
    ((2, 3), (1, 2), (1, 1)),
    (3, 1, 1),
    (4, 2, 2),
    ((3, 2), None, (1, 0)),
]
TOLERANCE = {np.float64: {"rtol": 1e-10, "atol": 1e-12}, np.float32: {"rtol": 1e-5, "atol": 1e-6}}


def torch_pool(torch, function, x, grad_out_rng, *args, **kwargs):
    """PyTorch's output, a random grad_out like it, and PyTorch's dL/dx (float64)."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = function(xt, *args, **kwargs)
    grad_out = grad_out_rng.standard_normal(tuple(out.shape))
    out.backward(torch.tensor(grad_out))
    return out.detach().numpy(), grad_out, xt.grad.numpy()


def window_id(window):
    return "k{}-s{}-p{}".format(*window)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("channels", [1, 3, 16])
@pytest.mark.parametrize("window", WINDOWS, ids=window_id)
def test_max_pool2d_matches_loops_and_pytorch(kernel_path, window, channels, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, channels, 7, 9)).astype(dtype)
    x[0, 0, :2, :2] = x[0, 0, 0, 0]  # a tie
    kernel_size, stride, padding = window
    expected, grad_out, expected_grad = torch_pool(
        torch, torch.nn.functional.max_pool2d, x, rng, kernel_size, stride, padding
    )
    grad_out = grad_out.astype(dtype)
    out, argmax = max_pool2d(x, *window)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, expected.astype(dtype))  # a max is exact
    np.testing.assert_array_equal(out, max_pool2d_loops(x, *window))
    grad_x = max_pool2d_backward(grad_out, argmax, x.shape, *window)
    np.testing.assert_allclose(grad_x, expected_grad, **TOLERANCE[dtype])
    np.testing.assert_allclose(
        grad_x, max_pool2d_backward_loops(grad_out, x, *window), **TOLERANCE[dtype]
    )


def test_max_pool2d_padding_never_wins_even_against_minus_infinity(kernel_path):
    torch = pytest.importorskip("torch")
    x = np.full((1, 2, 4, 5), -np.inf)
    x[0, 1, 2, 3] = np.nan  # NaN is a window's maximum, as in PyTorch
    out, argmax = max_pool2d(x, 3, 2, 1)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 3, 2, 1)[0, 0].sum().backward()
    # every -inf window routes its gradient to its first tap inside x, as PyTorch does
    grad = max_pool2d_backward(np.ones_like(out), argmax, x.shape, 3, 2, 1)
    np.testing.assert_array_equal(grad[0, 0], xt.grad.numpy()[0, 0])
    np.testing.assert_array_equal(out[0, 0], -np.inf)
    assert np.isnan(out[0, 1, 1, 1]) and out[0, 1, 0, 0] == -np.inf


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("window", WINDOWS, ids=window_id)
def test_avg_pool2d_matches_loops_and_pytorch(window, dtype, count_include_pad):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    options = {"count_include_pad": count_include_pad}
    expected, grad_out, expected_grad = torch_pool(
        torch, torch.nn.functional.avg_pool2d, x, rng, *window, **options
    )
    grad_out = grad_out.astype(dtype)
    out = avg_pool2d(x, *window, **options)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, **TOLERANCE[dtype])
    np.testing.assert_allclose(out, avg_pool2d_loops(x, *window, **options), **TOLERANCE[dtype])
    grad_x = avg_pool2d_backward(grad_out, x.shape, *window, **options)
    assert grad_x.dtype == dtype
    np.testing.assert_allclose(grad_x, expected_grad, **TOLERANCE[dtype])
    loops = avg_pool2d_backward_loops(grad_out, x, *window, **options)
    np.testing.assert_allclose(grad_x, loops, **TOLERANCE[dtype])


def test_avg_pool2d_divisor_with_and_without_the_padding():
    x = np.ones((1, 1, 2, 2))
    overlap = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]])  # of each 2 x 2 window with x
    np.testing.assert_allclose(avg_pool2d(x, 2, 1, 1)[0, 0], overlap / 4)
    np.testing.assert_allclose(avg_pool2d(x, 2, 1, 1, count_include_pad=False), 1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("output_size", [1, 2, (3, 5), 7, (None, 3)])
@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (1, 2, 5, 7)])
def test_adaptive_avg_pool2d_matches_loops_and_pytorch(shape, output_size, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    expected, grad_out, expected_grad = torch_pool(
        torch, torch.nn.functional.adaptive_avg_pool2d, x, rng, output_size
    )
    grad_out = grad_out.astype(dtype)
    out = adaptive_avg_pool2d(x, output_size)
    assert out.dtype == dtype and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, **TOLERANCE[dtype])
    sizes = expected.shape[2:]
    np.testing.assert_allclose(out, adaptive_avg_pool2d_loops(x, sizes), **TOLERANCE[dtype])
    grad_x = adaptive_avg_pool2d_backward(grad_out, x.shape, output_size)
    assert grad_x.dtype == dtype and grad_x.flags.writeable
    np.testing.assert_allclose(grad_x, expected_grad, **TOLERANCE[dtype])
    loops = adaptive_avg_pool2d_backward_loops(grad_out, x.shape, sizes)
    np.testing.assert_allclose(grad_x, loops, **TOLERANCE[dtype])


def test_global_average_pooling_is_the_mean():
    x = np.random.default_rng(3).standard_normal((2, 4, 5, 3))
    np.testing.assert_allclose(adaptive_avg_pool2d(x, 1), x.mean(axis=(2, 3), keepdims=True))


@pytest.mark.parametrize(
    "call,words",
    [
        (lambda x: max_pool2d(x, 2, padding=2), "padding=2 must be at most half of kernel_size=2"),
        (lambda x: avg_pool2d(x, (3, 2), padding=(1, 2)), "padding=(1, 2) must be at most half"),
        (lambda x: max_pool2d(x, 9), "smaller than the kernel (9x9)"),
        (lambda x: max_pool2d(x, 0), "kernel_size=0"),
        (lambda x: avg_pool2d(x, 2, stride=(1, 0)), "stride=(1, 0)"),
        (lambda x: max_pool2d(x[0], 2), "pooling expects x (N, C, H, W), got shape (2, 5, 6)"),
        (lambda x: adaptive_avg_pool2d(x, (0, 2)), "output_size=(0, 2)"),
        (lambda x: adaptive_avg_pool2d(x, 2.5), "output_size=2.5"),
    ],
)
def test_bad_pooling_arguments_are_clear_errors(call, words):
    with pytest.raises(ValueError) as info:
        call(np.zeros((1, 2, 5, 6)))
    assert words in str(info.value)


# --- layers -----------------------------------------------------------------------------------


def make_layers():
    rng = np.random.default_rng(4)
    f64 = {"rng": rng, "dtype": np.float64}
    return {
        "Conv2d stride 2 tuple kernel": (
            Conv2d(2, 3, (2, 3), stride=2, padding=(1, 0), **f64),
            rng.standard_normal((2, 2, 7, 6)),
        ),
        "Conv2d same even kernel": (
            Conv2d(2, 3, (4, 2), padding="same", **f64),
            rng.standard_normal((2, 2, 5, 6)),
        ),
        "Conv2d 16 channels stride (2, 1)": (
            Conv2d(16, 2, 3, stride=(2, 1), padding=1, bias=False, **f64),
            rng.standard_normal((1, 16, 5, 4)),
        ),
        "MaxPool2d padding 1": (MaxPool2d(3, 2, padding=1), rng.standard_normal((2, 3, 7, 6))),
        "AvgPool2d": (
            AvgPool2d((3, 2), stride=(2, 1), padding=1),
            rng.standard_normal((2, 2, 7, 6)),
        ),
        "AvgPool2d without pad": (
            AvgPool2d(3, 2, padding=1, count_include_pad=False),
            rng.standard_normal((2, 2, 7, 6)),
        ),
        "AdaptiveAvgPool2d 1": (AdaptiveAvgPool2d(1), rng.standard_normal((2, 3, 5, 4))),
        "AdaptiveAvgPool2d (3, 5)": (AdaptiveAvgPool2d((3, 5)), rng.standard_normal((2, 2, 7, 9))),
    }


@pytest.mark.parametrize("name", list(make_layers()))
def test_gradcheck_layers(name):
    layer, x = make_layers()[name]
    result = gradcheck_layer(layer.to(np.float64), x)
    assert result.ok, result


def glassnet_and_torch_models(torch):
    """The same small network in glassnet and PyTorch, with PyTorch's weights in both."""
    model = Sequential(
        Conv2d(3, 4, (2, 3), padding="same"),
        ReLU(),
        MaxPool2d(3, stride=2, padding=1),
        Conv2d(4, 8, 3, stride=(2, 1), padding=(1, 2)),
        AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
        Conv2d(8, 6, 1, padding="valid"),
        AdaptiveAvgPool2d((3, 2)),
        Flatten(),
        Linear(36, 5),
    ).to(np.float64)
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(3, 4, (2, 3), padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(4, 8, 3, stride=(2, 1), padding=(1, 2)),
        nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
        nn.Conv2d(8, 6, 1, padding="valid"),
        nn.AdaptiveAvgPool2d((3, 2)),
        nn.Flatten(),
        nn.Linear(36, 5),
    ).double()
    model.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
    return model, net


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_layers_match_pytorch_with_its_weights(kernel_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model, net = glassnet_and_torch_models(torch)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 11, 10))
    grad_out = rng.standard_normal((2, 5))
    out = model(x)
    grad_x = model.backward(grad_out)
    xt = torch.tensor(x, requires_grad=True)
    out_t = net(xt)
    out_t.backward(torch.tensor(grad_out))
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    torch_params = dict(net.named_parameters())
    assert list(torch_params) == [name for name, _ in model.named_parameters()]
    for name, param in model.named_parameters():
        expected = torch_params[name].grad.numpy()
        np.testing.assert_allclose(param.grad, expected, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    "args,kwargs",
    [
        ((3, 8, 3), {}),
        ((3, 8, (2, 5)), {"stride": (2, 1), "padding": (1, 2)}),
        ((3, 8, 4), {"padding": "same", "bias": False}),
        ((3, 8, [1, 3]), {"stride": 2, "padding": "valid"}),
    ],
)
def test_conv2d_attributes_and_repr_are_pytorchs(args, kwargs):
    torch = pytest.importorskip("torch")
    ours, theirs = Conv2d(*args, **kwargs), torch.nn.Conv2d(*args, **kwargs)
    for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.weight.shape == tuple(theirs.weight.shape)
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize(
    "make,names",
    [
        (lambda nn: nn.MaxPool2d(2), ("kernel_size", "stride", "padding")),
        (lambda nn: nn.MaxPool2d((3, 2), 1, (1, 0)), ("kernel_size", "stride", "padding")),
        (
            lambda nn: nn.AvgPool2d(3, padding=1, count_include_pad=False),
            ("kernel_size", "stride", "padding", "count_include_pad"),
        ),
        (lambda nn: nn.AdaptiveAvgPool2d((None, 7)), ("output_size",)),
        (lambda nn: nn.AdaptiveAvgPool2d(1), ("output_size",)),
    ],
)
def test_pooling_attributes_are_named_and_valued_as_pytorchs(make, names):
    torch = pytest.importorskip("torch")
    ours, theirs = make(glassnet.nn.pooling), make(torch.nn)
    for name in names:
        assert getattr(ours, name) == getattr(theirs, name), name


def test_init_uses_the_fan_in_of_a_non_square_kernel():
    conv = Conv2d(4, 64, (2, 5), rng=np.random.default_rng(6))
    bound = 1 / np.sqrt(4 * 2 * 5)
    assert conv.weight.shape == (64, 4, 2, 5)
    assert 0.95 * bound < np.abs(conv.weight.data).max() <= bound
    assert np.abs(conv.bias.data).max() <= bound


def test_pooling_layers_keep_float32_and_maxpool2d_still_imports_from_layers():
    x = np.random.default_rng(7).standard_normal((2, 3, 6, 6)).astype(np.float32)
    for layer in (MaxPool2d(2, padding=1), AvgPool2d(2), AdaptiveAvgPool2d(2)):
        out = layer(x)
        assert out.dtype == np.float32 and layer.backward(np.ones_like(out)).dtype == np.float32
    assert layers_module.MaxPool2d is MaxPool2d


def test_no_grad_keeps_nothing_and_backward_then_says_so():
    x = np.random.default_rng(8).standard_normal((2, 3, 6, 6)).astype(np.float32)
    conv = Conv2d(3, 4, 3)
    for layer in (conv, MaxPool2d(2), AvgPool2d(2), AdaptiveAvgPool2d(1)):
        out = layer(x)
        assert layer.backward(np.ones_like(out)).shape == x.shape
        with glassnet.nn.no_grad():
            layer(x)
        with pytest.raises(RuntimeError, match=r"forward ran under no_grad\(\), nothing was kept"):
            layer.backward(np.ones_like(out))
    assert conv._cols is None and conv._x is None  # no patches built for inference


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda: Conv2d(3, 4, 3, stride=2, padding="same"), "padding='same' needs stride 1"),
        (lambda: Conv2d(3, 4, 3, padding="full"), "padding='full'"),
        (lambda: Conv2d(3, 4, (3, 0)), "kernel_size=(3, 0)"),
        (lambda: Conv2d(3, 4, 3, stride=(1, 2, 3)), "stride=(1, 2, 3)"),
        (
            lambda: Conv2d(3, 4, 3)(np.zeros((1, 2, 5, 5), np.float32)),
            "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1)) expects input (N, 3, H, W), "
            "got 2 channels",
        ),
        (lambda: Conv2d(3, 4, 3)(np.zeros((3, 5, 5), np.float32)), "got shape (3, 5, 5)"),
        (lambda: Conv2d(1, 4, 5)(np.zeros((1, 1, 3, 3), np.float32)), "smaller than the kernel"),
        (lambda: MaxPool2d(2, padding=2), "padding=2 must be at most half of kernel_size=2"),
        (lambda: AvgPool2d(0), "kernel_size=0"),
        (lambda: AdaptiveAvgPool2d((2, 0)), "output_size=(2, 0)"),
        (
            lambda: MaxPool2d(2)(np.zeros((2, 5, 5))),
            "MaxPool2d(kernel_size=2, stride=2, padding=0)",
        ),
    ],
)
def test_bad_layer_arguments_are_clear_errors(make, words):
    with pytest.raises(ValueError) as info:
        make()
    assert words in str(info.value)
