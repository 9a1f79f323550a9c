"""Layers: fast kernels against loop references and PyTorch, and gradient checks for every layer."""

import contextlib

import numpy as np
import pytest

from glassnet import gradcheck, gradcheck_layer, kernels
from glassnet.functional.conv import col2im, conv2d, conv2d_backward, im2col, tap_rows, unfold
from glassnet.functional.pool import max_pool2d, max_pool2d_backward
from glassnet.functional.reference import (
    conv2d_backward_loops,
    conv2d_loops,
    max_pool2d_backward_loops,
    max_pool2d_loops,
)
from glassnet.inspect import format_trace, summary, trace
from glassnet.nn import (
    Conv2d,
    CrossEntropyLoss,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Softmax,
    convnet,
)
from tests import kernel_paths

CONV_CASES = [  # (N, C_in, H, W, C_out, k, stride, padding)
    (2, 1, 7, 7, 3, 3, 1, 0),
    (2, 3, 8, 6, 4, 3, 2, 1),
    (1, 2, 5, 5, 2, 2, 1, 2),
    (3, 4, 6, 6, 5, 1, 1, 0),
]


path = kernel_paths.kernel_path  # the fixture: run a test on the Numba kernels, then NumPy


def _with_ones(x, *geometry):
    return im2col(x, *geometry, ones_column=True)


@pytest.mark.parametrize("layout", [im2col, _with_ones, tap_rows, unfold, None])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,c_in,h,w,c_out,k,stride,padding", CONV_CASES)
def test_conv2d_matches_loop_reference(
    path, layout, dtype, n, c_in, h, w, c_out, k, stride, padding
):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    weight = rng.standard_normal((c_out, c_in, k, k)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype)
    cols = None if layout is None else layout(x, (k, k), stride, padding)
    tolerance = {"atol": 1e-12} if dtype == np.float64 else {"atol": 1e-4, "rtol": 1e-5}
    out = conv2d(x, weight, bias, stride, padding, cols=cols)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, conv2d_loops(x, weight, bias, stride, padding), **tolerance)
    grad_out = rng.standard_normal(out.shape).astype(dtype)
    grads = conv2d_backward(grad_out, x, weight, cols, stride, padding)
    expected = conv2d_backward_loops(grad_out, x, weight, stride, padding)
    for ours, theirs in zip(grads, expected, strict=True):
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours, theirs, **tolerance)
    assert conv2d_backward(grad_out, x, weight, cols, stride, padding, need_grad_x=False)[0] is None


def test_unfold_picks_the_layout_by_channel_count():
    assert unfold(np.zeros((2, 1, 5, 5)), (3, 3)).shape == (1 * 9 + 1, 2, 3, 3)
    assert unfold(np.zeros((2, 8, 5, 5)), (3, 3)).shape == (2 * 9, 9 * 8 + 1)
    bias_row = tap_rows(np.zeros((2, 3, 5, 5)), (3, 3), 2, 1)[-1]
    np.testing.assert_array_equal(bias_row, np.ones((2, 3, 3)))


@pytest.mark.parametrize("c_in", [1, 8])
def test_outputs_are_channels_last_in_memory_and_any_input_layout_works(path, c_in):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, c_in, 6, 6))
    weight = rng.standard_normal((3, c_in, 3, 3))
    out = conv2d(x, weight)
    assert out.shape == (2, 3, 4, 4) and out.transpose(0, 2, 3, 1).flags.c_contiguous
    # the same numbers from an NCHW input, a channels-last one and a non-contiguous view
    views = [x, np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)]
    views.append(np.repeat(x, 2, axis=3)[..., ::2])
    for view in views:
        np.testing.assert_allclose(conv2d(view, weight), out, atol=1e-12)
    pooled, _ = max_pool2d(out, 2)
    assert pooled.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_array_equal(pooled, max_pool2d_loops(np.ascontiguousarray(out), 2))


def test_inference_in_batch_slices_equals_one_product(path):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 8, 6, 6)).astype(np.float32)
    weight = rng.standard_normal((3, 8, 3, 3)).astype(np.float32)
    whole = conv2d(x, weight, cols=im2col(x, (3, 3)))
    one_image_at_a_time = conv2d(x, weight, max_cols_bytes=1)
    np.testing.assert_allclose(one_image_at_a_time, whole, rtol=1e-6, atol=1e-6)


