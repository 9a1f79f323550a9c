"""fit on 2 ranks with a 3 s collective timeout; rank 1 stops answering in epoch 1.

python hang_run.py OUT_DIR
"""

import sys
import time

import numpy as np

import glassnet
from glassnet.distributed import DataParallel, world
from glassnet.nn import Flatten, Linear, Sequential
from glassnet.train.callbacks import Callback


class HangOnRankOne(Callback):
    def on_train_batch_end(self, batch, logs):
        if world().rank == 1 and batch == 2:
            time.sleep(120)  # longer than the test waits: only the timeout can end the job


rng = np.random.default_rng(0)
x, y = rng.normal(size=(100, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, size=100)
model = Sequential(Flatten(), Linear(4, 3, rng=rng))
glassnet.fit(
    model, (x, y), epochs=2, batch_size=10, callbacks=[HangOnRankOne()], out_dir=sys.argv[1],
    verbose=0, distributed=DataParallel(timeout=3),
)  # fmt: skip
