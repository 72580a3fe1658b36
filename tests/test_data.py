"""Tests for mixsim.data: loaders, splits, determinism, partitions and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file

from mixsim.data import list_datasets, load_dataset, partition, partition_from_spec
from mixsim.errors import ConfigError

BUNDLED = [
    # name, rows, features, classes
    ("digits", 1797, 64, 10),
    ("breast-cancer", 569, 30, 2),
    ("iris", 150, 4, 3),
    ("wine", 178, 13, 3),
]


def _assert_cover(parts, n):
    joined = np.concatenate(parts)
    assert joined.size == n
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))
    assert all(part.size > 0 and part.dtype == np.int64 for part in parts)


def _labels_per_worker(y, parts):
    return [np.unique(y[part]).size for part in parts]


# ----------------------------------------------------------------------------- loaders


@pytest.mark.parametrize(("name", "rows", "features", "classes"), BUNDLED)
def test_bundled_dataset_shapes_split_and_stratification(name, rows, features, classes):
    data = load_dataset({"name": name}, seed=0)
    n_test = int(np.ceil(0.2 * rows))
    assert data.A_train.shape == (rows - n_test, features)
    assert data.A_test.shape == (n_test, features)
    assert data.n_classes == classes and data.task == "classification" and data.name == name
    assert data.y_train.dtype == np.int64 and data.A_train.dtype == np.float64
    assert set(np.unique(data.y_train)) == set(range(classes))
    # Stratified: class shares in the test set match the whole dataset to within one row.
    whole = np.bincount(np.concatenate([data.y_train, data.y_test]), minlength=classes)
    test = np.bincount(data.y_test, minlength=classes)
    assert np.all(np.abs(test - whole * n_test / rows) <= 1)
    # Standardized with the training statistics.
    np.testing.assert_allclose(data.A_train.mean(axis=0), 0, atol=1e-12)
    spread = data.A_train.std(axis=0)
    assert np.all(np.isclose(spread, 1) | np.isclose(spread, 0))


def test_split_is_deterministic_under_the_seed():
    first = load_dataset({"name": "wine"}, seed=3)
    again = load_dataset({"name": "wine"}, seed=3)
    other = load_dataset({"name": "wine"}, seed=4)
    np.testing.assert_array_equal(first.A_train, again.A_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert not np.array_equal(first.A_test, other.A_test)


def test_common_options():
    data = load_dataset(
        {
            "name": "iris",
            "test_fraction": 0.5,
            "dtype": "float32",
            "standardize": False,
            "partition": {"method": "iid"},
            "batch": 8,
        },
        seed=0,
    )
    assert data.A_train.dtype == np.float32 and data.n_train == 75 and data.n_test == 75
    assert data.A_train.min() >= 0  # raw iris measurements are positive
    everything = load_dataset({"name": "iris", "test_fraction": 0}, seed=0)
    assert everything.n_train == 150 and everything.A_test.shape == (0, 4)
    assert load_dataset("iris", seed=0).n_train == 120  # a bare name is {"name": name}


def test_synthetic_linear():
    spec = {"name": "synthetic-linear", "samples": 400, "features": 5, "noise": 0.0}
    data = load_dataset(spec, seed=1)
    assert data.task == "regression" and data.n_classes is None
    assert data.A_train.shape == (320, 5) and data.y_train.dtype == np.float64
    # Without heterogeneity or noise, one linear model fits exactly.
    A = np.vstack([data.A_train, data.A_test])
    y = np.concatenate([data.y_train, data.y_test])
    residual = y - A @ np.linalg.lstsq(A, y, rcond=None)[0]
    assert np.max(np.abs(residual)) < 1e-10
    np.testing.assert_array_equal(load_dataset(spec, seed=1).y_train, data.y_train)
    assert not np.array_equal(load_dataset(spec, seed=2).y_train, data.y_train)


def test_synthetic_heterogeneity_shifts_the_groups():
    def group_mean_spread(heterogeneity):
        data = load_dataset(
            {
                "name": "synthetic-classification",
                "samples": 2000,
                "features": 4,
                "classes": 3,
                "heterogeneity": heterogeneity,
                "groups": 5,
            },
            seed=0,
        )
        groups = data.partition_labels()
        assert groups is data.groups_train and set(groups) == set(range(5))
        means = np.array([data.A_train[groups == g].mean(axis=0) for g in range(5)])
        return np.linalg.norm(means - means.mean(axis=0), axis=1).mean()

    assert group_mean_spread(0.0) < 0.2
    assert group_mean_spread(3.0) > 1.5


def test_synthetic_classification_heterogeneous_workers_by_group():
    data = load_dataset(
        {
            "name": "synthetic-classification",
            "samples": 1000,
            "classes": 4,
            "heterogeneity": 2.0,
            "groups": 8,
        },
        seed=0,
    )
    assert data.n_classes == 4 and data.y_train.dtype == np.int64
    parts = partition_from_spec(data, {"method": "label", "shards": 1}, 8, seed=0)
    _assert_cover(parts, data.n_train)
    # Group sizes vary around one shard, so a shard can straddle a small group: <= 3.
    groups_seen = _labels_per_worker(data.groups_train, parts)
    assert max(groups_seen) <= 3 and np.mean(groups_seen) <= 2.5
    # Shards of ~100 rows, classes of ~200: each shard touches at most two classes.
    by_label = partition_from_spec(data, {"method": "label", "shards": 1, "by": "label"}, 8, seed=0)
    assert max(_labels_per_worker(data.y_train, by_label)) <= 2


def test_libsvm_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    A = np.round(rng.standard_normal((60, 6)), 3)
    A[A < 0.5] = 0.0
    y = np.where(rng.random(60) > 0.5, 1, -1)
    path = tmp_path / "toy.svm"
    dump_svmlight_file(A, y, str(path))
    data = load_dataset({"name": "libsvm", "path": str(path), "test_fraction": 0}, seed=0)
    assert isinstance(data.A_train, np.ndarray)
    np.testing.assert_allclose(data.A_train, A)
    np.testing.assert_array_equal(data.y_train, (y > 0).astype(np.int64))
    assert data.n_classes == 2
    wider = load_dataset({"name": "libsvm", "path": str(path), "n_features": 9}, seed=0)
    assert wider.n_features == 9
    with pytest.raises(ConfigError, match="missing.svm") as info:
        load_dataset({"name": "libsvm", "path": str(tmp_path / "missing.svm")}, seed=0)
    assert info.value.key == "data.path"


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((40, 3))
    labels = rng.integers(2, size=40) * 5 + 3  # values 3 and 8
    path = tmp_path / "arrays.npz"
    np.savez(path, features=A, labels=labels, target=A[:, 0] * 2.0)
    data = load_dataset(
        {"name": "npz", "path": str(path), "x": "features", "y": "labels", "test_fraction": 0},
        seed=0,
    )
    np.testing.assert_array_equal(data.A_train, A)
    np.testing.assert_array_equal(data.y_train, (labels == 8).astype(np.int64))
    assert data.task == "classification" and data.n_classes == 2
    regression = load_dataset(
        {"name": "npz", "path": str(path), "x": "features", "y": "target"}, seed=0
    )
    assert regression.task == "regression" and regression.n_classes is None
    with pytest.raises(ConfigError, match="'X' not in .*features, labels, target") as info:
        load_dataset({"name": "npz", "path": str(path)}, seed=0)
    assert info.value.key == "data.x"


def test_load_dataset_errors():
    with pytest.raises(ConfigError, match="did you mean 'digits'") as info:
        load_dataset({"name": "digts"}, seed=0)
    assert info.value.key == "data.name"
    with pytest.raises(ConfigError, match="did you mean 'samples'") as info:
        load_dataset({"name": "synthetic-linear", "sample": 10}, seed=0)
    assert info.value.key == "data.sample"
    with pytest.raises(ConfigError, match="1.5") as info:
        load_dataset({"name": "iris", "test_fraction": 1.5}, seed=0)
    assert info.value.key == "data.test_fraction"
    with pytest.raises(ConfigError, match="float16") as info:
        load_dataset({"name": "iris", "dtype": "float16"}, seed=0)
    assert info.value.key == "data.dtype"
    with pytest.raises(ConfigError, match="needs a 'path'"):
        load_dataset({"name": "npz"}, seed=0)
    with pytest.raises(ConfigError, match="-3") as info:
        load_dataset({"name": "synthetic-classification", "samples": -3}, seed=0)
    assert info.value.key == "data.samples"
    with pytest.raises(ConfigError) as info:
        load_dataset(
            {"name": "synthetic-classification", "samples": 4, "classes": 3, "test_fraction": 0.25},
            seed=0,
        )
    assert info.value.key == "data.test_fraction"


def test_list_datasets():
    rows = list_datasets()
    names = [name for name, _ in rows]
    assert {
        "digits",
        "breast-cancer",
        "iris",
        "wine",
        "synthetic-linear",
        "synthetic-classification",
        "libsvm",
        "npz",
        "cifar10",
    } == set(names)
    assert all(description for _, description in rows)


# ----------------------------------------------------------------------------- partitions


def test_iid_partition_is_balanced_cover():
    y = np.repeat(np.arange(5), 21)
    parts = partition(y, 8, "iid", seed=0)
    _assert_cover(parts, 105)
    sizes = [part.size for part in parts]
    assert max(sizes) - min(sizes) <= 1
    assert parts[0].tolist() == sorted(parts[0].tolist())
    again = partition(y, 8, "iid", seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition(y, 8, "iid", seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_label_partition_gives_few_labels_per_worker():
    y = load_dataset({"name": "digits"}, seed=0).y_train
    parts = partition(y, 10, "label", shards=2, seed=0)
    _assert_cover(parts, y.size)
    assert max(_labels_per_worker(y, parts)) <= 4
    assert np.mean(_labels_per_worker(y, parts)) < 3.5
    iid = partition(y, 10, "iid", seed=0)
    assert min(_labels_per_worker(y, iid)) == 10


def _skew(y, parts):
    """Mean total-variation distance between each worker's label mix and the global mix."""
    global_mix = np.bincount(y) / y.size
    return np.mean(
        [
            0.5 * np.abs(np.bincount(y[p], minlength=global_mix.size) / p.size - global_mix).sum()
            for p in parts
        ]
    )


