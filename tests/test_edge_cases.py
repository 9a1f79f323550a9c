"""Edge cases of softmax, log_softmax and cross_entropy, held to PyTorch.

Empty, 0-d, C = 1 and C = 0 input; +inf logits; a randomized sweep of cross_entropy's option
combinations; and arrays the kernel must not take as they are (read-only, broadcast, strided).
Every test that can reach a kernel runs on both paths (``kernel_path``). pyproject turns any
warning into an error, so each of these also checks that nothing warns.
"""

import numpy as np
import pytest

from glassnet import kernels
from glassnet.functional import (
    cross_entropy,
    cross_entropy_backward,
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
)
from glassnet.nn import CrossEntropyLoss
from tests import kernel_paths

kernel_path = kernel_paths.kernel_path  # the fixture: each test runs on Numba, then NumPy

DTYPES = [np.float64, np.float32]


def tolerances(dtype):
    return {"rtol": 1e-10, "atol": 1e-14} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-6}


def torch_softmax(fn_name, x, axis, grad_output):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    out = getattr(torch, fn_name)(xt, axis)
    out.backward(torch.tensor(grad_output))
    return out.detach().numpy(), xt.grad.numpy()


def torch_cross_entropy(logits, target, grad_output, **options):
    """PyTorch's loss and dL/dlogits, or the exception it raises."""
    torch = pytest.importorskip("torch")
    x = torch.tensor(logits, requires_grad=True)
    if options.get("weight") is not None:
        options = {**options, "weight": torch.tensor(options["weight"])}
    loss = torch.nn.functional.cross_entropy(x, torch.tensor(target), **options)
    loss.backward(torch.tensor(grad_output, dtype=loss.dtype).expand_as(loss))
    return loss.detach().numpy(), x.grad.numpy()


# (shape, axis): 0-d (axis 0 or -1, as PyTorch), empty batch, empty class axis, C = 1
SOFTMAX_CASES = [
    ((), 0),
    ((), -1),
    ((0,), 0),
    ((2, 0), 1),
    ((2, 0), 0),
    ((0, 3), 1),
    ((0, 0), -1),
    ((3, 1), 1),
    ((2, 1, 3), 1),
]


