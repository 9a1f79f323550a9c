"""fit on every rank with an out_dir; rank 1 raises in epoch 2. python fail_run.py OUT_DIR"""

import sys

import numpy as np

import glassnet
from glassnet.distributed import world
from glassnet.nn import Flatten, Linear, Sequential
from glassnet.train.callbacks import Callback


class FailOnRankOne(Callback):
    def on_train_batch_end(self, batch, logs):
        if world().rank == 1 and self.trainer.epoch == 1 and batch == 2:
            raise RuntimeError("a deliberate failure in epoch 2")


rng = np.random.default_rng(0)
x, y = rng.normal(size=(100, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, size=100)
model = Sequential(Flatten(), Linear(4, 3, rng=rng))
glassnet.fit(
    model, (x, y), epochs=4, batch_size=10, callbacks=[FailOnRankOne()], out_dir=sys.argv[1],
    verbose=0, distributed=True,
)  # fmt: skip
