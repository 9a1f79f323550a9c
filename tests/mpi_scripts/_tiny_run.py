"""The run the failure scripts share: a 4 -> 3 Linear on 100 samples, 10 steps an epoch."""

import numpy as np

import glassnet
from glassnet.nn import Flatten, Linear, Sequential


def fit_tiny(callback, out_dir, epochs, distributed=True):
    """fit with an out_dir and one callback, data-parallel (``distributed``) under mpiexec."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, size=100)
    model = Sequential(Flatten(), Linear(4, 3, rng=rng))
    glassnet.fit(
        model, (x, y), epochs=epochs, batch_size=10, callbacks=[callback], out_dir=out_dir,
        verbose=0, distributed=distributed,
    )  # fmt: skip
