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
