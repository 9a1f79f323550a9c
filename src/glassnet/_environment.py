"""OpenBLAS settings that have to be in the environment before NumPy loads its BLAS.

glassnet's matrix products run in NumPy's OpenBLAS and its other kernels on Numba's threads,
one after the other. Two OpenBLAS defaults cost the seeds' convnet a lot on the machines we
measured (2-core AMD EPYC, Zen 5, NumPy 2.4 with OpenBLAS 0.3.31):

* ``OPENBLAS_THREAD_TIMEOUT``: after each product OpenBLAS's idle threads spin for 2**28 CPU
  cycles (~0.1 s) before they sleep, so they compete for the cores with the Numba kernel that
  runs next. A training step then took 17-40 ms from run to run; with 4 (2**4 cycles, the
  minimum) 17-19 ms. The products themselves are long enough (milliseconds) that waking the
  threads again costs nothing measurable.
* ``OPENBLAS_CORETYPE``: OpenBLAS up to 0.3.31 does not recognise AMD's CPU family 0x1A
  (Zen 5) and falls back to its AVX2 kernels (OpenMathLib/OpenBLAS#6029, fixed after 0.3.31).
  On such a CPU with AVX-512 we ask for the SkylakeX kernels, which use it: the convnet's
  products run 1.5-2x faster.

* ``OPENBLAS_NUM_THREADS`` when an MPI launcher starts several processes on one machine
  (``mpiexec -n P``): each process gets ``cores // P`` threads. OpenBLAS's threads wait for
  each other with a spinning ``sched_yield``, so when there are more threads than cores, a
  product whose threads synchronise often (a weight gradient: a long inner dimension) waits
  for the scheduler at each step: we measured 1.7 s instead of 4 ms for one such product
  with two 2-thread processes on 2 cores. :mod:`glassnet.kernels.threads` divides the cores
  the same way.

OpenBLAS reads them once, when it is loaded, so they are set only if NumPy is not imported
yet: always for the ``glassnet`` command, and for scripts that ``import glassnet`` before
NumPy. A value already in the environment is never changed. Other BLAS libraries ignore them.
"""

from __future__ import annotations

import os
import platform
import sys

AVX512 = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
# How MPI launchers tell a process how many processes share its machine: Open MPI, MPICH's and
# Intel MPI's Hydra, MVAPICH2.
LOCAL_SIZE_VARIABLES = (
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "MPI_LOCALNRANKS",
    "MV2_COMM_WORLD_LOCAL_SIZE",
)


def local_processes(environ: dict[str, str] | os._Environ) -> int:
    """How many processes an MPI launcher started on this machine (1 outside MPI)."""
    for name in LOCAL_SIZE_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Where a machine does not say (not Linux): caches smaller than most of today's x86 cores'.
_CACHE_FALLBACK = {1: 32 << 10, 2: 1 << 20, 3: 8 << 20}


def cache_bytes(level: int, sysfs: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """The size of the data (or unified) cache of ``level`` (1-3) that CPU 0 sees, in bytes."""
    try:
        for index in sorted(os.listdir(sysfs)):
            path = os.path.join(sysfs, index)
            if not index.startswith("index"):
                continue
            with open(os.path.join(path, "level")) as f:
                if int(f.read()) != level:
                    continue
            with open(os.path.join(path, "type")) as f:
                if f.read().strip() == "Instruction":
                    continue
            with open(os.path.join(path, "size")) as f:
                size = f.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
            return int(size.rstrip("KMG")) * scale
    except (OSError, ValueError):
        pass
    return _CACHE_FALLBACK[level]


def _first_cpu(cpuinfo: str) -> dict[str, str]:
    """The ``key: value`` lines of the first processor in /proc/cpuinfo's text."""
    fields = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def openblas_settings(environ: dict[str, str], cpuinfo: str, cores: int = 1) -> dict[str, str]:
    """The OpenBLAS variables to add to ``environ`` on a CPU described by ``cpuinfo``, with
    ``cores`` cores for this process and the others an MPI launcher put on this machine."""
    settings = {"OPENBLAS_THREAD_TIMEOUT": "4"}
    processes = local_processes(environ)
    if processes > 1:
        settings["OPENBLAS_NUM_THREADS"] = str(max(1, cores // processes))
    cpu = _first_cpu(cpuinfo)
    family = cpu.get("cpu family", "")
    flags = cpu.get("flags", "").split()
    if (
        cpu.get("vendor_id") == "AuthenticAMD"
        and family.isdigit()
        and int(family) >= 0x1A
        and all(flag in flags for flag in AVX512)
    ):
        settings["OPENBLAS_CORETYPE"] = "SkylakeX"
    return {key: value for key, value in settings.items() if key not in environ}


def apply() -> dict[str, str]:
    """Set :func:`openblas_settings` in ``os.environ`` if NumPy is not loaded; what was set."""
    if "numpy" in sys.modules or platform.machine() not in ("x86_64", "AMD64"):
        return {}
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
    except OSError:  # not Linux: the CPU check is skipped, the thread setting still applies
        cpuinfo = ""
    settings = openblas_settings(dict(os.environ), cpuinfo, available_cores())
    os.environ.update(settings)
    return settings


APPLIED = apply()
