"""The record of a run: every communication event with its operator, in order.

A :class:`Trace` holds, in the order they happened, the communication events of a run
(step, simulated time, kind, operator, coordinates) and, optionally, the updates written by
computation events. From it come the step operators ``M_t`` (the product of the events
between computation ``t`` and ``t + 1``), a replay of the run, and the checks of the model's
Assumptions 1 and 3.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from mixsim import theory
from mixsim.operators import Operator
from mixsim.state import SlotLayout

__all__ = ["Consensus", "Trace", "TraceEvent", "AssumptionViolation", "Lemma1Check"]


class TraceEvent(NamedTuple):
    """One communication event of a trace."""

    index: int
    step: int
    time: float
    kind: str
    participants: np.ndarray
    operator: Operator
    coords: np.ndarray | None


class Lemma1Check(NamedTuple):
    """The outcome of :meth:`Trace.check_lemma1`.

    Attributes
    ----------
    t_mix, xi : float
        The values checked.
    steps : int
        Step operators in the trace; every window ``0 <= s <= t <= steps`` was checked.
    windows : int
        Number of windows checked (over every coordinate checked).
    worst_ratio : float
        Largest ``||M_{t-1} ... M_s - M_inf||_2`` divided by the bound of eq. 2.
    worst_window : tuple of int
        ``(s, t)`` of that ratio.
    violation : tuple or None
        ``(s, t, ratio)`` of the first window (earliest end, then earliest start) whose
        ratio exceeds 1, or None when the bound holds everywhere.
    trace_xi : float
        Largest ``||M_{t-1} ... M_s||_2`` over the same windows: the exact ``xi`` of this
        trace (Assumption 3 restricted to it).
    """

    t_mix: float
    xi: float
    steps: int
    windows: int
    worst_ratio: float
    worst_window: tuple[int, int]
    violation: tuple[int, int, float] | None
    trace_xi: float

    @property
    def holds(self) -> bool:
        """Whether the bound of Lemma 1 held on every window."""
        return self.violation is None

    def message(self) -> str:
        """One paragraph saying what was found and what it means."""
        s, t = self.worst_window
        text = (f"Lemma 1 with t_mix = {self.t_mix:g}, xi = {self.xi:.4g} on {self.steps} "
                f"steps ({self.windows} windows): worst ratio {self.worst_ratio:.4g} of the "
                f"bound, window [{s}, {t})")
        if self.holds:
            return text + "; holds on every window"
        s, t, ratio = self.violation
        text += f"; first broken by window [{s}, {t}) at {ratio:.4g} times the bound"
        if self.trace_xi > self.xi * (1 + 1e-9):
            return text + (f". The trace's products reach norm {self.trace_xi:.4g} > xi: "
                           "xi was too small (a lower bound), not necessarily t_mix")
        return text + ". xi covers every product of the trace: t_mix is too small"


class AssumptionViolation(NamedTuple):
    """An event (or window of events) that breaks one of the model's assumptions."""

    assumption: int
    event: int
    step: int
    kind: str
    value: float
    message: str


