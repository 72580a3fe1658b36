"""Datasets for the learning runs and their partition across workers.

:func:`load_dataset` turns the ``data`` section of a scenario into a :class:`Dataset` (train
and test split, standardized, in the requested dtype); :func:`partition` splits the training
rows across workers (iid, by label shards, or Dirichlet); :func:`partition_from_spec` does the
same from the ``data.partition`` section. Every random choice comes from the ``seed`` keyword.

Heterogeneity of the synthetic datasets is realized in two steps: the generator draws every
sample from one of ``groups`` shifted distributions (``heterogeneity`` sets the size of the
shift) and records the group id in :attr:`Dataset.groups_train`; the partition then gives each
worker rows from few groups (``method: label`` or ``dirichlet`` on
:meth:`Dataset.partition_labels`), so workers see differently shifted data. With
``heterogeneity: 0`` the groups are identically distributed and every partition is iid in
distribution.
"""

from __future__ import annotations

import difflib
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from mixsim import _memory
from mixsim.errors import ConfigError

__all__ = [
    "Dataset",
    "load_dataset",
    "list_datasets",
    "partition",
    "partition_from_spec",
]

#: Feature matrices with at most this many entries are made dense when read from a LibSVM file.
DENSE_LIMIT = 20_000_000

_PARTITION_METHODS = ("iid", "label", "dirichlet")


