"""Convolution geometry as torch.nn.functional.conv2d: kernels, strides, paddings, "same"/"valid".

Every case runs on both kernel paths (Numba and NumPy, through ``kernel_path``) and on every
patch layout, against the loop oracle and against PyTorch. Also the one kernel switch.
"""

import functools
import os
import subprocess
import sys

import numpy as np
import pytest

from glassnet import kernels
from glassnet.functional import conv as conv_module
from glassnet.functional.conv import (
    col2im,
    conv2d,
    conv2d_backward,
    conv_padding,
    geometry,
    im2col,
    tap_rows,
    unfold,
)
from glassnet.functional.reference import conv2d_backward_loops, conv2d_loops
from tests import kernel_paths

kernel_path = kernel_paths.kernel_path  # the fixture: each test runs on Numba, then NumPy

KERNELS = [(1, 1), (3, 3), (2, 3), (4, 4)]
STRIDES = [1, 2, (2, 1)]
PADDINGS = [0, 1, (1, 2), "same", "valid"]
GEOMETRIES = [
    (kernel, stride, padding)
    for kernel in KERNELS
    for stride in STRIDES
    for padding in PADDINGS
    if not (padding == "same" and stride != 1)
]
# float64 agrees with PyTorch and the loops to rounding; float32 to its precision
TOLERANCE = {np.float64: {"rtol": 1e-10, "atol": 1e-12}, np.float32: {"rtol": 1e-4, "atol": 1e-5}}


