"""open_data and its loaders: .npz in every layout, IDX folders, image folders; their errors."""

import numpy as np
import pytest
from PIL import Image

from glassnet.data import MNIST, ImageFolder, load, load_idx_folder, load_npz, open_data, write_idx

from .conftest import write_dataset


def images_and_labels(n=6, shape=(4, 5), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8), rng.integers(0, 3, size=n)


# --- .npz ------------------------------------------------------------------------------------


def test_npz_as_keras_mnist_npz(tmp_path):
    x, y = images_and_labels()
    x_test, y_test = images_and_labels(3, seed=1)
    np.savez(
        tmp_path / "d.npz", x_train=x, y_train=y.astype(np.uint8), x_test=x_test, y_test=y_test
    )

    train, test = load_npz(tmp_path / "d.npz")

    assert train.x.dtype == np.float32 and train.x.shape == (6, 1, 4, 5)
    np.testing.assert_array_equal(train.x, x[:, None] / np.float32(255))
    assert train.y.dtype == np.int64 and train.y.tolist() == y.tolist()
    assert len(test) == 3 and test.sample_shape == (1, 4, 5)


@pytest.mark.parametrize(
    ("stored", "to_nchw"),
    [
        ((6, 4, 5, 3), lambda a: a.transpose(0, 3, 1, 2)),  # NHWC, RGB
        ((6, 4, 5, 1), lambda a: a.transpose(0, 3, 1, 2)),  # NHWC, grey
        ((6, 3, 4, 5), lambda a: a),  # NCHW
        ((6, 1, 4, 5), lambda a: a),  # NCHW, grey
        ((6, 3, 4, 3), lambda a: a),  # ambiguous: the second axis is 1 or 3, so NCHW
        ((6, 20), lambda a: a),  # features
    ],
)
def test_npz_images_become_nchw(tmp_path, stored, to_nchw):
    x = np.random.default_rng(0).integers(0, 256, size=stored, dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.zeros(6, dtype=np.int64))

    train, test = load_npz(tmp_path / "d.npz")

    assert test is None
    np.testing.assert_array_equal(train.x, to_nchw(x) / np.float32(255))
    assert train.x.flags.c_contiguous


def test_npz_float_pixels_are_kept_and_column_labels_flattened(tmp_path):
    x = np.random.default_rng(0).random((4, 2, 3))
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.array([[1], [0], [2], [1]]))
    train, _ = load_npz(tmp_path / "d.npz")
    assert train.x.dtype == np.float32
    np.testing.assert_array_equal(train.x, x[:, None].astype(np.float32))
    assert train.y.tolist() == [1, 0, 2, 1]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((2, 3, 3))}, r"no array 'y_train' \(it holds x_train\)"),
        ({"images": np.zeros((2, 3, 3))}, r"no array 'x_train' \(it holds images\)"),
        ({"x_train": np.zeros((3, 3, 3)), "y_train": np.zeros(2, int)}, "3 samples but y_train 2"),
        ({"x_train": np.zeros((2, 3, 3)), "y_train": np.zeros(2)}, "y_train has dtype float64"),
        ({"x_train": np.zeros((2, 3, 3)), "y_train": np.array([0, -1])}, "label -1"),
        ({"x_train": np.zeros((2, 3, 3)), "y_train": np.zeros((2, 2), int)}, r"shape \(2, 2\)"),
        ({"x_train": np.zeros((2, 3, 3), np.int16), "y_train": np.zeros(2, int)}, "dtype int16"),
        ({"x_train": np.zeros(2), "y_train": np.zeros(2, int)}, r"shape \(2,\), expected"),
        (
            {"x_train": np.zeros((2, 3, 3)), "y_train": np.zeros(2, int), "x_test": np.zeros(1)},
            "one of x_test and y_test",
        ),
        (
            {
                "x_train": np.zeros((2, 3, 3)),
                "y_train": np.zeros(2, int),
                "x_test": np.zeros((1, 4, 4)),
                "y_test": np.zeros(1, int),
            },
            r"x_test samples have shape \(1, 4, 4\), x_train's \(1, 3, 3\)",
        ),
    ],
)
def test_npz_errors_name_the_file_and_the_problem(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="bad.npz.*" + message):
        load_npz(tmp_path / "bad.npz")


def test_npz_object_arrays_and_non_archives_are_refused(tmp_path):
    labels = np.empty(2, dtype=object)
    labels[:] = [0, 1]
    np.savez(tmp_path / "pickled.npz", x_train=np.zeros((2, 3, 3)), y_train=labels)
    with pytest.raises(ValueError, match=r"pickled.npz: array 'y_train' cannot be read.*pickle"):
        load_npz(tmp_path / "pickled.npz")
    (tmp_path / "text.npz").write_text("x_train = [1, 2, 3]")
    with pytest.raises(ValueError, match=r"text\.npz: not a readable \.npz archive"):
        load_npz(tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(ValueError, match=r"single\.npz: a single \.npy array"):
        load_npz(tmp_path / "single.npz")


# --- IDX folders -------------------------------------------------------------------------------


def test_an_idx_folder_reads_as_glassnet_data_load(tmp_path):
    folder = write_dataset(tmp_path / "idx", n_train=30, n_test=10)
    train, test = load_idx_folder(folder)
    x, y = load(MNIST, "train", data_dir=folder, download=False)
    np.testing.assert_array_equal(train.x, x)
    np.testing.assert_array_equal(train.y, y)
    assert train.x.dtype == np.float32 and len(test) == 10 and test.sample_shape == (1, 28, 28)


def test_an_idx_folder_may_be_uncompressed_and_without_a_test_set(tmp_path):
    images, labels = images_and_labels()
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels.astype(np.uint8))
    train, test = load_idx_folder(tmp_path)
    assert test is None
    np.testing.assert_array_equal(train.x, images[:, None] / np.float32(255))


