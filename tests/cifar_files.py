"""Small files in the CIFAR-10 python-batch format, written by the tests (no download)."""

import pickle

import numpy as np


def write_batch(path, images: np.ndarray, labels) -> None:
    """One batch file: a protocol-2 pickle of the dict the CIFAR-10 site describes."""
    batch = {b"batch_label": b"test", b"labels": [int(v) for v in labels],
             b"data": np.asarray(images, dtype=np.uint8),
             b"filenames": [b"%d.png" % i for i in range(len(labels))]}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def write_folder(folder, train_per_batch=(12, 8), test=10, seed=0):
    """``data_batch_1..k`` with the given sizes and a ``test_batch``; random pixels, labels
    cycling through 0..9. Returns the images and labels written, in file order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, size in enumerate(train_per_batch, start=1):
        images = rng.integers(0, 256, (size, 3072), dtype=np.uint8)
        labels = (np.arange(size) + index) % 10
        write_batch(folder / f"data_batch_{index}", images, labels)
        written.append((images, labels))
    images = rng.integers(0, 256, (test, 3072), dtype=np.uint8)
    labels = np.arange(test) % 10
    write_batch(folder / "test_batch", images, labels)
    return written, (images, labels)
