"""Loss layers: they take logits and hand back the gradient that starts backpropagation."""

from __future__ import annotations

import numpy as np

from glassnet.functional._checks import check_reduction
from glassnet.functional.cross_entropy import (
    AllIgnored,
    CrossEntropyCache,
    Reduction,
    check_options,
    check_weight,
    cross_entropy_backward_from_cache,
    cross_entropy_forward,
    expect_kernel,
    inplace_possible,
)
from glassnet.functional.linear import add_matmul
from glassnet.functional.losses import (
    mse_loss,
    mse_loss_backward,
    nll_loss_backward_from_cache,
    nll_loss_forward,
)
from glassnet.nn.layers import Linear
from glassnet.nn.module import Module


class CrossEntropyLoss:
    """Softmax + cross-entropy on logits, with the fused backward ``p - y``.

    Args: as :func:`glassnet.functional.cross_entropy` (weight (C,), ignore_index, reduction,
    label_smoothing, all_ignored), plus two ways to save memory, both off by default:

    - ``inplace``: forward writes the gradient into the logits array (float32 (N, C), class
      indices, kernels on), so the pair allocates O(N) extra memory; read anything you need
      from the logits (the argmax) before calling it.
    - ``reuse_gradient``: the array ``backward()`` returns is lent, not given: the next
      ``forward()`` writes the next gradient into it (when the shapes match and the kernel
      runs), saving an (N, C) allocation per training step. Copy it if you keep it. Without
      this option every gradient is the caller's and is never written to again.

    Matches ``torch.nn.CrossEntropyLoss``. ``forward`` computes the loss and keeps what
    ``backward`` needs, so the pair reads the logits once; no softmax backward runs. For float32
    class-index targets one fused kernel computes both in that pass, and ``backward`` returns
    its result (for ``grad_output = 1``, not a copy). For a loss without gradient
    (evaluation), ``functional.cross_entropy`` is cheaper.

    >>> loss_fn = CrossEntropyLoss()
    >>> float(loss_fn(np.array([[-0.8, 1.1, 0.1]]), np.array([1])).round(3))
    0.417
    >>> loss_fn.backward().round(3)
    array([[ 0.099, -0.341,  0.242]])
    """

    def __init__(
        self,
        weight: np.ndarray | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        all_ignored: AllIgnored = "nan",
        inplace: bool = False,
        reuse_gradient: bool = False,
    ) -> None:
        self.weight = None if weight is None else np.asarray(weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.all_ignored = all_ignored
        self.inplace = inplace
        self.reuse_gradient = reuse_gradient
        self._cache: CrossEntropyCache | None = None
        expect_kernel(inplace, label_smoothing, weight is not None)

    def forward(self, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Loss of ``logits`` (N, C, ...) against ``target``; keeps what backward needs."""
        lent = None  # with inplace, the last gradient is the caller's logits: never lent
        if self.reuse_gradient and not self.inplace and self._cache is not None:
            lent = self._cache.grad
        self._cache = None  # free the last step's cache before this step allocates its own
        loss, self._cache = cross_entropy_forward(
            logits,
            target,
            out=lent,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            all_ignored=self.all_ignored,
            inplace=self.inplace,
        )
        return loss

    __call__ = forward

    def backward(self, grad_output: object = 1.0) -> np.ndarray:
        """dL/dlogits for the last forward call, shape and dtype of its logits."""
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward() called before forward()")
        return cross_entropy_backward_from_cache(self._cache, grad_output)

    @property
    def denominator(self) -> float:
        """What the last forward's "mean" divided the summed loss by: the summed weight of the
        counted targets (their number without ``weight``; N for probability targets).
        Data-parallel training adds these over the processes (see :mod:`glassnet.train.loop`)."""
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.denominator needs a forward() first")
        return self._cache.denominator

    def __repr__(self) -> str:
        return (
            f"CrossEntropyLoss(reduction={self.reduction!r}, ignore_index={self.ignore_index}, "
            f"label_smoothing={self.label_smoothing}, reuse_gradient={self.reuse_gradient})"
        )


class LinearCrossEntropy(Module):
    """A final ``Linear(in_features, num_classes)`` fused with cross-entropy, in row chunks.

    ``forward(x, target)`` returns the loss of ``x @ weight.T + bias`` against ``target`` without
    ever holding the (N, C) logits: it takes ``chunk_size`` rows at a time, turns their logits
    into dL/dlogits in place (the cross-entropy kernel), and folds that into dL/dx and dL/dW at
    once. ``backward()`` hands out dL/dx and adds dL/dW (and dL/db) to the parameters' ``.grad``.
    Peak memory is O(chunk_size * C) instead of O(N * C), for the same arithmetic.

    Args:
        in_features: D. num_classes: C.
        bias: add a learnable bias (C,).
        weight: per-class loss weights (C,), as ``cross_entropy``'s ``weight`` (the layer's own
            (C, D) matrix is the parameter ``self.weight``, as in Linear).
        ignore_index, reduction, label_smoothing, all_ignored: as ``cross_entropy``.
        chunk_size: rows per chunk (default: 48M logits, 192 MB in float32, per chunk: 393
            rows of 128,000 classes, about as fast in the products as the whole batch; 262
            rows took 1.1-1.3x the unfused time).
        init, rng, dtype: as Linear.

    Shapes: x (N, D), target (N,) class indices; loss () or (N,) for reduction "none".
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        bias: bool = False,
        *,
        weight: np.ndarray | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        all_ignored: AllIgnored = "nan",
        chunk_size: int | None = None,
        init: str = "pytorch",
        rng: np.random.Generator | None = None,
        dtype: type = np.float32,
    ) -> None:
        super().__init__()
        linear = Linear(in_features, num_classes, bias, init=init, rng=rng, dtype=dtype)
        self.weight, self.bias = linear.weight, linear.bias  # Linear's names: "weight", "bias"
        self.options = {
            "weight": check_weight(weight, num_classes, np.dtype(dtype)),
            "ignore_index": ignore_index,
            "label_smoothing": label_smoothing,
        }
        check_options(ignore_index, reduction, label_smoothing, all_ignored)
        self.reduction, self.all_ignored = reduction, all_ignored
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
        self.chunk_size = chunk_size or max(1, (48 << 20) // num_classes)
        self._grad_x: np.ndarray | None = None
        self._grad_w: np.ndarray | None = None
        self._grad_b: np.ndarray | None = None
        self._last_denominator: float | None = None
        if np.dtype(dtype) == np.float32:  # its chunks' logits take their gradient in place
            expect_kernel(True, label_smoothing, weight is not None)

    def forward(self, x: np.ndarray, target: np.ndarray) -> np.ndarray:  # type: ignore[override]
        """The loss; dL/dx and dL/dW (for grad_output = 1) are computed on the way."""
        w = self.weight.data
        if x.ndim != 2 or x.shape[1] != w.shape[1]:
            raise ValueError(f"LinearCrossEntropy expects x (N, {w.shape[1]}), got {x.shape}")
        target = np.asarray(target)
        if target.shape != x.shape[:1]:
            raise ValueError(f"target of shape {target.shape} must have shape ({len(x)},)")
        denominator = self._last_denominator = self._denominator(target)
        factor = 1.0
        if self.reduction == "mean":
            factor = 1.0 / denominator if denominator else 0.0
        grad_x = np.empty_like(x, dtype=np.result_type(x, w))
        grad_w = np.zeros_like(w) if self._grad_w is None else self._grad_w
        grad_w[...] = 0
        grad_b = None if self.bias is None else np.zeros_like(self.bias.data)
        pieces = []
        for start in range(0, len(x), self.chunk_size):
            rows = slice(start, start + self.chunk_size)
            loss = self._chunk(x[rows], target[rows], factor, grad_x[rows], grad_w, grad_b)
            pieces.append(loss)
        self._grad_x, self._grad_w, self._grad_b = grad_x, grad_w, grad_b
        per_row = np.concatenate(pieces) if pieces else np.zeros(0, dtype=grad_x.dtype)
        return self._reduce(per_row, denominator)

    __call__ = forward

    def _chunk(self, x, target, factor, grad_x, grad_w, grad_b) -> np.ndarray:
        """Loss of one chunk of rows; writes its dL/dx into grad_x and adds to grad_w, grad_b.

        A method of its own so that the chunk's (rows, C) buffer is freed on return, before
        the next chunk's is allocated.
        """
        w = self.weight.data
        logits = x @ w.T
        if self.bias is not None:
            logits += self.bias.data
        in_place = inplace_possible(logits)
        loss, cache = cross_entropy_forward(
            logits, target, reduction="none", inplace=in_place, grad_scale=factor, **self.options
        )
        grad_logits = cross_entropy_backward_from_cache(cache, 1.0)  # in place: the logits
        # dL/dx = g W;  dL/dW += g^T x, added as it is computed (no (C, D) temporary)
        np.matmul(grad_logits, w, out=grad_x)
        add_matmul(grad_w, grad_logits.T, x)
        if grad_b is not None:
            grad_b += grad_logits.sum(axis=0)
        return loss

    @property
    def denominator(self) -> float:
        """What the last forward's "mean" divided the summed loss by, as CrossEntropyLoss's."""
        if self._last_denominator is None:
            raise RuntimeError("LinearCrossEntropy.denominator needs a forward() first")
        return self._last_denominator

    def _denominator(self, target: np.ndarray) -> float:
        keep = target != self.options["ignore_index"]
        class_weight = self.options["weight"]
        if class_weight is None:
            return float(keep.sum())
        # clip: an out-of-range class is reported, clearly, by the chunk's cross_entropy check
        picked = np.take(class_weight.astype(np.float64), target[keep], mode="clip")
        return float(picked.sum())

    def _reduce(self, per_row: np.ndarray, denominator: float) -> np.ndarray:
        if self.reduction == "none":
            return per_row
        total = per_row.sum(dtype=np.float64)
        if self.reduction == "sum":
            return np.asarray(total, dtype=per_row.dtype)
        if denominator == 0:
            return np.asarray(0.0 if self.all_ignored == "zero" else np.nan, dtype=per_row.dtype)
        return np.asarray(total / denominator, dtype=per_row.dtype)

    def backward(
        self, grad_output: object = 1.0, need_input_grad: bool = True
    ) -> np.ndarray | None:
        """dL/dx for the last forward call; dL/dW and dL/db are added to the parameters."""
        if self._grad_x is None:
            raise RuntimeError(
                "LinearCrossEntropy.backward() needs a forward() first (once per forward)"
            )
        g = np.asarray(grad_output, dtype=self._grad_x.dtype)
        if g.ndim:
            raise ValueError(
                "LinearCrossEntropy.backward takes a scalar grad_output (per-row weights for "
                "reduction='none' would need a second pass over the logits)"
            )
        if g != 1:  # scale in place: a temporary g * dW would be as large as the weights
            self._grad_w *= g
            self._grad_x *= g
            if self._grad_b is not None:
                self._grad_b *= g
        self.weight.grad += self._grad_w
        if self.bias is not None:
            self.bias.grad += self._grad_b
        grad_x, self._grad_x = self._grad_x, None  # handed out once: a second call would
        return grad_x if need_input_grad else None  # otherwise add the same dW again

    def extra_repr(self) -> str:
        d, c = self.weight.shape[1], self.weight.shape[0]
        return f"in_features={d}, num_classes={c}, chunk_size={self.chunk_size}"


class MSELoss:
    """Mean squared error ``(input - target)^2`` over all elements, as ``torch.nn.MSELoss``.

    Args: reduction, "mean" (default), "sum" or "none" (see :func:`functional.mse_loss`).
    Shapes: input and target (...), one shape; loss () or, for "none", that shape.
    ``forward`` keeps input and target; ``backward`` returns ``2 * (input - target) / numel``
    for "mean" (times ``grad_output``).

    >>> loss_fn = MSELoss()
    >>> float(loss_fn(np.array([1.0, 2.0]), np.array([0.0, 4.0])))
    2.5
    >>> loss_fn.backward()
    array([ 1., -2.])
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        check_reduction(reduction)
        self.reduction = reduction
        self._saved: tuple[np.ndarray, np.ndarray] | None = None

    def forward(self, input: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Loss of ``input`` against ``target``; keeps both for backward."""
        loss = mse_loss(input, target, self.reduction)
        self._saved = (input, target)
        return loss

    __call__ = forward

    def backward(self, grad_output: object = 1.0) -> np.ndarray:
        """dL/dinput for the last forward call, input's shape and dtype."""
        if self._saved is None:
            raise RuntimeError("MSELoss.backward() called before forward()")
        return mse_loss_backward(*self._saved, grad_output, self.reduction)

    @property
    def denominator(self) -> float:
        """What the last forward's "mean" divided the summed loss by: the number of elements."""
        if self._saved is None:
            raise RuntimeError("MSELoss.denominator needs a forward() first")
        return float(self._saved[0].size)

    def __repr__(self) -> str:
        return f"MSELoss(reduction={self.reduction!r})"


class NLLLoss:
    """Negative log-likelihood ``-weight[y] * log_probs[y]`` of class-index targets.

    Args: weight (C,), ignore_index and reduction, as :func:`functional.nll_loss`.
    Shapes: log_probs (C,), (N, C) or (N, C, d1, ...); target (), (N,) or (N, d1, ...).
    Takes log-probabilities, e.g. from log_softmax: NLLLoss after log_softmax is
    CrossEntropyLoss, which fuses the two. Matches ``torch.nn.NLLLoss``.

    >>> loss_fn = NLLLoss()
    >>> float(loss_fn(np.log(np.array([[0.25, 0.75]])), np.array([1])).round(4))
    0.2877
    >>> loss_fn.backward()
    array([[ 0., -1.]])
    """

    def __init__(
        self,
        weight: np.ndarray | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
    ) -> None:
        check_options(ignore_index, reduction, 0.0, "nan")
        self.weight = None if weight is None else np.asarray(weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self._cache: CrossEntropyCache | None = None

    def forward(self, log_probs: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Loss of ``log_probs`` (N, C, ...) against ``target``; keeps what backward needs."""
        loss, self._cache = nll_loss_forward(
            log_probs,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )
        return loss

    __call__ = forward

    def backward(self, grad_output: object = 1.0) -> np.ndarray:
        """dL/dlog_probs for the last forward call, shape and dtype of its log_probs."""
        if self._cache is None:
            raise RuntimeError("NLLLoss.backward() called before forward()")
        return nll_loss_backward_from_cache(self._cache, grad_output)

    @property
    def denominator(self) -> float:
        """What the last forward's "mean" divided the summed loss by: the summed weight of the
        counted targets (their number without ``weight``).
        Data-parallel training adds these over the processes (see :mod:`glassnet.train.loop`)."""
        if self._cache is None:
            raise RuntimeError("NLLLoss.denominator needs a forward() first")
        return self._cache.denominator

    def __repr__(self) -> str:
        return f"NLLLoss(reduction={self.reduction!r}, ignore_index={self.ignore_index})"