def test_idx_folder_errors(tmp_path):
    images, labels = images_and_labels()
    with pytest.raises(ValueError, match=r"holds no train-images-idx3-ubyte\.gz"):
        load_idx_folder(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    with pytest.raises(ValueError, match="no train-labels-idx1-ubyte"):
        load_idx_folder(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:4].astype(np.uint8))
    with pytest.raises(ValueError, match=r"holds 6 images but .* 4 labels"):
        load_idx_folder(tmp_path)


# --- open_data -------------------------------------------------------------------------------


def write_class_folders(root, classes, size=(4, 4), mode="L", per_class=2):
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new(mode, size[::-1], 40 * i).save(root / name / f"{i}.png")


def test_open_data_reads_train_and_test_image_folders(tmp_path):
    write_class_folders(tmp_path / "train", ["cat", "dog"], per_class=3)
    write_class_folders(tmp_path / "test", ["cat", "dog"], mode="RGB")

    train, test, description = open_data(tmp_path)

    assert isinstance(train, ImageFolder) and isinstance(test, ImageFolder)
    assert len(train) == 6 and len(test) == 4 and train.classes == test.classes == ["cat", "dog"]
    assert test.sample_shape == (1, 4, 4)  # the training images' channels
    assert "6 training samples of 1x4x4, 4 test samples; 2 classes: cat, dog" in description


def test_open_data_without_a_test_folder_and_with_resizing(tmp_path):
    write_class_folders(tmp_path / "train", ["a"], size=(6, 5))
    train, test, description = open_data(tmp_path, image_size=(3, 2))
    assert test is None and train.sample_shape == (1, 3, 2) and "no test set" in description


def test_open_data_needs_the_same_classes_and_shapes_in_test(tmp_path):
    write_class_folders(tmp_path / "train", ["cat", "dog"])
    write_class_folders(tmp_path / "test", ["cat", "\x1b[31mowl"])
    with pytest.raises(ValueError) as error:
        open_data(tmp_path)
    assert "only in train: dog; only in test: \\x1b[31mowl" in str(error.value)
    assert "\x1b" not in str(error.value)

    write_class_folders(tmp_path / "other" / "train", ["a"], size=(4, 4))
    write_class_folders(tmp_path / "other" / "test", ["a"], size=(5, 4))
    with pytest.raises(ValueError, match=r"shape \(1, 5, 4\), .* \(1, 4, 4\): give image_size"):
        open_data(tmp_path / "other")
    assert open_data(tmp_path / "other", image_size=4)[1].sample_shape == (1, 4, 4)


def test_open_data_reads_idx_folders_and_npz_files(tmp_path):
    folder = write_dataset(tmp_path / "idx", n_train=20, n_test=5)
    train, test, description = open_data(folder)
    assert (len(train), len(test)) == (20, 5)
    assert (
        description.startswith("IDX files in ") and "20 training samples of 1x28x28" in description
    )

    x, y = images_and_labels()
    with open(tmp_path / "d.NPZ", "wb") as file:  # np.savez would add ".npz" to the name
        np.savez(file, x_train=x, y_train=y)
    train, test, description = open_data(tmp_path / "d.NPZ")
    assert len(train) == 6 and test is None and "6 training samples of 1x4x5" in description
    with pytest.raises(ValueError, match=r"image_size=\(2, 2\) resizes image folders"):
        open_data(tmp_path / "d.NPZ", image_size=(2, 2))
    with pytest.raises(ValueError, match="image_size=2 resizes image folders"):
        open_data(folder, image_size=2)


def test_open_data_lists_the_accepted_layouts_for_anything_else(tmp_path):
    write_class_folders(tmp_path / "classes", ["a", "b"])
    (tmp_path / "notes.txt").write_text("hello")
    for path in (tmp_path / "classes", tmp_path / "notes.txt", tmp_path / "missing"):
        with pytest.raises(ValueError) as error:
            open_data(path)
        message = str(error.value)
        assert "none of the accepted data layouts" in message
        assert "train/" in message and "IDX" in message and ".npz" in message
    with pytest.raises(ValueError, match=r"class folders\? move them into .*classes/train/"):
        open_data(tmp_path / "classes")
    with pytest.raises(ValueError, match=r"missing \(not found\)"):
        open_data(tmp_path / "missing")
