"""Communication events as linear operators on the slots of the global state.

An :class:`Operator` changes only a few rows of ``X`` (the slots it writes); every other
row is left as it is. Each written row is a weighted sum of rows of the state *before* the
event, so copies, averages, gossip matrices and accumulations are all one form. An operator
may be restricted to a subset of coordinates (sparsified exchange): outside it, it is the
identity.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
from numba.core import types
from numba.core.dispatcher import Dispatcher
from numba.experimental import structref

from mixsim._numba import compiled_for, njit, njit_inline

__all__ = ["Operator"]


@njit_inline
def _rows_out(X, ncols, n_rows, first, g0, rows, row_ptr, cols, vals, l0, l1, lr_cols,
              lr_vals, lr_coef, buf):
    """Rows ``first .. first + n_rows`` of an operator's flat arrays on the first ``ncols``
    columns of ``X``, in place: new ``X[rows[first + a]]`` is the sparse row ``g0 + a``
    plus ``lr_coef[first + a]`` times the weighted sum ``lr_vals[l0:l1] . X[lr_cols[l0:l1]]``
    (the rank-one part, empty when ``l0 == l1``). ``buf`` holds ``n_rows x ncols``."""
    for a in range(n_rows):
        for c in range(ncols):
            buf[a, c] = 0.0
        for p in range(row_ptr[g0 + a], row_ptr[g0 + a + 1]):
            j = cols[p]
            w = vals[p]
            for c in range(ncols):
                buf[a, c] += w * X[j, c]
    if l1 > l0:
        # The rank-one part costs one pass over its sources and one over the written rows.
        for c in range(ncols):
            v = 0.0
            for q in range(l0, l1):
                v += lr_vals[q] * X[lr_cols[q], c]
            for a in range(n_rows):
                buf[a, c] += lr_coef[first + a] * v
    for a in range(n_rows):
        r = rows[first + a]
        for c in range(ncols):
            X[r, c] = buf[a, c]


@njit
def _apply_rows(X, rows, row_ptr, cols, vals, lr_cols, lr_vals, lr_coef, buf):
    """Overwrite ``X[rows]`` with the operator's rows applied to the old ``X``."""
    _rows_out(X, X.shape[1], rows.shape[0], 0, 0, rows, row_ptr, cols, vals, 0,
              lr_cols.shape[0], lr_cols, lr_vals, lr_coef, buf)


@njit_inline
def _apply_packed(X, ints, floats, buf):
    """:func:`_apply_rows` with the operator packed in two arrays (see
    :meth:`Operator.packed`)."""
    r, nnz, nlr = ints[0], ints[1], ints[2]
    # Each part starts where the one before it ends; its length is in the counts (the
    # slices are left open: _rows_out reads by counts and offsets only).
    rows = ints[3:]
    row_ptr = ints[3 + r:]
    cols = ints[4 + 2 * r:]
    lr_cols = ints[4 + 2 * r + nnz:]
    lr_vals = floats[nnz:]
    lr_coef = floats[nnz + nlr:]
    _rows_out(X, X.shape[1], r, 0, 0, rows, row_ptr, cols, floats, 0, nlr, lr_cols, lr_vals,
              lr_coef, buf)


@structref.register
class _BoundOpType(types.StructRef):
    """numba type of :class:`_BoundOp`."""

    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class _BoundOp(structref.StructRefProxy):
    """An operator bound to one state: ``X``, the packed operator and a scratch buffer in
    one numba structure.

    From Python, a call of :func:`_apply_bound` unboxes this one object where
    :func:`_apply_rows` unboxes nine arrays (each with a reference-counted wrapper): about
    a third of the cost, for an event applied at once (the engine's hot path when a compute
    callback reads the state). Build it with :func:`_bind`.
    """


structref.define_proxy(_BoundOp, _BoundOpType, ["X", "ints", "floats", "buf"])


@njit
def _bind(X, ints, floats, buf):
    """A :class:`_BoundOp` of ``X`` and an operator's :meth:`Operator.packed` arrays."""
    return _BoundOp(X, ints, floats, buf)


def bound_kernel(X: np.ndarray, op: Operator) -> tuple:
    """``(kernel, bound)`` such that ``kernel(bound)`` applies ``op`` to ``X`` in place: the
    compiled :func:`_apply_bound` and a :class:`_BoundOp` (under ``NUMBA_DISABLE_JIT=1``,
    plain Python on a tuple)."""
    buf = np.empty((op.rows.shape[0], X.shape[1]), dtype=X.dtype)
    if not isinstance(_bind, Dispatcher):
        return (lambda bound: _apply_packed(*bound)), (X, *op.packed(), buf)
    bound = _bind(X, *op.packed(), buf)
    return compiled_for(_apply_bound, bound), bound


