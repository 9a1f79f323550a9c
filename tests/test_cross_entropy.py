"""cross_entropy and its fused backward: PyTorch parity, edge cases, and bad input."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from glassnet import gradcheck, kernels
from glassnet.functional import (
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_backward_jacobian,
    softmax,
)
from glassnet.nn import CrossEntropyLoss
from tests import kernel_paths

kernel_path = kernel_paths.kernel_path  # the fixture: each test runs on Numba, then NumPy

C = 5
# (logits shape, index-target shape): unbatched, (N, C), (N, C, d1), (N, C, d1, d2)
LAYOUTS = [((C,), ()), ((6, C), (6,)), ((3, C, 4), (3, 4)), ((2, C, 3, 2), (2, 3, 2))]


def make_case(layout, target_kind, ignore_index, dtype, seed=0):
    rng = np.random.default_rng(seed)
    logits_shape, index_shape = layout
    logits = (2 * rng.standard_normal(logits_shape)).astype(dtype)
    if target_kind == "index":
        target = rng.integers(0, C, size=index_shape)
        if ignore_index is not None and target.size > 1:
            target.reshape(-1)[::3] = ignore_index  # ignore every third position
    else:
        raw = rng.random(logits_shape)
        class_axis = 0 if len(logits_shape) == 1 else 1
        target = (raw / raw.sum(axis=class_axis, keepdims=True)).astype(dtype)
    return logits, target


def torch_reference(logits, target, grad_output, **options):
    torch = pytest.importorskip("torch")
    x = torch.tensor(logits, requires_grad=True)
    t = torch.tensor(target)
    if options.get("weight") is not None:
        options = {**options, "weight": torch.tensor(options["weight"])}
    loss = torch.nn.functional.cross_entropy(x, t, **options)
    loss.backward(torch.tensor(grad_output, dtype=loss.dtype).expand_as(loss))
    return loss.detach().numpy(), x.grad.numpy()


GRID = [
    (layout, kind, weighted, ignore, reduction, smoothing, dtype)
    for layout, kind, weighted, ignore, reduction, smoothing, dtype in itertools.product(
        LAYOUTS,
        ["index", "probs"],
        [False, True],
        [None, 1],
        ["none", "mean", "sum"],
        [0.0, 0.2],
        [np.float64, np.float32],
    )
    if not (kind == "probs" and ignore is not None)  # PyTorch refuses ignore_index >= 0 there
]


@pytest.mark.parametrize("layout,kind,weighted,ignore,reduction,smoothing,dtype", GRID)
def test_matches_pytorch(layout, kind, weighted, ignore, reduction, smoothing, dtype):
    logits, target = make_case(layout, kind, ignore, dtype)
    options = {"reduction": reduction, "label_smoothing": smoothing}
    if weighted:
        options["weight"] = np.linspace(0.5, 2.0, C).astype(dtype)
    if ignore is not None:
        options["ignore_index"] = ignore
    rng = np.random.default_rng(7)
    loss_shape = layout[1] if reduction == "none" else ()
    grad_output = rng.standard_normal(loss_shape).astype(dtype) if loss_shape else dtype(0.7)

    expected_loss, expected_grad = torch_reference(logits, target, grad_output, **options)
    loss = cross_entropy(logits, target, **options)
    grad = cross_entropy_backward(logits, target, grad_output, **options)

    rtol, atol = (1e-10, 1e-13) if dtype == np.float64 else (1e-5, 1e-6)
    assert loss.dtype == dtype and loss.shape == expected_loss.shape
    assert grad.dtype == dtype and grad.shape == logits.shape
    np.testing.assert_allclose(loss, expected_loss, rtol=rtol, atol=atol)
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_gradcheck(layout, kind, reduction, smoothing):
    logits, target = make_case(layout, kind, -100 if kind == "index" else None, np.float64)
    options = {
        "reduction": reduction,
        "label_smoothing": smoothing,
        "weight": np.linspace(0.5, 2.0, C),
    }
    assert gradcheck(
        lambda x: cross_entropy(x, target, **options),
        lambda g, x: cross_entropy_backward(x, target, g, **options),
        [logits],
    )


def test_module_forward_backward_matches_functional():
    logits, target = make_case(LAYOUTS[2], "index", 1, np.float32)
    loss_fn = CrossEntropyLoss(weight=np.arange(1, C + 1.0), ignore_index=1, label_smoothing=0.1)
    loss = loss_fn(logits, target)
    options = {"weight": np.arange(1, C + 1.0), "ignore_index": 1, "label_smoothing": 0.1}
    np.testing.assert_array_equal(loss, cross_entropy(logits, target, **options))
    grad = cross_entropy_backward(logits, target, **options)
    np.testing.assert_array_equal(loss_fn.backward(), grad)
    np.testing.assert_array_equal(loss_fn.backward(), grad)  # backward leaves its cache intact
    with pytest.raises(RuntimeError, match="before forward"):
        CrossEntropyLoss().backward()


def test_a_gradient_the_caller_holds_is_never_overwritten(kernel_path):
    rng = np.random.default_rng(13)
    first, second = (rng.standard_normal((8, 5)).astype(np.float32) for _ in range(2))
    target = rng.integers(0, 5, size=8)
    loss_fn = CrossEntropyLoss()
    loss_fn(first, target)
    held = loss_fn.backward()
    kept = held.copy()
    for _ in range(3):  # the steps of a training loop, with the first gradient still held
        loss_fn(second, target)
        grad = loss_fn.backward()
        assert not np.shares_memory(grad, held)
    np.testing.assert_array_equal(held, kept)
    np.testing.assert_array_equal(grad, cross_entropy_backward(second, target))


def test_reuse_gradient_lends_the_buffer_to_the_next_forward(kernel_path):
    rng = np.random.default_rng(14)
    first, second = (rng.standard_normal((8, 5)).astype(np.float32) for _ in range(2))
    target = rng.integers(0, 5, size=8)
    loss_fn = CrossEntropyLoss(reuse_gradient=True, label_smoothing=0.1)
    loss_fn(first, target)
    lent = loss_fn.backward()
    loss_fn(second, target)
    grad = loss_fn.backward()
    np.testing.assert_array_equal(grad, cross_entropy_backward(second, target, label_smoothing=0.1))
    # The kernel writes the second gradient into the first one's memory; NumPy allocates.
    assert np.shares_memory(grad, lent) == (kernel_path == "numba")
    # A lent buffer handed back as the logits is read, never written into.
    expected = cross_entropy_backward(grad.copy(), target, label_smoothing=0.1)
    before = grad.copy()
    loss_fn(grad, target)
    np.testing.assert_array_equal(grad, before)
    np.testing.assert_array_equal(loss_fn.backward(), expected)
    loss_fn(first[:3], target[:3])  # another shape: a new buffer
    assert loss_fn.backward().shape == (3, 5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_ignored_rows_with_all_masked_logits_produce_no_nan(reduction, smoothing, dtype):
    logits = np.array([[1.0, 2.0, 0.5], [-np.inf, -np.inf, -np.inf], [0.0, -1.0, 3.0]], dtype)
    target = np.array([0, -100, 2])
    loss = cross_entropy(logits, target, reduction=reduction, label_smoothing=smoothing)
    grad = cross_entropy_backward(logits, target, reduction=reduction, label_smoothing=smoothing)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[1], 0.0)
    # The ignored row changes nothing: the loss equals that of the other two rows alone.
    kept = cross_entropy(
        logits[[0, 2]], target[[0, 2]], reduction=reduction, label_smoothing=smoothing
    )
    np.testing.assert_allclose(loss if reduction != "none" else loss[[0, 2]], kept, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_masked_classes_get_exactly_zero_gradient(kind, smoothing, dtype):
    logits = np.array([[1.0, -np.inf, 0.5, 2.0], [-np.inf, 0.0, 1.0, -np.inf]], dtype)
    if kind == "index":
        target = np.array([3, 2])
    else:
        target = np.array([[0.5, 0.0, 0.5, 0.0], [0.0, 0.25, 0.75, 0.0]], dtype)
    loss = cross_entropy(logits, target, label_smoothing=smoothing)
    grad = cross_entropy_backward(logits, target, label_smoothing=smoothing)
    assert np.isfinite(loss)
    assert np.all(grad[np.isneginf(logits)] == 0.0)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-7)
    # Unmasked classes behave as if the masked ones were not there at all.
    row = logits[1, 1:3]
    sub_target = np.array([1]) if kind == "index" else target[1:, 1:3]
    sub_grad = cross_entropy_backward(row[None], sub_target, label_smoothing=smoothing)
    np.testing.assert_allclose(2 * grad[1, 1:3], sub_grad[0], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_target_on_a_masked_class_gives_infinite_loss_like_pytorch(dtype):
    logits = np.array([[0.0, -np.inf, 1.0]], dtype)
    assert cross_entropy(logits, np.array([1])) == np.inf
    np.testing.assert_array_equal(cross_entropy_backward(logits, np.array([1])), 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_logits_of_magnitude_1e4_are_exact(dtype, smoothing):
    rng = np.random.default_rng(3)
    logits = rng.choice([-1e4, 1e4], size=(8, 6)) + rng.standard_normal((8, 6))
    logits = logits.astype(dtype)
    target = rng.integers(0, 6, size=8)
    loss = cross_entropy(logits, target, label_smoothing=smoothing, reduction="none")
    grad = cross_entropy_backward(logits, target, label_smoothing=smoothing)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    # Reference: the same float32/64 numbers, evaluated in float64 via PyTorch.
    expected_loss, expected_grad = torch_reference(
        logits.astype(np.float64), target, 1.0, label_smoothing=smoothing, reduction="none"
    )
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    _, expected_grad = torch_reference(
        logits.astype(np.float64), target, 1.0, label_smoothing=smoothing
    )
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_all_ignored_mean_is_nan_by_default_and_zero_on_request():
    logits = np.random.default_rng(0).standard_normal((3, 4))
    target = np.full(3, -100)
    assert np.isnan(cross_entropy(logits, target))
    np.testing.assert_array_equal(cross_entropy_backward(logits, target), 0.0)
    assert cross_entropy(logits, target, all_ignored="zero") == 0.0
    assert cross_entropy(logits, target, reduction="sum") == 0.0
    loss_fn = CrossEntropyLoss(all_ignored="zero", label_smoothing=0.1)
    assert loss_fn(logits, target) == 0.0
    np.testing.assert_array_equal(loss_fn.backward(), 0.0)


def test_float16_logits_are_computed_in_float32():
    logits = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float16)
    target = np.array([1, 2, 3, 4])
    loss = cross_entropy(logits, target)
    assert loss.dtype == np.float16
    assert loss == np.float16(cross_entropy(logits.astype(np.float32), target))
    assert cross_entropy_backward(logits, target).dtype == np.float16


@given(
    hnp.arrays(
        np.float64, st.tuples(st.integers(1, 6), st.integers(2, 7)), elements=st.floats(-30, 30)
    ),
    st.data(),
)
def test_unweighted_one_hot_gradient_rows_sum_to_zero(logits, data):
    target = np.array(
        data.draw(
            st.lists(
                st.integers(0, logits.shape[1] - 1), min_size=len(logits), max_size=len(logits)
            )
        )
    )
    smoothing = data.draw(st.sampled_from([0.0, 0.1, 1.0]))
    grad = cross_entropy_backward(logits, target, reduction="sum", label_smoothing=smoothing)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-12)
    # and with no smoothing it is exactly p - y
    if smoothing == 0.0:
        np.testing.assert_allclose(
            grad, softmax(logits) - np.eye(logits.shape[1])[target], atol=1e-15
        )


@given(
    hnp.arrays(
        np.float64, st.tuples(st.integers(1, 5), st.integers(2, 6)), elements=st.floats(-20, 20)
    ),
    st.floats(-100, 100),
)
def test_loss_and_gradient_are_shift_invariant(logits, shift):
    target = np.arange(len(logits)) % logits.shape[1]
    np.testing.assert_allclose(
        cross_entropy(logits + shift, target), cross_entropy(logits, target), rtol=1e-9, atol=1e-9
    )
    np.testing.assert_allclose(
        cross_entropy_backward(logits + shift, target),
        cross_entropy_backward(logits, target),
        atol=1e-12,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_jacobian_route_agrees_with_fused_route(reduction, kind):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((16, 10)) * 3
    if kind == "index":
        target = rng.integers(0, 10, size=16)
    else:
        target = rng.dirichlet(np.ones(10), size=16)
    fused = cross_entropy_backward(logits, target, reduction=reduction)
    long_way = cross_entropy_backward_jacobian(logits, target, reduction=reduction)
    np.testing.assert_allclose(long_way, fused, rtol=0, atol=1e-12)


BAD = [
    (
        "target class out of range",
        dict(target=np.array([0, 7])),
        ValueError,
        ["class 7", "[0, 3)", "position (1,)"],
    ),
    (
        "negative target",
        dict(target=np.array([-1, 0])),
        ValueError,
        ["class -1", "ignore_index=-100"],
    ),
    (
        "target shape",
        dict(target=np.array([0, 1, 2])),
        ValueError,
        ["target of shape (3,)", "(2,)", "(2, 3)"],
    ),
    (
        "float index target",
        dict(target=np.array([0.0, 1.0])),
        TypeError,
        ["integer dtype", "float64"],
    ),
    (
        "integer one-hot target",
        dict(target=np.eye(3, dtype=int)[[0, 1]]),
        TypeError,
        ["probabilities", "int64"],
    ),
    (
        "probs with ignore_index",
        dict(target=np.full((2, 3), 1 / 3), ignore_index=0),
        ValueError,
        ["ignore_index=0", "probability"],
    ),
    ("weight length", dict(weight=np.ones(4)), ValueError, ["weight", "(3,)", "(4,)"]),
    ("weight dtype", dict(weight=np.array(["a", "b", "c"])), TypeError, ["weight", "real"]),
    ("smoothing > 1", dict(label_smoothing=1.5), ValueError, ["label_smoothing=1.5", "[0.0, 1.0]"]),
    ("smoothing < 0", dict(label_smoothing=-0.1), ValueError, ["label_smoothing=-0.1"]),
    ("reduction", dict(reduction="avg"), ValueError, ["reduction='avg'", "'none', 'mean', 'sum'"]),
    ("all_ignored", dict(all_ignored="skip"), ValueError, ["all_ignored='skip'"]),
    ("ignore_index type", dict(ignore_index=1.5), TypeError, ["ignore_index", "1.5"]),
    (
        "integer logits",
        dict(logits=np.array([[1, 2, 3], [4, 5, 6]])),
        TypeError,
        ["logits", "int64"],
    ),
    (
        "scalar logits",
        dict(logits=np.float64(1.0), target=np.array(0)),
        ValueError,
        ["logits", "class axis"],
    ),
]


@pytest.mark.parametrize("name,override,error,words", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("fn", [cross_entropy, cross_entropy_backward])
def test_bad_input_raises_a_clear_error(fn, name, override, error, words):
    args = {"logits": np.zeros((2, 3)), "target": np.array([0, 2]), **override}
    with pytest.raises(error) as info:
        fn(args.pop("logits"), args.pop("target"), **args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_bad_grad_output_shape():
    logits, target = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match=r"loss's shape \(2,\)"):
        cross_entropy_backward(logits, target, np.ones(3), reduction="none")
    with pytest.raises(ValueError, match="scalar"):
        cross_entropy_backward(logits, target, np.ones(2), reduction="mean")


@pytest.fixture
def two_threads():
    """The kernels on two threads (a range of rows each), whatever the machine's default."""
    before = kernels.get_num_threads()
    kernels.set_num_threads(2)
    yield
    kernels.set_num_threads(before)


