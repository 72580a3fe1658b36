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

from mixsim._numba import njit

__all__ = ["Operator"]


@njit
def _apply_rows(X, rows, row_ptr, cols, vals, buf):
    """Overwrite ``X[rows]`` with the weighted sums of rows of the old ``X``."""
    d = X.shape[1]
    for a in range(rows.shape[0]):
        for c in range(d):
            buf[a, c] = 0.0
        for p in range(row_ptr[a], row_ptr[a + 1]):
            j = cols[p]
            w = vals[p]
            for c in range(d):
                buf[a, c] += w * X[j, c]
    for a in range(rows.shape[0]):
        r = rows[a]
        for c in range(d):
            X[r, c] = buf[a, c]


@njit
def _apply_rows_coords(X, rows, row_ptr, cols, vals, coords, buf):
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
    for a in range(rows.shape[0]):
        r = rows[a]
        for q in range(m):
            X[r, coords[q]] = buf[a, q]


@njit
def _apply_op(X, k, op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols, op_vals, buf):
    """Apply operator ``k`` of the flat operator arrays (see
    :meth:`mixsim.trace.Trace.op_arrays`) to ``X`` in place."""
    _apply_op_cols(X, X.shape[1], k, op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols,
                   op_vals, buf)


@njit
def _apply_op_cols(X, ncols, k, op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols,
                   op_vals, buf):
    """:func:`_apply_op` on the first ``ncols`` columns of ``X`` only."""
    first = op_rows_ptr[k]
    n_rows = op_rows_ptr[k + 1] - first
    g0 = op_row_ptr_ptr[k]
    for a in range(n_rows):
        for c in range(ncols):
            buf[a, c] = 0.0
        for p in range(op_row_ptr[g0 + a], op_row_ptr[g0 + a + 1]):
            j = op_cols[p]
            w = op_vals[p]
            for c in range(ncols):
                buf[a, c] += w * X[j, c]
    for a in range(n_rows):
        row = op_rows[first + a]
        for c in range(ncols):
            X[row, c] = buf[a, c]


@njit
def _apply_sequence(X, ev_op, op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols,
                    op_vals, buf):
    """Apply the operators ``ev_op[0], ev_op[1], ...`` to ``X`` in order; negative entries
    are skipped."""
    for e in range(ev_op.shape[0]):
        if ev_op[e] >= 0:
            _apply_op(X, ev_op[e], op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols,
                      op_vals, buf)


class Operator:
    """A linear operator on slots that rewrites a few rows of the state.

    Parameters
    ----------
    rows : array_like of int
        The rows (slots) the operator writes, without repetition.
    row_ptr, cols, vals : array_like
        CSR description of the written rows: new ``X[rows[a]]`` is
        ``sum(vals[p] * X[cols[p]] for p in range(row_ptr[a], row_ptr[a + 1]))``.
    size : int
        Number of slots of the state it acts on.

    Notes
    -----
    Build operators with :meth:`from_rows` or :meth:`from_matrix`; they are immutable and
    may be shared by many events (a pairwise average over the same edge is one object).
    """

    __slots__ = ("rows", "row_ptr", "cols", "vals", "size", "_norm", "_buf")

    def __init__(self, rows, row_ptr, cols, vals, size: int):
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)
        self.row_ptr = np.ascontiguousarray(row_ptr, dtype=np.int64)
        self.cols = np.ascontiguousarray(cols, dtype=np.int64)
        self.vals = np.ascontiguousarray(vals, dtype=np.float64)
        self.size = int(size)
        self._norm = None
        self._buf = None
        for array in (self.rows, self.row_ptr, self.cols, self.vals):
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

    def apply(self, X: np.ndarray, coords: np.ndarray | None = None) -> None:
        """Apply the operator to ``X`` in place (on ``coords`` only, if given)."""
        if coords is None:
            # The scratch rows are reused between calls: events are applied one at a time.
            buf = self._buf
            if buf is None or buf.shape[1] != X.shape[1] or buf.dtype != X.dtype:
                buf = self._buf = np.empty((self.rows.shape[0], X.shape[1]), dtype=X.dtype)
            _apply_rows(X, self.rows, self.row_ptr, self.cols, self.vals, buf)
        else:
            buf = np.empty((self.rows.shape[0], coords.shape[0]), dtype=X.dtype)
            _apply_rows_coords(X, self.rows, self.row_ptr, self.cols, self.vals, coords, buf)

    def to_sparse(self) -> sp.csr_array:
        """The full ``size x size`` matrix (identity on the rows it does not write)."""
        written = sp.csr_array(
            (self.vals, self.cols, self.row_ptr), shape=(self.rows.shape[0], self.size)
        )
        keep = np.ones(self.size, dtype=bool)
        keep[self.rows] = False
        untouched = sp.diags_array(keep.astype(np.float64), format="csr")
        scatter = sp.csr_array(
            (np.ones(self.rows.shape[0]), (self.rows, np.arange(self.rows.shape[0]))),
            shape=(self.size, self.rows.shape[0]),
        )
        return (untouched + scatter @ written).tocsr()

    def to_dense(self) -> np.ndarray:
        """The full matrix as a dense array."""
        return self.to_sparse().toarray()

    def norm(self) -> float:
        """Spectral norm ``||M||_2`` of the operator (cached)."""
        if self._norm is None:
            slots = np.unique(np.concatenate([self.rows, self.cols]))
            if slots.size == 0:
                self._norm = 1.0
                return self._norm
            if slots.size < self.size and self._row_col_bound() <= 1.0:
                # Identity rows make the norm at least 1; sqrt(||M||_1 ||M||_inf) bounds
                # it from above.
                self._norm = 1.0
                return self._norm
            # The operator restricted to the slots it reads or writes; the other rows and
            # columns are the identity.
            block = np.eye(slots.size)
            written = np.searchsorted(slots, self.rows)
            block[written] = 0.0
            entry_rows = np.repeat(written, np.diff(self.row_ptr))
            np.add.at(block, (entry_rows, np.searchsorted(slots, self.cols)), self.vals)
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
        identity = np.ones(self.size, dtype=bool)
        identity[self.rows] = False
        cols = cols + identity
        row_max = max(float(rows.max(initial=0.0)), 1.0 if identity.any() else 0.0)
        return float(np.sqrt(row_max * cols.max(initial=0.0)))

    def participants(self) -> np.ndarray:
        """Slots read or written by the operator."""
        return np.unique(np.concatenate([self.rows, self.cols]))

    def __repr__(self) -> str:
        return f"Operator(writes={self.rows.tolist()}, size={self.size})"
