"""Ready-made models."""

from __future__ import annotations

import numpy as np

from glassnet.nn.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from glassnet.nn.module import Sequential


def convnet(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    dropout: float = 0.5,
    *,
    init: str = "pytorch",
    rng: np.random.Generator | None = None,
    dtype: type = np.float32,
) -> Sequential:
    """The seeds' convnet (Keras's MNIST example): 34,826 parameters for 28 x 28 x 1, 10 classes.

    Conv 32 3x3 -> ReLU -> MaxPool 2 -> Conv 64 3x3 -> ReLU -> MaxPool 2 -> Flatten (1600)
    -> Dropout -> Linear 10. Returns logits; pair it with CrossEntropyLoss. The ReLUs work in
    place (a convolution's output is needed by nobody else).
    """
    rng = np.random.default_rng() if rng is None else rng
    side = ((image_size - 2) // 2 - 2) // 2  # 28 -> 26 -> 13 -> 11 -> 5
    options = {"init": init, "rng": rng, "dtype": dtype}
    return Sequential(
        Conv2d(in_channels, 32, kernel_size=3, **options),
        ReLU(inplace=True),
        MaxPool2d(2),
        Conv2d(32, 64, kernel_size=3, **options),
        ReLU(inplace=True),
        MaxPool2d(2),
        Flatten(),
        Dropout(dropout, rng=rng),
        Linear(64 * side * side, num_classes, **options),
    )