@njit(nogil=False)
def _apply_bound(bound):
    """Apply a :class:`_BoundOp` to its state, in place.

    Called from Python once per event, for a few rows: it keeps the GIL (releasing and
    taking it back would cost more than the work)."""
    _apply_packed(bound.X, bound.ints, bound.floats, bound.buf)


@njit
def _apply_rows_coords(X, rows, row_ptr, cols, vals, lr_cols, lr_vals, lr_coef, coords, buf):
    """Like :func:`_apply_rows`, on the coordinates ``coords`` only."""
    m = coords.shape[0]
    for a in range(rows.shape[0]):
        for q in range(m):
            buf[a, q] = 0.0
        for p in range(row_ptr[a], row_ptr[a + 1]):
            j = cols[p]
            w = vals[p]
            for q in range(m):
                buf[a, q] += w * X[j, coords[q]]
    if lr_cols.shape[0] > 0:
        for q in range(m):
            v = 0.0
            for t in range(lr_cols.shape[0]):
                v += lr_vals[t] * X[lr_cols[t], coords[q]]
            for a in range(rows.shape[0]):
                buf[a, q] += lr_coef[a] * v
    for a in range(rows.shape[0]):
        r = rows[a]
        for q in range(m):
            X[r, coords[q]] = buf[a, q]


@njit_inline
def _apply_op(X, k, op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols, op_vals,
              op_lr_ptr, op_lr_cols, op_lr_vals, op_lr_coef, buf):
    """Apply operator ``k`` of the flat operator arrays (see
    :meth:`mixsim.trace.Trace.op_arrays`) to ``X`` in place."""
    _apply_op_cols(X, X.shape[1], k, op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols,
                   op_vals, op_lr_ptr, op_lr_cols, op_lr_vals, op_lr_coef, buf)


@njit_inline
def _apply_op_cols(X, ncols, k, op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols,
                   op_vals, op_lr_ptr, op_lr_cols, op_lr_vals, op_lr_coef, buf):
    """:func:`_apply_op` on the first ``ncols`` columns of ``X`` only."""
    first = op_rows_ptr[k]
    _rows_out(X, ncols, op_rows_ptr[k + 1] - first, first, op_row_ptr_ptr[k], op_rows,
              op_row_ptr, op_cols, op_vals, op_lr_ptr[k], op_lr_ptr[k + 1], op_lr_cols,
              op_lr_vals, op_lr_coef, buf)


@njit
def _apply_sequence(X, ev_op, op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols,
                    op_vals, op_lr_ptr, op_lr_cols, op_lr_vals, op_lr_coef, buf):
    """Apply the operators ``ev_op[0], ev_op[1], ...`` to ``X`` in order; negative entries
    are skipped."""
    for e in range(ev_op.shape[0]):
        if ev_op[e] >= 0:
            _apply_op(X, ev_op[e], op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols,
                      op_vals, op_lr_ptr, op_lr_cols, op_lr_vals, op_lr_coef, buf)