KERNEL_CASES = [
    {},
    {"weight": np.linspace(0.0, 2.0, 7)},  # a zero weight too
    {"ignore_index": 2},
    {"label_smoothing": 0.3},
    {"label_smoothing": 0.3, "weight": np.linspace(0.5, 2.0, 7), "ignore_index": 0},
    {"reduction": "none", "label_smoothing": 0.1},
    {"reduction": "sum", "all_ignored": "zero"},
]


@pytest.mark.parametrize("options", KERNEL_CASES)
@pytest.mark.parametrize("rows", [5, 3000, 10000])  # one thread; two only from 65,536 logits
def test_kernel_matches_numpy_reference(two_threads, options, rows):
    if not kernels.enabled():
        pytest.skip("the Numba kernels are off (numba missing or GLASSNET_KERNELS=0)")
    rng = np.random.default_rng(11)
    logits = (3 * rng.standard_normal((rows, 7))).astype(np.float32)
    logits[0, 3] = logits[1, :] = -np.inf  # a masked class, an all-masked row
    logits[2, 1] = 1e4
    target = rng.integers(0, 7, size=rows)
    target[1] = options.get("ignore_index", -100)
    target[4] = 3 if rows > 5 else target[4]
    loss = cross_entropy(logits, target, **options)
    grad = cross_entropy_backward(
        logits,
        target,
        0.5 if options.get("reduction") != "none" else np.full(rows, 0.5, np.float32),
        **options,
    )
    with kernels.disabled():
        expected_loss = cross_entropy(logits, target, **options)
        expected_grad = cross_entropy_backward(
            logits,
            target,
            0.5 if options.get("reduction") != "none" else np.full(rows, 0.5, np.float32),
            **options,
        )
    np.testing.assert_allclose(loss, expected_loss, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-6)
    assert np.all(grad[np.isneginf(logits)] == 0)


