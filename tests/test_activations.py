"""Sigmoid, tanh, GELU, leaky ReLU and erf: against the standard library, PyTorch and central
differences; then the layers built on them."""

import math

import numpy as np
import pytest

from glassnet import gradcheck, gradcheck_layer
from glassnet.functional.elementwise import (
    erf,
    erfc,
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from glassnet.nn.activation import GELU, Identity, LeakyReLU, Sigmoid, Tanh
from glassnet.nn.module import no_grad

# name -> (ours forward, ours backward(grad_out, x), torch function name, keyword options)
OPS = {
    "sigmoid": (sigmoid, lambda g, x: sigmoid_backward(g, sigmoid(x)), "sigmoid", {}),
    "tanh": (tanh, lambda g, x: tanh_backward(g, tanh(x)), "tanh", {}),
    "gelu": (gelu, gelu_backward, "gelu", {}),
    "gelu_tanh": (
        lambda x: gelu(x, approximate="tanh"),
        lambda g, x: gelu_backward(g, x, approximate="tanh"),
        "gelu",
        {"approximate": "tanh"},
    ),
    "leaky_relu": (leaky_relu, leaky_relu_backward, "leaky_relu", {}),
    "leaky_relu_0.2": (
        lambda x: leaky_relu(x, 0.2),
        lambda g, x: leaky_relu_backward(g, x, 0.2),
        "leaky_relu",
        {"negative_slope": 0.2},
    ),
    "leaky_relu_negative": (
        lambda x: leaky_relu(x, -0.5),
        lambda g, x: leaky_relu_backward(g, x, -0.5),
        "leaky_relu",
        {"negative_slope": -0.5},
    ),
}


def _inputs(rng, shape=(4, 5, 3)):
    """Values spread over [-6, 6] with none within 1e-3 of 0 (leaky ReLU's kink)."""
    x = rng.uniform(-6, 6, size=shape)
    x[np.abs(x) < 1e-3] = 0.5
    return x


def test_erf_and_erfc_match_the_standard_library():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-7, 7, 100_000), rng.standard_normal(1000) * 0.3,
                        np.linspace(-26, 26, 5201), [0.0, -0.0, 0.46875, 4.0, 1e-300]])  # fmt: skip
    expected_erf = np.array([math.erf(v) for v in x])
    expected_erfc = np.array([math.erfc(v) for v in x])
    np.testing.assert_allclose(erf(x), expected_erf, rtol=1e-15, atol=0)
    np.testing.assert_allclose(erfc(x), expected_erfc, rtol=2e-15, atol=0)


def test_erf_edge_values():
    special = np.array([np.inf, -np.inf, np.nan, 30.0, -30.0])
    np.testing.assert_array_equal(erf(special), [1, -1, np.nan, 1, -1])
    np.testing.assert_array_equal(erfc(special), [0, 2, np.nan, 0, 2])
    assert erf(np.float32([0.5])).dtype == np.float32
    assert erfc(np.float16([0.5])).dtype == np.float16


