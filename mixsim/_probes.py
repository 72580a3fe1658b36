"""First passages at scale: probe vectors and Lanczos halving tests on the recorded window.

The exact scan of :mod:`mixsim._passages` keeps a dense ``slots x slots`` product per chunk
of window starts. This scan keeps, for each start ``s``, two probe vectors only, so its
memory is ``O(starts x slots)`` plus the recorded trace; products with the window are
replayed from the trace (each operator and its transpose cost what the operator stores).

For a start ``s`` and a step ``e`` the window ratio is ``r(s, e) = ||P Pi||_2`` with
``P = M_e ... M_s`` and ``Pi = I - c c^T`` the orthogonal projection onto the range of
``I - M_inf`` (the hyperplane ``c^T y = 0``, see
:meth:`mixsim.trace.Consensus.normal`).

* **Certified lower bounds.** The two probe vectors ``y_1, y_2`` of a start are orthonormal
  and in the range of ``Pi``; their images ``P y`` are updated event by event with their
  2 x 2 Gram matrix, whose largest eigenvalue is at most ``r(s, e)^2``. While it is above
  ``h^2`` the window is certainly not halved.
* **A Lanczos test when the bound falls to the threshold.** Lanczos on
  ``A = Pi P^T P Pi`` (two replays of the window per iteration) from a Gaussian start
  projected onto the range of ``Pi``, fully reorthogonalised. Each Ritz value is a
  Rayleigh quotient, so a Ritz value above ``h^2`` certifies *not halved*; the top two Ritz
  vectors become the new probes. Otherwise:

  - the Krylov space became invariant (the residual fell below ``1e-12`` of the scale, or
    the space is the whole range): the Ritz values are the eigenvalues reachable from the
    start, all of them with probability one, and the test is exact;
  - or, with ``theta = (1 - eps) h^2`` the largest Ritz value after ``q`` steps, the
    Kuczynski-Wozniakowski bound (1992, Theorem 4.2(a)) on a start uniform on the sphere
    of dimension ``N``, ``1.648 sqrt(N) exp(-sqrt(eps) (2q - 1))``, has fallen to
    ``delta``: the window is declared halved, wrongly with probability at most ``delta``.

  A test that reaches ``max_lanczos`` steps undecided counts the window as not halved
  (an *undecided* test: it can only make the start's passage longer).

* **Dominated starts are skipped.** A start ``s`` after a step with no event
  (``M_{s-1} = I``) has the passage of ``s - 1`` minus one, so only the first start and
  the starts right after a step with events are scanned; the others are derived. For a
  synchronous protocol that is one start per round.

Everything random comes from the ``seed`` argument: the same trace and seed give the same
passages.
"""

from __future__ import annotations

import numpy as np

from mixsim._numba import njit, njit_inline
from mixsim._passages import HALF, _bound_rows_out, _cdot, _grams, _set_bound, _top2
from mixsim.operators import _apply_op

__all__ = ["ProbeScan", "DELTA"]

#: Failure probability allowed to one Lanczos test that declares a window halved.
DELTA = 1e-6
#: Kuczynski-Wozniakowski constant of the Lanczos bound.
_KW = 1.648
#: Relative margin by which a lower bound must exceed the threshold to skip a test.
_MARGIN = 1e-7
#: Steps between exact recomputations of the incrementally updated Gram entries.
_REFRESH = 256
#: Bytes of probe images one chunk of starts may hold.
_CHUNK_BYTES = 256 * 2**20
#: Residual (relative) below which the Krylov space counts as invariant.
_BREAKDOWN = 1e-12


@njit
def _replay(X, s, e, coord, base, step_ptr, ev_op, ev_mask, ops, buf):
    """``X <- M_e ... M_s X`` from the compiled events (steps counted from ``base``)."""
    (rows_ptr, rows, row_ptr_ptr, row_ptr, cols, vals, lr_ptr, lr_cols, lr_vals,
     lr_coef) = ops
    for t in range(s - base, e - base + 1):
        for ev in range(step_ptr[t], step_ptr[t + 1]):
            if ev_mask[ev, coord]:
                _apply_op(X, ev_op[ev], rows_ptr, rows, row_ptr_ptr, row_ptr, cols, vals,
                          lr_ptr, lr_cols, lr_vals, lr_coef, buf)


