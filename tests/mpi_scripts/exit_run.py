"""fit with an out_dir; one rank's process ends (os._exit, no signal) in epoch 2.

python exit_run.py OUT_DIR RANK
"""

import os
import sys

import numpy as np

import glassnet
from glassnet.distributed import world
from glassnet.nn import Flatten, Linear, Sequential
from glassnet.train.callbacks import Callback


class ExitOnOneRank(Callback):
    def on_train_batch_end(self, batch, logs):
        if world().rank == int(sys.argv[2]) and self.trainer.epoch == 1 and batch == 2:
            os._exit(3)  # as a native library calling exit() would: no exception, no signal


rng = np.random.default_rng(0)
x, y = rng.normal(size=(120, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, size=120)
model = Sequential(Flatten(), Linear(4, 3, rng=rng))
glassnet.fit(
    model, (x, y), epochs=4, batch_size=12, callbacks=[ExitOnOneRank()], out_dir=sys.argv[1],
    verbose=0, distributed=True,
)  # fmt: skip
