"""First passages of window ratios: the exact scan behind the trace mixing time.

For a window start ``s`` the ratio after step ``e`` is ``r(s, e) = ||P_{s..e} B||_2``, with
``P_{s..e} = M_e ... M_s`` the product of the step operators and ``B`` an orthonormal basis
of the range of ``I - M_inf``. The first passage of ``s`` is ``e - s + 1`` for the first
``e`` with ``r(s, e) <= 1/2``. Every step after every start is examined, so the result is
exact (it does not rely on ratios decreasing with the window); four devices keep it cheap:

* **One product for all starts.** Starts are processed in chunks ``s_0 < ... < s_{c-1}``.
  Until the reference step ``R = s_{c-1} + 1`` each start keeps its own product
  ``Y_s = P_{s..e} B`` (few steps). From ``R`` on, ``Y_s = Q A_s`` with the shared
  ``Q = P_{R..e}`` (one ``size x size`` matrix, updated once per event) and the frozen
  ``A_s = P_{s..R-1} B``.
* **Certified lower bounds.** Each start has two orthonormal vectors ``V_s``; the largest
  singular value of ``U_s = Y_s V_s`` is at most ``||Y_s||_2``. ``U_s`` is updated by the
  same row operations as ``Q`` (``U_s = Q A_s V_s``), with its 2 x 2 Gram matrix, so after
  every step a start whose bound is above 1/2 is certainly not halved, at the cost of a few
  rows. Two vectors, not one, follow the slowest pair of modes of a ring (a degenerate
  pair whose top direction turns from step to step).
* **Lifting before testing.** When the bound is not above 1/2, a few subspace iterations
  with products by ``Y_s`` and ``Y_s^T`` try to lift it above 1/2 (certain: not halved).
* **An exact test only near the threshold.** Otherwise the test is whether
  ``h^2 I - Y_s^T Y_s`` is positive definite (a Cholesky factorisation; ``h`` is 1/2 with a
  relative slack of 1e-9 so that exact halvings are kept). If it is not, ``V_s`` is turned
  towards the top singular vectors by subspace iteration on ``Y_s^T Y_s``, which makes the
  bound tight again.

Bounds are compared with a relative margin of 1e-7 and recomputed from scratch every 256
steps, far above their rounding error, so they never decide a step the exact test would
decide otherwise.
"""

from __future__ import annotations

import numpy as np

from mixsim._numba import njit, njit_inline
from mixsim.operators import _apply_op_cols

__all__ = ["FirstPassages", "HALF"]

#: Halving threshold: 1/2 with a relative slack so that exact halvings (slack averaging
#: with gamma = 1/2) are not lost to rounding.
HALF = 0.5 * (1 + 1e-9)
#: Relative margin by which a lower bound must exceed the threshold to skip the exact test.
_MARGIN = 1e-7
#: Steps between exact recomputations of the incrementally updated bounds.
_REFRESH = 256
#: Bytes of per-start matrices one chunk may hold.
_CHUNK_BYTES = 32 * 2**20


@njit_inline
def _bound_rows_out(U, active, first, n_rows, g0, op_rows, op_row_ptr, op_cols, op_vals, l0,
                    l1, op_lr_cols, op_lr_vals, op_lr_coef, buf, gram):
    """Operator rows on the bound vectors ``U``, keeping their Gram entries current.

    ``U`` holds the first bound vector of start ``s`` in column ``s`` and the second in
    column ``c + s`` (``c`` starts); ``gram[:, s]`` are their Gram entries."""
    half_cols = U.shape[1] // 2
    ncols = U.shape[1]
    for a in range(n_rows):
        for c in range(ncols):
            buf[a, c] = 0.0
        for p in range(op_row_ptr[g0 + a], op_row_ptr[g0 + a + 1]):
            j = op_cols[p]
            w = op_vals[p]
            for c in range(ncols):
                buf[a, c] += w * U[j, c]
    if l1 > l0:
        for c in range(ncols):
            v = 0.0
            for q in range(l0, l1):
                v += op_lr_vals[q] * U[op_lr_cols[q], c]
            for a in range(n_rows):
                buf[a, c] += op_lr_coef[first + a] * v
    for a in range(n_rows):
        row = op_rows[first + a]
        for s in range(active):
            x = U[row, s]
            y = U[row, half_cols + s]
            nx = buf[a, s]
            ny = buf[a, half_cols + s]
            gram[0, s] += nx * nx - x * x
            gram[1, s] += ny * ny - y * y
            gram[2, s] += nx * ny - x * y
            U[row, s] = nx
            U[row, half_cols + s] = ny