@dataclass
class Dataset:
    """A train/test split ready for a problem.

    Attributes
    ----------
    A_train, A_test : numpy.ndarray or scipy.sparse.csr_matrix
        Features, shapes ``(n_train, p)`` and ``(n_test, p)`` (``n_test`` may be 0).
    y_train, y_test : numpy.ndarray
        Class indices ``0 .. n_classes - 1`` (``int64``) for classification, targets (feature
        dtype) for regression.
    n_classes : int or None
        Number of classes (None for regression).
    name : str
        Registry name of the dataset.
    task : str
        ``"classification"`` or ``"regression"``.
    groups_train, groups_test : numpy.ndarray or None
        Synthetic datasets only: the id of the shifted distribution each row was drawn from.
    sample_shape : tuple of int or None
        Image datasets: the ``(channels, height, width)`` a row is, row-major (``digits``
        ``(1, 8, 8)``, ``cifar10`` ``(3, 32, 32)``); the rows stay flat ``(m, p)`` and a
        torch model receives them reshaped to ``(m, C, H, W)``. None for tabular data.
    """

    A_train: Any
    y_train: np.ndarray
    A_test: Any
    y_test: np.ndarray
    n_classes: int | None
    name: str
    task: str
    groups_train: np.ndarray | None = None
    groups_test: np.ndarray | None = None
    sample_shape: tuple[int, ...] | None = None

    @property
    def n_features(self) -> int:
        """Number of features ``p``."""
        return int(self.A_train.shape[1])

    @property
    def n_train(self) -> int:
        """Number of training rows."""
        return int(self.A_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test rows."""
        return int(self.A_test.shape[0])

    def partition_labels(self, by: str = "auto") -> np.ndarray:
        """The per-row keys :func:`partition` should split the training rows by.

        Parameters
        ----------
        by : {"auto", "label", "group"}
            ``"label"``: the training labels (targets for regression); ``"group"``: the
            synthetic group ids; ``"auto"``: groups when the dataset has them (so the
            ``heterogeneity`` knob takes effect), labels otherwise.

        Returns
        -------
        numpy.ndarray
            Shape ``(n_train,)``.

        Raises
        ------
        ConfigError
            Unknown ``by``, or ``"group"`` on a dataset without groups
            (``key="data.partition.by"``).
        """
        if by not in ("auto", "label", "group"):
            raise ConfigError(
                f"unknown value {by!r}; allowed: auto, label, group", key="data.partition.by"
            )
        if by == "group" and self.groups_train is None:
            raise ConfigError(
                f"dataset {self.name!r} has no groups (only the synthetic datasets do); "
                "use 'label' or 'auto'",
                key="data.partition.by",
            )
        if by == "group" or (by == "auto" and self.groups_train is not None):
            return self.groups_train
        return self.y_train


# ----------------------------------------------------------------------------- spec checks


def _close_hint(value: str, allowed) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _integer(spec, key, default, minimum):
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}, got {value!r}", key=f"data.{key}")
    return int(value)


def _number(spec, key, default, minimum=0.0, *, strict=False, below=None):
    value = spec.get(key, default)
    ok = not isinstance(value, bool) and isinstance(value, int | float | np.number)
    if ok:
        value = float(value)
        ok = np.isfinite(value) and (value > minimum if strict else value >= minimum)
        ok = ok and (below is None or value < below)
    if not ok:
        low = f"> {minimum}" if strict else f">= {minimum}"
        high = f" and < {below}" if below is not None else ""
        raise ConfigError(f"must be a number {low}{high}, got {spec.get(key)!r}", key=f"data.{key}")
    return value


def _path(spec) -> str:
    if "path" not in spec:
        raise ConfigError(f"dataset {spec['name']!r} needs a 'path'", key="data.path")
    path = os.fspath(spec["path"])
    if not os.path.isfile(path):
        raise ConfigError(f"file not found: {path}", key="data.path")
    return path


def _task(spec, default: str) -> str:
    task = spec.get("task", default)
    if task not in ("classification", "regression"):
        raise ConfigError(
            f"unknown task {task!r}; allowed: classification, regression", key="data.task"
        )
    return task


# ----------------------------------------------------------------------------- loaders
# Each returns (A, y, task, groups) for the whole dataset, or a _Loaded with its own test
# rows or image shape; load_dataset splits and scales.


class _Loaded(NamedTuple):
    A: Any
    y: np.ndarray
    task: str
    groups: np.ndarray | None = None
    #: Rows from here on are the dataset's own test set (no random split).
    test_start: int | None = None
    sample_shape: tuple[int, ...] | None = None


def _bundled(loader_name, sample_shape=None):
    def load(spec, rng):
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        return _Loaded(np.asarray(bunch.data, dtype=np.float64), bunch.target,
                       "classification", sample_shape=sample_shape)

    return load


def _cifar10(spec, rng):
    from mixsim.cifar import load_cifar10

    if "test_fraction" in spec:
        raise ConfigError("cifar10 has its own test set (test_batch); remove test_fraction",
                          key="data.test_fraction")
    if "path" not in spec:
        raise ConfigError("dataset 'cifar10' needs a 'path' (the folder of the python "
                          "batches)", key="data.path")
    limits = {key: _integer(spec, key, None, 1) if spec.get(key) is not None else None
              for key in ("train_samples", "test_samples")}
    A_train, y_train, A_test, y_test = load_cifar10(
        os.fspath(spec["path"]), train_samples=limits["train_samples"],
        test_samples=limits["test_samples"])
    A = np.concatenate([A_train, A_test]).astype(np.float64) / 255.0
    return _Loaded(A, np.concatenate([y_train, y_test]), "classification",
                   test_start=A_train.shape[0], sample_shape=(3, 32, 32))


def _group_shifts(rng, samples, features, groups, heterogeneity):
    """Group of every row and the per-group feature shift ``heterogeneity * N(0, I)``."""
    membership = rng.integers(groups, size=samples)
    shifts = heterogeneity * rng.standard_normal((groups, features))
    return membership, shifts


def _require_table(samples: int, features: int) -> None:
    # The generator holds the features, their shifts and the standardized split: three
    # float64 tables of samples x features.
    _memory.require(3 * 8.0 * samples * features,
                    f"{samples:,} samples x {features:,} features", key="data.samples")


def _synthetic_linear(spec, rng):
    samples = _integer(spec, "samples", 1000, 2)
    features = _integer(spec, "features", 20, 1)
    _require_table(samples, features)
    noise = _number(spec, "noise", 0.1)
    heterogeneity = _number(spec, "heterogeneity", 0.0)
    groups = _integer(spec, "groups", 10, 1)
    membership, shifts = _group_shifts(rng, samples, features, groups, heterogeneity)
    # Shared weights with variance 1/p keep the targets of order one; each group also
    # perturbs them, so heterogeneous groups disagree on the model and not only on the inputs.
    weights = rng.standard_normal(features) / np.sqrt(features)
    perturbations = heterogeneity * rng.standard_normal((groups, features)) / np.sqrt(features)
    A = rng.standard_normal((samples, features)) + shifts[membership]
    y = np.einsum("ij,ij->i", A, weights + perturbations[membership])
    y += noise * rng.standard_normal(samples)
    return A, y, "regression", membership


def _synthetic_classification(spec, rng):
    samples = _integer(spec, "samples", 1000, 2)
    features = _integer(spec, "features", 20, 1)
    _require_table(samples, features)
    classes = _integer(spec, "classes", 2, 2)
    heterogeneity = _number(spec, "heterogeneity", 0.0)
    groups = _integer(spec, "groups", 10, 1)
    separation = _number(spec, "separation", 2.0)
    membership, shifts = _group_shifts(rng, samples, features, groups, heterogeneity)
    # Centroids scaled by 1/sqrt(p): the distance between classes does not grow with p.
    centroids = separation * rng.standard_normal((classes, features)) / np.sqrt(features)
    labels = rng.integers(classes, size=samples)
    A = centroids[labels] + shifts[membership] + rng.standard_normal((samples, features))
    return A, labels, "classification", membership


def _libsvm(spec, rng):
    from sklearn.datasets import load_svmlight_file

    path = _path(spec)
    n_features = spec.get("n_features")
    if n_features is not None:
        n_features = _integer(spec, "n_features", None, 1)
    try:
        A, y = load_svmlight_file(path, n_features=n_features, dtype=np.float64)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot read LibSVM file {path}: {exc}", key="data.path") from None
    if A.shape[0] * A.shape[1] <= DENSE_LIMIT:
        A = A.toarray()
    return A, y, _task(spec, "classification"), None


def _npz(spec, rng):
    path = _path(spec)
    x_key, y_key = spec.get("x", "X"), spec.get("y", "y")
    # np.load takes a file that is not a zip archive for a pickle (and refuses it with a
    # message about pickles): say what is wrong instead.
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{path} is not a .npz file (a zip archive of .npy arrays)",
                          key="data.path")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot read npz file {path}: {exc}", key="data.path") from None
    with archive:
        for option, key in (("x", x_key), ("y", y_key)):
            if key not in archive.files:
                raise ConfigError(
                    f"array {key!r} not in {path}; it holds: {', '.join(archive.files)}",
                    key=f"data.{option}",
                )
        arrays = []
        for option, key in (("x", x_key), ("y", y_key)):
            try:
                arrays.append(archive[key])
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                # Object arrays are pickles: never unpickled (a file could run code).
                what = "holds Python objects (never unpickled): save numbers" if \
                    "allow_pickle" in str(exc) else f"cannot be read: {exc}"
                raise ConfigError(f"array {key!r} of {path} {what}",
                                  key=f"data.{option}") from None
        A, y = arrays
    if A.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise ConfigError(f"{path}: arrays {x_key!r} and {y_key!r} must hold numbers, got "
                          f"dtypes {A.dtype} and {y.dtype}", key="data.x")
    if A.ndim != 2 or y.ndim != 1 or A.shape[0] != y.shape[0]:
        raise ConfigError(
            f"{path}: need {x_key!r} of shape (n, p) and {y_key!r} of shape (n,), got "
            f"{A.shape} and {y.shape}",
            key="data.x",
        )
    default_task = (
        "classification" if np.issubdtype(y.dtype, np.integer) or y.dtype == bool else "regression"
    )
    return np.asarray(A, dtype=np.float64), y, _task(spec, default_task), None


_COMMON_KEYS = ("name", "test_fraction", "standardize", "dtype", "partition", "batch")

# name -> (loader, extra keys, standardize by default, one-line description)
_DATASETS = {
    "digits": (
        _bundled("load_digits", (1, 8, 8)),
        (),
        True,
        "scikit-learn 8x8 handwritten digits: 1797 x 64 (images 1 x 8 x 8), 10 classes",
    ),
    "cifar10": (
        _cifar10,
        ("path", "train_samples", "test_samples"),
        True,
        "CIFAR-10 python batches in a local folder (path; never downloaded): 3 x 32 x 32",
    ),
    "breast-cancer": (
        _bundled("load_breast_cancer"),
        (),
        True,
        "scikit-learn Wisconsin breast cancer: 569 x 30, 2 classes",
    ),
    "iris": (_bundled("load_iris"), (), True, "scikit-learn iris: 150 x 4, 3 classes"),
    "wine": (_bundled("load_wine"), (), True, "scikit-learn wine: 178 x 13, 3 classes"),
    "synthetic-linear": (
        _synthetic_linear,
        ("samples", "features", "noise", "heterogeneity", "groups"),
        False,
        "Gaussian linear regression; heterogeneity shifts inputs and weights per group",
    ),
    "synthetic-classification": (
        _synthetic_classification,
        ("samples", "features", "classes", "heterogeneity", "groups", "separation"),
        False,
        "Gaussian class clusters; heterogeneity shifts the inputs per group",
    ),
    "libsvm": (
        _libsvm,
        ("path", "n_features", "task"),
        False,
        "a LibSVM/svmlight file (path), dense when small",
    ),
    "npz": (
        _npz,
        ("path", "x", "y", "task"),
        False,
        "arrays x (default 'X') and y (default 'y') of a NumPy .npz file (path)",
    ),
}


def list_datasets() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every dataset :func:`load_dataset` knows.

    Returns
    -------
    list of (str, str)
    """
    return [(name, entry[3]) for name, entry in _DATASETS.items()]


# ----------------------------------------------------------------------------- load


def _standardize(A_train, A_test):
    """Scale by the training mean and standard deviation (constant features: by 1)."""
    mean = A_train.mean(axis=0)
    scale = A_train.std(axis=0)
    scale[scale == 0] = 1.0
    return (A_train - mean) / scale, (A_test - mean) / scale


def load_dataset(spec: Mapping[str, Any] | str, *, seed: int | None) -> Dataset:
    """Load (or generate) a dataset and split it into train and test sets.

    Parameters
    ----------
    spec : mapping or str
        The ``data`` section of a scenario; a string is read as ``{"name": spec}``. Keys:

        ``name``
            ``"digits"``, ``"breast-cancer"``, ``"iris"``, ``"wine"`` (bundled with
            scikit-learn), ``"synthetic-linear"`` (``samples`` 1000, ``features`` 20,
            ``noise`` 0.1, ``heterogeneity`` 0, ``groups`` 10), ``"synthetic-classification"``
            (``samples``, ``features``, ``classes`` 2, ``heterogeneity``, ``groups``,
            ``separation`` 2.0), ``"libsvm"`` (``path``, optional ``n_features``, ``task``) or
            ``"npz"`` (``path``, ``x`` = "X", ``y`` = "y", ``task`` inferred from the dtype of
            ``y``) or ``"cifar10"`` (``path``: a folder of the CIFAR-10 python batches,
            ``data_batch_*`` for training and ``test_batch`` as the test set; optional
            ``train_samples`` and ``test_samples`` keep the first rows; pixels scaled to
            ``[0, 1]``; never downloaded).
        ``test_fraction``
            Share of rows held out, in ``[0, 1)`` (default 0.2; 0 keeps every row for
            training). Classification splits are stratified by label.
        ``standardize``
            Subtract the training mean and divide by the training standard deviation (features
            constant on the training set are only centred). Default true for the four bundled
            datasets, false otherwise (synthetic features are already on unit scale; files
            are used as given). Not available for sparse LibSVM matrices.
        ``dtype``
            ``"float64"`` (default) or ``"float32"``, the dtype of the features (and of the
            regression targets).
        ``partition``, ``batch``
            Accepted and ignored here (read by :func:`partition_from_spec` and the runner).
    seed : int or None
        Seed of the synthetic data and of the split.

    Returns
    -------
    Dataset
        Classification labels are renumbered ``0 .. n_classes - 1`` in sorted order of the
        original values (a LibSVM ``-1 / +1`` file becomes ``0 / 1``).

    Raises
    ------
    ConfigError
        Unknown name or key (with the closest allowed one), a value out of range, a missing
        file or array, or a split that cannot be stratified (``key="data.<key>"``).

    Examples
    --------
    >>> data = load_dataset({"name": "iris", "test_fraction": 0.2}, seed=0)
    >>> data.A_train.shape, data.A_test.shape, data.n_classes
    ((120, 4), (30, 4), 3)
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(f"the data section needs a 'name', got {spec!r}", key="data.name")
    name = spec["name"]
    if name not in _DATASETS:
        raise ConfigError(
            f"unknown dataset {name!r}; allowed: {', '.join(_DATASETS)}"
            f"{_close_hint(name, _DATASETS)}",
            key="data.name",
        )
    loader, extra_keys, standardize_default, _ = _DATASETS[name]
    allowed = (*_COMMON_KEYS, *extra_keys)
    for key in spec:
        if key not in allowed:
            raise ConfigError(
                f"dataset {name!r} takes no key {key!r}; allowed: {', '.join(allowed)}"
                f"{_close_hint(key, allowed)}",
                key=f"data.{key}",
            )
    test_fraction = _number(spec, "test_fraction", 0.2, below=1.0)
    standardize = spec.get("standardize", standardize_default)
    if not isinstance(standardize, bool):
        raise ConfigError(f"must be true or false, got {standardize!r}", key="data.standardize")
    dtype = spec.get("dtype", "float64")
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"unknown dtype {dtype!r}; allowed: float32, float64", key="data.dtype")

    generate_seed, split_seed = np.random.SeedSequence(seed).spawn(2)
    loaded = _Loaded(*loader(spec, np.random.default_rng(generate_seed)))
    A, y, task, groups = loaded.A, loaded.y, loaded.task, loaded.groups
    _check_values(A, y, task, spec)
    n_classes = None
    if task == "classification":
        _, y = np.unique(y, return_inverse=True)
        y = y.astype(np.int64).ravel()
        n_classes = int(y.max()) + 1
        if n_classes < 2:
            raise ConfigError(f"dataset {name!r} has a single class", key="data.name")
    else:
        y = np.asarray(y, dtype=dtype)

    if loaded.test_start is None:
        train, test = _split(y, task, test_fraction, split_seed)
    else:
        train, test = np.arange(loaded.test_start), np.arange(loaded.test_start, y.shape[0])
    A_train, A_test = A[train], A[test]
    if standardize:
        if sp.issparse(A):
            raise ConfigError(
                f"cannot standardize the sparse matrix of {name!r} without densifying it; "
                "set standardize: false",
                key="data.standardize",
            )
        A_train, A_test = _standardize(A_train, A_test)
    return Dataset(
        A_train=A_train.astype(dtype),
        y_train=y[train],
        A_test=A_test.astype(dtype),
        y_test=y[test],
        n_classes=n_classes,
        name=name,
        task=task,
        groups_train=None if groups is None else groups[train],
        groups_test=None if groups is None else groups[test],
        sample_shape=loaded.sample_shape,
    )


def _check_values(A, y, task, spec) -> None:
    """Refuse data that cannot be learned from: too few rows, non-finite values."""
    origin = spec.get("path", f"dataset {spec['name']!r}")
    key = "data.path" if "path" in spec else "data.name"
    if A.shape[0] < 2:
        raise ConfigError(f"{origin} holds {A.shape[0]} rows; at least 2 are needed", key=key)
    values = A.data if sp.issparse(A) else A
    bad = ~np.isfinite(values)
    if bad.any():
        if sp.issparse(A):
            coo = A.tocoo()
            row, column = int(coo.row[bad][0]), int(coo.col[bad][0])
        else:
            row, column = (int(i) for i in np.argwhere(bad)[0])
        raise ConfigError(f"{origin} has {int(bad.sum())} non-finite feature values (the "
                          f"first, {values[bad][0]}, at row {row}, column {column})", key=key)
    if task == "regression" and not np.all(np.isfinite(np.asarray(y, dtype=np.float64))):
        raise ConfigError(f"{origin} has non-finite targets", key=key)


def _split(y, task, test_fraction, split_seed):
    """Train and test row indices (sorted), stratified by label for classification."""
    indices = np.arange(y.shape[0])
    if test_fraction == 0:
        return indices, indices[:0]
    from sklearn.model_selection import train_test_split

    try:
        train, test = train_test_split(
            indices,
            test_size=test_fraction,
            random_state=int(split_seed.generate_state(1)[0]),
            stratify=y if task == "classification" else None,
        )
    except ValueError as exc:
        raise ConfigError(
            f"cannot split {y.shape[0]} rows with test_fraction={test_fraction}: {exc}",
            key="data.test_fraction",
        ) from exc
    return np.sort(train), np.sort(test)


# ----------------------------------------------------------------------------- partition


def partition(
    y: np.ndarray,
    n_workers: int,
    method: str = "iid",
    *,
    alpha: float = 0.5,
    shards: int = 2,
    seed: int | None = None,
) -> list[np.ndarray]:
    """Split row indices ``0 .. len(y) - 1`` across workers.

    Parameters
    ----------
    y : numpy.ndarray
        One key per row: labels, or group ids (see :meth:`Dataset.partition_labels`).
    n_workers : int
        Number of workers (``1 <= n_workers <= len(y)``).
    method : {"iid", "label", "dirichlet"}
        ``"iid"``: a random permutation cut into ``n_workers`` parts whose sizes differ by at
        most one. ``"label"`` (McMahan et al. 2017 shards): rows sorted by key (ties in random
        order), cut into ``n_workers * shards`` contiguous shards of near-equal size, and each
        worker gets ``shards`` random shards. A shard is a contiguous range of keys: when
        every key has at least as many rows as a shard (``len(y) / (n_workers * shards)``) it
        touches at most two keys, so a worker sees at most ``2 * shards`` keys (a key with
        fewer rows can add a third to a shard). Keys may be continuous (regression targets:
        each worker gets a few ranges of the target).
        ``"dirichlet"`` (Hsu et al. 2019): for every key, shares ``q ~ Dirichlet(alpha, ...,
        alpha)`` over workers and the key's rows split in those proportions; small ``alpha``
        gives each worker few keys, large ``alpha`` approaches iid. Workers left empty then
        take one random row from the currently largest worker each, so every worker has at
        least one row (a deterministic fix-up instead of resampling, which may not terminate
        for tiny ``alpha``).
    alpha : float, optional
        Dirichlet concentration (> 0), used by ``"dirichlet"`` only. Default 0.5.
    shards : int, optional
        Shards per worker (>= 1), used by ``"label"`` only. Default 2; needs
        ``n_workers * shards <= len(y)``.
    seed : int or None
        Seed of the random assignment.

    Returns
    -------
    list of numpy.ndarray
        ``n_workers`` sorted ``int64`` index arrays: disjoint, covering every row, none empty.

    Raises
    ------
    ConfigError
        ``n_workers < 1`` or more workers than rows (``key="workers"``), unknown method (with
        the closest one, ``key="data.partition.method"``), ``alpha <= 0``
        (``key="data.partition.alpha"``), bad ``shards`` (``key="data.partition.shards"``).

    Examples
    --------
    >>> parts = partition(np.array([0, 0, 1, 1, 2, 2]), 3, "iid", seed=0)
    >>> sorted(np.concatenate(parts).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be one-dimensional, got shape {y.shape}")
    n_samples = y.shape[0]
    if isinstance(n_workers, bool) or not isinstance(n_workers, int | np.integer) or n_workers < 1:
        raise ConfigError(
            f"the number of workers must be an integer >= 1, got {n_workers!r}", key="workers"
        )
    if n_workers > n_samples:
        raise ConfigError(
            f"{n_workers} workers but only {n_samples} training rows; every worker needs at "
            "least one",
            key="workers",
        )
    if method not in _PARTITION_METHODS:
        raise ConfigError(
            f"unknown partition method {method!r}; allowed: {', '.join(_PARTITION_METHODS)}"
            f"{_close_hint(method, _PARTITION_METHODS)}",
            key="data.partition.method",
        )
    rng = np.random.default_rng(seed)
    if method == "iid":
        parts = np.array_split(rng.permutation(n_samples), n_workers)
    elif method == "label":
        if isinstance(shards, bool) or not isinstance(shards, int | np.integer) or shards < 1:
            raise ConfigError(
                f"must be an integer >= 1, got {shards!r}", key="data.partition.shards"
            )
        if n_workers * shards > n_samples:
            raise ConfigError(
                f"{n_workers} workers x {shards} shards = {n_workers * shards} shards but only "
                f"{n_samples} rows; lower shards",
                key="data.partition.shards",
            )
        parts = _label_shards(y, n_workers, int(shards), rng)
    else:
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, int | float | np.number)
            or not (np.isfinite(alpha) and alpha > 0)
        ):
            raise ConfigError(f"must be a number > 0, got {alpha!r}", key="data.partition.alpha")
        parts = _dirichlet(y, n_workers, float(alpha), rng)
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def _label_shards(y, n_workers, shards, rng):
    # A random permutation before the stable sort puts rows of equal key in random order.
    shuffled = rng.permutation(y.shape[0])
    order = shuffled[np.argsort(y[shuffled], kind="stable")]
    pieces = np.array_split(order, n_workers * shards)
    assignment = rng.permutation(n_workers * shards).reshape(n_workers, shards)
    return [np.concatenate([pieces[s] for s in row]) for row in assignment]