def _rows_reference(logits, labels, scale):
    """Loss and gradient per row in float64 NumPy: lse - z_y and scale * (softmax - onehot)."""
    z = logits.astype(np.float64)
    shift = np.max(z, axis=1, keepdims=True)
    shift[~np.isfinite(shift)] = 0  # an all-masked row
    exps = np.exp(z - shift)
    sums = exps.sum(axis=1, keepdims=True)
    rows = np.arange(len(z))
    kept = labels >= 0
    loss = np.where(kept, np.log(sums[:, 0]) - (z[rows, labels] - shift[:, 0]), 0.0)
    grad = exps / sums
    grad[rows, labels] -= 1
    grad *= scale[:, None]
    grad[~kept] = 0
    return loss, grad


GRADIENT_LAYOUTS = [
    "out", "streamed", "streamed-unaligned", "streamed-odd-address", "in place", "none"
]  # fmt: skip


def _use_kernel(monkeypatch, which):
    """Make cross_entropy_rows take the short-row or the long-row kernel whatever the row
    size; returns the flags each call of the long-row factory was given."""
    from glassnet.kernels import cross_entropy as ce_kernels

    monkeypatch.setattr(ce_kernels, "_LONG_ROW_BYTES", 0 if which == "long" else 1 << 62)
    calls = []
    factory = ce_kernels._long_rows_kernel
    monkeypatch.setattr(
        ce_kernels, "_long_rows_kernel", lambda *flags: calls.append(flags) or factory(*flags)
    )
    return calls


