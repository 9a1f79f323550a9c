"""OpenBLAS settings made before NumPy loads (glassnet._environment)."""

import os
import subprocess
import sys

from glassnet._environment import openblas_settings

ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
flags\t\t: fpu sse avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
"""


def test_zen5_with_avx512_gets_the_avx512_kernels_and_short_spinning():
    settings = openblas_settings({}, ZEN5)
    assert settings == {"OPENBLAS_THREAD_TIMEOUT": "4", "OPENBLAS_CORETYPE": "SkylakeX"}


def test_other_cpus_keep_openblas_detection():
    zen4 = ZEN5.replace("cpu family\t: 26", "cpu family\t: 25")
    intel = ZEN5.replace("AuthenticAMD", "GenuineIntel")
    no_avx512 = ZEN5.replace(" avx512f", "")
    for cpuinfo in (zen4, intel, no_avx512, ""):
        assert openblas_settings({}, cpuinfo) == {"OPENBLAS_THREAD_TIMEOUT": "4"}


def test_a_value_in_the_environment_is_never_changed():
    environ = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_THREAD_TIMEOUT": "28"}
    assert openblas_settings(environ, ZEN5) == {}


def _child(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_set_only_when_glassnet_is_imported_before_numpy():
    show = "import os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    assert _child(f"import glassnet; {show}") == "4"
    assert _child(f"import numpy, glassnet; {show}") == "None"


def test_processes_an_mpi_launcher_puts_on_one_machine_share_its_cores():
    for variable in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_LOCAL_SIZE"):
        settings = openblas_settings({variable: "3"}, "", cores=8)
        assert settings["OPENBLAS_NUM_THREADS"] == "2", variable
    assert openblas_settings({"MPI_LOCALNRANKS": "4"}, "", cores=2)["OPENBLAS_NUM_THREADS"] == "1"
    assert "OPENBLAS_NUM_THREADS" not in openblas_settings({"MPI_LOCALNRANKS": "1"}, "", cores=8)
    assert "OPENBLAS_NUM_THREADS" not in openblas_settings({}, "", cores=8)
    chosen = {"MPI_LOCALNRANKS": "2", "OPENBLAS_NUM_THREADS": "4"}
    assert "OPENBLAS_NUM_THREADS" not in openblas_settings(chosen, "", cores=8)


def test_kernel_threads_divide_the_cores_under_an_mpi_launcher():
    code = (
        "import glassnet.kernels as k, os; print(k.get_num_threads(), len(os.sched_getaffinity(0)))"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], env={**env, "MPI_LOCALNRANKS": "2"},
                         capture_output=True, text=True, check=True)  # fmt: skip
    threads, cores = map(int, run.stdout.split())
    assert threads == max(1, cores // 2)
