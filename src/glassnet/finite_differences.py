"""Central-difference gradient checking for any forward/backward pair (float64)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GradcheckResult:
    """Outcome of :func:`gradcheck`: the worst relative error per input and overall."""

    max_rel_error: float
    errors: tuple[float, ...]  # worst relative error of each input
    rtol: float

    @property
    def ok(self) -> bool:
        return self.max_rel_error <= self.rtol

    def __bool__(self) -> bool:
        return self.ok


def gradcheck(
    forward: Callable[..., np.ndarray],
    backward: Callable[..., np.ndarray | Sequence[np.ndarray]],
    inputs: Sequence[np.ndarray],
    *,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    floor: float = 1e-4,
    rng: np.random.Generator | None = None,
) -> GradcheckResult:
    """Compare ``backward`` against central differences of ``forward``, element by element.

    Args:
        forward: ``forward(*inputs) -> output`` of any shape.
        backward: ``backward(grad_out, *inputs) -> grads``, one gradient per input (a bare
            array when there is one input); ``grad_out`` has the output's shape.
        inputs: float64 arrays. They are perturbed *in place* and restored, so a layer's
            parameter arrays can be passed and the layer sees the change.
        eps: the finite-difference step: ``(f(x + eps) - f(x - eps)) / (2 eps)``.
        rtol: the largest relative error that passes.
        floor: denominators below this are raised to it, so entries that are both ~0 compare
            absolutely.
        rng: draws the random projection ``grad_out`` (default: a fixed seed).
    Returns:
        A :class:`GradcheckResult`; truthy when every relative error
        ``|analytic - numeric| / max(|analytic|, |numeric|, floor)`` is at most ``rtol``.

    Like ``torch.autograd.gradcheck``, with a random ``grad_out`` so that every output
    element's gradient is exercised in one scalar ``sum(grad_out * forward(*inputs))``.
    """
    for i, x in enumerate(inputs):
        if not isinstance(x, np.ndarray) or x.dtype != np.float64:
            raise TypeError(
                f"inputs[{i}] must be a float64 ndarray (gradcheck perturbs it in place), "
                f"got {type(x).__name__} of dtype {getattr(x, 'dtype', None)}"
            )
    rng = np.random.default_rng(0) if rng is None else rng
    grad_out = rng.standard_normal(np.shape(forward(*inputs)))
    analytic = backward(grad_out.copy(), *inputs)
    if isinstance(analytic, np.ndarray):
        analytic = (analytic,)
    if len(analytic) != len(inputs):
        raise ValueError(f"backward returned {len(analytic)} gradients for {len(inputs)} inputs")

    errors = []
    for i, (x, grad) in enumerate(zip(inputs, analytic, strict=True)):
        if np.shape(grad) != x.shape:
            raise ValueError(
                f"backward's gradient {i} has shape {np.shape(grad)}, its input {x.shape}"
            )
        numeric = np.zeros_like(x)
        flat_x, flat_numeric = x.reshape(-1), numeric.reshape(-1)
        for j in range(flat_x.size):
            saved = flat_x[j]
            flat_x[j] = saved + eps
            plus = np.sum(grad_out * forward(*inputs))
            flat_x[j] = saved - eps
            minus = np.sum(grad_out * forward(*inputs))
            flat_x[j] = saved
            flat_numeric[j] = (plus - minus) / (2 * eps)
        scale = np.maximum(np.maximum(np.abs(grad), np.abs(numeric)), floor)
        errors.append(float(np.max(np.abs(grad - numeric) / scale, initial=0.0)))
    return GradcheckResult(max(errors, default=0.0), tuple(errors), rtol)


def gradcheck_layer(layer, x: np.ndarray, **options) -> GradcheckResult:
    """:func:`gradcheck` of a layer's input gradient and every parameter gradient at once.

    Args:
        layer: a glassnet Module with float64 parameters (``layer.to(np.float64)``).
        x: a float64 input batch.
        options: passed on to :func:`gradcheck` (eps, rtol, floor, rng).
    Returns:
        The result; ``errors`` lists the input first, then parameters in
        ``named_parameters()`` order.
    """
    params = layer.parameters()

    def forward(x, *_):  # the parameter arrays are perturbed in place, so the layer sees them
        return layer.forward(x)

    def backward(grad_out, x, *_):
        layer.zero_grad()
        layer.forward(x)
        grad_x = layer.backward(grad_out)
        return (grad_x, *(param.grad.copy() for param in params))

    return gradcheck(forward, backward, [x, *(param.data for param in params)], **options)
