"""Mixing time ``t_mix`` and ``xi`` of a protocol (seed 002, Assumptions 2 and 3).

``t_mix`` is the smallest number of steps ``L`` such that every window of ``L`` step
operators halves every distance to consensus:
``||M_{t+L-1} ... M_t X - M_inf X|| <= ||X - M_inf X|| / 2``. Because ``X - M_inf X`` lies
in the range of ``I - M_inf``, the ratio of a window is the spectral norm of the window's
product applied to an orthonormal basis of that range, and it is computed exactly.

Methods
-------
trace
    Exact on the operators one run produced: for each window start ``t`` in the first
    ``starts`` steps, the first window length that halves every distance; ``t_mix`` is the
    largest. The run is extended until every start has halved.
montecarlo
    ``runs`` independent runs (seeds derived from ``seed``), the trace value of each; the
    mean with a 95% confidence interval, and the whole sample.
spectral
    For stationary protocols: ``n * every * k`` with ``k`` the smallest power such that
    ``||W^k - 11^T/n||_2 <= 1/2`` (sparse eigen-solvers, n = 10,000 and beyond), or for
    random pairwise gossip the mean-square figure from ``E[W^T W]``.
auto
    ``trace`` for protocols whose operator sequence does not depend on the seed,
    ``montecarlo`` for the others, ``spectral`` for stationary protocols too large to
    simulate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from mixsim import _memory
from mixsim._numba import njit
from mixsim._passages import FirstPassages
from mixsim._probes import DELTA, ProbeScan, _gaussians, _replay, _replay_transpose
from mixsim.engine import Simulation, build_layout
from mixsim.errors import ProtocolError
from mixsim.operators import _apply_op
from mixsim.protocol import Protocol, load_protocol
from mixsim.timing import Timing

__all__ = ["MixingTime", "mixing_time", "trace_mixing_time", "measure_trace", "METHODS"]

METHODS = ("auto", "trace", "montecarlo", "spectral")

#: Largest run the trace method will simulate before giving up.
MAX_STEPS = 2_000_000
#: Largest state (slots) the exact dense scan runs on by default; the probe scan above.
EXACT_SLOTS = 256
#: Above ``EXACT_SLOTS`` slots the default number of window starts is ``STARTS_BUDGET / n``
#: (at least ``MIN_STARTS``): starts times the run's length grows like the length alone.
STARTS_BUDGET = 65_536
MIN_STARTS = 16
#: Scans a run may use.
SCANS = ("auto", "exact", "probes")


@njit
def _all_windows_norm(n_steps, coord, size, step_ptr, ev_op, ev_mask, op_rows_ptr, op_rows,
                      op_row_ptr_ptr, op_row_ptr, op_cols, op_vals, op_lr_ptr, op_lr_cols,
                      op_lr_vals, op_lr_coef, max_rows, best):
    """``max ||M_e ... M_s||_2`` over every window ``0 <= s <= e < n_steps``.

    Each window's product is followed row by row from its start; its norm is computed
    (an SVD) only when ``min(||Y||_F, sqrt(||Y||_1 ||Y||_inf))``, kept current with the
    rows an event rewrites, exceeds the best so far by more than 1e-9 relative. Starts
    after a step without events repeat the next start's windows and are skipped."""
    buf = np.empty((max(max_rows, 1), size))
    Y = np.empty((size, size))
    row_sum = np.empty(size)
    col_sum = np.empty(size)
    for s in range(n_steps):
        quiet = True
        for ev in range(step_ptr[s], step_ptr[s + 1]):
            if ev_mask[ev, coord]:
                quiet = False
        if quiet:
            continue
        for r in range(size):
            for j in range(size):
                Y[r, j] = 1.0 if r == j else 0.0
            row_sum[r] = 1.0
            col_sum[r] = 1.0
        fro2 = float(size)
        changes = 0
        for e in range(s, n_steps):
            changed = False
            for ev in range(step_ptr[e], step_ptr[e + 1]):
                if not ev_mask[ev, coord]:
                    continue
                changed = True
                op = ev_op[ev]
                for a in range(op_rows_ptr[op], op_rows_ptr[op + 1]):
                    r = op_rows[a]
                    for j in range(size):
                        col_sum[j] -= abs(Y[r, j])
                        fro2 -= Y[r, j] * Y[r, j]
                _apply_op(Y, op, op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols,
                          op_vals, op_lr_ptr, op_lr_cols, op_lr_vals, op_lr_coef, buf)
                for a in range(op_rows_ptr[op], op_rows_ptr[op + 1]):
                    r = op_rows[a]
                    t = 0.0
                    for j in range(size):
                        col_sum[j] += abs(Y[r, j])
                        fro2 += Y[r, j] * Y[r, j]
                        t += abs(Y[r, j])
                    row_sum[r] = t
            if not changed:
                continue
            changes += 1
            if changes % 64 == 0:
                # Incremental sums drift by rounding: recompute them now and then.
                fro2 = 0.0
                for j in range(size):
                    col_sum[j] = 0.0
                for r in range(size):
                    t = 0.0
                    for j in range(size):
                        v = abs(Y[r, j])
                        t += v
                        col_sum[j] += v
                        fro2 += v * v
                    row_sum[r] = t
            upper = min(np.sqrt(max(fro2, 0.0)), np.sqrt(row_sum.max() * col_sum.max()))
            if upper <= best * (1.0 + 1e-9):
                continue
            value = np.linalg.norm(Y, 2)
            if value > best:
                best = value
    return best


