"""OpenBLAS settings made before NumPy loads (glassnet._environment)."""

import os
import subprocess
import sys

import pytest

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


def _features_of_the_kernels(environ: dict[str, str]) -> tuple[str, str]:
    """(the host's LLVM features, those Numba compiles glassnet's kernels with), in a child."""
    code = (
        "import llvmlite.binding as ll, glassnet.kernels.cross_entropy\n"
        "from numba.core.registry import cpu_target\n"
        "print(ll.get_host_cpu_features().flatten())\n"
        "print(cpu_target.target_context.codegen()._tm_features)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"} | environ
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    host, used = run.stdout.splitlines()
    return host, used


def test_kernels_use_512_bit_vectors_where_the_cpu_has_them():
    pytest.importorskip("numba")
    host, used = _features_of_the_kernels({})
    if "+avx512f" in host.split(","):
        assert used.endswith(",-prefer-256-bit") and "+avx512f" in used.split(",")
    else:
        assert "prefer-256-bit" not in used


def test_a_users_numba_cpu_features_are_left_alone():
    pytest.importorskip("numba")
    host, _ = _features_of_the_kernels({})
    _, used = _features_of_the_kernels({"NUMBA_CPU_FEATURES": host})
    assert used == host


def test_cache_sizes_are_read_from_sysfs_with_a_fallback(tmp_path):
    from glassnet._environment import cache_bytes

    for index, (level, kind, size) in enumerate(
        [
            (1, "Data", "48K"),
            (1, "Instruction", "32K"),
            (2, "Unified", "1280K"),
            (3, "Unified", "48M"),
        ]
    ):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(f"{value}\n")
    assert [cache_bytes(level, str(tmp_path)) for level in (1, 2, 3)] == [
        48 << 10, 1280 << 10, 48 << 20
    ]  # fmt: skip
    assert cache_bytes(2, str(tmp_path / "missing")) == 1 << 20
