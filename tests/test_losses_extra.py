"""MSE and NLL losses (functional and nn) against PyTorch, with central-difference checks."""

import numpy as np
import pytest

from glassnet import gradcheck
from glassnet.functional.cross_entropy import cross_entropy, cross_entropy_backward
from glassnet.functional.losses import (
    mse_loss,
    mse_loss_backward,
    nll_loss,
    nll_loss_backward,
)
from glassnet.functional.softmax import log_softmax
from glassnet.nn.loss import MSELoss, NLLLoss

REDUCTIONS = ["mean", "sum", "none"]
NLL_SHAPES = [(4,), (6, 4), (3, 4, 5), (2, 4, 3, 2)]  # log_probs shapes, classes on axis 1


def _log_probs_and_target(shape, rng, ignore_some=False):
    """Log-probabilities of ``shape`` and class indices (() for an unbatched (C,) input)."""
    class_axis = 0 if len(shape) == 1 else 1
    log_probs = log_softmax(rng.standard_normal(shape), axis=class_axis)
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    target = rng.integers(0, shape[class_axis], size=target_shape)
    if ignore_some and target.ndim:
        target.reshape(-1)[::3] = -100
    return log_probs, target


def _torch_grad(torch, function, x, grad_output, *args, **kwargs):
    """PyTorch's loss and d(loss)/dx for ``function(x, *args, **kwargs)``."""
    x_torch = torch.tensor(x, requires_grad=True)
    loss = function(x_torch, *args, **kwargs)
    loss.backward(torch.tensor(grad_output))
    return loss.detach().numpy(), x_torch.grad.numpy()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_mse_matches_torch(shape, reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal(shape), rng.standard_normal(shape)
    grad_output = rng.standard_normal(shape) if reduction == "none" else np.array(0.7)
    loss, grad = _torch_grad(
        torch, torch.nn.functional.mse_loss, x, grad_output, torch.tensor(target),
        reduction=reduction,
    )  # fmt: skip
    np.testing.assert_allclose(mse_loss(x, target, reduction), loss, rtol=1e-12)
    ours = mse_loss_backward(x, target, grad_output, reduction)
    np.testing.assert_allclose(ours, grad, rtol=1e-12)

    loss_fn = MSELoss(reduction)
    np.testing.assert_allclose(loss_fn(x, target), loss, rtol=1e-12)
    np.testing.assert_allclose(loss_fn.backward(grad_output), grad, rtol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_gradcheck(reduction):
    rng = np.random.default_rng(1)
    x, target = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))

    def backward(grad_out, x, target):
        grad = mse_loss_backward(x, target, grad_out, reduction)
        return grad, -grad  # dL/dtarget = -dL/dinput

    assert gradcheck(lambda x, t: mse_loss(x, t, reduction), backward, [x, target])


