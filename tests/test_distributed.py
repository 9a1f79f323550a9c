"""glassnet.distributed in one process: the maths of each piece, and that nothing loads MPI.

The runs over several processes are in test_distributed_mpi.py.
"""

import itertools
import subprocess
import sys

import numpy as np
import pytest

import glassnet
from glassnet.distributed import (
    DataParallel,
    SyncBatchNorm2d,
    VocabParallelLinearCrossEntropy,
    convert_sync_batchnorm,
    revert_sync_batchnorm,
    shard_bounds,
)
from glassnet.model_file import read_model_file
from glassnet.nn import BatchNorm2d, Conv2d, Flatten, Linear, LinearCrossEntropy, ReLU, Sequential
from glassnet.train import CHECKPOINT


def test_import_glassnet_and_single_process_runs_do_not_import_mpi4py():
    code = (
        "import sys, numpy as np, glassnet, glassnet.train, glassnet.distributed\n"
        "from glassnet.nn import Flatten, Linear, Sequential\n"
        "m = Sequential(Flatten(), Linear(4, 2, rng=np.random.default_rng(0)))\n"
        "x, y = np.ones((6, 1, 2, 2), np.float32), np.array([0, 1] * 3)\n"
        "glassnet.fit(m, (x, y), epochs=1, batch_size=4, verbose=0, distributed=True)\n"
        "print('mpi4py' in sys.modules)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("PMI", "OMPI"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 20, 203])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shard_bounds_cover_the_batch_in_order_and_evenly(n, size):
    bounds = [shard_bounds(n, rank, size) for rank in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(hi == lo for (_, hi), (lo, _) in itertools.pairwise(bounds))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def _model(seed):
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2d(1, 4, 3, bias=False, rng=rng),
        BatchNorm2d(4),
        ReLU(),
        Flatten(),
        glassnet.nn.Dropout(0.2, rng=rng),
        Linear(4 * 4 * 4, 3, rng=rng),
    )


def test_fit_distributed_in_one_process_is_fit(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, size=50)
    plain, parallel = _model(1), _model(1)
    a = glassnet.fit(plain, (x, y), epochs=2, batch_size=8, verbose=0, val_fraction=0.2)
    b = glassnet.fit(
        parallel,
        (x, y),
        epochs=2,
        batch_size=8,
        verbose=0,
        val_fraction=0.2,
        out_dir=tmp_path,
        distributed=DataParallel(sync_batchnorm=True),
    )
    for key, value in plain.state_dict().items():  # SyncBatchNorm sums, BatchNorm averages
        np.testing.assert_allclose(parallel.state_dict()[key], value, rtol=1e-5, err_msg=key)
    assert a["val_accuracy"] == b["val_accuracy"]
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-6)
    # fit gives the BatchNorm layers back, and the checkpoint names the plain class
    assert type(parallel[1]) is BatchNorm2d
    assert type(read_model_file(tmp_path / CHECKPOINT).model[1]) is BatchNorm2d


def test_fit_distributed_in_one_process_takes_the_same_steps_exactly():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, size=30)
    plain, parallel = _model(1), _model(1)
    glassnet.fit(plain, (x, y), epochs=2, batch_size=8, verbose=0)
    glassnet.fit(parallel, (x, y), epochs=2, batch_size=8, verbose=0, distributed=True)
    for key, value in plain.state_dict().items():
        np.testing.assert_array_equal(parallel.state_dict()[key], value, err_msg=key)


def test_fit_refuses_a_bad_distributed_argument():
    model = Sequential(Flatten(), Linear(4, 2))
    with pytest.raises(TypeError, match="distributed must be True, False or"):
        glassnet.fit(model, (np.ones((4, 1, 2, 2)), np.zeros(4, int)), distributed="yes")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sync_batchnorm_in_one_process_is_batchnorm(dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 4, 4)).astype(dtype)
    grad_out = rng.normal(size=x.shape).astype(dtype)
    plain, sync = BatchNorm2d(3, dtype=dtype), BatchNorm2d(3, dtype=dtype)
    for bn in (plain, sync):
        bn.weight.data[...] = [0.5, 1.0, 2.0]
        bn.bias.data[...] = [0.1, -0.2, 0.3]
    converted = convert_sync_batchnorm(Sequential(sync))
    assert type(sync) is SyncBatchNorm2d
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12}
    np.testing.assert_allclose(sync(x), plain(x), **tol)
    np.testing.assert_allclose(sync.backward(grad_out), plain.backward(grad_out), **tol)
    np.testing.assert_allclose(sync.weight.grad, plain.weight.grad, **tol)
    np.testing.assert_allclose(sync.running_var, plain.running_var, **tol)
    sync.eval(), plain.eval()
    np.testing.assert_allclose(sync(x), plain(x), **tol)
    revert_sync_batchnorm(converted)
    assert type(sync) is BatchNorm2d


