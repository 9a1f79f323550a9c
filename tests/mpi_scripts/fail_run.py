"""fit on every rank with an out_dir; rank 1 raises in epoch 2. python fail_run.py OUT_DIR"""

import sys

from _tiny_run import fit_tiny

from glassnet.distributed import world
from glassnet.train.callbacks import Callback


class FailOnRankOne(Callback):
    def on_train_batch_end(self, batch, logs):
        if world().rank == 1 and self.trainer.epoch == 1 and batch == 2:
            raise RuntimeError("a deliberate failure in epoch 2")


fit_tiny(FailOnRankOne(), sys.argv[1], epochs=4)
