"""ImageFolder: classes, labels, exact pixels, modes, sizes, skipped files, errors, caching."""

import builtins
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import glassnet
from glassnet.data import MNIST, ImageFolder, load, read_image, write_idx
from glassnet.data.dataset import Subset
from glassnet.model_file import read_model_file
from glassnet.nn import Flatten, Linear, Sequential


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, names=None) -> Path:
    """One PNG per image in root/<class name>/<index>.png; returns root."""
    names = names or [str(label) for label in range(int(labels.max()) + 1)]
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:05d}.png")
    return root


def every_byte_images(n=8, seed=0):
    """n 16 x 16 uint8 images that together hold every value 0..255."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 16, 16), dtype=np.uint8)
    images[0] = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return images


def test_classes_are_the_sorted_folder_names_and_labels_follow(tmp_path):
    root = tmp_path
    for name, count in (("zebra", 2), ("Apple", 1), ("mango", 3)):
        (root / name).mkdir()
        for i in range(count):
            Image.new("L", (4, 4), 10 * i).save(root / name / f"{i}.png")

    ds = ImageFolder(root)

    assert ds.classes == ["Apple", "mango", "zebra"]  # str order: upper case first
    assert ds.targets.tolist() == [0, 1, 1, 1, 2, 2]
    assert [p.parent.name for p in ds.paths] == ["Apple"] + ["mango"] * 3 + ["zebra"] * 2
    x, y = ds[np.array([5, 0, 2])]
    assert y.dtype == np.int64 and y.tolist() == [2, 0, 1]
    assert x.shape == (3, 1, 4, 4) and x.dtype == np.float32
    assert np.all(x[0] == np.float32(10) / np.float32(255))  # zebra/1.png


def test_pixels_are_exactly_what_the_idx_files_give(tmp_path):
    images = every_byte_images()
    labels = np.array([0, 1, 2, 1, 0, 2, 2, 1], dtype=np.uint8)
    ds = ImageFolder(write_folder(tmp_path / "png", images, labels))
    (tmp_path / "idx").mkdir()
    write_idx(tmp_path / "idx" / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte.gz", labels)
    x_idx, y_idx = load(MNIST, "train", data_dir=tmp_path / "idx", download=False)

    x, y = ds[np.arange(len(ds))]

    order = [int(path.stem) for path in ds.paths]
    assert x.dtype == x_idx.dtype == np.float32
    np.testing.assert_array_equal(x, x_idx[order])  # bit for bit
    np.testing.assert_array_equal(y, y_idx[order])
    np.testing.assert_array_equal(x, images[order][:, None] / np.float32(255))


def test_training_on_the_folder_equals_training_on_the_idx_arrays(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=48).astype(np.uint8)
    images = rng.integers(0, 60, size=(48, 6, 6)).astype(np.uint8)
    images[np.arange(48), labels, labels] = 250
    ds = ImageFolder(write_folder(tmp_path, images, labels))
    order = [int(path.stem) for path in ds.paths]
    arrays = (images[order][:, None] / np.float32(255), labels[order].astype(np.int64))

    def run(data):
        model = Sequential(Flatten(), Linear(36, 3, rng=np.random.default_rng(0)))
        history = glassnet.fit(model, data, epochs=2, batch_size=8, seed=3, verbose=0)
        return history["train_loss"], model.state_dict()

    loss_folder, weights_folder = run(ds)
    loss_arrays, weights_arrays = run(arrays)
    assert loss_folder == loss_arrays
    for key, value in weights_arrays.items():
        np.testing.assert_array_equal(weights_folder[key], value)


def test_rgb_images_give_three_channels_and_grey_ones_one(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 3, 3), dtype=np.uint8)
    (tmp_path / "rgb" / "a").mkdir(parents=True)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb" / "a" / "0.png")
    (tmp_path / "grey" / "a").mkdir(parents=True)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey" / "a" / "0.png")

    colour = ImageFolder(tmp_path / "rgb")
    grey = ImageFolder(tmp_path / "grey")
    grey_as_rgb = ImageFolder(tmp_path / "grey", channels=3)
    rgb_as_grey = ImageFolder(tmp_path / "rgb", channels=1)

    assert colour.sample_shape == (3, 5, 3) and grey.sample_shape == (1, 5, 3)
    x = colour[np.array([0])][0][0]
    np.testing.assert_array_equal(x, rgb.transpose(2, 0, 1) / np.float32(255))
    x = grey_as_rgb[np.array([0])][0][0]
    assert x.shape == (3, 5, 3) and np.array_equal(x[0], x[2])
    np.testing.assert_array_equal(x[1], rgb[..., 0] / np.float32(255))
    expected = read_image(tmp_path / "rgb" / "a" / "0.png", (1, 5, 3))[0]  # Pillow's luma
    np.testing.assert_array_equal(rgb_as_grey[np.array([0])][0][0], expected)


@pytest.mark.parametrize("channels", ["3", 2, 1.0, True])
def test_bad_channels_are_refused(tmp_path, channels):
    with pytest.raises(ValueError, match="channels="):
        ImageFolder(tmp_path, channels=channels)


def test_jpeg_and_bmp_files_are_read_by_their_bytes(tmp_path):
    image = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    (tmp_path / "a").mkdir()
    Image.fromarray(image).save(tmp_path / "a" / "bmp-named.png", format="BMP")
    Image.fromarray(image).save(tmp_path / "a" / "jpeg-no-suffix", format="JPEG", quality=95)

    ds = ImageFolder(tmp_path)
    x, _ = ds[np.arange(2)]

    assert [p.name for p in ds.paths] == ["bmp-named.png", "jpeg-no-suffix"]
    np.testing.assert_array_equal(x[0, 0], image / np.float32(255))
    assert np.abs(x[1, 0] - image / 255).max() < 0.05  # JPEG is lossy


def test_image_size_resizes_every_image(tmp_path):
    (tmp_path / "a").mkdir()
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(10, 12), (7, 5)]):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
            tmp_path / "a" / f"{i}.png"
        )

    ds = ImageFolder(tmp_path, image_size=(8, 6))
    square = ImageFolder(tmp_path, image_size=9)
    x, _ = ds[np.arange(2)]

    assert ds.sample_shape == (1, 8, 6) and square.sample_shape == (1, 9, 9)
    assert square[np.arange(2)][0].shape == (2, 1, 9, 9)
    for row, path in zip(x, ds.paths, strict=True):  # read_image's Lanczos resize, to 8 bits
        expected = np.rint(read_image(path, (1, 8, 6))[0] * 255) / np.float32(255)
        np.testing.assert_array_equal(row, expected)


@pytest.mark.parametrize("image_size", [0, (8,), (8, -1), (8.0, 6), "8", True])
def test_bad_image_sizes_are_refused(tmp_path, image_size):
    with pytest.raises(ValueError, match="image_size="):
        ImageFolder(tmp_path, image_size=image_size)


def test_images_of_other_sizes_are_an_error_naming_both_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("L", (5, 4)).save(tmp_path / "a" / "first.png")
    Image.new("L", (6, 4)).save(tmp_path / "b" / "wide.png")
    ds = ImageFolder(tmp_path)

    assert ds.sample_shape == (1, 4, 5)
    ds[np.array([0])]
    with pytest.raises(ValueError, match=r"wide\.png is 4 x 6 .*first\.png is 4 x 5.*image_size"):
        ds[np.array([0, 1])]
    assert ImageFolder(tmp_path, image_size=(4, 5))[np.arange(2)][0].shape == (2, 1, 4, 5)


def test_an_empty_root_or_class_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="holds no class folders"):
        ImageFolder(tmp_path)
    (tmp_path / "a").mkdir()
    Image.new("L", (2, 2)).save(tmp_path / "a" / "0.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder .*b holds no PNG, JPEG or BMP images"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        ImageFolder(tmp_path / "a" / "0.png")
    with pytest.raises(ValueError, match="is not a folder"):
        ImageFolder(tmp_path / "missing")


def test_hidden_and_non_image_files_are_skipped(tmp_path):
    (tmp_path / "a" / "deeper").mkdir(parents=True)
    (tmp_path / "a" / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".hidden_class").mkdir()
    for path in (
        tmp_path / "a" / "1.png",
        tmp_path / "a" / "deeper" / "0.png",
        tmp_path / "a" / ".ipynb_checkpoints" / "0.png",
        tmp_path / "a" / ".0.png",
        tmp_path / ".hidden_class" / "0.png",
    ):
        Image.new("L", (3, 3)).save(path, format="PNG")
    (tmp_path / "a" / "README.md").write_text("# about these images")
    (tmp_path / "a" / "fake.png").write_text("not really a PNG")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "loose.png").write_bytes((tmp_path / "a" / "1.png").read_bytes())

    ds = ImageFolder(tmp_path)

    assert ds.classes == ["a"]
    assert [p.relative_to(tmp_path).as_posix() for p in ds.paths] == ["a/1.png", "a/deeper/0.png"]


def test_a_hostile_class_name_is_escaped_in_messages(tmp_path):
    hostile = "red\x1b[31m\nclass"
    (tmp_path / hostile).mkdir()
    (tmp_path / hostile / "readme.txt").write_text("x")

    with pytest.raises(ValueError) as error:
        ImageFolder(tmp_path)

    message = str(error.value)
    assert "\x1b" not in message and "\n" not in message
    assert "red\\x1b[31m\\nclass" in message


def test_a_hostile_name_in_a_size_error_and_repr_is_escaped(tmp_path):
    hostile = "\x1b[2Jwipe"
    root = tmp_path / hostile
    (root / hostile).mkdir(parents=True)
    Image.new("L", (2, 2)).save(root / hostile / "a.png")
    Image.new("L", (3, 2)).save(root / hostile / "b.png")
    ds = ImageFolder(root)

    assert ds.classes == [hostile]  # the data itself is kept as it is
    assert "\x1b" not in repr(ds) and "\\x1b[2Jwipe'" in repr(ds)
    with pytest.raises(ValueError) as error:
        ds[np.array([1])]
    assert "\x1b" not in str(error.value) and "\\x1b[2Jwipe/b.png" in str(error.value)


def test_a_corrupt_image_is_an_error_naming_it(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "a" / "0.png")
    good = (tmp_path / "a" / "0.png").read_bytes()
    (tmp_path / "a" / "1.png").write_bytes(good[:40])
    ds = ImageFolder(tmp_path)
    with pytest.raises(ValueError, match=r"1\.png: .*(corrupt|truncated)"):
        ds[np.array([1])]


@pytest.fixture
def open_calls(monkeypatch):
    """The paths every builtins.open call of the test opens."""
    calls = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        calls.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    return calls


def test_images_are_decoded_once_and_then_served_from_memory(tmp_path, open_calls):
    images = every_byte_images(6)
    root = write_folder(tmp_path, images, np.array([0, 1, 0, 1, 0, 1]))
    ds = ImageFolder(root)
    uncached = ImageFolder(root, cache=False)
    open_calls.clear()

    first = ds[np.array([0, 1, 2])]
    assert {Path(p) for p in open_calls} == set(ds.paths[:3])
    open_calls.clear()
    again = ds[np.array([2, 1, 0, 1])]
    assert open_calls == []  # read no file
    np.testing.assert_array_equal(again[0][:3], first[0][::-1])
    ds[np.arange(6)]
    assert {Path(p) for p in open_calls} == set(ds.paths[3:])

    open_calls.clear()
    uncached[np.array([0])]
    uncached[np.array([0])]
    assert [Path(p) for p in open_calls].count(uncached.paths[0]) >= 2
    np.testing.assert_array_equal(uncached[np.arange(6)][0], ds[np.arange(6)][0])


def test_indices_are_checked_and_negative_ones_count_from_the_end(tmp_path):
    root = write_folder(tmp_path, every_byte_images(3), np.array([0, 1, 1]))
    ds = ImageFolder(root)

    np.testing.assert_array_equal(ds[np.array([-1])][0], ds[np.array([2])][0])
    empty_x, empty_y = ds[np.array([], dtype=np.int64)]
    assert empty_x.shape == (0, 1, 16, 16) and empty_y.shape == (0,)
    with pytest.raises(IndexError, match="index 3 is out of range for 3 images"):
        ds[np.array([0, 3])]
    with pytest.raises(ValueError, match="1-D integer array"):
        ds[np.array([[0]])]
    with pytest.raises(ValueError, match="1-D integer array"):
        ds[np.array([0.0])]


def test_sixteen_bit_images_are_rounded_to_eight_bits(tmp_path):
    (tmp_path / "a").mkdir()
    values = np.array([[0, 257, 1000], [30000, 65280, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a" / "0.png")  # mode I;16
    ds = ImageFolder(tmp_path)
    assert ds.sample_shape == (1, 2, 3)
    expected = np.rint(values / 65535 * 255).astype(np.uint8) / np.float32(255)
    np.testing.assert_array_equal(ds[np.array([0])][0][0, 0], expected)


def test_fit_trains_on_a_folder_and_the_model_file_records_its_classes(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=30)
    images = rng.integers(0, 256, size=(30, 5, 5, 3), dtype=np.uint8)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = tmp_path / "data" / ["cat", "dog", "émeu"][label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "RGB").save(folder / f"{index}.png")
    ds = ImageFolder(tmp_path / "data")
    model = Sequential(Flatten(), Linear(75, 3, rng=np.random.default_rng(0)))

    history = glassnet.fit(model, ds, epochs=1, batch_size=8, val_fraction=0.2, verbose=0)
    glassnet.save_model(
        model, tmp_path / "m.safetensors", input_shape=ds.sample_shape, classes=ds.classes
    )

    assert history.status == "completed" and history["val_accuracy"][0] is not None
    opened = read_model_file(tmp_path / "m.safetensors")
    assert opened.classes == ["cat", "dog", "émeu"]
    assert tuple(opened.input_shape) == (3, 5, 5)
    train, _ = glassnet.data.dataset.split_last(ds, 0.2)
    assert isinstance(train, Subset) and train.classes == ds.classes