@njit
def _replay_transpose(X, s, e, coord, base, step_ptr, ev_op, ev_mask, ops, buf):
    """``X <- M_s^T ... M_e^T X`` (each ``M^T`` reads the written rows, clears them, then
    scatters each back along its entries and the rank-one part along its sources)."""
    (rows_ptr, rows, row_ptr_ptr, row_ptr, cols, vals, lr_ptr, lr_cols, lr_vals,
     lr_coef) = ops
    d = X.shape[1]
    for t in range(e - base, s - base - 1, -1):
        for ev in range(step_ptr[t + 1] - 1, step_ptr[t] - 1, -1):
            if not ev_mask[ev, coord]:
                continue
            k = ev_op[ev]
            first = rows_ptr[k]
            n_rows = rows_ptr[k + 1] - first
            g0 = row_ptr_ptr[k]
            for a in range(n_rows):
                r = rows[first + a]
                for c in range(d):
                    buf[a, c] = X[r, c]
                    X[r, c] = 0.0
            for a in range(n_rows):
                for p in range(row_ptr[g0 + a], row_ptr[g0 + a + 1]):
                    j = cols[p]
                    w = vals[p]
                    for c in range(d):
                        X[j, c] += w * buf[a, c]
            for c in range(d):
                v = 0.0
                for a in range(n_rows):
                    v += lr_coef[first + a] * buf[a, c]
                if v != 0.0:
                    for q in range(lr_ptr[k], lr_ptr[k + 1]):
                        X[lr_cols[q], c] += lr_vals[q] * v


@njit_inline
def _project(x, normal):
    """``x <- (I - c c^T) x`` for the unit normal ``c``."""
    t = 0.0
    for r in range(x.shape[0]):
        t += normal[r] * x[r]
    for r in range(x.shape[0]):
        x[r] -= t * normal[r]


