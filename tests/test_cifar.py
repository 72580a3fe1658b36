"""The CIFAR-10 loader on small files in the python-batch format that the tests write."""

import pickle

import numpy as np
import pytest
from cifar_files import write_batch, write_folder

from mixsim.cifar import load_cifar10
from mixsim.data import load_dataset
from mixsim.errors import ConfigError


def test_batches_are_read_in_order_and_rows_are_red_green_blue_planes(tmp_path):
    train, (test_images, test_labels) = write_folder(tmp_path, train_per_batch=(12, 8), test=10)
    ds = load_dataset({"name": "cifar10", "path": str(tmp_path), "standardize": False},
                      seed=0)
    expected = np.concatenate([images for images, _ in train]) / 255.0
    np.testing.assert_array_equal(ds.A_train, expected)
    np.testing.assert_array_equal(ds.A_test, test_images / 255.0)
    np.testing.assert_array_equal(ds.y_train, np.concatenate([y for _, y in train]))
    np.testing.assert_array_equal(ds.y_test, test_labels)
    assert ds.sample_shape == (3, 32, 32) and ds.n_classes == 10
    # Pixel (row 5, column 7) of image 3: red at 5*32+7, green 1024 later, blue 2048 later.
    image = ds.A_train[3].reshape(ds.sample_shape)
    raw = train[0][0][3]
    assert [image[c, 5, 7] * 255 for c in range(3)] == [raw[5 * 32 + 7 + 1024 * c]
                                                      for c in range(3)]


def test_batch_numbers_sort_numerically_and_samples_keep_the_first_rows(tmp_path):
    train, _ = write_folder(tmp_path, train_per_batch=(3,) * 11, test=10)
    A_train, y_train, A_test, y_test = load_cifar10(tmp_path, train_samples=7, test_samples=4)
    np.testing.assert_array_equal(A_train, np.concatenate([a for a, _ in train])[:7])
    assert A_test.shape == (4, 3072) and y_test.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(("damage", "message"), [
    ("no-test", "test_batch"),
    ("no-train", "no data_batch_"),
    ("not-pickle", "not a CIFAR-10 python batch"),
    ("short-rows", "must be uint8 of shape (N, 3072)"),
    ("labels", "integers in 0..9"),
    ("code", "refusing to load"),
    ("ragged", "must be arrays"),
])
def test_a_missing_or_malformed_file_is_one_config_error_naming_it(tmp_path, damage, message):
    write_folder(tmp_path)
    if damage == "no-test":
        (tmp_path / "test_batch").unlink()
    elif damage == "no-train":
        for path in tmp_path.glob("data_batch_*"):
            path.unlink()
    elif damage == "not-pickle":
        (tmp_path / "data_batch_2").write_bytes(b"not a pickle")
    elif damage == "short-rows":
        write_batch(tmp_path / "data_batch_2", np.zeros((2, 100)), [0, 1])
    elif damage == "labels":
        write_batch(tmp_path / "data_batch_2", np.zeros((2, 3072)), [0, 10])
    elif damage == "ragged":
        with open(tmp_path / "data_batch_2", "wb") as handle:
            pickle.dump({b"data": [[1], [1, 2]], b"labels": [0, 1]}, handle, protocol=2)
    else:
        with open(tmp_path / "data_batch_2", "wb") as handle:
            pickle.dump({b"data": print}, handle, protocol=2)  # a callable: code
    with pytest.raises(ConfigError, match="data.path") as info:
        load_dataset({"name": "cifar10", "path": str(tmp_path)}, seed=0)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cifar_has_its_own_test_set(tmp_path):
    write_folder(tmp_path)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset({"name": "cifar10", "path": str(tmp_path), "test_fraction": 0.2}, seed=0)


def test_digits_rows_are_one_channel_8x8_images():
    ds = load_dataset({"name": "digits", "standardize": False}, seed=0)
    import sklearn.datasets

    images = sklearn.datasets.load_digits().images
    assert ds.sample_shape == (1, 8, 8)
    row = ds.A_train[0].reshape(ds.sample_shape)[0]
    assert any(np.array_equal(row, image) for image in images)
