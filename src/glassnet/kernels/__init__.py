"""Compiled kernels (Numba), kept apart from the readable NumPy reference they must agree with.

Kernels compile on first use and are cached on disk (Numba's ``cache=True``: next to the
source, or under ``NUMBA_CACHE_DIR`` / the user cache when that is not writable), so only the
first run on a machine pays the compile time. Threads: see :mod:`glassnet.kernels.threads`.

This module is the one switch between the kernels and the NumPy code in
:mod:`glassnet.functional`: the functional ops ask :func:`enabled` (and check dtypes
themselves). Kernels are on when Numba imports, unless the environment sets
``GLASSNET_KERNELS=0`` (read once, at import) or the code runs inside ``with disabled():``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from glassnet.kernels.threads import get_num_threads, set_num_threads

try:
    import numba
except ImportError:  # glassnet still works, on the NumPy reference paths
    numba = None

__all__ = ["AVAILABLE", "disabled", "enabled", "get_num_threads", "set_num_threads"]


def _allow_512_bit_vectors() -> None:
    """On a CPU with AVX-512, let LLVM vectorise with 512-bit registers.

    LLVM's tuning for Intel's AVX-512 server cores prefers 256-bit vectors (the first such
    cores lowered their clock for 512-bit work), so Numba's loops used half the registers'
    width: cross-entropy's exp loop ran at 1.45 cycles per float on an Intel Xeon (Ice
    Lake), 0.94 with 512 bits. Between glassnet's kernels OpenBLAS runs its SkylakeX
    kernels, which use 512-bit FMAs anyway, so the core's clock is already what it is.

    Numba takes this when it makes its CPU target (its first compile in the process), so it
    applies to other Numba code compiled afterwards too, and not at all if Numba compiled
    something before glassnet's kernels were imported (a first run's helper is then given
    the features really used). A ``NUMBA_CPU_FEATURES`` of the user's is left alone
    (``NUMBA_CPU_FEATURES=$(python -c "import llvmlite.binding as ll;
    print(ll.get_host_cpu_features().flatten())")`` turns this off); so is a process with
    the kernels switched off.
    """
    if numba is None or numba.config.CPU_FEATURES is not None:
        return
    from numba.core.codegen import get_host_cpu_features

    features = get_host_cpu_features()
    if "+avx512f" in features.split(","):
        numba.config.CPU_FEATURES = f"{features},-prefer-256-bit"


AVAILABLE = numba is not None
_switched_on = os.environ.get("GLASSNET_KERNELS", "1").strip().lower() not in ("0", "false", "off")
if _switched_on:
    _allow_512_bit_vectors()


def enabled() -> bool:
    """True when the Numba kernels run: Numba imports and the switch is on."""
    return AVAILABLE and _switched_on


@contextmanager
def disabled() -> Iterator[None]:
    """Run the NumPy code instead of the kernels inside a ``with`` block (nestable).

    >>> with disabled():
    ...     enabled()
    False

    The switch is process-wide, not per thread. On exit it is restored to what it was.
    """
    global _switched_on
    saved, _switched_on = _switched_on, False
    try:
        yield
    finally:
        _switched_on = saved


def cache_is_warm() -> bool:
    """Whether compiled kernels are cached on disk (a heuristic: the convolution's index file).

    Numba keeps its cache beside the source (``kernels/__pycache__``) or, when that is not
    writable or ``NUMBA_CACHE_DIR`` is set, in a cache directory; either is looked at.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):  # then Numba uses that directory only
        places = [Path(os.environ["NUMBA_CACHE_DIR"])]
    else:
        user_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "numba"
        places = [Path(__file__).parent / "__pycache__", user_cache]
    return any(any(place.rglob("conv._im2col-*.nbi")) for place in places if place.is_dir())
