"""Vocabulary-parallel cross-entropy: the classifier's C rows split across the ranks.

Megatron-LM's ``vocab_parallel_cross_entropy`` (``core/tensor_parallel/cross_entropy.py``):
rank r holds rows [c0, c1) of the (C, D) weight and computes only its logits z_r (n, C_r).
The softmax normaliser over all C classes needs two allreduces per chunk of rows: MAX of the
row maxima m, then SUM of (sum_c exp(z_c - m), the target's shifted logit from the rank that
owns it, and for label smoothing the weighted sum of all shifted logits). dL/dx = sum_r g_r W_r
is a third (SUM, (n, D)); dL/dW_r = g_r^T x stays on its rank. Memory per rank: 1/P of the
weight, its gradient and the (rows, C) logits.

Shapes: x (N, D) the same on every rank; target (N,) global class indices; loss as
:class:`glassnet.nn.LinearCrossEntropy`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from glassnet.distributed.comm import world
from glassnet.distributed.data_parallel import shard_bounds
from glassnet.functional.cross_entropy import AllIgnored, Reduction, check_options, check_weight
from glassnet.nn.layers import Linear
from glassnet.nn.loss import LinearCrossEntropy
from glassnet.nn.module import Module


class VocabParallelLinearCrossEntropy(LinearCrossEntropy):
    """``LinearCrossEntropy(in_features, num_classes)`` with the classes split over the ranks.

    Rank r of P holds ``self.weight`` (C_r, D), rows ``self.classes = range(c0, c1)`` of the
    full weight (C_r = C / P, the first C % P ranks one more). ``forward(x, target)`` returns
    the full loss on every rank and ``backward()`` the full dL/dx, equal to the
    single-process LinearCrossEntropy's; each rank's dL/dW is its rows'. Options as
    LinearCrossEntropy (class ``weight`` (C,) full on every rank, ignore_index, reduction,
    label_smoothing, all_ignored, chunk_size). ``load_full_weight`` copies a full (C, D)
    weight's rows; the initial weights are otherwise drawn per rank.
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
        comm: Any = None,
    ) -> None:
        Module.__init__(self)
        self.comm = world() if comm is None else comm
        c0, c1 = shard_bounds(num_classes, self.comm.rank, self.comm.size)
        self.classes = range(c0, c1)
        self.num_classes = num_classes
        # Linear's init draws with fan_in = in_features: the full layer's distribution
        linear = Linear(in_features, c1 - c0, bias, init=init, rng=rng, dtype=dtype)
        self.weight, self.bias = linear.weight, linear.bias
        self.options = {
            "weight": check_weight(weight, num_classes, np.dtype(dtype)),
            "ignore_index": ignore_index,
            "label_smoothing": label_smoothing,
        }
        check_options(ignore_index, reduction, label_smoothing, all_ignored)
        self.reduction, self.all_ignored = reduction, all_ignored
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
        self.chunk_size = chunk_size or max(1, (1 << 25) // max(c1 - c0, 1))
        self._grad_x = self._grad_w = self._grad_b = None

    def load_full_weight(self, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
        """Copy this rank's rows of a full (C, D) weight (and (C,) bias)."""
        rows = slice(self.classes.start, self.classes.stop)
        expected = (self.num_classes, self.weight.shape[1])
        if np.shape(weight) != expected:
            raise ValueError(f"weight must have shape {expected}, got {np.shape(weight)}")
        self.weight.data[...] = weight[rows]
        if self.bias is not None and bias is not None:
            self.bias.data[...] = bias[rows]

    def _chunk(self, x, target, factor, grad_x, grad_w, grad_b) -> np.ndarray:
        """The chunk's per-row loss (all classes); writes dL/dx rows, adds to dL/dW_r, dL/db_r."""
        comm, w = self.comm, self.weight.data
        c0, c1 = self.classes.start, self.classes.stop
        ignore, smoothing = self.options["ignore_index"], self.options["label_smoothing"]
        keep = target != ignore
        if np.any(keep & ((target < 0) | (target >= self.num_classes))):
            bad = target[keep & ((target < 0) | (target >= self.num_classes))][0]
            raise ValueError(f"target {bad} is out of range for {self.num_classes} classes")
        logits = x @ w.T
        if self.bias is not None:
            logits += self.bias.data
        row_max = logits.max(axis=1) if logits.shape[1] else np.full(len(x), -np.inf, w.dtype)
        comm.allreduce(row_max, "max", "the vocabulary-parallel row maximum")
        logits -= row_max[:, None]  # shifted: z - m
        class_weight = self.options["weight"]
        local_weight = None if class_weight is None else class_weight[c0:c1]
        owned = keep & (target >= c0) & (target < c1)
        at_target = np.zeros(len(x))
        at_target[owned] = logits[owned.nonzero()[0], target[owned] - c0]
        # target weight w_t, and sum_c w_c (W) over all classes
        w_t = np.where(keep, 1.0, 0.0)
        total_weight = float(self.num_classes)
        if class_weight is not None:
            w_t[keep] = class_weight[target[keep]]
            total_weight = float(class_weight.sum(dtype=np.float64))
        sums = np.zeros((3, len(x)))
        if smoothing:
            weighted = logits if local_weight is None else logits * local_weight
            sums[2] = weighted.sum(axis=1, dtype=np.float64)
        np.exp(logits, out=logits)  # e^(z - m), in place: the chunk's one (rows, C_r) buffer
        sums[0] = logits.sum(axis=1, dtype=np.float64)
        sums[1] = at_target
        comm.allreduce(sums, "sum", "the vocabulary-parallel exp-sum")
        log_sum = np.log(sums[0])
        smooth = np.where(keep, smoothing / self.num_classes, 0.0)
        # loss = (1 - e) w_t (log s - z_t) + e/C (W log s - sum_c w_c z_c), z shifted by m
        loss = (1 - smoothing) * w_t * (log_sum - sums[1])
        if smoothing:
            loss += smooth * (total_weight * log_sum - sums[2])
        # dL/dz_c = p_c T - t_c, T = (1 - e) w_t + e/C W, t_c = w_c ((1 - e) [c = t] + e/C)
        big_t = (1 - smoothing) * w_t + smooth * total_weight
        probs_scale = (factor * big_t / sums[0]).astype(w.dtype)
        grad_logits = logits
        grad_logits *= probs_scale[:, None]
        if smoothing:
            step = (factor * smooth).astype(w.dtype)[:, None]
            grad_logits -= step if local_weight is None else step * local_weight
        rows = owned.nonzero()[0]
        grad_logits[rows, target[owned] - c0] -= (factor * (1 - smoothing) * w_t[owned]).astype(
            w.dtype
        )
        # dL/dx = sum_r g_r W_r, the sum over ranks in float64 (the partials may cancel)
        partial = (grad_logits @ w).astype(np.float64)
        grad_x[...] = comm.allreduce(partial, "sum", "the vocabulary-parallel dL/dx")
        for start in range(0, w.shape[0], 8192):
            grad_w[start : start + 8192] += grad_logits[:, start : start + 8192].T @ x
        if grad_b is not None:
            grad_b += grad_logits.sum(axis=0)
        return loss.astype(w.dtype)

    def extra_repr(self) -> str:
        c0, c1 = self.classes.start, self.classes.stop
        return (
            f"in_features={self.weight.shape[1]}, num_classes={self.num_classes}, "
            f"classes=[{c0}, {c1}) on rank {self.comm.rank} of {self.comm.size}"
        )
