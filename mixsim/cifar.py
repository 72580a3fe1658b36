"""The CIFAR-10 python batches, read from a local folder (never downloaded).

The format (https://www.cs.toronto.edu/~kriz/cifar.html): each file is a pickled dict with
``b"data"``, a ``uint8`` array of shape ``(N, 3072)`` (per image the 1024 red, then the
1024 green, then the 1024 blue values of a 32 x 32 image, row-major, so a row reshapes to
``(3, 32, 32)``), and ``b"labels"``, N integers in ``0 .. 9``. Training files are
``data_batch_1`` to ``data_batch_5`` (10,000 images each), the test file ``test_batch``.

The files are pickles: they are read with an unpickler that builds only dicts, lists,
strings, bytes, numbers and NumPy arrays, so a file cannot run code.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np

from mixsim.errors import ConfigError

__all__ = ["load_cifar10", "read_batch"]

_PIXELS = 3 * 32 * 32
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1").
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one CIFAR-10 python batch file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``uint8`` images ``(N, 3072)`` and ``int64`` labels ``(N,)``.

    Raises
    ------
    ConfigError
        The file is missing, not a CIFAR-10 batch, or its arrays have the wrong shape or
        values (``key="data.path"``, the file named).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"CIFAR-10 file not found: {path}", key="data.path")
    try:
        with path.open("rb") as handle:
            batch = _SafeUnpickler(handle, encoding="bytes").load()
    except Exception as exc:
        raise ConfigError(f"{path} is not a CIFAR-10 python batch: "
                          f"{type(exc).__name__}: {exc}", key="data.path") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ConfigError(f"{path} is not a CIFAR-10 python batch (a dict with b'data' and "
                          "b'labels')", key="data.path")
    try:
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"])
    except (TypeError, ValueError) as exc:  # ragged lists, objects that are not arrays
        raise ConfigError(f"{path}: b'data' and b'labels' must be arrays: {exc}",
                          key="data.path") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise ConfigError(f"{path}: b'data' must be uint8 of shape (N, {_PIXELS}), got "
                          f"{data.dtype} {data.shape}", key="data.path")
    if (labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer)
            or (labels.size and (labels.min() < 0 or labels.max() > 9))):
        raise ConfigError(f"{path}: b'labels' must be {data.shape[0]} integers in 0..9, got "
                          f"{labels.dtype} {labels.shape}", key="data.path")
    return data, labels.astype(np.int64)


def load_cifar10(folder, *, train_samples: int | None = None,
                 test_samples: int | None = None):
    """Training and test images of a CIFAR-10 folder.

    Parameters
    ----------
    folder : str or Path
        Holds ``data_batch_1`` ... (every ``data_batch_<k>`` present, in order of ``k``)
        and ``test_batch``.
    train_samples, test_samples : int, optional
        Keep only the first rows (default: all).

    Returns
    -------
    tuple
        ``A_train, y_train, A_test, y_test``: ``uint8`` images ``(N, 3072)`` and labels.

    Raises
    ------
    ConfigError
        No such folder, no ``data_batch_*`` file, no ``test_batch``, or a malformed file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"CIFAR-10 folder not found: {folder}", key="data.path")
    numbered = []
    for path in folder.glob("data_batch_*"):
        match = re.fullmatch(r"data_batch_(\d+)", path.name)
        if match:
            numbered.append((int(match.group(1)), path))
    if not numbered:
        raise ConfigError(f"no data_batch_* file in {folder}", key="data.path")
    parts = [read_batch(path) for _, path in sorted(numbered)]
    A_train = np.concatenate([a for a, _ in parts])[:train_samples]
    y_train = np.concatenate([y for _, y in parts])[:train_samples]
    A_test, y_test = read_batch(folder / "test_batch")
    return A_train, y_train, A_test[:test_samples], y_test[:test_samples]