def test_inference_pieces_are_sized_by_the_threads_l2(monkeypatch):
    """Without a size, conv2d's pieces are twice the L2 caches its threads use."""
    from glassnet import kernels
    from glassnet.functional import conv as conv_module

    monkeypatch.setattr(conv_module, "cache_bytes", lambda level: {2: 1 << 20}[level])
    before = kernels.get_num_threads()
    try:
        sizes = []
        for threads in (1, 3):
            kernels.set_num_threads(threads)
            sizes.append(conv_module.patch_piece_bytes())
    finally:
        kernels.set_num_threads(before)
    assert sizes == [2 << 20, 6 << 20]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_col2im_is_the_adjoint_of_im2col(path, dtype):
    # <im2col(x), c> = <x, col2im(c)> for all x, c: the defining property of the adjoint.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    cols = im2col(x, (3, 2), 2, 1)
    c = rng.standard_normal(cols.shape).astype(dtype)
    np.testing.assert_allclose(
        np.sum(cols * c, dtype=np.float64),
        np.sum(x * col2im(c, x.shape, (3, 2), 2, 1), dtype=np.float64),
        rtol=1e-12 if dtype == np.float64 else 1e-5,
    )


def test_kernels_equal_the_numpy_reference_on_the_convnet_shapes():
    if not kernels.enabled():
        pytest.skip("numba is not installed or GLASSNET_KERNELS=0")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 32, 13, 13)).astype(np.float32)
    fast = im2col(x, (3, 3)), max_pool2d(x, 2)
    with kernels.disabled():
        slow = im2col(x, (3, 3)), max_pool2d(x, 2)
    np.testing.assert_array_equal(fast[0], slow[0])  # copies: bit for bit
    np.testing.assert_array_equal(fast[1][0], slow[1][0])
    np.testing.assert_array_equal(fast[1][1], slow[1][1])


@pytest.mark.parametrize(
    "shape,k,stride",
    [((2, 3, 6, 6), 2, None), ((2, 2, 7, 5), 2, None), ((1, 2, 7, 7), 3, 2), ((2, 1, 6, 6), 3, 1)],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_pool_matches_loop_reference(path, dtype, shape, k, stride):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, :2, :2] = x[0, 0, 0, 0]  # a tie
    out, argmax = max_pool2d(x, k, stride)
    np.testing.assert_array_equal(out, max_pool2d_loops(x, k, stride))
    grad_out = rng.standard_normal(out.shape).astype(dtype)
    np.testing.assert_allclose(  # overlapping windows add their gradients in another order
        max_pool2d_backward(grad_out, argmax, x.shape, k, stride),
        max_pool2d_backward_loops(grad_out, x, k, stride),
    )


def test_max_pool_ties_and_nan_like_pytorch(path):
    torch = pytest.importorskip("torch")
    x = np.array([[[[1.0, 1.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0]]]])  # ties in both windows
    out, argmax = max_pool2d(x, 2)
    grad = max_pool2d_backward(np.ones_like(out), argmax, x.shape, 2)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 2).sum().backward()
    np.testing.assert_array_equal(grad, xt.grad.numpy())
    x[0, 0, 1, 3] = np.nan  # a NaN in a window is its maximum, as in PyTorch
    out, _ = max_pool2d(x.astype(np.float32), 2)
    assert np.isnan(out[0, 0, 0, 1]) and out[0, 0, 0, 0] == 1.0


def make_layers():
    rng = np.random.default_rng(3)
    f64 = {"rng": rng, "dtype": np.float64}
    return {
        "Linear": (Linear(5, 4, **f64), rng.standard_normal((3, 5))),
        "Linear no bias": (Linear(5, 4, bias=False, **f64), rng.standard_normal((3, 5))),
        "Conv2d": (Conv2d(2, 3, 3, **f64), rng.standard_normal((2, 2, 6, 5))),
        "Conv2d 8 channels": (Conv2d(8, 3, 3, **f64), rng.standard_normal((2, 8, 5, 5))),
        "Conv2d stride padding": (
            Conv2d(2, 3, 3, stride=2, padding=1, **f64),
            rng.standard_normal((2, 2, 7, 6)),
        ),
        "ReLU": (ReLU(), rng.standard_normal((3, 4)) + 0.05),
        "MaxPool2d": (MaxPool2d(2), rng.standard_normal((2, 2, 6, 6))),
        "MaxPool2d overlapping": (MaxPool2d(3, stride=1), rng.standard_normal((1, 2, 5, 5))),
        "Flatten": (Flatten(), rng.standard_normal((2, 3, 2, 2))),
        "convnet": (
            convnet(image_size=12, rng=rng, dtype=np.float64, dropout=0.0),
            rng.random((2, 1, 12, 12)),
        ),
    }


@pytest.mark.parametrize("name", list(make_layers()))
def test_gradcheck_every_layer(name):
    layer, x = make_layers()[name]
    result = gradcheck_layer(layer, x)
    assert result.ok, result


def test_gradcheck_dropout_with_a_fixed_mask():
    layer = Dropout(0.4)
    x = np.random.default_rng(4).standard_normal((4, 6))

    def forward(x):
        layer.rng = np.random.default_rng(0)  # the same mask for every evaluation
        return layer.forward(x)

    assert gradcheck(forward, lambda g, x: (forward(x), layer.backward(g))[1], [x])


