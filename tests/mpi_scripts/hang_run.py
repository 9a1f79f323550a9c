"""fit on 2 ranks with a 3 s collective timeout; rank 1 stops answering in epoch 1.

python hang_run.py OUT_DIR
"""

import sys
import time

from _tiny_run import fit_tiny

from glassnet.distributed import DataParallel, world
from glassnet.train.callbacks import Callback


class HangOnRankOne(Callback):
    def on_train_batch_end(self, batch, logs):
        if world().rank == 1 and batch == 2:
            time.sleep(120)  # longer than the test waits: only the timeout can end the job


fit_tiny(HangOnRankOne(), sys.argv[1], epochs=2, distributed=DataParallel(timeout=3))