def test_dirichlet_small_alpha_is_more_skewed():
    y = np.repeat(np.arange(10), 100)
    skewed = partition(y, 20, "dirichlet", alpha=0.05, seed=0)
    mild = partition(y, 20, "dirichlet", alpha=100.0, seed=0)
    for parts in (skewed, mild):
        _assert_cover(parts, y.size)
    assert _skew(y, skewed) > 0.6
    assert _skew(y, mild) < 0.15


def test_dirichlet_fix_up_leaves_no_worker_empty():
    y = np.repeat(np.arange(2), 15)
    for seed in range(5):
        _assert_cover(partition(y, 30, "dirichlet", alpha=0.01, seed=seed), 30)


def test_partition_errors():
    y = np.arange(10) % 2
    with pytest.raises(ConfigError, match="0") as info:
        partition(y, 0, seed=0)
    assert info.value.key == "workers"
    with pytest.raises(ConfigError, match="11 workers") as info:
        partition(y, 11, seed=0)
    assert info.value.key == "workers"
    with pytest.raises(ConfigError, match="did you mean 'dirichlet'") as info:
        partition(y, 2, "dirichlet ", seed=0)
    assert info.value.key == "data.partition.method"
    with pytest.raises(ConfigError, match="-0.5") as info:
        partition(y, 2, "dirichlet", alpha=-0.5, seed=0)
    assert info.value.key == "data.partition.alpha"
    with pytest.raises(ConfigError, match="0") as info:
        partition(y, 2, "dirichlet", alpha=0, seed=0)
    assert info.value.key == "data.partition.alpha"
    with pytest.raises(ConfigError, match="12 shards") as info:
        partition(y, 4, "label", shards=3, seed=0)
    assert info.value.key == "data.partition.shards"
    data = load_dataset("iris", seed=0)
    with pytest.raises(ConfigError, match="did you mean 'alpha'") as info:
        partition_from_spec(data, {"method": "dirichlet", "alpah": 1}, 3, seed=0)
    assert info.value.key == "data.partition.alpah"
    with pytest.raises(ConfigError, match="no groups") as info:
        partition_from_spec(data, {"by": "group"}, 3, seed=0)
    assert info.value.key == "data.partition.by"