@njit_inline
def _splitmix(state):
    """One step of splitmix64: ``(new state, 64 random bits)``."""
    state = (state + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = state
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(
        0xFFFFFFFFFFFFFFFF)
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(
        0xFFFFFFFFFFFFFFFF)
    return state, z ^ (z >> np.uint64(31))


@njit
def _gaussians(count, seed):
    """``count`` standard normal numbers from ``seed`` (splitmix64 and Box-Muller): a
    generator that costs nothing to seed, as each test seeds its own."""
    out = np.empty(count)
    state = np.uint64(seed)
    scale = 1.0 / 9007199254740992.0
    for i in range(0, count, 2):
        state, a = _splitmix(state)
        state, b = _splitmix(state)
        u = (np.float64(a >> np.uint64(11)) + 1.0) * scale
        v = np.float64(b >> np.uint64(11)) * scale
        radius = np.sqrt(-2.0 * np.log(u))
        out[i] = radius * np.cos(2.0 * np.pi * v)
        if i + 1 < count:
            out[i + 1] = radius * np.sin(2.0 * np.pi * v)
    return out


@njit
def _gaussian_in_range(normal, seed):
    """A Gaussian vector projected onto the range of ``Pi`` (uniform direction there)."""
    x = _gaussians(normal.shape[0], seed)
    _project(x, normal)
    return x


@njit
def _test_seed(seed, start, step, count):
    """Seed of one Lanczos test, from the scan's seed and where the test happens."""
    return (seed * 1000003 + start * 7919 + step * 104729 + count * 15485863) % 4294967291


@njit
def _lanczos(s, e, coord, base, step_ptr, ev_op, ev_mask, ops, normal, half2, skip, delta,
             max_steps, seed, ritz, stats, buf):
    """Is ``||M_e ... M_s Pi||_2 <= h``? Lanczos on ``Pi P^T P Pi``.

    Returns 1 (not halved, certified: a Ritz value above the threshold), 2 (halved: the
    Krylov space is invariant), 3 (halved with failure probability at most ``delta``) or
    0 (undecided). For 0 and 1, ``ritz`` holds the top two Ritz vectors (columns).
    ``stats`` counts tests, Lanczos steps and replays.
    """
    size = normal.shape[0]
    dim = size - 1
    steps = min(max_steps, dim)
    # Most tests end in a few steps: the Lanczos basis grows as needed.
    basis = np.empty((min(steps, 8) + 1, size))
    alpha = np.zeros(steps)
    beta = np.zeros(steps)
    x = _gaussian_in_range(normal, seed)
    nrm = np.sqrt(np.sum(x * x))
    basis[0] = x / nrm
    w = np.empty((size, 1))
    coef = _KW * np.sqrt(dim)
    stats[0] += 1
    outcome = 0
    top = 0.0
    last = 0
    for j in range(steps):
        last = j
        stats[1] += 1
        w[:, 0] = basis[j]
        _replay(w, s, e, coord, base, step_ptr, ev_op, ev_mask, ops, buf)
        _replay_transpose(w, s, e, coord, base, step_ptr, ev_op, ev_mask, ops, buf)
        v = w.reshape(size)
        _project(v, normal)
        a = np.dot(basis[j], v)
        alpha[j] = a
        v -= a * basis[j]
        if j > 0:
            v -= beta[j - 1] * basis[j - 1]
        for _ in range(2):
            for i in range(j + 1):
                v -= np.dot(basis[i], v) * basis[i]
        b = np.sqrt(np.dot(v, v))
        beta[j] = b
        T = np.zeros((j + 1, j + 1))
        for i in range(j + 1):
            T[i, i] = alpha[i]
            if i > 0:
                T[i, i - 1] = beta[i - 1]
                T[i - 1, i] = beta[i - 1]
        values, vectors = np.linalg.eigh(T)
        top = values[j]
        if top > skip:
            outcome = 1
            break
        if b <= _BREAKDOWN * max(half2, top) or j + 1 == dim:
            outcome = 2 if top <= half2 else 1
            break
        eps = 1.0 - top / half2
        if eps > 0.0 and coef * np.exp(-np.sqrt(eps) * (2 * (j + 1) - 1)) <= delta:
            outcome = 3
            break
        if j + 1 == basis.shape[0]:
            grown = np.empty((min(2 * basis.shape[0], steps + 1), size))
            grown[:j + 1] = basis[:j + 1]
            basis = grown
        basis[j + 1] = v / b
    if outcome == 0 or outcome == 1:
        m = last + 1
        T = np.zeros((m, m))
        for i in range(m):
            T[i, i] = alpha[i]
            if i > 0:
                T[i, i - 1] = beta[i - 1]
                T[i - 1, i] = beta[i - 1]
        values, vectors = np.linalg.eigh(T)
        for col in range(2):
            ritz[:, col] = 0.0
            idx = m - 1 - col
            if idx < 0:
                continue
            for i in range(m):
                ritz[:, col] += vectors[i, idx] * basis[i]
    return outcome


@njit
def _orthonormal_pair(Z, normal):
    """Project both columns of ``Z`` onto the range of ``Pi`` and orthonormalise them (a
    dependent second column becomes zero)."""
    for col in range(2):
        t = 0.0
        for r in range(Z.shape[0]):
            t += normal[r] * Z[r, col]
        for r in range(Z.shape[0]):
            Z[r, col] -= t * normal[r]
    t = np.sqrt(_cdot(Z, 0, Z, 0))
    if t > 0.0:
        Z[:, 0] /= t
    for _ in range(2):
        Z[:, 1] -= _cdot(Z, 0, Z, 1) * Z[:, 0]
    t = np.sqrt(_cdot(Z, 1, Z, 1))
    if t > 1e-150:
        Z[:, 1] /= t
    else:
        Z[:, 1] = 0.0


@njit
def _probe_scan(starts, e_from, e_to, base, coord, normal, U, gram, length, kind, state,
                step_ptr, ev_op, ev_mask, ops, half, delta, max_steps, seed, buf, small):
    """Advance one chunk of starts over steps ``[e_from, e_to)``; returns the next step.

    ``state``: active starts, open starts, then (tests, Lanczos steps) and the outcomes
    counted by kind (undecided, not halved, exact halving, probabilistic halving).
    ``kind[s]`` records how the start's passage was decided (2 exact, 3 probabilistic).
    """
    (rows_ptr, rows, row_ptr_ptr, row_ptr, cols, vals, lr_ptr, lr_cols, lr_vals,
     lr_coef) = ops
    size = normal.shape[0]
    c = starts.shape[0]
    half2 = half * half
    skip = half2 * (1.0 + _MARGIN)
    ritz = np.empty((size, 2))
    stats = state[2:4]
    active = state[0]
    e = e_from
    while e < e_to and state[1] > 0:
        while active < c and starts[active] <= e:
            a = active
            Z = np.empty((size, 2))
            for col in range(2):
                Z[:, col] = _gaussians(size, _test_seed(seed, starts[a], -1, col))
            _orthonormal_pair(Z, normal)
            _set_bound(Z, a, U, gram)
            active += 1
        if (e - e_from) % _REFRESH == 0:
            _grams(U, active, gram)
        changed = False
        for ev in range(step_ptr[e - base], step_ptr[e - base + 1]):
            if not ev_mask[ev, coord]:
                continue
            changed = True
            k = ev_op[ev]
            first = rows_ptr[k]
            _bound_rows_out(U, active, first, rows_ptr[k + 1] - first, row_ptr_ptr[k], rows,
                            row_ptr, cols, vals, lr_ptr[k], lr_ptr[k + 1], lr_cols, lr_vals,
                            lr_coef, buf, gram)
        if not changed:
            e += 1
            continue
        for s in range(active):
            if length[s] >= 0 or gram[0, s] > skip or gram[1, s] > skip:
                continue
            if _top2(gram, s) > skip:
                continue
            outcome = _lanczos(starts[s], e, coord, base, step_ptr, ev_op, ev_mask, ops,
                               normal, half2, skip, delta, max_steps,
                               _test_seed(seed, starts[s], e, stats[0]), ritz, stats, small)
            state[4 + outcome] += 1
            if outcome >= 2:
                length[s] = e - starts[s] + 1
                kind[s] = outcome
                state[1] -= 1
                continue
            # Not halved (or undecided): the top Ritz vectors become the probes.
            _orthonormal_pair(ritz, normal)
            _replay(ritz, starts[s], e, coord, base, step_ptr, ev_op, ev_mask, ops,
                    buf[:, :2])
            _set_bound(ritz, s, U, gram)
        e += 1
    state[0] = active
    return e


class ProbeScan:
    """Resumable first passages for a set of window starts, in ``O(starts x slots)`` memory.

    Parameters
    ----------
    normal : ndarray, shape (slots,)
        Unit normal ``c`` of the range of ``I - M_inf`` (:meth:`Consensus.normal`).
    starts : array of int
        Window starts (steps).
    coord : int
        Coordinate whose operator sequence is scanned (sparsified traces).
    half : float
        Halving threshold.
    seed : int
        Seed of the probes and of the Lanczos start vectors.
    delta : float
        Failure probability allowed to one test that declares a window halved.
    max_lanczos : int
        Most Lanczos steps in one test.

    Notes
    -----
    Call :meth:`advance` with a compiled trace that begins at or before :attr:`needs_from`;
    :attr:`lengths` holds ``-1`` for the starts not yet halved. :attr:`counts` says how the
    passages were decided.
    """

    def __init__(self, normal: np.ndarray, starts, coord: int = 0, half: float = HALF,
                 seed: int = 0, delta: float = DELTA, max_lanczos: int = 200):
        self.normal = np.ascontiguousarray(normal, dtype=np.float64)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.coord = int(coord)
        self.half = float(half)
        self.seed = int(seed) % (2**31)
        self.delta = float(delta)
        self.max_lanczos = int(max_lanczos)
        self.lengths = np.full(self.starts.size, -1, dtype=np.int64)
        self.kinds = np.zeros(self.starts.size, dtype=np.int64)
        self._chunks: list[_ProbeChunk] | None = None
        self._derived = None

    # -- the starts that have to be scanned ----------------------------------------------
    def _plan(self, compiled, step_base: int) -> None:
        """Split the starts into scanned ones (the first, and those after a step with
        events) and derived ones (``L_s = L_{s-1} - 1`` after a step without events)."""
        order = np.argsort(self.starts, kind="stable")
        has_event = _steps_with_events(compiled, self.coord)
        known = step_base + has_event.size
        scanned, derived = [], {}
        head = None
        for position in order:
            start = int(self.starts[position])
            if head is not None:
                first = int(self.starts[head])
                if (first >= step_base and start - 1 < known
                        and not has_event[first - step_base:start - step_base].any()):
                    derived[int(position)] = head
                    continue
            scanned.append(int(position))
            head = int(position)
        self._derived = derived
        self._scanned = np.array(scanned, dtype=np.int64)
        size = self.normal.size
        cap = max(1, _CHUNK_BYTES // (2 * size * 8 + 64))
        chunk_starts = self.starts[self._scanned]
        self._chunks = [_ProbeChunk(self, chunk_starts[i:i + cap], self._scanned[i:i + cap])
                        for i in range(0, chunk_starts.size, cap)]

    @property
    def done(self) -> bool:
        """Whether every start has halved."""
        return bool(np.all(self.lengths >= 0))

    @property
    def next_step(self) -> int:
        """The first step some open chunk has not examined yet."""
        if self._chunks is None:
            return int(self.starts.min(initial=0))
        open_steps = [chunk.e_next for chunk in self._chunks if chunk.open]
        return min(open_steps) if open_steps else 0

    @property
    def needs_from(self) -> int:
        """The first step the compiled trace passed to :meth:`advance` must cover (window
        tests replay from the earliest open start)."""
        if self._chunks is None:
            return int(self.starts.min(initial=0))
        open_starts = [chunk.first_open() for chunk in self._chunks if chunk.open]
        return min(open_starts) if open_starts else 0

    def advance(self, compiled, n_steps: int, step_base: int = 0) -> np.ndarray:
        """Examine the steps up to ``n_steps`` (exclusive) of ``compiled``, which covers
        steps ``step_base`` to ``n_steps``. Returns :attr:`lengths`."""
        if self.normal.size <= 1:
            self.lengths[:] = 1
            self.kinds[:] = 2
            return self.lengths
        if self._chunks is None:
            self._plan(compiled, step_base)
        for chunk in self._chunks:
            if chunk.open:
                chunk.advance(compiled, n_steps, step_base)
        for position, head in self._derived.items():
            if self.lengths[head] >= 0:
                self.lengths[position] = self.lengths[head] - (self.starts[position]
                                                               - self.starts[head])
                self.kinds[position] = self.kinds[head]
        return self.lengths

    def lower_bounds(self) -> np.ndarray:
        """For the open scanned starts: ``(window length so far, lower bound of the
        ratio)``."""
        out = []
        for chunk in self._chunks or []:
            if chunk.open:
                out.extend(chunk.bounds())
        return np.array(out, dtype=float).reshape(-1, 2)

    @property
    def counts(self) -> dict:
        """Tests run and how they ended, summed over chunks."""
        total = np.zeros(8, dtype=np.int64)
        for chunk in self._chunks or []:
            total += chunk.state
        return {"scanned_starts": int(self._scanned.size) if self._chunks is not None else 0,
                "tests": int(total[2]), "lanczos_steps": int(total[3]),
                "undecided": int(total[4]), "not_halved": int(total[5]),
                "exact_halvings": int(total[6]), "probabilistic_halvings": int(total[7])}


def _steps_with_events(compiled, coord: int) -> np.ndarray:
    """Whether each compiled step has an event acting on ``coord``."""
    steps = compiled.step_ptr.size - 1
    ev_steps = np.repeat(np.arange(steps), np.diff(compiled.step_ptr))
    mask = compiled.ev_mask[:ev_steps.size, coord]
    return np.bincount(ev_steps, weights=mask, minlength=steps) > 0


class _ProbeChunk:
    def __init__(self, owner: ProbeScan, starts: np.ndarray, positions: np.ndarray):
        self.owner = owner
        self.starts = np.ascontiguousarray(starts, dtype=np.int64)
        self.positions = positions
        size = owner.normal.size
        c = starts.size
        self.e_next = int(starts.min(initial=0))
        self.U = np.zeros((size, 2 * c))
        self.gram = np.zeros((3, c))
        self.length = np.full(c, -1, dtype=np.int64)
        self.kind = np.zeros(c, dtype=np.int64)
        self.state = np.array([0, c, 0, 0, 0, 0, 0, 0], dtype=np.int64)

    @property
    def open(self) -> bool:
        return bool(self.state[1] > 0)

    def first_open(self) -> int:
        waiting = self.starts[self.length < 0]
        return int(waiting.min()) if waiting.size else self.e_next

    def advance(self, compiled, n_steps: int, step_base: int) -> None:
        if self.e_next >= n_steps:
            return
        if self.first_open() < step_base:
            raise ValueError(f"compiled trace starts at step {step_base}, the scan needs "
                             f"step {self.first_open()}")
        ops = compiled.op_arrays()
        max_rows = compiled.max_rows()
        buf = np.empty((max_rows, max(self.U.shape[1], 2)))
        small = np.empty((max_rows, 1))
        owner = self.owner
        self.e_next = int(_probe_scan(
            self.starts, self.e_next, n_steps, step_base, owner.coord, owner.normal, self.U,
            self.gram, self.length, self.kind, self.state, compiled.step_ptr, compiled.ev_op,
            compiled.ev_mask, ops, owner.half, owner.delta, owner.max_lanczos, owner.seed,
            buf, small))
        owner.lengths[self.positions] = self.length
        owner.kinds[self.positions] = self.kind

    def bounds(self):
        active = int(self.state[0])
        _grams(self.U, active, self.gram)
        for s in range(active):
            if self.length[s] < 0:
                yield (self.e_next - self.starts[s],
                       float(np.sqrt(max(_top2(self.gram, s), 0.0))))