@functools.cache
def expected_conv(kernel, stride, padding, c_in, dtype):
    """Inputs, and the loops' and PyTorch's output and gradients (shared by both kernel paths)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, c_in, 7, 6)).astype(dtype)
    weight = rng.standard_normal((4, c_in, *kernel)).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)
    loops = conv2d_loops(x, weight, bias, stride, padding)
    grad_out = rng.standard_normal(loops.shape).astype(dtype)
    loop_grads = conv2d_backward_loops(grad_out, x, weight, stride, padding)
    xt, wt, bt = (
        torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, weight, bias)
    )
    out = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding)
    out.backward(torch.tensor(grad_out, dtype=torch.float64))
    torch_grads = xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()
    return (x, weight, bias, grad_out), (loops, loop_grads), (out.detach().numpy(), torch_grads)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("c_in", [1, 3, 16])
@pytest.mark.parametrize(
    "kernel,stride,padding", GEOMETRIES, ids=[f"k{k}-s{s}-p{p}" for k, s, p in GEOMETRIES]
)
def test_conv2d_matches_loops_and_pytorch(kernel_path, kernel, stride, padding, c_in, dtype):
    inputs, (expected, expected_grads), (torch_out, torch_grads) = expected_conv(
        kernel, stride, padding, c_in, dtype
    )
    x, weight, bias, grad_out = inputs
    np.testing.assert_allclose(expected, torch_out, **TOLERANCE[dtype])  # the oracle itself
    for layout in (None, im2col, tap_rows):
        cols = None if layout is None else layout(x, kernel, stride, padding)
        out = conv2d(x, weight, bias, stride, padding, cols=cols)
        assert out.dtype == dtype and out.shape == torch_out.shape
        np.testing.assert_allclose(out, expected, **TOLERANCE[dtype])
        np.testing.assert_allclose(out, torch_out, **TOLERANCE[dtype])
        grads = conv2d_backward(grad_out, x, weight, cols, stride, padding)
        for ours, loops, theirs in zip(grads, expected_grads, torch_grads, strict=True):
            assert ours.dtype == dtype
            np.testing.assert_allclose(ours, loops, **TOLERANCE[dtype])
            np.testing.assert_allclose(ours, theirs, **TOLERANCE[dtype])


@pytest.mark.parametrize(
    "kernel,expected",
    [
        ((3, 3), (1, 1, 1, 1)),
        ((4, 4), (1, 2, 1, 2)),
        ((2, 3), (0, 1, 1, 1)),
        ((1, 4), (0, 0, 1, 2)),
    ],
)
def test_same_padding_puts_the_odd_row_and_column_at_the_bottom_right(kernel, expected):
    assert conv_padding("same", kernel, (1, 1)) == expected
    assert geometry((2, 3, 7, 6), kernel, 1, "same").out == (7, 6)
    assert conv_padding("valid", kernel, (2, 1)) == (0, 0, 0, 0)
    assert conv_padding((1, 2), kernel, (2, 1)) == (1, 1, 2, 2)


def test_output_size_is_floored_per_axis():
    geo = geometry((1, 1, 9, 8), (2, 3), (2, 1), (1, 2))
    assert geo.stride == (2, 1) and geo.pads == (1, 1, 2, 2)
    assert geo.out == ((9 + 2 - 2) // 2 + 1, (8 + 4 - 3) // 1 + 1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_col2im_is_the_adjoint_of_im2col_with_asymmetric_padding(kernel_path, dtype):
    # <im2col(x), c> = <x, col2im(c)>: "same" with an even kernel pads more at the bottom/right
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 7, 6)).astype(dtype)
    for kernel, stride, padding in [((4, 2), 1, "same"), ((3, 2), (2, 1), (2, 1))]:
        cols = im2col(x, kernel, stride, padding)
        c = rng.standard_normal(cols.shape).astype(dtype)
        np.testing.assert_allclose(
            np.sum(cols * c, dtype=np.float64),
            np.sum(x * col2im(c, x.shape, kernel, stride, padding), dtype=np.float64),
            rtol=1e-12 if dtype == np.float64 else 1e-5,
        )


def test_kernels_and_numpy_build_the_same_patches_bit_for_bit():
    if not kernels.enabled():
        pytest.skip("the Numba kernels are off")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 16, 9, 8)).astype(np.float32)
    for kernel, stride, padding in [((4, 4), 1, "same"), ((2, 3), (2, 1), (1, 2))]:
        fast = im2col(x, kernel, stride, padding)
        with kernels.disabled():
            slow = im2col(x, kernel, stride, padding)
        np.testing.assert_array_equal(fast, slow)
        for ones in (
            im2col(x, kernel, stride, padding, ones_column=True),
            unfold(x, kernel, stride, padding),
        ):
            assert ones.shape == (len(fast), fast.shape[1] + 1)
            np.testing.assert_array_equal(ones[:, :-1], fast)
            np.testing.assert_array_equal(ones[:, -1], 1)
        with kernels.disabled():
            slow = im2col(x, kernel, stride, padding, ones_column=True)
        np.testing.assert_array_equal(ones, slow)


def test_unfold_layouts_have_the_strided_output_size():
    x = np.zeros((2, 3, 7, 6))
    assert unfold(x, (2, 3), (2, 1), (1, 2)).shape == (3 * 2 * 3 + 1, 2, 4, 8)
    assert unfold(np.zeros((2, 8, 7, 6)), (4, 4), 1, "same").shape == (2 * 7 * 6, 4 * 4 * 8 + 1)


@pytest.mark.parametrize(
    "call,words",
    [
        (lambda x, w: conv2d(x, w[:, :, :1, :1], padding="full"), "padding='full'"),
        (lambda x, w: conv2d(x, w, stride=2, padding="same"), "padding='same' needs stride 1"),
        (lambda x, w: conv2d(x, w, padding=-1), "padding=-1"),
        (lambda x, w: conv2d(x, w, padding=(1, 2, 3)), "padding=(1, 2, 3)"),
        (lambda x, w: conv2d(x, w, stride=0), "stride=0"),
        (lambda x, w: conv2d(x, w, stride=(1, True)), "stride=(1, True)"),
        (lambda x, w: conv2d(x[:, :1], w), "the same C_in, got x.shape=(1, 1, 3, 4)"),
        (lambda x, w: conv2d(x, w), "padded input (3x4: input 3x4"),
        (lambda x, w: conv2d(x, w, padding=(1, 0)), "(5x4: input 3x4 with padding=(1, 0))"),
        (lambda x, w: im2col(x, (5, 5), 1, (1, 0)), "smaller than the kernel (5x5)"),
    ],
)
def test_bad_geometry_is_a_clear_error(call, words):
    x, weight = np.zeros((1, 2, 3, 4)), np.zeros((3, 2, 5, 5))
    with pytest.raises(ValueError) as info:
        call(x, weight)
    assert words in str(info.value)


def test_disabled_switches_every_kernel_off_and_restores_the_switch(monkeypatch):
    if not kernels.enabled():
        pytest.skip("the Numba kernels are off")

    class Refuse:
        def __getattr__(self, name):
            raise AssertionError(f"kernel {name} ran inside disabled()")

    monkeypatch.setattr(conv_module, "conv_kernels", Refuse())
    x = np.ones((1, 8, 4, 4), dtype=np.float32)
    with kernels.disabled():
        assert not kernels.enabled()
        with kernels.disabled():  # nested
            assert not kernels.enabled()
        assert not kernels.enabled()
        np.testing.assert_array_equal(im2col(x, (3, 3)), 1)
    assert kernels.enabled()
    with pytest.raises(AssertionError, match="kernel im2col ran"):
        im2col(x, (3, 3))
    with pytest.raises(RuntimeError, match="inside"), kernels.disabled():
        raise RuntimeError("inside the block")
    assert kernels.enabled()  # restored after an exception too


@pytest.mark.parametrize("value,expected", [("0", "False"), ("1", str(kernels.AVAILABLE))])
def test_environment_variable_turns_kernels_off_at_import(value, expected):
    env = dict(os.environ, GLASSNET_KERNELS=value)
    code = "import glassnet.kernels as k; print(k.enabled())"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == expected
