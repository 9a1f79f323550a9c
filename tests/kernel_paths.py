"""The ``kernel_path`` fixture: run a test on the Numba kernels, then on the NumPy code.

A test module binds it (``kernel_path = kernel_paths.kernel_path``) and takes ``kernel_path``
as an argument. The "numpy" run sits inside ``glassnet.kernels.disabled()``;
the "numba" run is skipped where Numba is missing or ``GLASSNET_KERNELS=0``.
"""

import pytest

from glassnet import kernels


@pytest.fixture(params=["numba", "numpy"])
def kernel_path(request):
    if request.param == "numpy":
        with kernels.disabled():
            yield request.param
        return
    if not kernels.enabled():
        pytest.skip("the Numba kernels are off (numba missing or GLASSNET_KERNELS=0)")
    yield request.param