@njit
def _window_norm_lower(s, e, coord, base, size, step_ptr, ev_op, ev_mask, ops, max_rows,
                       seed, iterations):
    """A certified lower bound of ``||M_e ... M_s||_2``: power iterations on ``P^T P``
    from a Gaussian start (each iterate's ``||P x|| / ||x||`` is a lower bound)."""
    x = _gaussians(size, seed).reshape((size, 1))
    buf = np.empty((max(max_rows, 1), 1))
    best = 0.0
    for _ in range(iterations):
        x /= np.sqrt(np.sum(x * x))
        _replay(x, s, e, coord, base, step_ptr, ev_op, ev_mask, ops, buf)
        value = np.sqrt(np.sum(x * x))
        if value > best:
            best = value
        _replay_transpose(x, s, e, coord, base, step_ptr, ev_op, ev_mask, ops, buf)
    return best


@dataclass
class MixingTime:
    """The mixing time of a protocol for one number of workers.

    Attributes
    ----------
    workers : int
    t_mix : float
        The mixing time in steps (the mean over runs for ``montecarlo``).
    runs : int
        Number of runs it rests on (0 for ``spectral``).
    ci95 : tuple of float or None
        95% confidence interval of the mean over runs (``None`` when the sample has no
        spread, or for ``trace`` and ``spectral``).
    xi : float
        Largest product norm (Assumption 3): exactly 1 when every event is non-expansive,
        otherwise the largest value seen on the runs' windows.
    theory : float or None
        The protocol file's theoretical value, where it gives one.
    method : str
        The method actually used.
    samples : ndarray
        Per-run values.
    scan : str
        How halvings were decided: ``"exact"`` (dense scan, or every test exact),
        ``"probabilistic"`` (some Lanczos tests declared a window halved with a
        Kuczynski-Wozniakowski failure bound) or ``"spectral"``.
    failure_probability : float
        Union bound on the probability that some probabilistic test was wrong (0 when
        ``scan`` is not ``"probabilistic"``).
    xi_kind : str
        ``"exact"`` (every window of every run, or every event non-expansive) or
        ``"lower bound"`` (a certified lower bound: the probe scan's windows).
    starts : int or None
        Window starts per run.
    undecided : int
        Lanczos tests that reached their step limit undecided (counted as not halved,
        which can only lengthen a passage).
    """

    workers: int
    t_mix: float
    runs: int
    ci95: tuple[float, float] | None
    xi: float
    theory: float | None
    method: str
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    scan: str = "exact"
    failure_probability: float = 0.0
    xi_kind: str = "exact"
    starts: int | None = None
    undecided: int = 0

    def __post_init__(self):
        # Plain Python numbers (28, not np.float64(28.0)) in the repr and for the caller.
        self.t_mix = _plain(self.t_mix)
        self.xi = _plain(self.xi)
        if self.theory is not None:
            self.theory = _plain(self.theory)
        if self.ci95 is not None:
            self.ci95 = tuple(float(v) for v in self.ci95)

    def as_dict(self) -> dict:
        """The JSON form of the ``mixsim mixing-time`` contract."""
        return {
            "workers": int(self.workers),
            "t_mix": _plain(self.t_mix),
            "runs": int(self.runs),
            "ci95": None if self.ci95 is None else [_plain(v) for v in self.ci95],
            "xi": _plain(self.xi),
            "theory": None if self.theory is None else _plain(self.theory),
            "scan": self.scan,
            "failure_probability": float(self.failure_probability),
            "xi_kind": self.xi_kind,
            "starts": self.starts,
        }