def test_dropout_statistics_and_modes():
    rng = np.random.default_rng(5)
    layer = Dropout(0.25, rng=rng)
    x = np.ones((200, 500), dtype=np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    assert abs((y == 0).mean() - 0.25) < 0.01
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-6)
    layer.eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match=r"p=1\.5"):
        Dropout(1.5)


def test_softmax_layer_is_inference_only():
    layer = Softmax()
    np.testing.assert_allclose(layer(np.zeros((2, 4))), 0.25)
    with pytest.raises(RuntimeError, match="CrossEntropyLoss"):
        layer.backward(np.ones((2, 4)))


def test_gradients_accumulate_until_zero_grad():
    layer = Linear(3, 2, rng=np.random.default_rng(0), dtype=np.float64)
    x, g = np.ones((4, 3)), np.ones((4, 2))
    layer(x)
    layer.backward(g)
    first = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * first)
    layer.zero_grad()
    assert not layer.weight.grad.any()


def torch_convnet(torch, model):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(1600, 10),
    ).double()
    return net


def test_convnet_matches_pytorch_with_pytorchs_weights():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = convnet(rng=np.random.default_rng(0)).to(np.float64)
    net = torch_convnet(torch, model)
    assert list(net.state_dict()) == list(model.state_dict())
    model.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
    model.eval()
    net.eval()
    rng = np.random.default_rng(6)
    x = rng.random((4, 1, 28, 28))
    target = rng.integers(0, 10, size=4)
    loss_fn = CrossEntropyLoss()
    loss = loss_fn(model(x), target)
    model.backward(loss_fn.backward(), need_input_grad=False)
    torch_loss = torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(target))
    torch_loss.backward()
    np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-10)
    np.testing.assert_allclose(model(x), net(torch.tensor(x)).detach().numpy(), rtol=1e-10)
    for name, param in model.named_parameters():
        expected = dict(net.named_parameters())[name].grad.numpy()
        np.testing.assert_allclose(param.grad, expected, rtol=1e-10, atol=1e-14)


def test_init_matches_pytorch_defaults_and_glorot():
    rng = np.random.default_rng(7)
    conv = Conv2d(32, 64, 3, rng=rng)
    bound = 1 / np.sqrt(32 * 9)  # PyTorch: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), ..)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.95 * bound
    assert np.abs(conv.bias.data).max() <= bound
    assert abs(conv.weight.data.std() - bound / np.sqrt(3)) < 0.02 * bound
    dense = Linear(1600, 10, init="glorot", rng=rng)
    glorot = np.sqrt(6 / (1600 + 10))
    assert np.abs(dense.weight.data).max() <= glorot and not dense.bias.data.any()
    assert (
        Linear(3, 2, rng=np.random.default_rng(1)).weight.data.tolist()
        == Linear(3, 2, rng=np.random.default_rng(1)).weight.data.tolist()
    )
    with pytest.raises(ValueError, match="init='he'"):
        Linear(3, 2, init="he")


def test_summary_counts_the_seed_convnets_parameters():
    model = convnet()
    text = summary(model, (1, 28, 28))
    assert "Total params: 34,826" in text
    for row in ["(N, 32, 26, 26)", "(N, 64, 5, 5)", "(N, 1600)", "18,496", "16,010"]:
        assert row in text


def test_trace_follows_seed_002():
    model = convnet(rng=np.random.default_rng(0))
    steps = trace(model, (1, 28, 28))
    grads = [step.grad_shape[1:] if step.grad_shape else None for step in steps]
    assert grads == [
        None,
        (32, 26, 26),
        (32, 26, 26),
        (32, 13, 13),
        (64, 11, 11),
        (64, 11, 11),
        (64, 5, 5),
        (1600,),
        (1600,),
    ]
    assert steps[-1].param_grads == {"weight": (10, 1600), "bias": (10,)}
    assert steps[3].param_grads == {"weight": (64, 32, 3, 3), "bias": (64,)}
    assert not any(param.grad.any() for param in model.parameters())
    text = format_trace(steps, (1, 28, 28))
    assert "linear_backward (8)     -> (1600,), dW (10, 1600), db (10,)" in text
    assert "input gradient not needed" in text


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda: Linear(0, 3), "in_features=0"),
        (lambda: Conv2d(1, 2, kernel_size=-1), "kernel_size=-1"),
        (lambda: Conv2d(1, 2, 3, padding=-1), "padding=-1"),
        (lambda: Linear(3, 2)(np.zeros((2, 4), np.float32)), "(N, 3)"),
        (lambda: Conv2d(3, 2, 3)(np.zeros((1, 1, 5, 5), np.float32)), "(N, 3, H, W)"),
        (lambda: Conv2d(1, 2, 5)(np.zeros((1, 1, 3, 3), np.float32)), "smaller than the kernel"),
        (lambda: Sequential(Linear(2, 2), "relu"), "layer 1"),
    ],
)
def test_bad_layer_input(make, words):
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    assert words in str(info.value)