class Operator:
    """A linear operator on slots that rewrites a few rows of the state.

    A written row is a sparse combination of rows plus, optionally, a multiple of one
    shared weighted sum (the rank-one part): an average over a group of ``k`` slots is
    ``k`` coefficients and ``k`` weights, not ``k^2`` entries, so applying it costs
    ``O(k)`` per column of the state.

    Parameters
    ----------
    rows : array_like of int
        The rows (slots) the operator writes, without repetition.
    row_ptr, cols, vals : array_like
        CSR description of the sparse part of the written rows.
    size : int
        Number of slots of the state it acts on.
    lr_cols, lr_vals : array_like, optional
        Sources and weights of the rank-one part ``s = sum_q lr_vals[q] X[lr_cols[q]]``.
    lr_coef : array_like, optional
        Multiple of ``s`` added to each written row (aligned with ``rows``).

    Notes
    -----
    New ``X[rows[a]]`` is ``sum(vals[p] * X[cols[p]] for p in range(row_ptr[a],
    row_ptr[a + 1])) + lr_coef[a] * s``, every row computed from the state *before* the
    event. Build operators with :meth:`from_rows`, :meth:`from_matrix` or :meth:`mix`;
    they are immutable and may be shared by many events (a pairwise average over the same
    edge is one object).
    """

    __slots__ = ("rows", "row_ptr", "cols", "vals", "lr_cols", "lr_vals", "lr_coef", "size",
                 "_norm", "_buf")

    def __init__(self, rows, row_ptr, cols, vals, size: int, lr_cols=None, lr_vals=None,
                 lr_coef=None):
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)
        self.row_ptr = np.ascontiguousarray(row_ptr, dtype=np.int64)
        self.cols = np.ascontiguousarray(cols, dtype=np.int64)
        self.vals = np.ascontiguousarray(vals, dtype=np.float64)
        empty = lr_cols is None or len(lr_cols) == 0
        self.lr_cols = np.ascontiguousarray([] if empty else lr_cols, dtype=np.int64)
        self.lr_vals = np.ascontiguousarray([] if empty else lr_vals, dtype=np.float64)
        self.lr_coef = np.ascontiguousarray(
            np.zeros(self.rows.size) if empty else lr_coef, dtype=np.float64)
        self.size = int(size)
        self._norm = None
        self._buf = None
        for array in (self.rows, self.row_ptr, self.cols, self.vals, self.lr_cols,
                      self.lr_vals, self.lr_coef):
            array.flags.writeable = False

    @classmethod
    def from_rows(cls, new_rows: Mapping[int, Mapping[int, float]], size: int) -> Operator:
        """Operator from ``{written row: {source row: weight}}``.

        Examples
        --------
        Worker 0 averages with worker 1 in a state of three slots:

        >>> op = Operator.from_rows({0: {0: 0.5, 1: 0.5}, 1: {0: 0.5, 1: 0.5}}, size=3)
        >>> op.to_dense()[:2]
        array([[0.5, 0.5, 0. ],
               [0.5, 0.5, 0. ]])
        """
        rows, row_ptr, cols, vals = [], [0], [], []
        for row in sorted(new_rows):
            rows.append(row)
            for col, weight in sorted(new_rows[row].items()):
                if weight != 0.0:
                    cols.append(col)
                    vals.append(weight)
            row_ptr.append(len(cols))
        return cls(rows, row_ptr, cols, vals, size)

    @classmethod
    def mix(cls, group, gamma: float, size: int) -> Operator:
        """Slack averaging on ``group``: ``x_i <- (1 - gamma) x_i + gamma mean(x_group)``.

        ``gamma = 1`` is the group's average (AllReduce). Stored as a diagonal plus a
        rank-one part: ``O(|group|)`` memory and work per column.

        Examples
        --------
        >>> Operator.mix([0, 1], 1.0, size=3).to_dense()
        array([[0.5, 0.5, 0. ],
               [0.5, 0.5, 0. ],
               [0. , 0. , 1. ]])
        """
        rows = np.unique(np.asarray(group, dtype=np.int64))
        k = rows.size
        keep = 1.0 - gamma
        if keep == 0.0:
            row_ptr, cols, vals = np.zeros(k + 1, dtype=np.int64), rows[:0], np.zeros(0)
        else:
            row_ptr, cols, vals = np.arange(k + 1), rows, np.full(k, keep)
        return cls(rows, row_ptr, cols, vals, size, lr_cols=rows, lr_vals=np.full(k, 1.0 / k),
                   lr_coef=np.full(k, float(gamma)))

    @classmethod
    def from_matrix(cls, matrix, rows=None, size: int | None = None) -> Operator:
        """Operator writing ``rows`` of a state with the rows of a (sparse) matrix.

        Parameters
        ----------
        matrix : array_like or scipy sparse, shape (len(rows), size) or (size, size)
            The new rows as combinations of all slots. With ``rows=None`` it is square and
            every row that differs from the identity is written.
        rows : array_like of int, optional
            The rows written when ``matrix`` holds only those rows.
        size : int, optional
            Number of slots (defaults to ``matrix.shape[1]``).
        """
        csr = sp.csr_array(matrix, dtype=np.float64)
        size = csr.shape[1] if size is None else size
        if rows is None:
            diff = (csr - sp.eye_array(size, format="csr")).tocsr()
            diff.eliminate_zeros()
            rows = np.flatnonzero(np.diff(diff.indptr))
            csr = csr[rows]
        csr = sp.csr_array(csr)
        csr.sort_indices()
        csr.eliminate_zeros()
        return cls(rows, csr.indptr, csr.indices, csr.data, size)

    @property
    def low_rank(self) -> bool:
        """Whether the operator has a rank-one part."""
        return self.lr_cols.size > 0

    def kernel_args(self) -> tuple:
        """The arrays :func:`_apply_rows` takes after ``X``."""
        return (self.rows, self.row_ptr, self.cols, self.vals, self.lr_cols, self.lr_vals,
                self.lr_coef)

    def packed(self) -> tuple[np.ndarray, np.ndarray]:
        """The operator in two arrays, as :func:`_apply_packed` takes it.

        ``ints`` is ``[len(rows), len(cols), len(lr_cols), *rows, *row_ptr, *cols,
        *lr_cols]`` and ``floats`` is ``[*vals, *lr_vals, *lr_coef]``.
        """
        ints = np.concatenate([[self.rows.size, self.cols.size, self.lr_cols.size],
                               self.rows, self.row_ptr, self.cols, self.lr_cols]).astype(np.int64)
        floats = np.concatenate([self.vals, self.lr_vals, self.lr_coef]).astype(np.float64)
        return ints, floats

    def apply(self, X: np.ndarray, coords: np.ndarray | None = None) -> None:
        """Apply the operator to ``X`` in place (on ``coords`` only, if given)."""
        if coords is None:
            # The scratch rows are reused between calls: events are applied one at a time.
            buf = self._buf
            if buf is None or buf.shape[1] != X.shape[1] or buf.dtype != X.dtype:
                buf = self._buf = np.empty((self.rows.shape[0], X.shape[1]), dtype=X.dtype)
            _apply_rows(X, *self.kernel_args(), buf)
        else:
            buf = np.empty((self.rows.shape[0], coords.shape[0]), dtype=X.dtype)
            _apply_rows_coords(X, *self.kernel_args(), coords, buf)

    def written(self) -> sp.csr_array:
        """The written rows as a sparse ``len(rows) x size`` matrix (rank-one part
        included)."""
        written = sp.csr_array(
            (self.vals, self.cols, self.row_ptr), shape=(self.rows.shape[0], self.size)
        )
        if self.low_rank:
            # Outer product of the coefficients and the weights: the only place it is formed.
            outer = sp.csr_array(
                (np.outer(self.lr_coef, self.lr_vals).ravel(),
                 (np.repeat(np.arange(self.rows.size), self.lr_cols.size),
                  np.tile(self.lr_cols, self.rows.size))),
                shape=written.shape)
            written = written + outer
        return written

    def to_sparse(self) -> sp.csr_array:
        """The full ``size x size`` matrix (identity on the rows it does not write)."""
        keep = np.ones(self.size, dtype=bool)
        keep[self.rows] = False
        untouched = sp.diags_array(keep.astype(np.float64), format="csr")
        scatter = sp.csr_array(
            (np.ones(self.rows.shape[0]), (self.rows, np.arange(self.rows.shape[0]))),
            shape=(self.size, self.rows.shape[0]),
        )
        return (untouched + scatter @ self.written()).tocsr()

    def to_dense(self) -> np.ndarray:
        """The full matrix as a dense array."""
        return self.to_sparse().toarray()

    def norm(self) -> float:
        """Spectral norm ``||M||_2`` of the operator (cached)."""
        if self._norm is None:
            slots = self.participants()
            if slots.size == 0:
                self._norm = 1.0
                return self._norm
            if self._row_col_bound() <= 1.0 and (slots.size < self.size
                                                 or self._keeps_constants()):
                # sqrt(||M||_1 ||M||_inf) bounds the norm from above; an identity row, or
                # a constant vector kept as it is, makes it at least 1.
                self._norm = 1.0
                return self._norm
            # The operator restricted to the slots it reads or writes; the other rows and
            # columns are the identity.
            block = np.eye(slots.size)
            written = np.searchsorted(slots, self.rows)
            block[written] = self.written()[:, slots].toarray()
            self._norm = float(np.linalg.norm(block, 2))
            # Rows outside the block are identity: the norm is at least 1 when any exist.
            if slots.size < self.size:
                self._norm = max(self._norm, 1.0)
        return self._norm

    def _row_col_bound(self) -> float:
        """``sqrt(||M||_1 ||M||_inf)``, an upper bound of ``||M||_2``."""
        weights = np.abs(self.vals)
        rows = np.bincount(np.repeat(np.arange(self.rows.size), np.diff(self.row_ptr)),
                           weights=weights, minlength=self.rows.size)
        cols = np.bincount(self.cols, weights=weights, minlength=self.size)
        if self.low_rank:
            # |coef_a w_q| summed: each row gains |coef_a| sum|w|, each source |w_q| sum|coef|.
            rows = rows + np.abs(self.lr_coef) * np.abs(self.lr_vals).sum()
            cols = cols + np.bincount(self.lr_cols, weights=np.abs(self.lr_vals),
                                      minlength=self.size) * np.abs(self.lr_coef).sum()
        identity = np.ones(self.size, dtype=bool)
        identity[self.rows] = False
        cols = cols + identity
        row_max = max(float(rows.max(initial=0.0)), 1.0 if identity.any() else 0.0)
        return float(np.sqrt(row_max * cols.max(initial=0.0)))

    def _keeps_constants(self) -> bool:
        """Whether every written row sums to 1 (so ``M 1 = 1``)."""
        sums = np.bincount(np.repeat(np.arange(self.rows.size), np.diff(self.row_ptr)),
                           weights=self.vals, minlength=self.rows.size)
        sums = sums + self.lr_coef * self.lr_vals.sum()
        return bool(np.all(np.abs(sums - 1.0) <= 1e-12))

    def participants(self) -> np.ndarray:
        """Slots read or written by the operator."""
        return np.unique(np.concatenate([self.rows, self.cols, self.lr_cols]))

    def __repr__(self) -> str:
        return f"Operator(writes={self.rows.tolist()}, size={self.size})"