@pytest.mark.parametrize("name", OPS)
def test_forward_and_gradient_match_torch(name):
    torch = pytest.importorskip("torch")
    forward, backward, torch_name, options = OPS[name]
    rng = np.random.default_rng(1)
    x = _inputs(rng)
    grad_out = rng.standard_normal(x.shape)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = getattr(torch.nn.functional, torch_name)(x_torch, **options)
    y_torch.backward(torch.tensor(grad_out))
    # atol: in the far negative tail PyTorch's 1 + erf(..) and 1 + tanh(..) cancel (see below)
    np.testing.assert_allclose(forward(x), y_torch.detach().numpy(), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(backward(grad_out, x), x_torch.grad.numpy(), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("name", OPS)
def test_gradcheck(name):
    forward, backward, _, _ = OPS[name]
    x = _inputs(np.random.default_rng(2), shape=(3, 7))
    result = gradcheck(forward, backward, [x])
    assert result, result


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_dtype_is_kept(name, dtype):
    forward, backward, _, _ = OPS[name]
    x = _inputs(np.random.default_rng(3)).astype(dtype)
    assert forward(x).dtype == dtype
    assert backward(np.ones_like(x), x).dtype == dtype
    np.testing.assert_allclose(forward(x), forward(x.astype(np.float64)), rtol=2e-3, atol=2e-3)


def test_sigmoid_is_stable_for_large_inputs():
    x = np.array([-1000.0, -745.0, -40.0, 0.0, 40.0, 1000.0])  # exp(1000) would overflow
    y = sigmoid(x)
    np.testing.assert_allclose(y, [0, math.exp(-745), 1 / (1 + math.exp(40)), 0.5, 1, 1])
    assert sigmoid(np.float32([-200.0, 200.0])).tolist() == [0.0, 1.0]


def test_gelu_keeps_relative_precision_in_the_negative_tail():
    x = np.array([-6.0, -8.0, -12.0, -20.0])
    expected = [v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x]
    np.testing.assert_allclose(gelu(x), expected, rtol=1e-13)
    # tanh form: x * (1 + tanh(u)) / 2 = x / (1 + exp(-2u)), u = sqrt(2 / pi) (x + 0.044715 x^3)
    two_u = 2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    np.testing.assert_allclose(gelu(x, approximate="tanh"), x / (1 + np.exp(-two_u)), rtol=1e-13)


def test_leaky_relu_gradient_at_zero_is_the_slope_and_in_place_works():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(leaky_relu_backward(np.ones(3), x, 0.3), [0.3, 0.3, 1.0])
    out = leaky_relu(x, 0.5, out=x)
    assert out is x
    np.testing.assert_array_equal(x, [-0.5, 0.0, 2.0])


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="approximate='erf'"):
        gelu(np.zeros(2), approximate="erf")
    with pytest.raises(ValueError, match="approximate"):
        gelu_backward(np.zeros(2), np.zeros(2), approximate="exact")
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        sigmoid(np.arange(3))


# --- layers -------------------------------------------------------------------------------------

# (our layer, the torch.nn class name, constructor options)
LAYERS = [
    (Sigmoid, "Sigmoid", {}),
    (Tanh, "Tanh", {}),
    (GELU, "GELU", {}),
    (GELU, "GELU", {"approximate": "tanh"}),
    (LeakyReLU, "LeakyReLU", {}),
    (LeakyReLU, "LeakyReLU", {"negative_slope": 0.2, "inplace": True}),
    (LeakyReLU, "LeakyReLU", {"negative_slope": -0.3}),
    (Identity, "Identity", {}),
]
LAYER_IDS = [f"{cls.__name__}{options or ''}" for cls, _, options in LAYERS]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("cls,torch_name,options", LAYERS, ids=LAYER_IDS)
def test_layer_matches_torch(cls, torch_name, options, mode):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = _inputs(rng, shape=(4, 3, 5))
    grad_out = rng.standard_normal(x.shape)
    theirs = getattr(torch.nn, torch_name)(**{k: v for k, v in options.items() if k != "inplace"})
    ours = cls(**options).train(mode == "train")
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = theirs(x_torch)
    y_torch.backward(torch.tensor(grad_out))
    y = ours(x.copy())
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(ours.backward(grad_out), x_torch.grad.numpy(), rtol=1e-9, atol=1e-14)
    assert ours.backward(grad_out, need_input_grad=False) is None
    assert ours.parameters() == [] and ours.state_dict() == {}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("cls,torch_name,options", LAYERS, ids=LAYER_IDS)
def test_layer_gradcheck(cls, torch_name, options, mode):
    layer = cls(**{k: v for k, v in options.items() if k != "inplace"}).train(mode == "train")
    result = gradcheck_layer(layer, _inputs(np.random.default_rng(5), shape=(3, 2, 4)))
    assert result, result


@pytest.mark.parametrize("cls", [Sigmoid, Tanh, GELU, LeakyReLU])
def test_backward_after_no_grad_forward_raises(cls):
    layer = cls()
    with no_grad():
        layer(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=rf"{cls.__name__}\.backward\(\).*no_grad\(\)"):
        layer.backward(np.ones((2, 3)))


def test_leaky_relu_in_place():
    x = np.array([[-2.0, 0.0, 3.0]])
    layer = LeakyReLU(0.5, inplace=True)
    y = layer(x)
    assert y is x
    np.testing.assert_array_equal(x, [[-1.0, 0.0, 3.0]])
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), [[0.5, 0.5, 1.0]])
    negative = LeakyReLU(-0.5, inplace=True)
    negative(np.array([-2.0, 1.0]))
    with pytest.raises(RuntimeError, match=r"negative_slope=-0\.5, inplace=True"):
        negative.backward(np.ones(2))


def test_constructor_arguments_and_reprs():
    assert Identity(54, unused="argument")(np.ones(2)).tolist() == [1.0, 1.0]
    assert repr(GELU(approximate="tanh")) == "GELU(approximate='tanh')"
    assert repr(LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
    assert repr(LeakyReLU(0.2, inplace=True)) == "LeakyReLU(negative_slope=0.2, inplace=True)"
    assert repr(Sigmoid()) == "Sigmoid()"
    with pytest.raises(ValueError, match="approximate='fast'"):
        GELU(approximate="fast")
    with pytest.raises(TypeError, match=r"negative_slope must be a real number, got '0\.1'"):
        LeakyReLU("0.1")
