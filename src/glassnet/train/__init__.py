"""Training: ``fit`` (the loop), its callbacks, and the recipe ``glassnet train`` runs."""

from glassnet.train.loop import CHECKPOINT, History, Trainer, evaluate, fit, predict
from glassnet.train.recipe import TrainConfig, build_model, open_run_data, read_run_config, train

__all__ = [
    "CHECKPOINT",
    "History",
    "TrainConfig",
    "Trainer",
    "build_model",
    "evaluate",
    "fit",
    "open_run_data",
    "predict",
    "read_run_config",
    "train",
]
