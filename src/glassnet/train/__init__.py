"""Training: the loop, its callbacks, and the recipe ``glassnet train`` runs."""

from glassnet.train.recipe import (
    CHECKPOINT,
    NonFiniteLossError,
    Run,
    TrainConfig,
    TrainState,
    build_run,
    evaluate,
    restore_run,
    save_run,
    train,
)

__all__ = [
    "CHECKPOINT",
    "NonFiniteLossError",
    "Run",
    "TrainConfig",
    "TrainState",
    "build_run",
    "evaluate",
    "restore_run",
    "save_run",
    "train",
]
