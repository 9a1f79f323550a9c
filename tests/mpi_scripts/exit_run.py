"""fit with an out_dir; one rank's process ends (os._exit, no signal) in epoch 2.

python exit_run.py OUT_DIR RANK
"""

import os
import sys

from _tiny_run import fit_tiny

from glassnet.distributed import world
from glassnet.train.callbacks import Callback


class ExitOnOneRank(Callback):
    def on_train_batch_end(self, batch, logs):
        if world().rank == int(sys.argv[2]) and self.trainer.epoch == 1 and batch == 2:
            os._exit(3)  # as a native library calling exit() would: no exception, no signal


fit_tiny(ExitOnOneRank(), sys.argv[1], epochs=4)
