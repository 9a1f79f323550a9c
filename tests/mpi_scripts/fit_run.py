"""Train a small model with fit(distributed=...) and save rank 0's final weights and history.

python fit_run.py OUT.npz MODEL DTYPE N_TRAIN [--sync-batchnorm] [--augment] [--unseeded]
[--weighted]; run alone (one process) or under mpiexec. MODEL: mlp (Dropout), bn (BatchNorm1d +
Dropout). --weighted: a cross-entropy with class weights that ignores half the targets, so
the ranks' slices count different amounts (some slices nothing at all).
"""

import json
import sys

import numpy as np

import glassnet
from glassnet.distributed import DataParallel
from glassnet.nn import BatchNorm1d, CrossEntropyLoss, Dropout, Flatten, Linear, ReLU, Sequential
from glassnet.optim import Adam

out, kind, dtype, n_train = sys.argv[1], sys.argv[2], np.dtype(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
# batch 20; 202 training samples: a last batch of 2 (rank 2 of 3 idle); validation: 40
n, d, classes = n_train + 40, 12, 4
x = rng.normal(size=(n, 1, 3, 4)).astype(dtype)
y = (np.abs(x.reshape(n, -1)[:, :classes]).argmax(axis=1)).astype(np.int64)
init = np.random.default_rng(1)  # rank 0's weights are broadcast; other ranks' draws differ
if "--unseeded" in sys.argv and glassnet.distributed.world().rank != 0:
    init = np.random.default_rng(99)
norm = [BatchNorm1d(16, dtype=dtype)] if kind == "bn" else []
model = Sequential(
    Flatten(),
    Linear(d, 16, bias=not norm, rng=init, dtype=dtype),  # a bias before BatchNorm: no gradient
    *norm,
    ReLU(),
    Dropout(0.3, rng=init),
    Linear(16, classes, rng=init, dtype=dtype),
)
augment = None
if "--augment" in sys.argv:

    def augment(batch, generator):
        return batch + generator.normal(scale=0.1, size=batch.shape).astype(batch.dtype)


loss_fn = None
if "--weighted" in sys.argv:
    y[rng.random(n) < 0.5] = -1  # ignored
    loss_fn = CrossEntropyLoss(weight=np.array([0.5, 1.0, 2.0, 4.0]), ignore_index=-1)

history = glassnet.fit(
    model,
    (x[:n_train], y[:n_train]),
    val_data=(x[n_train:], y[n_train:]),
    loss_fn=loss_fn,
    optimizer=Adam(model.parameters(), lr=1e-2),
    epochs=3,
    batch_size=20,
    seed=3,
    verbose=0,
    augment=augment,
    distributed=DataParallel(sync_batchnorm="--sync-batchnorm" in sys.argv, timeout=60),
)
comm = glassnet.distributed.world()
weights = {k: v for k, v in model.state_dict().items()}
gathered = comm.allgather_object(weights)
if comm.rank == 0:
    same = all(
        np.array_equal(weights[k], other[k])
        for other in gathered
        for k in weights
        if "running" not in k and "num_batches" not in k
    )
    np.savez(out, **weights)
    with open(out + ".json", "w") as f:
        json.dump({"history": history.history, "ranks_agree": same, "size": comm.size}, f)