@dataclass(frozen=True)
class Consensus:
    """The consensus operator ``M_inf`` of a protocol.

    Every slot is set to the mean of the slots of ``average`` plus the contents of the
    ``absorb`` slots (in-flight buffers, which are emptied): ``v = mean(X[average]) +
    sum(X[absorb]) / |average|``.

    Parameters
    ----------
    layout : SlotLayout
    average : str
        Group whose mean is the consensus value (``workers`` for gossip, ``server`` for a
        parameter server or shared RAM).
    absorb : str, optional
        Group of in-flight slots whose contents end up in the ``average`` group.
    """

    layout: SlotLayout
    average: str = "workers"
    absorb: str | None = None

    def matrix(self) -> sp.csr_array:
        """``M_inf`` as a sparse ``slots x slots`` matrix."""
        size = self.layout.size
        avg_rows = self.layout.rows(self.average)
        weight = 1.0 / avg_rows.size
        sources = avg_rows
        if self.absorb is not None:
            sources = np.concatenate([avg_rows, self.layout.rows(self.absorb)])
        targets = np.arange(size)
        if self.absorb is not None:
            targets = np.setdiff1d(targets, self.layout.rows(self.absorb))
        row_idx = np.repeat(targets, sources.size)
        col_idx = np.tile(sources, targets.size)
        data = np.full(row_idx.size, weight)
        return sp.csr_array((data, (row_idx, col_idx)), shape=(size, size))

    def apply(self, X: np.ndarray) -> np.ndarray:
        """``M_inf X`` (a new array)."""
        rows = self.layout.rows(self.average)
        value = X[rows].sum(axis=0)
        if self.absorb is not None:
            value = value + X[self.layout.rows(self.absorb)].sum(axis=0)
        value = value / rows.size
        out = np.broadcast_to(value, X.shape).copy()
        if self.absorb is not None:
            out[self.layout.rows(self.absorb)] = 0.0
        return out

    def normal(self) -> np.ndarray:
        """Unit vector ``c`` with ``M_inf = t c^T`` up to scale: the range of
        ``I - M_inf`` (where every distance to consensus lies) is the hyperplane
        ``c^T y = 0``, and ``I - c c^T`` is the orthogonal projection onto it."""
        c = np.zeros(self.layout.size)
        c[self.layout.rows(self.average)] = 1.0
        if self.absorb is not None:
            c[self.layout.rows(self.absorb)] = 1.0
        return c / np.linalg.norm(c)

    def complement_basis(self) -> np.ndarray:
        """Orthonormal basis (columns) of the range of ``I - M_inf``.

        The distance to consensus ``X - M_inf X`` always lies in that range, so the mixing
        ratio of a product ``P`` is the spectral norm of ``P @ basis``.
        """
        from scipy.linalg import orth

        size = self.layout.size
        return orth(np.eye(size) - self.matrix().toarray())


@dataclass
class _Compiled:
    """Flat arrays of a trace for the numba kernels of :mod:`mixsim.mixing`."""

    op_rows_ptr: np.ndarray
    op_rows: np.ndarray
    op_row_ptr_ptr: np.ndarray
    op_row_ptr: np.ndarray
    op_cols: np.ndarray
    op_vals: np.ndarray
    op_lr_ptr: np.ndarray
    op_lr_cols: np.ndarray
    op_lr_vals: np.ndarray
    op_lr_coef: np.ndarray
    ev_op: np.ndarray
    step_ptr: np.ndarray
    ev_mask: np.ndarray  # (events, d) bool; all True where an event acts on every coordinate

    def op_arrays(self) -> tuple[np.ndarray, ...]:
        """The operator arrays, in the order of :meth:`Trace.op_arrays`."""
        return (self.op_rows_ptr, self.op_rows, self.op_row_ptr_ptr, self.op_row_ptr,
                self.op_cols, self.op_vals, self.op_lr_ptr, self.op_lr_cols, self.op_lr_vals,
                self.op_lr_coef)

    def max_rows(self) -> int:
        """Most rows one operator writes (the scratch rows a kernel needs, at least 1)."""
        return max(int(np.diff(self.op_rows_ptr).max(initial=0)), 1)