def test_load_state_dict_checks_keys_and_shapes():
    model = convnet()
    state = model.state_dict()
    with pytest.raises(ValueError, match="missing"):
        model.load_state_dict({k: v for k, v in state.items() if k != "0.bias"})
    state["8.weight"] = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"8\.weight"):
        model.load_state_dict(state)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_kernel_equals_the_numpy_expression(dtype):
    from glassnet.functional import activation

    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    x[0, 0, 0, :3] = [0.0, np.nan, -0.0]
    channels_last_x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    grad = rng.standard_normal(x.shape).astype(dtype)
    results = []
    for path in (contextlib.nullcontext(), kernels.disabled()):
        with path:
            y = activation.relu(channels_last_x)
            assert y.strides == channels_last_x.strides  # the layout is kept
            g = activation.relu_backward(grad, y)  # grad is NCHW: layouts differ, still right
            g_same = activation.relu_backward(
                np.ascontiguousarray(grad.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2), y
            )
        results.append((y, g, g_same))
    for fast, slow in zip(*results, strict=True):
        np.testing.assert_array_equal(fast, slow)
    y = results[0][0]
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert np.isnan(y[0, 0, 0, 1]) and results[0][1][0, 0, 0, 1] == 0  # no gradient through NaN


def test_inplace_relu_gives_the_same_numbers_and_reuses_the_buffers():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    grad = rng.standard_normal(x.shape).astype(np.float32)
    plain, inplace = ReLU(), ReLU(inplace=True)
    expected_y, expected_g = plain(x), plain.backward(grad)
    x_copy, grad_copy = x.copy(), grad.copy()
    y = inplace(x_copy)
    g = inplace.backward(grad_copy)
    assert y is x_copy and g is grad_copy
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(g, expected_g)
    assert repr(inplace) == "ReLU(inplace=True)" and repr(plain) == "ReLU()"
    read_only = grad.copy()
    read_only.flags.writeable = False
    np.testing.assert_array_equal(inplace.backward(read_only), expected_g)  # not overwritten


class _WrittenOrderReLU(ReLU):
    """A ReLU subclass: ``commutes_with`` is not inherited, so Sequential keeps its place."""


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("padding", [0, 1])
def test_relu_before_max_pool_runs_after_it_with_the_same_numbers(path, dtype, inplace, padding):
    def model(relu):
        rng = np.random.default_rng(3)
        conv = Conv2d(2, 3, 3, padding=1, rng=rng, dtype=dtype)
        conv.bias.data[0] = -10  # channel 0 below 0 everywhere: no gradient either way
        pool = MaxPool2d(3, stride=2, padding=padding)
        return Sequential(
            conv,
            relu(inplace=inplace),
            pool,
            Flatten(),
            Linear(27 if padding else 12, 4, rng=rng, dtype=dtype),
        )

    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 2, 6, 6)).astype(dtype)
    x[1, :, :3] = 0.5  # ties
    target = rng.integers(0, 4, 5)
    results = []
    for relu in (ReLU, _WrittenOrderReLU):
        net, loss = model(relu), CrossEntropyLoss()
        out = net(x.copy())
        loss(out, target)
        grad_x = net.backward(loss.backward())
        results.append((out, grad_x, [p.grad for p in net.parameters()]))
        expected = [MaxPool2d, ReLU] if relu is ReLU else [relu, MaxPool2d]
        assert [type(layer) for layer in net._run_order()[1:3]] == expected
    (out, grad_x, grads), (out_0, grad_x_0, grads_0) = results
    np.testing.assert_array_equal(out, out_0)
    np.testing.assert_array_equal(grad_x, grad_x_0)
    for g, g_0 in zip(grads, grads_0, strict=True):
        np.testing.assert_array_equal(g, g_0)
    assert grads[1][0] == 0 and not grads[0][0].any() and grads[1][1:].all()


def test_a_trace_shows_the_layers_in_the_order_written():
    model = Sequential(Conv2d(1, 2, 3), ReLU(inplace=True), MaxPool2d(2), Flatten())
    assert [type(layer) for layer in model._run_order()[:3]] == [Conv2d, MaxPool2d, ReLU]
    steps = trace(Sequential(model, Linear(8, 3)), (1, 6, 6))
    assert [step.layer for step in steps][:4] == [
        "0.0 Conv2d",
        "0.1 ReLU",
        "0.2 MaxPool2d",
        "0.3 Flatten",
    ]
    assert steps[1].output_shape == (1, 2, 4, 4)
