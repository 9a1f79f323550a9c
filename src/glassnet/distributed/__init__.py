"""Training beyond one process, over MPI: data parallelism and vocabulary-parallel loss.

``mpiexec -n P glassnet train ...`` or ``fit(..., distributed=True)`` under ``mpiexec``:
see docs/distributed.md. Importing this package does not import mpi4py; :func:`world` does,
and only in a process an MPI launcher started.
"""

from glassnet.distributed.comm import Communicator, SingleProcess, launched_by_mpi, world
from glassnet.distributed.data_parallel import DataParallel, shard_bounds
from glassnet.distributed.sync_batchnorm import (
    SyncBatchNorm1d,
    SyncBatchNorm2d,
    convert_sync_batchnorm,
    revert_sync_batchnorm,
)
from glassnet.distributed.vocab_parallel import VocabParallelLinearCrossEntropy

__all__ = [
    "Communicator",
    "DataParallel",
    "SingleProcess",
    "SyncBatchNorm1d",
    "SyncBatchNorm2d",
    "VocabParallelLinearCrossEntropy",
    "convert_sync_batchnorm",
    "launched_by_mpi",
    "revert_sync_batchnorm",
    "shard_bounds",
    "world",
]