@pytest.mark.parametrize("fn_name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axis", SOFTMAX_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_of_empty_0d_and_single_class_input_matches_pytorch(fn_name, shape, axis, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    grad_output = rng.standard_normal(shape).astype(dtype)
    forward, backward = {
        "softmax": (softmax, softmax_backward),
        "log_softmax": (log_softmax, log_softmax_backward),
    }[fn_name]
    expected, expected_grad = torch_softmax(fn_name, x, axis, grad_output)
    out = forward(x, axis)
    grad = backward(grad_output, out, axis)
    for ours, theirs in ((out, expected), (grad, expected_grad)):
        assert ours.shape == theirs.shape == shape and ours.dtype == dtype
        np.testing.assert_allclose(ours, theirs, **tolerances(dtype))


def test_softmax_of_a_scalar_is_one_and_log_softmax_zero():
    assert softmax(np.float64(-7.5)) == 1.0 and softmax(np.float32(3.0)).dtype == np.float32
    assert log_softmax(np.array(12.0)) == 0.0
    assert softmax(np.array(np.inf)).shape == () and np.isnan(softmax(np.array(np.inf)))


@pytest.mark.parametrize("fn_name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_plus_inf_logits_give_nan_rows_like_pytorch_without_a_warning(fn_name, dtype):
    x = np.array([[np.inf, 1.0, 2.0], [np.inf, np.inf, 0.0], [0.5, -1.0, 3.0]], dtype)
    grad_output = np.ones_like(x)
    expected, expected_grad = torch_softmax(fn_name, x, 1, grad_output)
    out = {"softmax": softmax, "log_softmax": log_softmax}[fn_name](x, axis=1)
    assert np.isnan(out[:2]).all() and np.isfinite(out[2]).all()
    np.testing.assert_allclose(out, expected, **tolerances(dtype))
    backward = softmax_backward if fn_name == "softmax" else log_softmax_backward
    np.testing.assert_allclose(backward(grad_output, out, axis=1), expected_grad, equal_nan=True)


# (logits shape, target kind): N = 0, a zero spatial size, C = 0 (with every index target
# ignored), C = 1; "probs" targets have the logits' shape.
EMPTY_CASES = [
    ((0, 3), "index"),
    ((0, 3), "probs"),
    ((2, 3, 0), "index"),
    ((2, 3, 0), "probs"),
    ((0, 0, 3), "index"),
    ((2, 0), "index"),
    ((2, 0), "probs"),
    ((0, 0), "index"),
    ((0,), "probs"),
    ((0,), "index"),
    ((2, 0, 3), "probs"),
    ((3, 1), "index"),
    ((3, 1), "probs"),
    ((1,), "index"),
    ((2, 1, 2), "index"),
]


def edge_case(shape, kind, dtype, rng):
    logits = rng.standard_normal(shape).astype(dtype)
    index_shape = () if len(shape) == 1 else shape[:1] + shape[2:]
    if kind == "probs":
        return logits, np.ones(shape, dtype)
    no_classes = shape[0 if len(shape) == 1 else 1] == 0
    return logits, np.full(index_shape, -100 if no_classes else 0)


@pytest.mark.parametrize("shape,kind", EMPTY_CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_of_empty_and_single_class_input_matches_pytorch(
    kernel_path, shape, kind, reduction, weighted, dtype
):
    rng = np.random.default_rng(1)
    logits, target = edge_case(shape, kind, dtype, rng)
    num_classes = shape[0 if len(shape) == 1 else 1]
    options = {"reduction": reduction}
    if weighted:
        options["weight"] = np.linspace(0.5, 2.0, num_classes).astype(dtype)
    loss_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    grad_output = rng.standard_normal(loss_shape).astype(dtype) if reduction == "none" else 0.7
    expected_loss, expected_grad = torch_cross_entropy(logits, target, grad_output, **options)

    loss = cross_entropy(logits, target, **options)
    grad = cross_entropy_backward(logits, target, grad_output, **options)
    loss_fn = CrossEntropyLoss(**options)
    module_loss = loss_fn(logits, target)
    module_grad = loss_fn.backward(grad_output)
    for ours in (loss, module_loss):
        assert ours.shape == expected_loss.shape and ours.dtype == dtype
        np.testing.assert_allclose(ours, expected_loss, **tolerances(dtype))
    for ours in (grad, module_grad):
        assert ours.shape == shape and ours.dtype == dtype
        np.testing.assert_allclose(ours, expected_grad, **tolerances(dtype))


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_no_classes_and_every_target_ignored(kernel_path, smoothing):
    logits = np.zeros((2, 0), np.float32)
    target = np.full(2, -100)
    assert np.isnan(cross_entropy(logits, target, label_smoothing=smoothing))
    assert cross_entropy(logits, target, label_smoothing=smoothing, all_ignored="zero") == 0
    # PyTorch gives NaN here with label smoothing (eps / C = inf times an ignored row's 0);
    # glassnet keeps its rule that ignored rows add nothing.
    none = cross_entropy(logits, target, reduction="none", label_smoothing=smoothing)
    np.testing.assert_array_equal(none, [0.0, 0.0])
    assert cross_entropy(logits, target, reduction="sum", label_smoothing=smoothing) == 0


RAISING = [  # inputs PyTorch refuses (with IndexError or RuntimeError); glassnet: ValueError
    ("0-d logits", np.float64(1.0), np.array(0), ["logits", "class axis"]),
    ("0-d logits, 0-d prob. target", np.float64(1.0), np.float64(1.0), ["class axis"]),
    ("C = 0, a counted target", np.zeros((2, 0)), np.array([0, -100]), ["class 0", "[0, 0)"]),
    ("C = 0 unbatched", np.zeros(0), np.array(0), ["class 0", "[0, 0)"]),
    ("C = 0 with d1", np.zeros((2, 0, 3)), np.full((2, 3), -100), ["(2, 0, 3)", "C = 0"]),
]


@pytest.mark.parametrize("name,logits,target,words", RAISING, ids=[r[0] for r in RAISING])
def test_what_pytorch_refuses_raises_a_clear_value_error(name, logits, target, words):
    torch = pytest.importorskip("torch")
    with pytest.raises((IndexError, RuntimeError)):
        torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(target))
    for fn in (cross_entropy, cross_entropy_backward, CrossEntropyLoss()):
        with pytest.raises(ValueError) as info:
            fn(logits, target)
        for word in words:
            assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_plus_inf_logits_give_what_pytorch_gives(kernel_path, dtype, smoothing, weighted):
    logits = np.array(
        [[np.inf, 1.0, 2.0], [np.inf, np.inf, 0.0], [np.inf, -np.inf, 0.0], [1.0, 2.0, 3.0]],
        dtype,
    )
    target = np.array([0, 1, 1, 2])
    options = {"label_smoothing": smoothing, "reduction": "none"}
    if weighted:
        options["weight"] = np.array([0.5, 1.0, 2.0], dtype)
    expected_loss, expected_grad = torch_cross_entropy(logits, target, 1.0, **options)
    loss = cross_entropy(logits, target, **options)
    grad = cross_entropy_backward(logits, target, **options)
    assert np.isnan(loss[:3]).all() and np.isnan(grad[:3]).all()
    np.testing.assert_allclose(loss, expected_loss, **tolerances(dtype))
    np.testing.assert_allclose(grad, expected_grad, **tolerances(dtype))


def random_case(seed):
    """One random combination of cross_entropy's options, and its input."""
    rng = np.random.default_rng(seed)
    dtype = DTYPES[rng.integers(2)]
    num_classes = int(rng.integers(1, 7))
    batch = int(rng.choice([0, 1, 2, 3, 5], p=[0.05, 0.15, 0.3, 0.3, 0.2]))
    smallest_side = 0 if rng.random() < 0.1 else 1  # sometimes an empty spatial axis
    spatial = tuple(int(d) for d in rng.integers(smallest_side, 4, size=rng.integers(3)))
    shape = (num_classes,) if rng.random() < 0.15 else (batch, num_classes, *spatial)
    index_shape = () if len(shape) == 1 else shape[:1] + shape[2:]
    logits = (rng.standard_normal(shape) * rng.choice([0.5, 3.0, 30.0])).astype(dtype)
    options = {"reduction": str(rng.choice(["mean", "sum", "none"]))}
    if rng.random() < 0.5:
        options["label_smoothing"] = float(rng.choice([0.1, 0.5, 1.0, rng.random()]))
    if rng.random() < 0.5:
        options["weight"] = rng.uniform(0.1, 3.0, num_classes).astype(dtype)
    if rng.random() < 0.3:  # probability targets; ignore_index does not apply
        raw = rng.random(shape) ** 3
        target = (raw / raw.sum(axis=0 if len(shape) == 1 else 1, keepdims=True)).astype(dtype)
    else:
        target = rng.integers(0, num_classes, size=index_shape)
        ignore_index = int(rng.choice([-100, -1, 0, num_classes - 1]))
        if ignore_index != -100 or rng.random() < 0.5:
            options["ignore_index"] = ignore_index
        if rng.random() < 0.15:
            target = np.full(index_shape, ignore_index)  # all ignored
        elif target.size:
            target.reshape(-1)[rng.random(target.size) < 0.3] = ignore_index
    loss_shape = index_shape if options["reduction"] == "none" else ()
    grad_output = rng.standard_normal(loss_shape).astype(dtype)
    return logits, target, grad_output, options


@pytest.mark.parametrize("seed", range(300))
def test_random_option_combinations_match_pytorch(kernel_path, seed):
    logits, target, grad_output, options = random_case(seed)
    expected_loss, expected_grad = torch_cross_entropy(logits, target, grad_output, **options)
    loss = cross_entropy(logits, target, **options)
    grad = cross_entropy_backward(logits, target, grad_output, **options)
    loss_fn = CrossEntropyLoss(**options)
    np.testing.assert_array_equal(loss_fn(logits, target), loss)
    np.testing.assert_array_equal(loss_fn.backward(grad_output), grad)
    assert loss.shape == expected_loss.shape and grad.shape == logits.shape
    assert loss.dtype == grad.dtype == logits.dtype
    np.testing.assert_allclose(loss, expected_loss, **tolerances(logits.dtype))
    np.testing.assert_allclose(grad, expected_grad, **tolerances(logits.dtype))


LAYOUTS = ["read-only", "broadcast", "strided", "fortran", "read-only fortran"]


def awkward_layouts(logits):
    """The same numbers as the C-contiguous (N, C) ``logits``, in layouts a kernel must copy."""
    read_only = logits.copy()
    read_only.flags.writeable = False
    strided = np.empty((logits.shape[0], 2 * logits.shape[1]), logits.dtype)[:, ::2]
    strided[...] = logits
    return {
        "read-only": read_only,
        "broadcast": np.broadcast_to(logits[:1], logits.shape),
        "strided": strided,
        "fortran": np.asfortranarray(logits),
        "read-only fortran": np.asfortranarray(read_only),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2, "weight": [1.0, 2.0, 0.5, 1.0]}])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_read_only_broadcast_and_strided_logits_work_and_stay_untouched(
    kernel_path, dtype, options, layout
):
    rng = np.random.default_rng(5)
    contiguous = rng.standard_normal((6, 4)).astype(dtype)
    logits = awkward_layouts(contiguous)[layout]
    reference = np.ascontiguousarray(logits)  # the same numbers, a layout every path takes
    before = reference.copy()
    target = np.array([0, 1, 2, 3, -100, 1])
    loss_fn = CrossEntropyLoss(**options, reuse_gradient=True)
    for _ in range(2):  # the second forward writes into the first one's gradient buffer
        np.testing.assert_array_equal(loss_fn(logits, target), loss_fn(reference, target))
        expected = loss_fn.backward().copy()
        loss_fn(logits, target)
        np.testing.assert_array_equal(loss_fn.backward(), expected)
    np.testing.assert_array_equal(
        cross_entropy(logits, target, reduction="none", **options),
        cross_entropy(reference, target, reduction="none", **options),
    )
    np.testing.assert_array_equal(
        cross_entropy_backward(logits, target, **options),
        cross_entropy_backward(reference, target, **options),
    )
    np.testing.assert_array_equal(logits, before)


def test_inplace_on_read_only_logits_is_refused_and_writes_nothing(kernel_path):
    logits = np.random.default_rng(6).standard_normal((4, 3)).astype(np.float32)
    logits.flags.writeable = False
    before = logits.copy()
    with pytest.raises(ValueError, match="writeable"):
        cross_entropy_backward(logits, np.array([0, 1, 2, 0]), inplace=True)
    with pytest.raises(ValueError, match="writeable"):
        CrossEntropyLoss(inplace=True)(logits, np.array([0, 1, 2, 0]))
    np.testing.assert_array_equal(logits, before)


def test_kernel_copies_what_it_cannot_take():
    if not kernels.enabled():
        pytest.skip("the Numba kernels are off (numba missing or GLASSNET_KERNELS=0)")
    from glassnet.kernels.cross_entropy import cross_entropy_rows

    logits = np.broadcast_to(np.array([[1.0, 2.0, 0.5]], np.float32), (2, 3))
    args = (np.array([0, 2]), np.ones(2, np.float32), None, 0.0, np.ones(2, np.float32))
    out = np.empty((2, 3), np.float32)
    loss = cross_entropy_rows(logits, *args, out)
    np.testing.assert_allclose(loss, cross_entropy(logits, args[0], reduction="none"), rtol=1e-6)
    np.testing.assert_allclose(out, cross_entropy_backward(logits, args[0], reduction="sum"))
    with pytest.raises(ValueError, match="out is the logits array"):
        cross_entropy_rows(logits, *args, logits)
