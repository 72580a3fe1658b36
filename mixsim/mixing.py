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
from mixsim.engine import Simulation, build_layout
from mixsim.errors import ProtocolError
from mixsim.operators import _apply_op
from mixsim.protocol import Protocol, load_protocol
from mixsim.timing import Timing

__all__ = ["MixingTime", "mixing_time", "trace_mixing_time", "measure_trace", "METHODS"]

METHODS = ("auto", "trace", "montecarlo", "spectral")

#: Largest run the trace method will simulate before giving up.
MAX_STEPS = 2_000_000


@njit
def _apply_step(Y, step, coord, step_ptr, ev_op, ev_mask, op_rows_ptr, op_rows,
                op_row_ptr_ptr, op_row_ptr, op_cols, op_vals, buf):
    """Left-multiply ``Y`` by the step operator ``M_step`` (for coordinate ``coord``)."""
    for e in range(step_ptr[step], step_ptr[step + 1]):
        if ev_mask[e, coord]:
            _apply_op(Y, ev_op[e], op_rows_ptr, op_rows, op_row_ptr_ptr, op_row_ptr, op_cols,
                      op_vals, buf)


@njit
def _product_norm(start, length, coord, size, step_ptr, ev_op, ev_mask, op_rows_ptr,
                  op_rows, op_row_ptr_ptr, op_row_ptr, op_cols, op_vals, max_rows):
    """Largest ``||M_{start+l-1} ... M_start||_2`` over l = 1, 2, 4, ... up to ``length``."""
    Y = np.eye(size)
    buf = np.empty((max(max_rows, 1), size))
    best = 1.0
    check = 1
    for l in range(1, length + 1):
        _apply_step(Y, start + l - 1, coord, step_ptr, ev_op, ev_mask, op_rows_ptr, op_rows,
                    op_row_ptr_ptr, op_row_ptr, op_cols, op_vals, buf)
        if l == check or l == length:
            best = max(best, np.linalg.norm(Y, 2))
            check *= 2
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
    """

    workers: int
    t_mix: float
    runs: int
    ci95: tuple[float, float] | None
    xi: float
    theory: float | None
    method: str
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

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
        }


def _plain(value):
    value = float(value)
    return int(value) if value.is_integer() else value


def _default_starts(n: int) -> int:
    return n


def _seed_free(protocol: Protocol) -> bool:
    """Whether the operator sequence cannot depend on the seed (no random choices)."""
    spec = protocol.spec
    if protocol.sparsify is not None or protocol.evaluate(spec.schedule, 1) != "sync":
        return False
    return all(rule.on == "round" and rule.op in ("average", "gossip", "slack",
                                                  "one-peer-exponential")
               and rule.delay_steps is None for rule in spec.communication)


class _Measure:
    """Runs one simulation and measures t_mix and xi on its trace."""

    def __init__(self, protocol, n, seed, timing, starts, d, basis=None):
        self.sim = Simulation(protocol, n, d=d, seed=seed, timing=timing)
        self.n = n
        self.starts = starts
        self.d = d
        # The basis depends on the layout and consensus only: runs may share it.
        self.basis = self.sim.trace.consensus.complement_basis() if basis is None else basis

    def t_mix(self, guess: int) -> int:
        """The run's t_mix: the largest first passage over starts (and coordinates).

        The run is simulated in pieces, each sized from the progress of the slowest start,
        and every piece is scanned once: the simulation stops soon after the last start
        has halved.
        """
        steps = self.starts + max(guess, 1)
        if self.basis.shape[1] == 0:
            self.sim.run(steps)
            return 1
        scans = [FirstPassages(self.basis, np.arange(self.starts), coord)
                 for coord in range(self.d)]
        while True:
            self.sim.run(steps)
            base = min(scan.next_step for scan in scans if not scan.done)
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

    def xi(self, t_mix: int) -> float:
        if all(op.norm() <= 1 + 1e-12 for op in self.sim.trace.ops):
            return 1.0
        arrays = _arrays_of(self.sim.trace.compile(self.d))
        best = 1.0
        length = min(2 * t_mix, self.sim.step)
        for start in np.unique(np.linspace(0, max(self.sim.step - length, 0), 8).astype(int)):
            for coord in range(self.d):
                best = max(best, _product_norm(int(start), int(min(length, self.sim.step - start)),
                                               coord, self.sim.layout.size, *arrays))
        return float(best)

    def fingerprint(self) -> str:
        compiled = self.sim.trace.compile(self.d)
        digest = hashlib.sha256()
        for array in (compiled.ev_op, compiled.step_ptr, compiled.op_rows, compiled.op_cols,
                      compiled.op_vals, compiled.ev_mask):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


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
                      starts: int | None = None, d: int = 1) -> tuple[int, float]:
    """Exact ``(t_mix, xi)`` of one run.

    Parameters
    ----------
    protocol : str, Path or Protocol
    n : int
        Number of workers.
    seed : int
    timing : Timing, optional
    starts : int, optional
        Number of window starts checked (default ``n``: one round of phases).
    d : int
        Coordinates simulated (more than 1 only matters for sparsified protocols, whose
        t_mix is the largest over coordinates).
    """
    protocol = load_protocol(protocol)
    measure = _Measure(protocol, n, seed, timing, starts or _default_starts(n), d)
    theory = _theory(protocol, n)
    t_mix = measure.t_mix(int(theory) if theory else 4 * n)
    return t_mix, measure.xi(t_mix)


def _theory(protocol: Protocol, n: int) -> float | None:
    try:
        value = protocol.theory_t_mix(n)
    except ProtocolError:
        raise
    return None if value is None or not np.isfinite(value) else value


def mixing_time(protocol, workers=(8,), *, runs: int = 100, method: str = "auto",
                seed: int = 0, params: dict | None = None, timing: Timing | None = None,
                starts: int | None = None, d: int | None = None, progress: bool = False,
                map_runs=None) -> list[MixingTime]:
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
    seed : int
        Seed of the first run; run ``r`` uses a seed derived from it.
    params : dict, optional
        Protocol parameter overrides.
    timing : Timing, optional
        Cluster timing (matters for asynchronous protocols).
    starts : int, optional
        Window starts per run (default: n).
    d : int, optional
        Coordinates simulated (default 1; 16 for sparsified protocols).
    progress : bool
        Show a progress bar over runs (quiet when not on a terminal).
    map_runs : callable, optional
        ``map_runs(function, list_of_seeds)`` to evaluate runs elsewhere (e.g. on Dask);
        default: in this process.

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
    _memory.require(runs * _memory.BYTES_PER_RUN, f"{runs:,} runs", key="runs")
    protocol = load_protocol(protocol, params)
    if d is None:
        d = 16 if protocol.sparsify is not None else 1
    results = []
    # The kernels make many small BLAS calls: threads would only add overhead.
    with threadpool_limits(limits=1):
        for n in workers:
            results.append(_one_size(protocol, int(n), method, runs, seed, timing, starts, d,
                                     progress, map_runs))
    return results


def _one_size(protocol, n, method, runs, seed, timing, starts, d, progress, map_runs):
    chosen = method
    if method == "auto":
        if _seed_free(protocol):
            chosen = "trace" if n <= 512 else "spectral"
        else:
            chosen = "montecarlo"
    if chosen == "spectral":
        return _spectral(protocol, n)
    if chosen == "trace":
        return _monte_carlo(protocol, n, 1, seed, timing, starts, d, "trace", progress,
                            map_runs)
    return _monte_carlo(protocol, n, runs, seed, timing, starts, d, "montecarlo", progress,
                        map_runs)


def run_seeds(seed: int, runs: int) -> list[int]:
    """The seeds of ``runs`` Monte Carlo runs derived from ``seed`` (run 0 uses ``seed``)."""
    children = np.random.SeedSequence(seed).spawn(runs - 1) if runs > 1 else []
    return [seed] + [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]


class _RunOne:
    """Picklable function measuring one run (for Dask or another executor)."""

    def __init__(self, protocol: Protocol, n, timing, starts, d, fingerprint=False):
        self.protocol, self.n, self.timing, self.starts, self.d = protocol, n, timing, starts, d
        self.fingerprint = fingerprint
        self._basis = None

    def __call__(self, seed):
        measure = _Measure(self.protocol, self.n, seed, self.timing, self.starts, self.d,
                           self._basis)
        self._basis = measure.basis
        theory = _theory(self.protocol, self.n)
        t_mix = measure.t_mix(int(theory) if theory else 4 * self.n)
        return (t_mix, measure.xi(t_mix),
                measure.fingerprint() if self.fingerprint else None)


def _monte_carlo(protocol, n, runs, seed, timing, starts, d, method, progress, map_runs):
    from tqdm import tqdm

    starts = starts or _default_starts(n)
    run_one = _RunOne(protocol, n, timing, starts, d)
    seeds = run_seeds(seed, runs)
    if _seed_free(protocol) and runs > 1:
        # The operator sequence is the same for every seed: check it on two runs, then
        # every run has the same value.
        check = _RunOne(protocol, n, timing, starts, d, fingerprint=True)
        first, second = check(seeds[0]), check(seeds[1])
        if first[2] == second[2]:
            outcomes = [first] * runs
        else:
            outcomes = None
    else:
        outcomes = None
    if outcomes is None:
        if map_runs is not None:
            outcomes = list(map_runs(run_one, seeds))
        else:
            bar = tqdm(seeds, desc=f"{protocol.name} n={n}", disable=not progress, leave=False)
            outcomes = [run_one(s) for s in bar]
    samples = np.array([o[0] for o in outcomes], dtype=float)
    xi = max(o[1] for o in outcomes)
    mean = float(samples.mean())
    ci = None
    if runs > 1 and samples.std() > 0:
        from scipy import stats

        low, high = stats.t.interval(0.95, runs - 1, loc=mean, scale=stats.sem(samples))
        ci = (float(low), float(high))
    t_mix = mean if runs > 1 else samples[0]
    return MixingTime(n, t_mix, runs, ci, xi, _theory(protocol, n), method, samples)


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
            return MixingTime(n, t_mix, 0, None, 1.0, _theory(protocol, n), "spectral")
        if schedule == "async" and rule.on == "own-step" and rule.op == "pairwise":
            block = BLOCKS["pairwise"](context, **args)
            steps = spectral.pairwise_steps_to_halve(block.graph)
            return MixingTime(n, steps, 0, None, 1.0, _theory(protocol, n), "spectral")
    raise ProtocolError(
        f"method spectral needs a stationary protocol (one synchronous gossip, slack or "
        f"average rule, or asynchronous pairwise gossip); {protocol.name} is not: use "
        "trace or montecarlo", key="method")


def measure_trace(trace, starts: int | None = None) -> tuple[int | None, float]:
    """``(t_mix, xi)`` of a recorded trace, without extending it.

    Used on the trace of a learning run. Window starts are the first ``starts`` steps
    (default: the number of workers); ``t_mix`` is ``None`` when some start had not halved
    every distance by the end of the trace (the run was shorter than its mixing time).
    Sparsified events are measured on coordinate 0.
    """
    n = trace.layout.n_workers
    starts = min(starts or n, max(trace.n_steps, 1))
    compiled = trace.compile(1)
    basis = trace.consensus.complement_basis()
    if basis.shape[1] == 0 or trace.n_steps == 0:
        return (1 if trace.n_steps else None), 1.0
    scan = FirstPassages(basis, np.arange(starts), 0)
    lengths = scan.advance(compiled, trace.n_steps)
    t_mix = int(lengths.max()) if scan.done else None
    if all(op.norm() <= 1 + 1e-12 for op in trace.ops):
        return t_mix, 1.0
    arrays = _arrays_of(compiled)
    length = min(2 * (t_mix or trace.n_steps), trace.n_steps)
    best = 1.0
    for start in np.unique(np.linspace(0, max(trace.n_steps - length, 0), 8).astype(int)):
        best = max(best, _product_norm(int(start), int(min(length, trace.n_steps - start)), 0,
                                       trace.layout.size, *arrays))
    return t_mix, float(best)


def _arrays_of(compiled):
    max_rows = int(np.diff(compiled.op_rows_ptr).max()) if compiled.op_rows_ptr.size > 1 else 1
    return (compiled.step_ptr, compiled.ev_op, compiled.ev_mask, compiled.op_rows_ptr,
            compiled.op_rows, compiled.op_row_ptr_ptr, compiled.op_row_ptr,
            compiled.op_cols, compiled.op_vals, max_rows)
