"""Batch normalization: the functional maths and the BatchNorm1d / BatchNorm2d layers, against
PyTorch (forward, gradients, running statistics) and central differences."""

import contextlib

import numpy as np
import pytest

from glassnet import gradcheck, gradcheck_layer
from glassnet.functional.normalization import batch_norm, batch_norm_backward, batch_norm_forward
from glassnet.nn.module import no_grad
from glassnet.nn.normalization import BatchNorm1d, BatchNorm2d
from tests import kernel_paths

kernel_path = kernel_paths.kernel_path  # the fixture: each test runs on Numba, then NumPy

# (layer class, input shape); C = shape[1]
LAYER_CASES = [
    (BatchNorm1d, (6, 3)),
    (BatchNorm1d, (4, 3, 5)),
    (BatchNorm2d, (3, 2, 4, 3)),
]


def _layer_inputs(shape, rng):
    """An input whose channels have different means and scales, so statistics matter."""
    channel_shape = (1, shape[1]) + (1,) * (len(shape) - 2)
    scale = rng.uniform(0.5, 3.0, channel_shape)
    shift = rng.uniform(-2.0, 2.0, channel_shape)
    return rng.standard_normal(shape) * scale + shift


def _channel_vectors(channels, rng):
    """Non-trivial weight, bias, running_mean and running_var (C,) each."""
    return (rng.uniform(0.5, 2.0, channels), rng.standard_normal(channels),
            rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels))  # fmt: skip


# --- functional ---------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 3, 4, 2)])
def test_functional_matches_torch(shape, training, affine, kernel_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = _layer_inputs(shape, rng)
    weight, bias, running_mean, running_var = _channel_vectors(shape[1], rng)
    if not affine:
        weight = bias = None
    grad_out = rng.standard_normal(shape)
    running = (running_mean.copy(), running_var.copy())

    tensors = {name: None if v is None else torch.tensor(v, requires_grad=True)
               for name, v in [("x", x), ("weight", weight), ("bias", bias)]}  # fmt: skip
    torch_running = (torch.tensor(running_mean), torch.tensor(running_var))
    expected = torch.nn.functional.batch_norm(
        tensors["x"], *torch_running, tensors["weight"], tensors["bias"], training, 0.3, 1e-3
    )
    expected.backward(torch.tensor(grad_out))

    y, cache = batch_norm_forward(x, *running, weight, bias, training, 0.3, 1e-3)
    grad_x, grad_weight, grad_bias = batch_norm_backward(grad_out, cache, weight)
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad_x, tensors["x"].grad.numpy(), rtol=1e-9, atol=1e-12)
    if affine:
        np.testing.assert_allclose(grad_weight, tensors["weight"].grad.numpy(), rtol=1e-9)
        np.testing.assert_allclose(grad_bias, tensors["bias"].grad.numpy(), rtol=1e-9)
    for ours, theirs in zip(running, torch_running, strict=True):  # updated in place
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12)
    if not training:
        np.testing.assert_array_equal(running[0], running_mean)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 4), (2, 2, 3, 3)])
def test_functional_gradcheck(shape, training, kernel_path):
    rng = np.random.default_rng(1)
    x = _layer_inputs(shape, rng)
    weight, bias, running_mean, running_var = _channel_vectors(shape[1], rng)

    def forward(x, weight, bias):
        # copies: in training the running statistics would drift between evaluations
        return batch_norm(x, running_mean.copy(), running_var.copy(), weight, bias, training)

    def backward(grad_out, x, weight, bias):
        stats = (running_mean.copy(), running_var.copy())
        _, cache = batch_norm_forward(x, *stats, weight, bias, training)
        return batch_norm_backward(grad_out, cache, weight)

    result = gradcheck(forward, backward, [x, weight, bias])
    assert result, result


def test_functional_without_running_stats_uses_the_batch():
    x = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]])
    y = batch_norm(x)  # training=False, but nothing else to normalise with
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), 1, rtol=1e-4)


def test_functional_rejects_bad_input():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        batch_norm(np.ones((1, 3)), training=True)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(C,\) = \(3,\)"):
        batch_norm(np.ones((2, 3)), np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match="x must have shape"):
        batch_norm(np.ones(3))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        batch_norm(np.ones((2, 3), dtype=np.int64), training=True)


# --- layers -------------------------------------------------------------------------------------