@njit
def _positive_definite(A):
    """Whether the symmetric ``A`` is positive definite (Cholesky, ``A`` is overwritten)."""
    m = A.shape[0]
    for j in range(m):
        s = A[j, j]
        for p in range(j):
            s -= A[j, p] * A[j, p]
        if not s > 0.0:
            return False
        d = np.sqrt(s)
        A[j, j] = d
        for i in range(j + 1, m):
            t = A[i, j]
            for p in range(j):
                t -= A[i, p] * A[j, p]
            A[i, j] = t / d
    return True


@njit_inline
def _cdot(A, i, B, j):
    """Dot product of column ``i`` of ``A`` with column ``j`` of ``B``."""
    t = 0.0
    for r in range(A.shape[0]):
        t += A[r, i] * B[r, j]
    return t


@njit
def _grams(U, active, gram):
    """``gram[:, s] = (|u1|^2, |u2|^2, u1 . u2)`` for the two bound vectors of each start."""
    half_cols = U.shape[1] // 2
    for s in range(active):
        gram[0, s] = 0.0
        gram[1, s] = 0.0
        gram[2, s] = 0.0
    for r in range(U.shape[0]):
        for s in range(active):
            x = U[r, s]
            y = U[r, half_cols + s]
            gram[0, s] += x * x
            gram[1, s] += y * y
            gram[2, s] += x * y


@njit_inline
def _top2(gram, s):
    """Largest eigenvalue of the 2 x 2 Gram matrix ``gram[:, s]``: the squared bound."""
    a = gram[0, s]
    c = gram[1, s]
    b = gram[2, s]
    h = 0.5 * (a - c)
    return 0.5 * (a + c) + np.sqrt(h * h + b * b)


@njit
def _orthonormalise(Z):
    """Gram-Schmidt on the two columns of ``Z`` in place (a null column becomes zero)."""
    k = Z.shape[0]
    t = np.sqrt(_cdot(Z, 0, Z, 0))
    if t > 0.0:
        Z[:, 0] /= t
    for _ in range(2):
        Z[:, 1] -= _cdot(Z, 0, Z, 1) * Z[:, 0]
    t = np.sqrt(_cdot(Z, 1, Z, 1))
    if t > 1e-150 and k > 1:
        Z[:, 1] /= t
    else:
        Z[:, 1] = 0.0


@njit
def _refresh(G, Vs, skip):
    """Subspace iteration on ``G`` from the columns of ``Vs`` (left orthonormal and close
    to the top two eigenvectors, which makes the bound tight)."""
    top = 0.0
    for _ in range(60):
        Z = np.dot(G, Vs)
        # The largest Ritz value of the pair: the (squared) bound this pair gives.
        a = _cdot(Vs, 0, Z, 0)
        c = _cdot(Vs, 1, Z, 1)
        b = _cdot(Vs, 0, Z, 1)
        h = 0.5 * (a - c)
        value = 0.5 * (a + c) + np.sqrt(h * h + b * b)
        if value > skip and value - top <= 1e-10 * value:
            break
        top = value
        _orthonormalise(Z)
        Vs[:, :] = Z


@njit
def _block(wide, s, k):
    """Start ``s``'s product before the reference step, as a contiguous matrix."""
    return np.ascontiguousarray(wide[:, s * k:(s + 1) * k])


@njit
def _times_y(first_phase, wide, Q, blocks, s, Vs):
    """``Y_s Vs`` (``Y_s`` is a block of ``wide`` before the reference step, then
    ``Q A_s``)."""
    if first_phase:
        return np.dot(_block(wide, s, Vs.shape[0]), Vs)
    return np.dot(Q, np.dot(blocks[s], Vs))


@njit
def _times_yt(first_phase, wide, Q, blocks, s, T):
    """``Y_s^T T``."""
    if first_phase:
        return np.dot(_block(wide, s, blocks.shape[2]).T, T)
    return np.dot(blocks[s].T, np.dot(Q.T, T))