def test_sync_batchnorm_gradient_by_central_differences():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 2, 3, 3))
    bn = SyncBatchNorm2d(2, dtype=np.float64)
    bn.weight.data[...] = [1.5, -0.5]
    probe = rng.normal(size=x.shape)
    bn(x)
    grad_x = bn.backward(probe)
    step, numeric = 1e-6, np.zeros_like(x)
    for index in np.ndindex(x.shape):
        shifted = [x.copy(), x.copy()]
        shifted[0][index] += step
        shifted[1][index] -= step
        numeric[index] = ((bn(shifted[0]) - bn(shifted[1])) * probe).sum() / (2 * step)
    np.testing.assert_allclose(grad_x, numeric, rtol=1e-6, atol=1e-8)


OPTIONS = [
    {"reduction": reduction, "label_smoothing": smoothing, "weight": weight, "ignore_index": -1}
    for reduction in ("mean", "sum", "none")
    for smoothing in (0.0, 0.2)
    for weight in (None, np.linspace(0.5, 2.0, 11))
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("bias", [False, True])
def test_vocab_parallel_on_one_rank_is_linear_cross_entropy(options, bias):
    """The Megatron-style normaliser (max, exp-sum, target and smoothing sums) on one shard."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(9, 5))
    target = rng.integers(0, 11, size=9)
    target[3] = -1
    full = LinearCrossEntropy(5, 11, bias, rng=rng, dtype=np.float64, **options)
    if bias:
        full.bias.data[...] = rng.normal(size=11)
    part = VocabParallelLinearCrossEntropy(5, 11, bias, dtype=np.float64, chunk_size=4, **options)
    part.load_full_weight(full.weight.data, None if not bias else full.bias.data)
    grad_scale = 1.0 if options["reduction"] != "none" else None
    np.testing.assert_allclose(part(x, target), full(x, target), rtol=1e-12, atol=1e-14)
    if grad_scale is not None:
        np.testing.assert_allclose(part.backward(), full.backward(), rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(part.weight.grad, full.weight.grad, rtol=1e-11, atol=1e-14)
        if bias:
            np.testing.assert_allclose(part.bias.grad, full.bias.grad, rtol=1e-11, atol=1e-14)


def test_vocab_parallel_refuses_out_of_range_targets_and_bad_weights():
    part = VocabParallelLinearCrossEntropy(3, 4)
    with pytest.raises(ValueError, match="target 4 is out of range for 4 classes"):
        part(np.ones((2, 3), np.float32), np.array([0, 4]))
    with pytest.raises(ValueError, match=r"weight must have shape \(4, 3\)"):
        part.load_full_weight(np.ones((3, 3)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux counts a pipe's bytes")
def test_an_abort_waits_for_the_launcher_to_read_its_message(tmp_path):
    """The message naming a failed rank stays in its pipe until read, or until the wait ends."""
    import os
    import time

    from glassnet.distributed.comm import _wait_until_read

    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as pipe, open(tmp_path / "log", "w") as file:
        pipe.write("glassnet: rank 1 of 2 failed\n")
        pipe.flush()
        started = time.monotonic()
        _wait_until_read((pipe,), seconds=0.3)
        assert time.monotonic() - started >= 0.3  # nobody read it: waited the whole time
        os.read(read_end, 100)
        started = time.monotonic()
        _wait_until_read((pipe, file, sys.stdin), seconds=30)  # read; a file is no pipe
        assert time.monotonic() - started < 20
    os.close(read_end)
