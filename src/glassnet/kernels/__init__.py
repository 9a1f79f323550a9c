"""Compiled kernels (Numba), kept apart from the readable NumPy reference they must agree with.

Kernels compile on first use and are cached on disk (Numba's ``cache=True``: next to the
source, or under ``NUMBA_CACHE_DIR`` / the user cache when that is not writable), so only the
first run on a machine pays the compile time. Threads: see :func:`set_num_threads`.

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

try:
    import numba
except ImportError:  # glassnet still works, on the NumPy reference paths
    numba = None

AVAILABLE = numba is not None
_switched_on = os.environ.get("GLASSNET_KERNELS", "1").strip().lower() not in ("0", "false", "off")


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
    return any(any(place.rglob("conv.im2col-*.nbi")) for place in places if place.is_dir())


def _quiet_threads() -> None:
    """Prefer Numba's workqueue threading layer unless NUMBA_THREADING_LAYER says otherwise.

    Its threads sleep between kernels. The OpenMP layer's threads spin-wait after each one, and
    on a small machine they then compete for the cores with NumPy's BLAS threads (or
    PyTorch's, in a side-by-side benchmark) that run next.
    """
    if numba is not None and "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def _threads_from_environment() -> None:
    """Honour OMP_NUM_THREADS (the usual knob) when NUMBA_NUM_THREADS is not set."""
    if numba is None or "NUMBA_NUM_THREADS" in os.environ:
        return
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        numba.set_num_threads(min(int(value), numba.config.NUMBA_NUM_THREADS))


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in glassnet's kernels (default: every core, or NUMBA_NUM_THREADS /
    OMP_NUM_THREADS when set). Matrix products follow NumPy's BLAS settings
    (OPENBLAS_NUM_THREADS)."""
    if numba is None:
        return
    if not isinstance(n, int) or not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"n={n!r} threads must be an integer in [1, {numba.config.NUMBA_NUM_THREADS}]"
        )
    numba.set_num_threads(n)


def get_num_threads() -> int:
    return 1 if numba is None else numba.get_num_threads()


_quiet_threads()
_threads_from_environment()