@njit
def _set_bound(T, s, U, gram):
    """Install ``T = Y_s V_s`` as the start's bound vectors."""
    U[:, s] = T[:, 0]
    U[:, U.shape[1] // 2 + s] = T[:, 1]
    gram[0, s] = _cdot(T, 0, T, 0)
    gram[1, s] = _cdot(T, 1, T, 1)
    gram[2, s] = _cdot(T, 0, T, 1)


@njit
def _lift(first_phase, wide, Q, blocks, s, Vs, U, gram, skip):
    """Subspace iterations on ``Y_s^T Y_s`` by products only, until the bound exceeds
    ``skip`` (returns True: not halved) or stops growing (returns False)."""
    previous = 0.0
    for _ in range(12):
        T = _times_y(first_phase, wide, Q, blocks, s, Vs)
        a = _cdot(T, 0, T, 0)
        c = _cdot(T, 1, T, 1)
        b = _cdot(T, 0, T, 1)
        h = 0.5 * (a - c)
        value = 0.5 * (a + c) + np.sqrt(h * h + b * b)
        if value > skip:
            _set_bound(T, s, U, gram)
            return True
        if value <= previous * (1.0 + 1e-6):
            return False
        previous = value
        Z = _times_yt(first_phase, wide, Q, blocks, s, T)
        _orthonormalise(Z)
        Vs[:, :] = Z
    return False


@njit
def _scan(starts, reference, e_from, e_to, step_base, coord, basis, wide, blocks, Q, V, U,
          gram, length, state, step_ptr, ev_op, ev_mask, op_rows_ptr, op_rows,
          op_row_ptr_ptr, op_row_ptr, op_cols, op_vals, op_lr_ptr, op_lr_cols, op_lr_vals,
          op_lr_coef, buf, half):
    """Advance the scan of one chunk of starts over steps ``[e_from, e_to)``.

    ``state`` holds the number of active starts and the number still open. Returns the
    next step to examine.
    """
    size, k = basis.shape
    c = starts.shape[0]
    half2 = half * half
    skip = half2 * (1.0 + _MARGIN)
    Y = np.empty((size, k))
    active = state[0]
    e = e_from
    while e < e_to and state[1] > 0:
        # Starts that begin at this step (before the reference step only). Their bound
        # vectors are the first two basis directions.
        while active < c and starts[active] <= e:
            a = active
            for r in range(size):
                for j in range(k):
                    wide[r, a * k + j] = basis[r, j]
            V[a, :, :] = 0.0
            V[a, 0, 0] = 1.0
            if k > 1:
                V[a, 1, 1] = 1.0
            for r in range(size):
                U[r, a] = basis[r, 0]
                U[r, c + a] = basis[r, 1] if k > 1 else 0.0
            gram[0, a] = 1.0
            gram[1, a] = 1.0 if k > 1 else 0.0
            gram[2, a] = 0.0
            active += 1
        if e == reference:
            # From here on Y_s = Q A_s: freeze A_s, start Q from the identity.
            for a in range(c):
                for r in range(size):
                    for j in range(k):
                        blocks[a, r, j] = wide[r, a * k + j]
            for r in range(size):
                for j in range(size):
                    Q[r, j] = 1.0 if r == j else 0.0
        if (e - e_from) % _REFRESH == 0:
            _grams(U, active, gram)
        changed = False
        for ev in range(step_ptr[e - step_base], step_ptr[e - step_base + 1]):
            if not ev_mask[ev, coord]:
                continue
            changed = True
            op = ev_op[ev]
            first = op_rows_ptr[op]
            n_rows = op_rows_ptr[op + 1] - first
            g0 = op_row_ptr_ptr[op]
            if e < reference:
                _apply_op_cols(wide, active * k, op, op_rows_ptr, op_rows, op_row_ptr_ptr,
                               op_row_ptr, op_cols, op_vals, op_lr_ptr, op_lr_cols,
                               op_lr_vals, op_lr_coef, buf)
            else:
                _apply_op_cols(Q, size, op, op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr,
                               op_cols, op_vals, op_lr_ptr, op_lr_cols, op_lr_vals,
                               op_lr_coef, buf)
            _bound_rows_out(U, active, first, n_rows, g0, op_rows, op_row_ptr, op_cols,
                            op_vals, op_lr_ptr[op], op_lr_ptr[op + 1], op_lr_cols, op_lr_vals,
                            op_lr_coef, buf, gram)
        if not changed:
            e += 1
            continue
        for s in range(active):
            # The bound's square is at least each vector's squared norm (cheap to check).
            if length[s] >= 0 or gram[0, s] > skip or gram[1, s] > skip:
                continue
            if _top2(gram, s) > skip:
                continue
            # First a few subspace iterations with products by Y_s and Y_s^T only: if
            # they lift the bound above the threshold, the start is certainly not halved.
            if _lift(e < reference, wide, Q, blocks, s, V[s], U, gram, skip):
                continue
            # Exact test on Y_s: is h^2 I - Y_s^T Y_s positive definite?
            if e < reference:
                Y[:, :] = _block(wide, s, k)
            else:
                Y[:, :] = np.dot(Q, blocks[s])
            G = np.dot(Y.T, Y)
            H = -G
            for j in range(k):
                H[j, j] += half2
            if _positive_definite(H):
                length[s] = e - starts[s] + 1
                state[1] -= 1
                continue
            # Not halved: turn the bound vectors towards the top singular vectors so that
            # the bound is tight again.
            _refresh(G, V[s], skip)
            _set_bound(np.dot(Y, V[s]), s, U, gram)
        e += 1
    state[0] = active
    return e


class FirstPassages:
    """Resumable exact first passages of the window ratio for a set of starts.

    Parameters
    ----------
    basis : ndarray, shape (size, k)
        Orthonormal basis of the range of ``I - M_inf``.
    starts : array of int
        Window starts (steps).
    coord : int
        Coordinate whose operator sequence is scanned (sparsified traces).
    half : float
        Halving threshold.

    Notes
    -----
    Call :meth:`advance` with the compiled trace each time it has grown; :attr:`lengths`
    holds ``-1`` for the starts not yet halved.
    """

    def __init__(self, basis: np.ndarray, starts, coord: int = 0, half: float = HALF):
        self.basis = np.ascontiguousarray(basis, dtype=np.float64)
        size, k = self.basis.shape
        self.coord = int(coord)
        self.half = float(half)
        self.starts = np.asarray(starts, dtype=np.int64)
        order = np.argsort(self.starts, kind="stable")
        self._order = order
        self.lengths = np.full(self.starts.size, -1, dtype=np.int64)
        self._chunks = []
        per_start = max(1, 2 * size * max(k, 1) * 8)
        cap = max(1, _CHUNK_BYTES // per_start)
        sorted_starts = self.starts[order]
        i = 0
        while i < sorted_starts.size:
            j = i + 1
            # A chunk spans at most 4 * size + 64 steps of starts and ``cap`` starts.
            while (j < sorted_starts.size and j - i < cap
                   and sorted_starts[j] - sorted_starts[i] <= 4 * size + 64):
                j += 1
            self._chunks.append(_Chunk(self, sorted_starts[i:j], order[i:j]))
            i = j

    @property
    def done(self) -> bool:
        """Whether every start has halved."""
        return bool(np.all(self.lengths >= 0))

    @property
    def next_step(self) -> int:
        """The first step some open chunk has not examined yet (0 when every start has
        halved)."""
        open_steps = [chunk.e_next for chunk in self._chunks if chunk.open]
        return min(open_steps) if open_steps else 0

    def advance(self, compiled, n_steps: int, step_base: int = 0) -> np.ndarray:
        """Examine the steps up to ``n_steps`` (exclusive) of ``compiled``.

        ``compiled`` covers steps ``step_base`` to ``n_steps`` (see
        :meth:`mixsim.trace.Trace.compile`). Returns :attr:`lengths`.
        """
        if self.basis.shape[1] == 0:
            self.lengths[:] = 1
            return self.lengths
        for chunk in self._chunks:
            if chunk.open:
                chunk.advance(compiled, n_steps, step_base)
        return self.lengths

    def lower_bounds(self) -> np.ndarray:
        """For the open starts: ``(window length so far, lower bound of the ratio)``."""
        out = []
        for chunk in self._chunks:
            if chunk.open:
                out.extend(chunk.bounds())
        return np.array(out, dtype=float).reshape(-1, 2)


class _Chunk:
    def __init__(self, owner: FirstPassages, starts: np.ndarray, positions: np.ndarray):
        self.owner = owner
        self.starts = np.ascontiguousarray(starts, dtype=np.int64)
        self.positions = positions
        size, k = owner.basis.shape
        c = starts.size
        self.reference = int(starts[-1]) + 1
        self.e_next = int(starts[0])
        self.wide = np.zeros((size, c * k))
        self.blocks = np.zeros((c, size, k))
        self.Q = np.zeros((size, size))
        self.V = np.zeros((c, k, 2))
        self.U = np.zeros((size, 2 * c))
        self.gram = np.zeros((3, c))
        self.length = np.full(c, -1, dtype=np.int64)
        self.state = np.array([0, c], dtype=np.int64)

    @property
    def open(self) -> bool:
        return bool(self.state[1] > 0)

    def advance(self, compiled, n_steps: int, step_base: int) -> None:
        if self.e_next >= n_steps:
            return
        if self.e_next < step_base:
            raise ValueError(f"compiled trace starts at step {step_base}, the scan needs "
                             f"step {self.e_next}")
        arrays = (compiled.step_ptr, compiled.ev_op, compiled.ev_mask, *compiled.op_arrays())
        rows_ptr = compiled.op_rows_ptr
        max_rows = int(np.diff(rows_ptr).max()) if rows_ptr.size > 1 else 1
        size, k = self.owner.basis.shape
        buf = np.empty((max(max_rows, 1), max(self.wide.shape[1], size, self.U.shape[1])))
        self.e_next = int(_scan(self.starts, self.reference, self.e_next, n_steps, step_base,
                                self.owner.coord, self.owner.basis, self.wide, self.blocks,
                                self.Q, self.V, self.U, self.gram, self.length,
                                self.state, *arrays, buf, self.owner.half))
        self.owner.lengths[self.positions] = self.length

    def bounds(self):
        active = int(self.state[0])
        _grams(self.U, active, self.gram)
        for s in range(active):
            if self.length[s] < 0:
                yield (self.e_next - self.starts[s],
                       float(np.sqrt(max(_top2(self.gram, s), 0.0))))