def _plain(value):
    value = float(value)
    return int(value) if value.is_integer() else value


def default_starts(n: int, slots: int | None = None) -> int:
    """Window starts per run: ``n`` while the exact scan runs (``slots <= EXACT_SLOTS``),
    then ``STARTS_BUDGET // n`` but at least ``MIN_STARTS``, so that the probe scan's cost
    (starts times a window of about ``n log n`` steps for a random protocol) grows about
    linearly with ``n``, not with ``n^2``."""
    slots = n if slots is None else slots
    if slots <= EXACT_SLOTS:
        return n
    return min(n, max(MIN_STARTS, STARTS_BUDGET // n))


def _active_rules(protocol: Protocol, n: int = 1):
    return [rule for rule in protocol.spec.communication
            if rule.when is None or protocol.evaluate("=" + rule.when.lstrip("="), n)]


def _seed_free(protocol: Protocol, n: int = 1) -> bool:
    """Whether the operator sequence cannot depend on the seed (no random choices)."""
    spec = protocol.spec
    if protocol.sparsify is not None or protocol.evaluate(spec.schedule, n) != "sync":
        return False
    return all(rule.on == "round" and rule.op in ("average", "gossip", "slack",
                                                  "one-peer-exponential")
               and rule.delay_steps is None for rule in _active_rules(protocol, n))


class _Measure:
    """Runs one simulation and measures t_mix and xi on its trace.

    The exact dense scan (:mod:`mixsim._passages`) runs when the state has at most
    ``EXACT_SLOTS`` slots (or ``scan="exact"``), the probe scan (:mod:`mixsim._probes`)
    otherwise (or ``scan="probes"``).
    """

    def __init__(self, protocol, n, seed, timing, starts, d, basis=None, scan="auto"):
        self.sim = Simulation(protocol, n, d=d, seed=seed, timing=timing)
        self.n = n
        self.seed = seed
        self.d = d
        slots = self.sim.layout.size
        self.exact = scan == "exact" or (scan == "auto" and slots <= EXACT_SLOTS)
        self.starts = starts or default_starts(n, slots)
        consensus = self.sim.trace.consensus
        if self.exact:
            # The basis depends on the layout and consensus only: runs may share it.
            self.basis = consensus.complement_basis() if basis is None else basis
        else:
            self.basis = None
        self.normal = consensus.normal()
        self.scans = []

    def t_mix(self, guess: int) -> int:
        """The run's t_mix: the largest first passage over starts (and coordinates).

        The run is simulated in pieces, each sized from the progress of the slowest start,
        and every piece is scanned once: the simulation stops soon after the last start
        has halved.
        """
        steps = self.starts + max(guess, 1)
        if self.sim.layout.size <= 1 or (self.exact and self.basis.shape[1] == 0):
            self.sim.run(steps)
            return 1
        if self.exact:
            scans = [FirstPassages(self.basis, np.arange(self.starts), coord)
                     for coord in range(self.d)]
        else:
            scans = [ProbeScan(self.normal, np.arange(self.starts), coord, seed=self.seed)
                     for coord in range(self.d)]
        self.scans = scans
        while True:
            self.sim.run(steps)
            base = min(getattr(scan, "needs_from", scan.next_step) for scan in scans
                       if not scan.done)
            compiled = self.sim.trace.compile(self.d, first_step=base)
            for scan in scans:
                if not scan.done:
                    scan.advance(compiled, self.sim.step, base)
            if all(scan.done for scan in scans):
                return int(max(scan.lengths.max() for scan in scans))
            if steps >= MAX_STEPS:
                raise ProtocolError(
                    f"no window halved the distance to consensus within {steps} steps "
                    f"(n = {self.n}); the protocol may not mix", key="protocol")
            steps = min(_next_size(scans, steps), MAX_STEPS)

    def scan_info(self) -> tuple[str, float, int]:
        """``(scan kind, failure probability bound, undecided tests)`` of the run."""
        if self.exact:
            return "exact", 0.0, 0
        counts = [scan.counts for scan in self.scans]
        probabilistic = sum(c["probabilistic_halvings"] for c in counts)
        undecided = sum(c["undecided"] for c in counts)
        if probabilistic == 0:
            return "exact", 0.0, undecided
        return "probabilistic", probabilistic * DELTA, undecided

    def xi(self, t_mix: int) -> tuple[float, str]:
        """``(xi, kind)``: exact over every window of the run where the exact scan runs,
        a certified lower bound otherwise."""
        return _trace_xi(self.sim.trace, self.d, t_mix, self.exact, self.seed)

    def fingerprint(self) -> str:
        compiled = self.sim.trace.compile(self.d)
        digest = hashlib.sha256()
        for array in (compiled.ev_op, compiled.step_ptr, compiled.op_rows, compiled.op_cols,
                      compiled.op_vals, compiled.op_lr_cols, compiled.op_lr_vals,
                      compiled.op_lr_coef, compiled.ev_mask):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


#: Window-steps above which the all-window xi is replaced by its lower bound.
_XI_EXACT_WORK = 4e9


def _trace_xi(trace, d: int, t_mix: int | None, exact: bool, seed: int) -> tuple[float, str]:
    """xi of a recorded trace: ``(value, "exact" | "lower bound")``."""
    if all(op.norm() <= 1 + 1e-12 for op in trace.ops):
        # Non-expansive events: every product has norm <= 1, and >= 1 because it keeps
        # the range of M_inf.
        return 1.0, "exact"
    n_steps = trace.n_steps
    size = trace.layout.size
    compiled = trace.compile(d)
    arrays = _arrays_of(compiled)
    if exact and 0.5 * n_steps * n_steps * size <= _XI_EXACT_WORK:
        best = 1.0
        for coord in range(d):
            best = _all_windows_norm(n_steps, coord, size, *arrays[:-1], arrays[-1], best)
        return float(best), "exact"
    length = min(2 * (t_mix or n_steps), n_steps)
    best = 1.0
    for k, start in enumerate(np.unique(np.linspace(0, max(n_steps - length, 0), 4)
                                        .astype(int))):
        for coord in range(d):
            for window in (length // 2, length):
                end = int(min(start + max(window, 1), n_steps)) - 1
                best = max(best, _window_norm_lower(
                    int(start), end, coord, 0, size, compiled.step_ptr, compiled.ev_op,
                    compiled.ev_mask, compiled.op_arrays(), compiled.max_rows(),
                    (seed * 31 + k * 7 + coord) % 2**31, 12))
    return float(best), "lower bound"


def _next_size(scans, steps: int) -> int:
    """Length of the run's next piece: where the slowest open start is predicted to halve.

    The prediction extrapolates each open start's ratio bound geometrically (the bound is
    below the ratio, so it errs early); it is kept between 1.04 and 2 times the current
    length.
    """
    predicted = 0.0
    for scan in scans:
        if scan.done:
            continue
        for length, bound in scan.lower_bounds():
            if length <= 0 or not 0 < bound < 1:
                return 2 * steps
            need = length * np.log(0.5) / np.log(bound)
            predicted = max(predicted, scan.next_step - length + need)
    return int(min(max(1.01 * predicted + 1, 1.04 * steps + 1), 2 * steps))


def trace_mixing_time(protocol, n: int, *, seed: int = 0, timing: Timing | None = None,
                      starts: int | None = None, d: int = 1,
                      scan: str = "auto") -> tuple[int, float]:
    """``(t_mix, xi)`` of one run.

    Parameters
    ----------
    protocol : str, Path or Protocol
    n : int
        Number of workers.
    seed : int
    timing : Timing, optional
    starts : int, optional
        Number of window starts checked (default :func:`default_starts`).
    d : int
        Coordinates simulated (more than 1 only matters for sparsified protocols, whose
        t_mix is the largest over coordinates).
    scan : {"auto", "exact", "probes"}
        The exact dense scan, the probe scan, or the exact one up to ``EXACT_SLOTS``
        slots.
    """
    protocol = load_protocol(protocol)
    measure = _Measure(protocol, n, seed, timing, starts, d, scan=_check_scan(scan))
    theory = _theory(protocol, n)
    t_mix = measure.t_mix(int(theory) if theory else 4 * n)
    return t_mix, measure.xi(t_mix)[0]


def _check_scan(scan: str) -> str:
    if scan not in SCANS:
        raise ProtocolError(f"unknown scan {scan!r}; allowed: {', '.join(SCANS)}", key="scan")
    return scan


def _theory(protocol: Protocol, n: int) -> float | None:
    value = protocol.theory_t_mix(n)
    return None if value is None or not np.isfinite(value) else value


def mixing_time(protocol, workers=(8,), *, runs: int = 100, method: str = "auto",
                seed: int = 0, params: dict | None = None, timing: Timing | None = None,
                starts: int | None = None, d: int | None = None, progress: bool = False,
                map_runs=None, scan: str = "auto") -> list[MixingTime]:
    """Mixing time (and xi) of a protocol for each number of workers.

    Parameters
    ----------
    protocol : str, Path or Protocol
        Catalog name (see :func:`mixsim.list_protocols`) or protocol file.
    workers : int or sequence of int
        Numbers of workers, each >= 1.
    runs : int
        Runs per number of workers for ``montecarlo``.
    method : {"auto", "trace", "montecarlo", "spectral"}
        ``auto``: ``trace`` when the operator sequence cannot depend on the seed (unless
        the protocol is stationary and its run would exceed ``MAX_STEPS``: then
        ``spectral``), ``montecarlo`` otherwise.
    seed : int
        Seed of the first run; run ``r`` uses a seed derived from it.
    params : dict, optional
        Protocol parameter overrides.
    timing : Timing, optional
        Cluster timing (matters for asynchronous protocols).
    starts : int, optional
        Window starts per run (default :func:`default_starts`: ``n`` up to
        ``EXACT_SLOTS`` slots, then ``STARTS_BUDGET // n``, at least ``MIN_STARTS``).
    d : int, optional
        Coordinates simulated (default 1; 16 for sparsified protocols).
    progress : bool
        Show a progress bar over runs (quiet when not on a terminal).
    map_runs : callable, optional
        ``map_runs(function, list_of_seeds)`` to evaluate runs elsewhere (e.g. on Dask);
        default: in this process.
    scan : {"auto", "exact", "probes"}
        Scan of each run: exact dense up to ``EXACT_SLOTS`` slots and probes above
        (``auto``), or one of them always.

    Returns
    -------
    list of MixingTime

    Raises
    ------
    ProtocolError
        Unknown protocol or parameter, workers < 1, a method that does not apply.

    Examples
    --------
    >>> [r.t_mix for r in mixing_time("allreduce", workers=[2, 4], method="trace")]
    [2, 4]
    """
    if method not in METHODS:
        raise ProtocolError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}",
                            key="method")
    _check_scan(scan)
    if isinstance(workers, int | np.integer):
        workers = [int(workers)]
    for n in workers:
        if not isinstance(n, int | np.integer) or n < 1:
            raise ProtocolError(f"{n!r} workers: must be an integer >= 1", key="workers")
    if not isinstance(runs, int) or runs < 1:
        raise ProtocolError(f"runs = {runs!r} must be an integer >= 1", key="runs")
    for key, value in (("d", d), ("starts", starts)):
        if value is not None and (not isinstance(value, int | np.integer) or value < 1):
            raise ProtocolError(f"{key} = {value!r} must be an integer >= 1", key=key)
    if starts is not None and starts > MAX_STEPS:
        # A start past the longest run the trace method simulates is never reached.
        raise ProtocolError(f"starts = {starts!r} must be at most {MAX_STEPS:,} (the longest "
                            "run the trace method simulates)", key="starts")
    _memory.require(runs * _memory.BYTES_PER_RUN, f"{runs:,} runs", key="runs")
    protocol = load_protocol(protocol, params)
    if d is None:
        d = 16 if protocol.sparsify is not None else 1
    results = []
    # The kernels make many small BLAS calls: threads would only add overhead.
    with threadpool_limits(limits=1):
        for n in workers:
            results.append(_one_size(protocol, int(n), method, runs, seed, timing, starts, d,
                                     progress, map_runs, scan))
    return results


def _stationary(protocol: Protocol, n: int) -> bool:
    """Whether :func:`_spectral` applies (one stationary synchronous rule)."""
    rules = _active_rules(protocol, n)
    return (protocol.sparsify is None and len(rules) == 1 and rules[0].delay_steps is None
            and rules[0].on == "round" and rules[0].op in ("average", "gossip", "slack"))


def _one_size(protocol, n, method, runs, seed, timing, starts, d, progress, map_runs, scan):
    chosen = method
    if method == "auto":
        chosen = "trace" if _seed_free(protocol, n) else "montecarlo"
        if chosen == "trace" and _stationary(protocol, n):
            try:
                theory = _theory(protocol, n)
            except ProtocolError:
                # A bad parameter: the run below reports it where the user set it.
                theory = None
            if theory is not None and theory > MAX_STEPS:
                chosen = "spectral"
    if chosen == "spectral":
        return _spectral(protocol, n)
    if chosen == "trace":
        return _monte_carlo(protocol, n, 1, seed, timing, starts, d, "trace", progress,
                            map_runs, scan)
    return _monte_carlo(protocol, n, runs, seed, timing, starts, d, "montecarlo", progress,
                        map_runs, scan)


def run_seeds(seed: int, runs: int) -> list[int]:
    """The seeds of ``runs`` Monte Carlo runs derived from ``seed`` (run 0 uses ``seed``)."""
    children = np.random.SeedSequence(seed).spawn(runs - 1) if runs > 1 else []
    return [seed] + [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]


class _RunOne:
    """Picklable function measuring one run (for Dask or another executor)."""

    def __init__(self, protocol: Protocol, n, timing, starts, d, fingerprint=False,
                 scan="auto"):
        self.protocol, self.n, self.timing, self.starts, self.d = protocol, n, timing, starts, d
        self.fingerprint = fingerprint
        self.scan = scan
        self._basis = None

    def __call__(self, seed):
        measure = _Measure(self.protocol, self.n, seed, self.timing, self.starts, self.d,
                           self._basis, self.scan)
        self._basis = measure.basis
        theory = _theory(self.protocol, self.n)
        t_mix = measure.t_mix(int(theory) if theory else 4 * self.n)
        xi, xi_kind = measure.xi(t_mix)
        return (t_mix, xi, measure.fingerprint() if self.fingerprint else None,
                (*measure.scan_info(), xi_kind, measure.starts))


def _monte_carlo(protocol, n, runs, seed, timing, starts, d, method, progress, map_runs,
                 scan="auto"):
    from tqdm import tqdm

    run_one = _RunOne(protocol, n, timing, starts, d, scan=scan)
    seeds = run_seeds(seed, runs)
    outcomes = None
    if _seed_free(protocol, n) and runs > 1:
        # The operator sequence is the same for every seed: check it on two runs, then
        # every run has the same value.
        check = _RunOne(protocol, n, timing, starts, d, fingerprint=True, scan=scan)
        first, second = check(seeds[0]), check(seeds[1])
        if first[2] == second[2]:
            outcomes = [first] * runs
    if outcomes is None:
        if map_runs is not None:
            outcomes = list(map_runs(run_one, seeds))
        else:
            bar = tqdm(seeds, desc=f"{protocol.name} n={n}", disable=not progress, leave=False)
            outcomes = [run_one(s) for s in bar]
    samples = np.array([o[0] for o in outcomes], dtype=float)
    xi = max(o[1] for o in outcomes)
    infos = [o[3] for o in outcomes]
    probabilistic = any(info[0] == "probabilistic" for info in infos)
    mean = float(samples.mean())
    ci = None
    if runs > 1 and samples.std() > 0:
        from scipy import stats

        low, high = stats.t.interval(0.95, runs - 1, loc=mean, scale=stats.sem(samples))
        ci = (float(low), float(high))
    t_mix = mean if runs > 1 else samples[0]
    return MixingTime(
        n, t_mix, runs, ci, xi, _theory(protocol, n), method, samples,
        scan="probabilistic" if probabilistic else "exact",
        failure_probability=min(1.0, sum(info[1] for info in infos)),
        xi_kind="lower bound" if any(info[3] != "exact" for info in infos) else "exact",
        starts=int(infos[0][4]), undecided=sum(info[2] for info in infos))


def _spectral(protocol: Protocol, n: int) -> MixingTime:
    from mixsim import spectral
    from mixsim.blocks import BLOCKS, BlockContext

    spec = protocol.spec
    schedule = protocol.evaluate(spec.schedule, n)
    rules = [r for r in spec.communication
             if r.when is None or protocol.evaluate("=" + r.when, n)]
    stationary = ("average", "gossip", "slack")
    layout = build_layout(protocol, n)
    context = BlockContext(layout, np.random.default_rng(0), protocol.source)
    if protocol.sparsify is None and len(rules) == 1 and rules[0].delay_steps is None:
        rule = rules[0]
        args = {a: protocol.evaluate(v, n) for a, v in rule.args.items()}
        group = args.get("group", "workers")
        if (schedule == "sync" and rule.on == "round" and rule.op in stationary
                and group == "workers" and layout.size == n):
            every = protocol.evaluate(rule.every, n)
            if rule.op == "average":
                rounds = 1
            else:
                rounds = spectral.consensus_rounds(BLOCKS[rule.op](context, **args).matrix())
            t_mix = n * every * rounds
            return MixingTime(n, t_mix, 0, None, 1.0, _theory(protocol, n), "spectral",
                              scan="spectral")
        if schedule == "async" and rule.on == "own-step" and rule.op == "pairwise":
            block = BLOCKS["pairwise"](context, **args)
            steps = spectral.pairwise_steps_to_halve(block.graph)
            return MixingTime(n, steps, 0, None, 1.0, _theory(protocol, n), "spectral",
                              scan="spectral")
    raise ProtocolError(
        f"method spectral needs a stationary protocol (one synchronous gossip, slack or "
        f"average rule, or asynchronous pairwise gossip); {protocol.name} is not: use "
        "trace or montecarlo", key="method")


def measure_trace(trace, starts: int | None = None, seed: int = 0) -> tuple[int | None, float]:
    """``(t_mix, xi)`` of a recorded trace, without extending it.

    Used on the trace of a learning run. Window starts are the first ``starts`` steps
    (default :func:`default_starts`); ``t_mix`` is ``None`` when some start had not halved
    every distance by the end of the trace (the run was shorter than its mixing time).
    Sparsified events are measured on coordinate 0. The exact scan runs up to
    ``EXACT_SLOTS`` slots, the probe scan above; xi is exact over every window where the
    exact scan runs and the work allows, a lower bound otherwise.
    """
    n = trace.layout.n_workers
    size = trace.layout.size
    starts = min(starts or default_starts(n, size), max(trace.n_steps, 1))
    if size <= 1 or trace.n_steps == 0:
        return (1 if trace.n_steps else None), 1.0
    exact = size <= EXACT_SLOTS
    compiled = trace.compile(1)
    if exact:
        scan = FirstPassages(trace.consensus.complement_basis(), np.arange(starts), 0)
    else:
        scan = ProbeScan(trace.consensus.normal(), np.arange(starts), 0, seed=seed)
    lengths = scan.advance(compiled, trace.n_steps)
    t_mix = int(lengths.max()) if scan.done else None
    return t_mix, _trace_xi(trace, 1, t_mix, exact, seed)[0]


def _arrays_of(compiled):
    return (compiled.step_ptr, compiled.ev_op, compiled.ev_mask, *compiled.op_arrays(),
            compiled.max_rows())