class Trace:
    """The communication events of one run, in order, with their operators.

    Parameters
    ----------
    layout : SlotLayout
        Slots of the state.
    consensus : Consensus
        The protocol's ``M_inf``.
    record_updates : bool
        Also keep the updates written by computation events, so :meth:`replay` reproduces
        the state of a learning run, not only its communication.
    """

    def __init__(self, layout: SlotLayout, consensus: Consensus, *, record_updates=False):
        self.layout = layout
        self.consensus = consensus
        self.record_updates = record_updates
        self.ops: list[Operator] = []
        self._op_ids: dict[int, int] = {}
        self.ev_step: list[int] = []
        self.ev_time: list[float] = []
        self.ev_kind: list[str] = []
        self.ev_op: list[int] = []
        self.ev_coords: dict[int, np.ndarray] = {}
        self.updates: dict[int, tuple[int, int, np.ndarray]] = {}
        self.n_steps = 0
        self.initial_state: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ev_op)

    def register(self, op: Operator) -> int:
        """Index of ``op`` among the trace's operators (added on first use)."""
        key = id(op)
        index = self._op_ids.get(key)
        if index is None:
            index = len(self.ops)
            self._op_ids[key] = index
            self.ops.append(op)
        return index

    def record(self, step: int, time: float, kind: str, op: Operator, coords=None) -> None:
        """Append a communication event that happened after computation ``step``."""
        index = self.register(op)
        if coords is not None:
            self.ev_coords[len(self.ev_op)] = coords
        self.ev_step.append(step)
        self.ev_time.append(time)
        self.ev_kind.append(kind)
        self.ev_op.append(index)

    def record_update(self, step: int, time: float, worker: int, row: int, delta) -> None:
        """Append the update ``delta`` that computation ``step`` added to slot ``row``."""
        if self.record_updates:
            self.updates[len(self.ev_op)] = (worker, row, np.array(delta, copy=True))
            self.ev_step.append(step)
            self.ev_time.append(time)
            self.ev_kind.append("update")
            self.ev_op.append(-1)

    def events(self):
        """Iterate over the communication events as :class:`TraceEvent`."""
        for index, op_index in enumerate(self.ev_op):
            if op_index < 0:
                continue
            op = self.ops[op_index]
            yield TraceEvent(
                index,
                self.ev_step[index],
                self.ev_time[index],
                self.ev_kind[index],
                op.participants(),
                op,
                self.ev_coords.get(index),
            )

    def replay(self, X0: np.ndarray | None = None) -> np.ndarray:
        """Apply the recorded events (and updates, if recorded) to a copy of ``X0``.

        Parameters
        ----------
        X0 : ndarray, optional
            Initial state; defaults to the state the run started from.
        """
        X = np.array(self.initial_state if X0 is None else X0, copy=True)
        for index, op_index in enumerate(self.ev_op):
            if op_index < 0:
                if index in self.updates:
                    _, row, delta = self.updates[index]
                    X[row] += delta
                continue
            self.ops[op_index].apply(X, self.ev_coords.get(index))
        return X

    def step_operator(self, step: int) -> sp.csr_array:
        """``M_t``: the product of the communication events after computation ``step``.

        Only for traces whose events act on every coordinate.
        """
        product = sp.eye_array(self.layout.size, format="csr")
        for index in np.flatnonzero(np.asarray(self.ev_step) == step):
            op_index = self.ev_op[index]
            if op_index >= 0:
                product = self.ops[op_index].to_sparse() @ product
        return product.tocsr()

    def op_arrays(self) -> tuple[np.ndarray, ...]:
        """The trace's distinct operators as flat arrays (cached until a new one appears).

        Returns ``(op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols, op_vals,
        op_lr_ptr, op_lr_cols, op_lr_vals, op_lr_coef)``: operator ``k`` writes rows
        ``op_rows[op_rows_ptr[k]:op_rows_ptr[k + 1]]``; its row ``a`` has the entries
        ``op_row_ptr[g]:op_row_ptr[g + 1]`` of ``op_cols`` and ``op_vals`` with
        ``g = op_row_ptr_ptr[k] + a``, plus ``op_lr_coef[op_rows_ptr[k] + a]`` times the
        rank-one sum over ``op_lr_cols`` and ``op_lr_vals[op_lr_ptr[k]:op_lr_ptr[k + 1]]``.
        """
        cached = getattr(self, "_op_arrays", None)
        if cached is not None and cached[0] == len(self.ops):
            return cached[1]
        op_rows_ptr, op_row_ptr_ptr, op_lr_ptr = [0], [0], [0]
        rows, row_ptrs, cols, vals, lr_cols, lr_vals, lr_coef = [], [], [], [], [], [], []
        nnz = 0
        for op in self.ops:
            rows.append(op.rows)
            op_rows_ptr.append(op_rows_ptr[-1] + op.rows.size)
            row_ptrs.append(op.row_ptr[:-1] + nnz if op.rows.size else op.row_ptr[:0])
            cols.append(op.cols)
            vals.append(op.vals)
            nnz += op.cols.size
            op_row_ptr_ptr.append(op_row_ptr_ptr[-1] + op.rows.size)
            lr_cols.append(op.lr_cols)
            lr_vals.append(op.lr_vals)
            lr_coef.append(op.lr_coef)
            op_lr_ptr.append(op_lr_ptr[-1] + op.lr_cols.size)
        row_ptrs.append(np.array([nnz]))

        def flat(parts, dtype):
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

        arrays = (
            np.array(op_rows_ptr, dtype=np.int64),
            flat(rows, np.int64),
            np.array(op_row_ptr_ptr, dtype=np.int64),
            np.concatenate(row_ptrs).astype(np.int64),
            flat(cols, np.int64),
            flat(vals, np.float64),
            np.array(op_lr_ptr, dtype=np.int64),
            flat(lr_cols, np.int64),
            flat(lr_vals, np.float64),
            flat(lr_coef, np.float64),
        )
        self._op_arrays = (len(self.ops), arrays)
        return arrays

    def compile(self, d: int = 1, first_step: int = 0) -> _Compiled:
        """Flatten the trace into arrays for the numba kernels.

        Parameters
        ----------
        d : int
            Number of coordinates to describe masks for (events restricted to coordinates
            ``>= d`` are dropped for those coordinates).
        first_step : int
            Describe only the steps from this one on: ``step_ptr[i]`` is the first event
            of step ``first_step + i`` (a growing run is compiled piece by piece).
        """
        (op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols, op_vals, op_lr_ptr,
         op_lr_cols, op_lr_vals, op_lr_coef) = self.op_arrays()
        # Events are recorded in step order: skip the earlier ones without looking at them.
        begin = bisect.bisect_left(self.ev_step, max(first_step, 0))
        ev_step = np.array(self.ev_step[begin:], dtype=np.int64)
        ev_op = np.array(self.ev_op[begin:], dtype=np.int64)
        comm = np.flatnonzero((ev_op >= 0) & (ev_step >= 0))
        ev_op, ev_step = ev_op[comm], ev_step[comm]
        step_ptr = np.searchsorted(ev_step, np.arange(first_step, self.n_steps + 1),
                                   side="left")
        ev_mask = np.ones((comm.size, d), dtype=np.bool_)
        if self.ev_coords:
            for k, i in enumerate(comm):
                coords = self.ev_coords.get(int(i) + begin)
                if coords is not None:
                    ev_mask[k] = False
                    ev_mask[k, coords[coords < d]] = True
        return _Compiled(
            op_rows_ptr=op_rows_ptr,
            op_rows=op_rows,
            op_row_ptr_ptr=op_row_ptr_ptr,
            op_row_ptr=op_row_ptr,
            op_cols=op_cols,
            op_vals=op_vals,
            op_lr_ptr=op_lr_ptr,
            op_lr_cols=op_lr_cols,
            op_lr_vals=op_lr_vals,
            op_lr_coef=op_lr_coef,
            ev_op=ev_op,
            step_ptr=step_ptr.astype(np.int64),
            ev_mask=ev_mask,
        )

    def check_assumption1(self, tol: float = 1e-9) -> list[AssumptionViolation]:
        """Events whose operator breaks ``M_inf M = M M_inf = M_inf`` (Assumption 1).

        Returns one :class:`AssumptionViolation` per offending operator, naming the first
        event that used it. Events restricted to coordinates are checked on the operator
        they apply on those coordinates (the identity elsewhere satisfies the assumption).
        """
        m_inf = self.consensus.matrix()
        first_use: dict[int, int] = {}
        for index, op_index in enumerate(self.ev_op):
            if op_index >= 0:
                first_use.setdefault(op_index, index)
        violations = []
        for op_index, index in sorted(first_use.items(), key=lambda item: item[1]):
            M = self.ops[op_index].to_sparse()
            left = abs(m_inf @ M - m_inf).max()
            right = abs(M @ m_inf - m_inf).max()
            residual = float(max(left, right))
            if residual > tol:
                side = "M_inf M != M_inf" if left > tol else "M M_inf != M_inf"
                violations.append(
                    AssumptionViolation(
                        1, index, self.ev_step[index], self.ev_kind[index], residual,
                        f"event {index} ({self.ev_kind[index]}, step {self.ev_step[index]}) "
                        f"breaks Assumption 1: {side} (residual {residual:.3g})",
                    )
                )
        return violations

    def check_assumption3(self, xi_max: float, starts: int = 8) -> list[AssumptionViolation]:
        """Windows whose product norm exceeds ``xi_max`` (Assumption 3).

        Running products are followed from ``starts`` evenly spaced start events; the first
        event at which ``||M_t ... M_s||_2 > xi_max`` is reported for each start.
        """
        comm = [i for i, o in enumerate(self.ev_op) if o >= 0]
        if not comm:
            return []
        violations = []
        size = self.layout.size
        for start in np.unique(np.linspace(0, len(comm) - 1, starts).astype(int)):
            product = np.eye(size)
            for index in comm[start:]:
                # A sparsified event is the operator on some coordinates and the identity
                # on the rest; the full operator bounds every coordinate's product.
                self.ops[self.ev_op[index]].apply(product)
                value = float(np.linalg.norm(product, 2))
                if not np.isfinite(value) or value > xi_max:
                    violations.append(
                        AssumptionViolation(
                            3, index, self.ev_step[index], self.ev_kind[index], value,
                            f"event {index} ({self.ev_kind[index]}, step "
                            f"{self.ev_step[index]}) breaks Assumption 3: the product from "
                            f"event {comm[start]} has norm {value:.3g} > xi = {xi_max:g}",
                        )
                    )
                    break
        return violations

    def check_lemma1(self, t_mix: float, xi: float, *, coordinates: int = 1,
                     tol: float = 1e-9, progress: bool = False) -> Lemma1Check:
        """Check Lemma 1 (seed 002, eq. 2) on every window of the trace.

        For every ``0 <= s <= t <= n_steps`` the window's distance from consensus,
        ``||M_{t-1} ... M_s - M_inf||_2`` (the largest ``||(prod M_k) X - M_inf X||`` over
        ``||X|| = 1``), is compared with ``2^-floor((t - s) / t_mix) (1 + xi) xi``.

        The lemma follows from Assumptions 1 to 3, so where ``t_mix`` and ``xi`` are exact
        for the trace it must hold; a violation means one of them is too small. ``xi``
        measured on sampled windows is a lower bound of the true one: the bound grows with
        ``xi``, so holding with a lower bound is conclusive, and a violation is then
        attributed to ``xi`` when the trace's own product norms (``trace_xi``) exceed it.

        Parameters
        ----------
        t_mix : float
            Mixing time to check (>= 1).
        xi : float
            Product norm bound to check (>= 1).
        coordinates : int
            Coordinates checked: a sparsified event acts on coordinate ``j`` only when it
            exchanged ``j``; other events act on every coordinate.
        tol : float
            Relative slack for rounding.
        progress : bool
            Show a progress bar over the steps (quiet when not on a terminal).

        Returns
        -------
        Lemma1Check

        Raises
        ------
        ConfigError
            The window products (``(n_steps + 1) slots^2`` numbers) do not fit in memory.

        Notes
        -----
        Cost: ``O(n_steps^2 slots^2)`` for the Frobenius norms, plus, per event, its
        written rows times its sources times ``n_steps slots`` to update the window
        products (an event changes a few rows of each; an average over all slots costs
        ``slots^2``), and ``O(slots^3)`` for each spectral norm. The spectral norm is
        computed only where the Frobenius norm (an upper bound) could change the answer
        and, for non-expansive traces that satisfy Assumption 1, only at the first window
        of each value of the bound. Meant for traces of up to a few thousand steps on up
        to a few hundred slots.
        """
        if not t_mix >= 1 or not xi >= 1:
            raise ValueError(f"t_mix = {t_mix!r} and xi = {xi!r} must both be >= 1")
        from tqdm import tqdm

        from mixsim import _memory

        size = self.layout.size
        T = self.n_steps
        # The products, their differences from M_inf and the rows being rewritten: a peak
        # of about four copies measured (allreduce, n = 200, 400 steps); five to be safe.
        _memory.require(5.0 * (T + 1) * size * size * 8,
                        f"the Lemma 1 check's {T + 1:,} window products of {size:,} x "
                        f"{size:,} slots", key="check")
        m_inf = self.consensus.matrix().toarray()
        by_step: list[list[TraceEvent]] = [[] for _ in range(T)]
        for event in self.events():
            if 0 <= event.step < T:
                by_step[event.step].append(event)
        expansive = any(event.operator.norm() > 1 + 1e-12 for events in by_step
                        for event in events)
        bounds = np.array([theory.lemma1_bound(w, t_mix, xi) for w in range(T + 1)])
        # With non-expansive events that keep consensus (M M_inf = M_inf), the distance
        # of a window, M_{t-1} (P - M_inf), cannot grow with t while the bound stays
        # constant: the worst ratio and the first break of every start are at the first
        # window of a constant bound, the only ones whose spectral norm is needed.
        candidate = np.ones(T + 1, dtype=bool)
        if not expansive and not self.check_assumption1():
            candidate[1:] = bounds[1:] < bounds[:-1]
        # Each operator as (rows it writes, the sources it reads, weights): applying it to
        # every window product at once rewrites those rows only.
        parts: dict[int, tuple] = {}

        def apply_all(op, products):
            part = parts.get(id(op))
            if part is None:
                written = op.written().toarray()
                sources = np.flatnonzero(np.any(written != 0.0, axis=0))
                part = parts[id(op)] = (op, op.rows, sources, written[:, sources])
            _, rows, sources, weights = part
            products[:, rows, :] = np.einsum("rc,kcj->krj", weights, products[:, sources, :])

        bar = tqdm(total=coordinates * (T + 1), desc="Lemma 1", unit="step",
                   disable=not progress, leave=False)
        try:
            result = self._lemma1_windows(T, size, coordinates, by_step, m_inf, bounds,
                                          candidate, expansive, tol, apply_all, bar)
        finally:
            bar.close()  # also on Ctrl-C, so the terminal line is clean
        return Lemma1Check(float(t_mix), float(xi), T, *result)

    @staticmethod
    def _lemma1_windows(T, size, coordinates, by_step, m_inf, bounds, candidate, expansive,
                        tol, apply_all, bar):
        """The window loop of :meth:`check_lemma1`."""
        worst, worst_window, violation, trace_xi, windows = 0.0, (0, 0), None, 1.0, 0
        for coord in range(coordinates):
            # products[s] = M_{t-1} ... M_s for every start s <= t, updated as t grows
            products = np.empty((T + 1, size, size))
            for t in range(T + 1):
                bar.update()
                products[t] = np.eye(size)
                distances = products[:t + 1] - m_inf
                ratio_bound = np.sqrt(np.einsum("kij,kij->k", distances, distances))
                ratio_bound /= bounds[t::-1]
                windows += t + 1
                need = np.flatnonzero((ratio_bound > min(worst, 1 + tol))
                                      & candidate[t::-1])
                if need.size:
                    ratios = np.linalg.norm(distances[need], 2, axis=(1, 2)) / bounds[t - need]
                    best = int(np.argmax(ratios))
                    if ratios[best] > worst:
                        worst, worst_window = float(ratios[best]), (int(need[best]), t)
                    broken = np.flatnonzero(ratios > 1 + tol)
                    if broken.size:
                        # Earliest end, then earliest start, over every coordinate.
                        s = int(need[broken[0]])
                        if violation is None or (t, s) < (violation[1], violation[0]):
                            violation = (s, t, float(ratios[broken[0]]))
                if expansive:
                    trace_xi = max(trace_xi, float(np.max(
                        np.linalg.norm(products[:t + 1], 2, axis=(1, 2)))))
                if t < T:
                    for event in by_step[t]:
                        if event.coords is None or coord in event.coords:
                            apply_all(event.operator, products[:t + 1])
        return windows, worst, worst_window, violation, trace_xi