def _torch_layer(torch, cls, options, rng):
    """A float64 torch layer with random parameters and running statistics."""
    layer = getattr(torch.nn, cls.__name__)(**options, dtype=torch.float64)
    channels = options["num_features"]
    weight, bias, running_mean, running_var = _channel_vectors(channels, rng)
    with torch.no_grad():
        if layer.affine:
            layer.weight.copy_(torch.tensor(weight))
            layer.bias.copy_(torch.tensor(bias))
        if layer.track_running_stats:
            layer.running_mean.copy_(torch.tensor(running_mean))
            layer.running_var.copy_(torch.tensor(running_var))
            layer.num_batches_tracked.fill_(2)
    return layer


def _ours_like(torch_layer, cls, options):
    ours = cls(**options).to(np.float64)
    ours.load_state_dict({k: v.numpy() for k, v in torch_layer.state_dict().items()})
    return ours


OPTIONS = [
    {},
    {"affine": False},
    {"track_running_stats": False},
    {"momentum": None, "eps": 1e-3},
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("cls,shape", LAYER_CASES)
def test_layer_matches_torch(cls, shape, mode, options, kernel_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    options = {"num_features": shape[1], **options}
    theirs = _torch_layer(torch, cls, options, rng)
    ours = _ours_like(theirs, cls, options)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.train(mode == "train")
    ours.train(mode == "train")

    x = _layer_inputs(shape, rng)
    grad_out = rng.standard_normal(shape)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = theirs(x_torch)
    y_torch.backward(torch.tensor(grad_out))
    y = ours(x)
    grad_x = ours.backward(grad_out)
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grad_x, x_torch.grad.numpy(), rtol=1e-9, atol=1e-12)
    params = dict(ours.named_parameters())
    assert params.keys() == dict(theirs.named_parameters()).keys()
    for name, param in theirs.named_parameters():
        np.testing.assert_allclose(params[name].grad, param.grad.numpy(), rtol=1e-9)
    for name, value in theirs.state_dict().items():  # running statistics after the step
        np.testing.assert_allclose(ours.state_dict()[name], value.numpy(), rtol=1e-12)


@pytest.mark.parametrize("momentum", [0.1, None, 0.5])
@pytest.mark.parametrize("cls,shape", LAYER_CASES)
def test_running_statistics_after_three_batches(cls, shape, momentum, kernel_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    options = {"num_features": shape[1], "momentum": momentum}
    theirs = getattr(torch.nn, cls.__name__)(**options, dtype=torch.float64)
    ours = cls(**options).to(np.float64)
    for _ in range(3):
        x = _layer_inputs(shape, rng)
        ours(x)
        theirs(torch.tensor(x))
    assert ours.num_batches_tracked.dtype == np.int64
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-12)
    ours.eval()
    theirs.eval()
    x = _layer_inputs(shape, rng)
    np.testing.assert_allclose(ours(x), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-9)
    assert int(ours.num_batches_tracked) == 3  # eval mode leaves the statistics alone


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("cls,shape", LAYER_CASES)
def test_layer_gradcheck(cls, shape, mode, options, kernel_path):
    rng = np.random.default_rng(4)
    layer = cls(shape[1], **options).to(np.float64)
    for param in layer.parameters():  # away from ones and zeros
        param.data[...] = rng.uniform(0.5, 2.0, param.shape)
    if layer.track_running_stats:
        layer.running_mean[...] = rng.standard_normal(shape[1])
        layer.running_var[...] = rng.uniform(0.5, 2.0, shape[1])
    layer.train(mode == "train")
    result = gradcheck_layer(layer, _layer_inputs(shape, rng))
    assert result, result
    assert len(result.errors) == 1 + len(layer.parameters())


def test_defaults_and_registration_follow_pytorch():
    bn = BatchNorm2d(4)
    assert bn.weight.data.dtype == bn.running_mean.dtype == np.float32
    np.testing.assert_array_equal(bn.weight.data, np.ones(4))
    np.testing.assert_array_equal(bn.bias.data, np.zeros(4))
    np.testing.assert_array_equal(bn.running_var, np.ones(4))
    assert list(bn.state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"
    ]  # fmt: skip
    assert bn.state_dict()["num_batches_tracked"].shape == ()
    assert list(BatchNorm1d(3, affine=False).state_dict()) == [
        "running_mean", "running_var", "num_batches_tracked"
    ]  # fmt: skip
    plain = BatchNorm1d(3, affine=False, track_running_stats=False)
    assert plain.state_dict() == {} and plain.parameters() == []
    assert plain.weight is None and plain.running_mean is None
    expected = "BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert repr(bn) == expected
    x = np.random.default_rng(5).standard_normal((3, 4, 2, 2)).astype(np.float32)
    assert bn(x).dtype == np.float32
    assert bn.backward(np.ones_like(x)).dtype == np.float32


def test_float32_matches_float64(kernel_path):
    rng = np.random.default_rng(6)
    x = _layer_inputs((8, 3, 5), rng)
    single, double = BatchNorm1d(3), BatchNorm1d(3).to(np.float64)
    grad_out = rng.standard_normal(x.shape)
    np.testing.assert_allclose(single(x.astype(np.float32)), double(x), rtol=1e-4, atol=1e-5)
    grad_single = single.backward(grad_out.astype(np.float32))
    np.testing.assert_allclose(grad_single, double.backward(grad_out), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(single.running_var, double.running_var, rtol=1e-5)


def test_eval_mode_accepts_a_single_value_per_channel():
    bn = BatchNorm1d(3).to(np.float64)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        bn(np.ones((1, 3)))
    assert int(bn.num_batches_tracked) == 0  # a rejected batch changes nothing
    bn.eval()
    np.testing.assert_allclose(bn(np.ones((1, 3))), np.ones((1, 3)) / np.sqrt(1 + 1e-5))


@pytest.mark.parametrize(
    "make,x,words",
    [
        (lambda: BatchNorm1d(3), np.ones((4, 5)), r"BatchNorm1d\(3\) expects 3 channels.*got 5"),
        (lambda: BatchNorm1d(3), np.ones((4, 3, 2, 2)), r"\(N, C\) or \(N, C, L\).*4D input"),
        (lambda: BatchNorm2d(2), np.ones((4, 2, 3)), r"BatchNorm2d expects input \(N, C, H, W\)"),
        (lambda: BatchNorm2d(2), np.ones((4, 3, 2, 2)), r"expects 2 channels on axis 1, got 3"),
    ],
)
def test_bad_input_names_the_layer(make, x, words):
    with pytest.raises(ValueError, match=words):
        make()(x)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_features=0"):
        BatchNorm1d(0)
    with pytest.raises(ValueError, match="eps=-1"):
        BatchNorm1d(3, eps=-1)
    with pytest.raises(ValueError, match="momentum='fast'"):
        BatchNorm2d(3, momentum="fast")


def test_backward_after_no_grad_forward_raises():
    bn = BatchNorm1d(2)
    with no_grad():
        bn(np.ones((3, 2), np.float32))
    with pytest.raises(RuntimeError, match=r"BatchNorm1d\.backward\(\).*no_grad\(\)"):
        bn.backward(np.ones((3, 2), np.float32))
    assert int(bn.num_batches_tracked) == 1  # statistics still update, as in PyTorch


@pytest.mark.parametrize("layout", ["channels_last", "nchw", "2d", "3d"])
@pytest.mark.parametrize("training", [True, False])
def test_kernels_match_the_numpy_code(layout, training):
    """The Numba passes against the NumPy reference in every memory layout they meet (a conv's
    channels-last output, an ordinary NCHW array, (N, C) and (N, C, L)), with channel means far
    from zero: float64 agrees to round-off, and float32 is at least as close to the float64
    result as the NumPy float32 code is (the moments' shift and float64 sums keep it exact)."""
    from glassnet import kernels

    if not kernels.enabled():
        pytest.skip("the Numba kernels are off")
    rng = np.random.default_rng(3)
    shape = {"2d": (64, 5), "3d": (8, 5, 7)}.get(layout, (4, 5, 6, 7))
    x = _layer_inputs(shape, rng) + 300
    if layout == "channels_last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    vectors = _channel_vectors(shape[1], rng)
    grad_out = rng.standard_normal(shape)

    def run(path, dtype):
        weight, bias, running_mean, running_var = (v.astype(dtype) for v in vectors)
        context = kernels.disabled() if path == "numpy" else contextlib.nullcontext()
        with context:
            y, cache = batch_norm_forward(
                x.astype(dtype), running_mean, running_var, weight, bias, training, 0.1, 1e-5
            )
            grads = batch_norm_backward(grad_out.astype(dtype), cache, weight)
        return y, *grads, running_mean, running_var

    exact = run("numpy", np.float64)
    for ours, reference in zip(run("numba", np.float64), exact, strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-10)
    kernel32, numpy32 = run("numba", np.float32), run("numpy", np.float32)
    for ours, theirs, reference in zip(kernel32, numpy32, exact, strict=True):
        assert ours.dtype == np.float32
        assert np.abs(ours - reference).max() <= 2 * np.abs(theirs - reference).max() + 1e-6
