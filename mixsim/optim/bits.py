"""Message sizes in bits, the way the seeds count them (seed 003 Table 2).

Every value costs 32 bits and every index 32 bits, whatever the dtype of the simulation
(float64 runs are accounted as if sent in float32, so bit curves do not depend on the
simulation precision). A sparse message is encoded either as an index list
(``32 k`` values + ``32 k`` indices) or as a bitmap (``d`` bits + ``32 k`` values),
whichever is smaller. A message made of several layers (per-layer compression) costs the
sum of its layers' costs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VALUE_BITS", "INDEX_BITS", "dense_bits", "sparse_bits", "sign_bits", "message_bits"]

#: Bits of one transmitted value.
VALUE_BITS = 32
#: Bits of one transmitted index.
INDEX_BITS = 32


def dense_bits(d: int) -> int:
    """Size of an uncompressed vector of length ``d``.

    Parameters
    ----------
    d : int
        Length of the vector.

    Returns
    -------
    int
        ``32 d``.

    Examples
    --------
    >>> dense_bits(10)
    320
    """
    return VALUE_BITS * int(d)


def sparse_bits(nnz: int, d: int) -> int:
    """Size of a sparse vector with ``nnz`` transmitted entries out of ``d``.

    Parameters
    ----------
    nnz : int
        Number of transmitted entries (``k`` for top-k / rand-k, the non-zeros for the
        random sparsifiers).
    d : int
        Length of the vector.

    Returns
    -------
    int
        ``min(32 nnz + 32 nnz, d + 32 nnz)``: index list or bitmap, whichever is smaller;
        0 when nothing is sent.

    Examples
    --------
    >>> sparse_bits(1, 1000)
    64
    >>> sparse_bits(100, 1000)
    4200
    """
    nnz = int(nnz)
    if nnz <= 0:
        return 0
    return min((VALUE_BITS + INDEX_BITS) * nnz, int(d) + VALUE_BITS * nnz)


def sign_bits(d: int) -> int:
    """Size of a scaled-sign message: one float scale and one bit per coordinate.

    Parameters
    ----------
    d : int
        Length of the vector.

    Returns
    -------
    int
        ``32 + d`` (seed 003, footnote 5).

    Examples
    --------
    >>> sign_bits(1000)
    1032
    """
    return VALUE_BITS + int(d)


def message_bits(state: Any) -> int:
    """Bits of the message(s) produced by the last update that returned ``state``.

    Walks a (chained, nested) transformation state and adds up every ``bits`` field: each
    compressor (and 1-bit Adam) records the size of the message it produced there. Memory
    schemes hold their compressor's state, so nothing is counted twice.

    Parameters
    ----------
    state : NamedTuple or tuple
        A state returned by ``update`` of any transformation of :mod:`mixsim.optim`.

    Returns
    -------
    int
        Total bits; 0 if the state holds no compressor (nothing was sent).

    Examples
    --------
    >>> import numpy as np
    >>> from mixsim.optim import chain, error_feedback, top_k, amsgrad
    >>> opt = chain(error_feedback(top_k(2)), amsgrad(1e-3))
    >>> state = opt.init(np.zeros(8))
    >>> _, state = opt.update(np.arange(8.0), state)
    >>> message_bits(state)  # min(index list 2 * 64, bitmap 8 + 2 * 32)
    72
    """
    total = 0
    fields = getattr(state, "_fields", None)
    if fields is not None:
        for name, value in zip(fields, state, strict=True):
            if name == "bits":
                total += int(value)
            else:
                total += message_bits(value)
    elif isinstance(state, tuple | list):
        total += sum(message_bits(item) for item in state)
    return total
