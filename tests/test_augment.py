"""Augmentations: exact shifts against a loop oracle, fair flips, seeded, never in place."""

import numpy as np
import pytest

import glassnet
from glassnet.data import Compose, RandomFlip, RandomShift
from glassnet.nn import Flatten, Linear, Sequential


def shift_loop(x: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """The oracle: each image moved by its (dy, dx) with slices, zeros where nothing lands."""
    out = np.zeros_like(x)
    height, width = x.shape[-2:]
    for n, (dy, dx) in enumerate(shifts):
        rows_to = slice(max(dy, 0), max(min(height + dy, height), 0))
        rows_from = slice(max(-dy, 0), max(min(height - dy, height), 0))
        cols_to = slice(max(dx, 0), max(min(width + dx, width), 0))
        cols_from = slice(max(-dx, 0), max(min(width - dx, width), 0))
        if rows_to.stop > rows_to.start and cols_to.stop > cols_to.start:
            out[n, ..., rows_to, cols_to] = x[n, ..., rows_from, cols_from]
    return out


@pytest.mark.parametrize("max_shift", [0, 1, 2, 5, 9])
@pytest.mark.parametrize("shape", [(40, 3, 7, 6), (40, 7, 6), (40, 2, 1, 7, 6)])
def test_random_shift_matches_the_loop_oracle(max_shift, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    shifts = np.random.default_rng(1).integers(-max_shift, max_shift + 1, size=(len(x), 2))

    out = RandomShift(max_shift)(x, np.random.default_rng(1))

    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, shift_loop(x, shifts))


def test_a_bright_pixel_moves_by_the_drawn_amount():
    n = 500
    x = np.zeros((n, 1, 9, 9), dtype=np.uint8)
    x[:, 0, 4, 4] = 255
    drawn = np.random.default_rng(7).integers(-2, 3, size=(n, 2))

    out = RandomShift(2)(x, np.random.default_rng(7))

    rows, cols = np.unravel_index(out.reshape(n, -1).argmax(axis=1), (9, 9))
    np.testing.assert_array_equal(np.stack([rows - 4, cols - 4], axis=1), drawn)
    assert np.all(out.reshape(n, -1).sum(axis=1) == 255)  # nothing lost, nothing added
    assert len({(r, c) for r, c in zip(rows, cols, strict=True)}) == 25  # every shift occurs


def test_random_shift_is_seeded_and_keeps_dtype_and_input():
    x = np.random.default_rng(0).integers(0, 256, size=(16, 1, 8, 8)).astype(np.uint8)
    before = x.copy()
    a = RandomShift(3)(x, np.random.default_rng(5))
    b = RandomShift(3)(x, np.random.default_rng(5))
    c = RandomShift(3)(x, np.random.default_rng(6))

    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8
    np.testing.assert_array_equal(x, before)
    assert not np.shares_memory(a, x)
    for dtype in (np.float32, np.float64):
        assert RandomShift(1)(x.astype(dtype), np.random.default_rng(0)).dtype == dtype


def test_random_flip_flips_about_half_the_images_and_only_flips():
    n = 10_000
    x = np.random.default_rng(0).standard_normal((n, 1, 3, 4)).astype(np.float32)
    before = x.copy()

    out = RandomFlip()(x, np.random.default_rng(1))

    flipped = np.all(out == x[..., ::-1], axis=(1, 2, 3))
    kept = np.all(out == x, axis=(1, 2, 3))
    assert np.all(flipped ^ kept)  # each image is either flipped or untouched
    np.testing.assert_array_equal(flipped, np.random.default_rng(1).random(n) < 0.5)
    assert 4800 < flipped.sum() < 5200  # 0.5 +- 4 standard deviations
    np.testing.assert_array_equal(x, before)


def test_vertical_flips_turn_images_upside_down():
    x = np.arange(2 * 1 * 3 * 2, dtype=np.float64).reshape(2, 1, 3, 2)
    flips = np.random.default_rng(3).random(2) < 0.5
    out = RandomFlip(horizontal=False, vertical=True)(x, np.random.default_rng(3))
    for image, original, flip in zip(out, x, flips, strict=True):
        np.testing.assert_array_equal(image, original[:, ::-1] if flip else original)


def test_compose_applies_in_order_with_one_generator():
    x = np.random.default_rng(0).standard_normal((8, 1, 6, 6))
    rng = np.random.default_rng(4)
    expected = RandomFlip()(RandomShift(1)(x, rng), rng)

    out = Compose(RandomShift(1), RandomFlip())(x, np.random.default_rng(4))

    np.testing.assert_array_equal(out, expected)
    assert repr(Compose(RandomShift(1), RandomFlip())) == (
        "Compose(RandomShift(max_shift=1), RandomFlip(horizontal=True, vertical=False))"
    )


def test_bad_arguments_are_refused():
    x = np.zeros((2, 1, 4, 4))
    with pytest.raises(ValueError, match="max_shift=-1"):
        RandomShift(-1)
    with pytest.raises(ValueError, match=r"max_shift=1\.5"):
        RandomShift(1.5)
    with pytest.raises(ValueError, match="flips nothing"):
        RandomFlip(horizontal=False)
    with pytest.raises(TypeError, match="callables, got int"):
        Compose(RandomShift(), 3)
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator, got int"):
        RandomShift()(x, 0)
    with pytest.raises(ValueError, match=r"shape \(4, 4\) must be a batch of images"):
        RandomFlip()(np.zeros((4, 4)), np.random.default_rng(0))


def test_fit_applies_an_augmentation_reproducibly():
    rng = np.random.default_rng(0)
    x = rng.random((32, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 2, size=32)
    seen = []

    def recording(batch, generator):
        seen.append(batch.copy())
        return RandomShift(1)(batch, generator)

    def run(augment):
        model = Sequential(Flatten(), Linear(36, 2, rng=np.random.default_rng(0)))
        return glassnet.fit(model, (x, y), epochs=2, batch_size=8, augment=augment, verbose=0)

    first = run(RandomShift(1))["train_loss"]
    assert run(RandomShift(1))["train_loss"] == first
    assert run(None)["train_loss"] != first
    run(recording)
    assert len(seen) == 8 and all(batch.shape == (8, 1, 6, 6) for batch in seen)