# around the short-row kernel's 64-class blocks, and the long-row kernel's 2048-class chunks
CLASS_COUNTS = {"short": [1, 17, 64, 200, 1000], "long": [1, 17, 200, 2048, 2049, 4160, 6200]}


@pytest.mark.parametrize(
    "kernel,classes", [(k, c) for k, counts in CLASS_COUNTS.items() for c in counts]
)
@pytest.mark.parametrize("layout", GRADIENT_LAYOUTS)
def test_kernel_rows_over_class_counts_and_gradient_layouts(
    monkeypatch, two_threads, kernel, classes, layout
):
    """Every way each row kernel stores its gradient, around its blocks (and chunks) and
    16-float streaming stores: into ``out``, streamed past the caches (to a destination
    aligned to 64 bytes, to one that is not, and to one not even aligned to a float), into
    the logits, or not at all."""
    if not kernels.enabled():
        pytest.skip("the Numba kernels are off (numba missing or GLASSNET_KERNELS=0)")
    from glassnet.kernels import cross_entropy as ce_kernels

    monkeypatch.setattr(ce_kernels, "_STREAMING_BYTES", 0 if "streamed" in layout else 1 << 62)
    monkeypatch.setattr(ce_kernels, "_AHEAD", 96)  # prefetch a block and a half ahead
    long_calls = _use_kernel(monkeypatch, kernel)
    rng = np.random.default_rng(classes)
    rows = 70  # two threads at 1000 classes
    logits = (4 * rng.standard_normal((rows, classes))).astype(np.float32)
    labels = rng.integers(0, classes, size=rows)
    labels[[0, 3, 35, rows - 1]] = -1  # ignored rows: first, inside, at a thread's start, last
    logits[5, classes // 2] = -np.inf if classes > 1 else logits[5, 0]  # a masked class
    labels[5] = (classes // 2 + 1) % classes
    # the max in the last chunk, far above the first chunks' (their factors underflow), and
    # a first chunk all masked (its running max stands in at 0)
    logits[7, -1] = 60
    if classes > 2200:
        logits[9, :2100] = -np.inf
        labels[9] = classes - 1
    scale = rng.uniform(0.5, 2.0, rows).astype(np.float32)
    expected_loss, expected_grad = _rows_reference(logits, labels, scale)
    ones = np.ones(rows, np.float32)
    if layout == "in place":
        out = logits.copy()
        source = out
    elif layout == "streamed-unaligned":
        out = np.empty(rows * classes + 1, np.float32)[1:].reshape(rows, classes)
        source = logits
    elif layout == "streamed-odd-address":
        memory = bytearray(4 * rows * classes + 1)
        out = np.frombuffer(memory, np.float32, rows * classes, offset=1).reshape(rows, classes)
        source = logits
    else:
        out = np.full((rows, classes), np.nan, np.float32)
        source = logits
    loss = ce_kernels.cross_entropy_rows(
        source, labels, ones, None, 0.0, scale, None if layout == "none" else out
    )
    np.testing.assert_allclose(loss, expected_loss, rtol=2e-6, atol=2e-6)
    if layout != "none":
        np.testing.assert_allclose(out, expected_grad, rtol=2e-5, atol=2e-7)
        assert out[5, classes // 2] == 0 or classes == 1
    assert bool(long_calls) == (kernel == "long")


@pytest.mark.parametrize("kernel", ["short", "long"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_in_a_later_chunk_makes_the_loss_nan(monkeypatch, kernel, value):
    """A NaN or +inf logit anywhere in a long row (here in its second chunk) gives a NaN loss
    and gradient row, as in PyTorch, and leaves the other rows alone."""
    if not kernels.enabled():
        pytest.skip("the Numba kernels are off (numba missing or GLASSNET_KERNELS=0)")
    long_calls = _use_kernel(monkeypatch, kernel)
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((3, 5000)).astype(np.float32)
    logits[1, 3000] = value
    target = np.array([1, 2, 3])
    loss = cross_entropy(logits, target, reduction="none")
    grad = cross_entropy_backward(logits, target, np.ones(3, np.float32), reduction="none")
    assert np.isnan(loss[1]) and np.isnan(grad[1]).any()
    clean = np.delete(logits, 1, axis=0)
    np.testing.assert_allclose(
        loss[[0, 2]], cross_entropy(clean, target[[0, 2]], reduction="none"), rtol=1e-6
    )
    assert np.isfinite(grad[[0, 2]]).all()
    assert bool(long_calls) == (kernel == "long")


def test_inplace_backward_writes_into_the_logits():
    if not kernels.enabled():
        pytest.skip("the Numba kernels are off (numba missing or GLASSNET_KERNELS=0)")
    rng = np.random.default_rng(12)
    logits = rng.standard_normal((64, 50)).astype(np.float32)
    target = rng.integers(0, 50, size=64)
    expected = cross_entropy_backward(logits, target, label_smoothing=0.1)
    buffer = logits.copy()
    grad = cross_entropy_backward(buffer, target, label_smoothing=0.1, inplace=True)
    assert grad is buffer or np.shares_memory(grad, buffer)
    np.testing.assert_allclose(buffer, expected, rtol=1e-6, atol=1e-9)
    loss_fn = CrossEntropyLoss(inplace=True)
    buffer = logits.copy()
    loss = loss_fn(buffer, target)
    np.testing.assert_allclose(loss, cross_entropy(logits, target), rtol=1e-6)
    assert np.shares_memory(loss_fn.backward(), buffer)
    bad_cases = [
        (logits.astype(np.float64), target),
        (logits[:, ::2], target % 25),
        (np.zeros((2, 3, 4), np.float32), np.zeros((2, 4), np.int64)),
        (logits, np.full(logits.shape, 1 / 50, np.float32)),
    ]
    read_only = logits.copy()
    read_only.flags.writeable = False
    bad_cases.append((read_only, target))
    for bad, bad_target in bad_cases:
        with pytest.raises(ValueError, match="inplace=True needs"):
            cross_entropy_backward(bad, bad_target, inplace=True)
    np.testing.assert_array_equal(read_only, logits)  # left as it was
    with kernels.disabled(), pytest.raises(ValueError, match="kernels off"):
        cross_entropy_backward(logits.copy(), target, inplace=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_nan_logits_give_a_nan_loss_like_pytorch(dtype, smoothing):
    # A NaN must surface (training loops stop on it), never be taken for a masked class.
    logits = np.array([[0.0, np.nan, 1.0], [0.5, 0.2, 0.1]], dtype)
    for target in (np.array([1, 0]), np.array([0, 0])):
        assert np.isnan(cross_entropy(logits, target, label_smoothing=smoothing))
        assert np.isnan(cross_entropy_backward(logits, target, label_smoothing=smoothing)[0]).any()