def test_mse_keeps_float32_and_rejects_bad_input():
    x = np.ones((2, 3), np.float32)
    assert mse_loss(x, np.zeros((2, 3), np.float32)).dtype == np.float32
    assert mse_loss_backward(x, np.zeros((2, 3), np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match=r"target of shape \(3,\) must have the input's shape"):
        mse_loss(x, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="reduction='avg'"):
        MSELoss("avg")
    with pytest.raises(ValueError, match="grad_output of shape"):
        mse_loss_backward(x, x, np.ones(3))
    with pytest.raises(RuntimeError, match="before forward"):
        MSELoss().backward()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", NLL_SHAPES)
def test_nll_matches_torch(shape, reduction, ignore, weighted):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    log_probs, target = _log_probs_and_target(shape, rng, ignore_some=ignore)
    class_count = shape[0] if len(shape) == 1 else shape[1]
    weight = rng.uniform(0.5, 2.0, class_count) if weighted else None
    grad_output = rng.standard_normal(target.shape) if reduction == "none" else np.array(1.3)
    options = {"ignore_index": -100, "reduction": reduction}
    loss, grad = _torch_grad(
        torch, torch.nn.functional.nll_loss, log_probs, grad_output, torch.tensor(target),
        weight=None if weight is None else torch.tensor(weight), **options,
    )  # fmt: skip
    ours = nll_loss(log_probs, target, weight=weight, **options)
    np.testing.assert_allclose(ours, loss, rtol=1e-12)
    ours_grad = nll_loss_backward(log_probs, target, grad_output, weight=weight, **options)
    np.testing.assert_allclose(ours_grad, grad, rtol=1e-12)

    loss_fn = NLLLoss(weight, **options)
    np.testing.assert_allclose(loss_fn(log_probs, target), loss, rtol=1e-12)
    np.testing.assert_allclose(loss_fn.backward(grad_output), grad, rtol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_gradcheck(reduction):
    rng = np.random.default_rng(3)
    log_probs, target = _log_probs_and_target((5, 3, 2), rng, ignore_some=True)
    options = {"weight": rng.uniform(0.5, 2, 3), "reduction": reduction}

    def forward(log_probs):
        return nll_loss(log_probs, target, **options)

    def backward(grad_out, log_probs):
        return nll_loss_backward(log_probs, target, grad_out, **options)

    assert gradcheck(forward, backward, [log_probs])


def test_nll_of_log_softmax_is_cross_entropy():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((6, 5))
    target = rng.integers(0, 5, 6)
    weight = rng.uniform(0.5, 2, 5)
    log_probs = log_softmax(logits, axis=1)
    np.testing.assert_allclose(
        nll_loss(log_probs, target, weight=weight), cross_entropy(logits, target, weight=weight)
    )
    # chain rule through log_softmax: dL/dz = g - softmax(z) * sum(g)
    grad = nll_loss_backward(log_probs, target, weight=weight)
    via_log_softmax = grad - np.exp(log_probs) * grad.sum(axis=1, keepdims=True)
    expected = cross_entropy_backward(logits, target, weight=weight)
    np.testing.assert_allclose(via_log_softmax, expected, atol=1e-15)


def test_nll_all_ignored_mean_is_nan_with_zero_gradient():
    torch = pytest.importorskip("torch")
    log_probs = log_softmax(np.random.default_rng(5).standard_normal((3, 4)), axis=1)
    target = np.full(3, -100)
    loss, grad = _torch_grad(torch, torch.nn.functional.nll_loss, log_probs, np.array(1.0),
                             torch.tensor(target))  # fmt: skip
    assert np.isnan(loss) and np.isnan(nll_loss(log_probs, target))
    np.testing.assert_array_equal(nll_loss_backward(log_probs, target), grad)


def test_nll_custom_ignore_index_and_float32():
    log_probs = log_softmax(np.random.default_rng(6).standard_normal((4, 3)), axis=1)
    target = np.array([0, 2, 1, 2])
    loss = nll_loss(log_probs.astype(np.float32), target, ignore_index=2, reduction="none")
    assert loss.dtype == np.float32
    expected = [-log_probs[0, 0], 0, -log_probs[2, 1], 0]
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_nll_rejects_bad_input():
    log_probs = np.log(np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"target of shape \(3,\) do not fit"):
        nll_loss(log_probs, np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="target must hold class indices"):
        nll_loss(log_probs, np.zeros(2))
    with pytest.raises(ValueError, match="target holds class 3"):
        nll_loss(log_probs, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"weight must have shape \(C,\) = \(3,\)"):
        nll_loss(log_probs, np.array([0, 1]), weight=np.ones(2))
    with pytest.raises(ValueError, match="reduction='avg'"):
        NLLLoss(reduction="avg")
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        NLLLoss(ignore_index=1.5)
    with pytest.raises(TypeError, match="log_probs must be a floating-point array"):
        nll_loss(np.zeros((2, 3), np.int64), np.array([0, 1]))
    with pytest.raises(RuntimeError, match="before forward"):
        NLLLoss().backward()


# --- the denominator of a mean (data-parallel training adds these over the processes) ------


def _spatial_logits_and_target(rng):
    """(N, C, d) logits and (N, d) targets with some ignored: a mean over 3 * 5 positions."""
    target = rng.integers(0, 4, size=(3, 5))
    target[0, :2] = target[2, 4] = -100
    return rng.standard_normal((3, 4, 5)), target


@pytest.mark.parametrize("loss_type", ["CrossEntropyLoss", "NLLLoss", "LinearCrossEntropy"])
@pytest.mark.parametrize("weighted", [False, True])
def test_denominator_is_what_the_mean_divides_the_sum_by(loss_type, weighted):
    from glassnet.nn import CrossEntropyLoss, LinearCrossEntropy

    rng = np.random.default_rng(0)
    weight = np.array([0.5, 1.0, 2.0, 4.0]) if weighted else None
    if loss_type == "LinearCrossEntropy":
        x, target = rng.standard_normal((6, 3)), np.array([0, 3, -100, 2, 3, -100])
        mean_fn = LinearCrossEntropy(3, 4, weight=weight, dtype=np.float64, rng=rng)
        sum_fn = LinearCrossEntropy(3, 4, weight=weight, reduction="sum", dtype=np.float64)
        sum_fn.load_state_dict(mean_fn.state_dict())
        counted = target[target != -100]
    else:
        x, target = _spatial_logits_and_target(rng)
        counted = target[target != -100]
        if loss_type == "NLLLoss":
            x = log_softmax(x, axis=1)
        cls = {"CrossEntropyLoss": CrossEntropyLoss, "NLLLoss": NLLLoss}[loss_type]
        mean_fn, sum_fn = cls(weight=weight), cls(weight=weight, reduction="sum")
    expected = float(weight[counted].sum()) if weighted else float(len(counted))
    mean, total = float(mean_fn(x, target)), float(sum_fn(x, target))
    assert mean_fn.denominator == pytest.approx(expected, rel=1e-15)
    assert mean * mean_fn.denominator == pytest.approx(total, rel=1e-12)


def test_denominator_of_probability_targets_and_mse_counts_rows_and_elements():
    from glassnet.nn import CrossEntropyLoss

    rng = np.random.default_rng(1)
    loss_fn = CrossEntropyLoss(weight=np.array([1.0, 3.0, 2.0]))
    probs = np.full((5, 3), 1 / 3)
    loss_fn(rng.standard_normal((5, 3)), probs)
    assert loss_fn.denominator == 5.0  # PyTorch: probability targets' mean divides by N
    mse = MSELoss()
    mse(np.zeros((4, 3)), np.ones((4, 3)))
    assert mse.denominator == 12.0


def test_denominator_before_forward_is_an_error():
    from glassnet.nn import CrossEntropyLoss

    for loss_fn in (CrossEntropyLoss(), NLLLoss(), MSELoss()):
        with pytest.raises(RuntimeError, match="denominator needs a forward"):
            _ = loss_fn.denominator