def _dirichlet(y, n_workers, alpha, rng):
    parts: list[list[np.ndarray]] = [[] for _ in range(n_workers)]
    for key in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == key))
        shares = rng.dirichlet(np.full(n_workers, alpha))
        cuts = np.round(np.cumsum(shares)[:-1] * rows.shape[0]).astype(np.int64)
        for worker, piece in enumerate(np.split(rows, cuts)):
            parts[worker].append(piece)
    merged = [np.concatenate(pieces) for pieces in parts]
    for worker in range(n_workers):
        if merged[worker].size == 0:
            donor = int(np.argmax([part.size for part in merged]))
            take = int(rng.integers(merged[donor].size))
            merged[worker] = merged[donor][take : take + 1]
            merged[donor] = np.delete(merged[donor], take)
    return merged


def partition_from_spec(
    dataset: Dataset, spec: Mapping[str, Any] | None, n_workers: int, *, seed: int | None
) -> list[np.ndarray]:
    """Partition the training rows of ``dataset`` as the ``data.partition`` section says.

    Parameters
    ----------
    dataset : Dataset
        The data (its training rows are partitioned).
    spec : mapping or None
        Keys ``method`` (default ``"iid"``), ``alpha``, ``shards`` (see :func:`partition`) and
        ``by`` (``"auto"``, ``"label"`` or ``"group"``, see :meth:`Dataset.partition_labels`).
        None means ``{"method": "iid"}``.
    n_workers : int
        Number of workers.
    seed : int or None
        Seed of the assignment.

    Returns
    -------
    list of numpy.ndarray
        As :func:`partition`.

    Raises
    ------
    ConfigError
        Unknown key (``key="data.partition.<key>"``) and everything :func:`partition` raises.
    """
    spec = dict(spec or {})
    allowed = ("method", "alpha", "shards", "by")
    for key in spec:
        if key not in allowed:
            raise ConfigError(
                f"partition takes no key {key!r}; allowed: {', '.join(allowed)}"
                f"{_close_hint(key, allowed)}",
                key=f"data.partition.{key}",
            )
    keys = dataset.partition_labels(spec.pop("by", "auto"))
    method = spec.pop("method", "iid")
    return partition(keys, n_workers, method, seed=seed, **spec)
