"""The discrete-event engine: workers, rounds and messages on a SimPy clock.

A :class:`Simulation` runs one protocol for ``n`` workers. Each worker is a SimPy process
that computes for a time drawn from its compute-time distribution, then performs a
*computation event* (one step of the MixML model: it reads its view slot, and the update it
produces is added to its target slot), then takes part in the protocol's communication
events. Every communication event is an :class:`~mixsim.operators.Operator` applied to the
real state ``X`` and recorded in the :class:`~mixsim.trace.Trace`. The order of events comes
from the simulated clock; every random choice comes from one seed.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import simpy

from mixsim import _memory
from mixsim.blocks import BLOCKS, BlockContext
from mixsim.errors import ConfigError, DivergenceError, ProtocolError, StoppedError
from mixsim.operators import _apply_sequence, bound_kernel
from mixsim.protocol import RuleSpec, build_layout, load_protocol
from mixsim.timing import Timing
from mixsim.trace import Consensus, Trace

__all__ = ["Simulation", "build_layout"]

#: compute(worker, view, step) -> update to add to the worker's target slot (or None).
ComputeFn = Callable[[int, np.ndarray, int], "np.ndarray | None"]


@dataclass
class _Rule:
    spec: RuleSpec
    block: object
    every: int
    delay: Callable[[], int] | None
    kind: str


class Simulation:
    """One run of a protocol on the simulated cluster.

    Parameters
    ----------
    protocol : str, Path or Protocol
        Catalog name, protocol file or loaded protocol.
    n_workers : int
        Number of workers, >= 1.
    d : int
        Number of coordinates of the state.
    timing : Timing, optional
        Compute-time distribution and links (default: exponential compute times of mean 1,
        instantaneous links).
    seed : int
        The one seed every random stream of the run derives from.
    compute : callable, optional
        ``compute(worker, view, step)`` returns the update a computation event adds to the
        worker's target slot (``None`` for none). Without it, computation events only mark
        steps: the run measures communication alone.
    initial_state : ndarray, optional
        ``X_0`` with shape ``(slots, d)``; default standard normal from the seed.
    record_updates : bool
        Keep the updates in the trace so :meth:`Trace.replay` reproduces the state.
    params : dict, optional
        Protocol parameter overrides.
    dtype : numpy dtype
        Dtype of the state.

    Examples
    --------
    >>> sim = Simulation("allreduce", 4, seed=0).run(8)
    >>> sim.step, len(sim.trace)
    (8, 2)
    """

    #: Run asynchronous workers as timer chains where possible (see ``__init__``); the
    #: tests switch it off to compare with worker processes.
    _use_timer_chains = True

    def __init__(self, protocol, n_workers: int, *, d: int = 1, timing: Timing | None = None,
                 seed: int = 0, compute: ComputeFn | None = None, initial_state=None,
                 record_updates: bool = False, params: dict | None = None,
                 dtype=np.float64):
        # Set-up makes O(n) objects that live as long as the run (graph, closures, the
        # first timer of each worker): at 10^5 workers the cyclic garbage collector, run
        # again and again over them, took most of the set-up time. None of them is garbage.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._setup(protocol, n_workers, d, timing, seed, compute, initial_state,
                        record_updates, params, dtype)
        finally:
            if collecting:
                gc.enable()

    def _setup(self, protocol, n_workers, d, timing, seed, compute, initial_state,
               record_updates, params, dtype):
        if not isinstance(n_workers, int | np.integer) or n_workers < 1:
            raise ProtocolError(f"{n_workers!r} workers: must be an integer >= 1",
                                key="workers")
        if (isinstance(d, bool) or not isinstance(d, int | np.integer)) or d < 1:
            raise ConfigError(f"d = {d!r}: must be an integer >= 1", key="d")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ConfigError(f"dtype = {np.dtype(dtype).name}: the state is float32 or "
                              "float64", key="dtype")
        self.protocol = load_protocol(protocol, params)
        self.n = int(n_workers)
        self.d = int(d)
        self.timing = timing or Timing()
        self.compute = compute
        streams = np.random.SeedSequence(seed).spawn(4)
        self._rng_timing, rng_blocks, self._rng_sparse, rng_state = (
            np.random.default_rng(s) for s in streams
        )
        self.layout = build_layout(self.protocol, self.n)
        _memory.require(self.layout.size * (3 * 8.0 * self.d + _memory.BYTES_PER_SLOT),
                        f"{self.layout.size:,} slots x {self.d:,} coordinates", key="workers")
        spec = self.protocol.spec
        consensus = Consensus(self.layout, spec.consensus.average, spec.consensus.absorb)
        for key, group in (("consensus.average", consensus.average),
                           ("consensus.absorb", consensus.absorb)):
            if group is not None and group not in self.layout.groups:
                raise ProtocolError(f"unknown slot group {group!r}", source=self.protocol.source,
                                    key=key)
        self.trace = Trace(self.layout, consensus, record_updates=record_updates)
        if initial_state is None:
            self.X = rng_state.standard_normal((self.layout.size, self.d)).astype(dtype)
        else:
            self.X = np.array(initial_state, dtype=dtype, copy=True)
            if self.X.shape != (self.layout.size, self.d):
                raise ProtocolError(
                    f"initial state has shape {self.X.shape}, expected "
                    f"{(self.layout.size, self.d)}", key="initial_state")
        self.trace.initial_state = self.X.copy()
        self.schedule = self.protocol.evaluate(spec.schedule, self.n, "schedule")
        if self.schedule not in ("sync", "async"):
            raise ProtocolError(f"schedule {self.schedule!r}: allowed sync, async",
                                source=self.protocol.source, key="schedule")
        self._context = BlockContext(self.layout, rng_blocks, self.protocol.source)
        with self.protocol.blame_given():
            self._rules = self._build_rules()
        self._step_rules = self._rules["step"]
        self._view_rows = self._owner_rows(spec.view, "view")
        self._setup_target()
        self._eta = self.protocol.sparsify
        self._bytes = 4.0 * self.d * (self._eta if self._eta else 1.0)
        self._compute_time = self.timing.compute.sampler(self.n, self._rng_timing)
        self._links = self.timing.links
        self._instant = (not self._links._table and self._links.latency == 0
                         and self._links.bandwidth == float("inf"))
        self._pending: dict[int, list] = defaultdict(list)
        self._op_cache: dict[int, tuple] = {}
        # Without a compute callback nothing reads the state during a run: events are
        # recorded as they happen and applied, in the same order, in one kernel call when
        # run() returns (or before the first sparsified event, which applies at once).
        self._deferred = compute is None and self._eta is None
        self._applied = 0
        trace = self.trace
        self._record_step, self._record_time = trace.ev_step.append, trace.ev_time.append
        self._record_kind, self._record_op = trace.ev_kind.append, trace.ev_op.append

        self.env = simpy.Environment()
        self.step = 0
        self.round = 0
        self._limit = 0
        self._failure: str | None = None
        self._done = self.env.event()
        self._resume = self.env.event()
        self._stopped = False
        # Synchronous protocols without per-step rules run as rounds of timers whose
        # callbacks are the computation events: one SimPy event per computation, no barrier
        # process per worker. Compute times are drawn in the order the workers finished the
        # previous round, as worker processes waiting on a barrier would draw them.
        self._rounds_only = self.schedule == "sync" and not self._rules["own-step"]
        # Asynchronous workers that never wait for a message (own-step events apply at
        # once or travel on their own) run as chains of timers whose callbacks are the
        # computation events: the same events in the same order as worker processes,
        # without a generator per worker.
        self._own = [(rule, rule.delay is not None or not rule.spec.wait, rule.block.events)
                     for rule in self._rules["own-step"]]
        self._chained = (self._use_timer_chains and self.schedule == "async"
                         and (self._instant or all(later for _, later, _ in self._own)))
        if self._chained:
            self._blocked = []
            plain = (self._eta is None and self._delay_line is None and not self._step_rules
                     and not any(later for _, later, _ in self._own))
            self._callbacks = [self._plain_step(w) if plain else partial(self._timed_step, w)
                               for w in range(self.n)]
            for worker in range(self.n):
                self.env.timeout(self._compute_time(worker)).callbacks.append(
                    self._callbacks[worker])
        elif self._rounds_only:
            self._order: list[int] = list(range(self.n))
            self._blocked: list[int] = []
            self._round_done = self.env.event()
            self._callbacks = [partial(self._timed_computation, w) for w in range(self.n)]
            self.env.process(self._rounds())
        else:
            if self.schedule == "sync":
                self._arrived = 0
                self._all_arrived = self.env.event()
                self._release = self.env.event()
                self.env.process(self._coordinator())
            for worker in range(self.n):
                self.env.process(self._worker(worker))

    # -- set-up -----------------------------------------------------------------------
    def _owner_rows(self, group: str, key: str) -> np.ndarray:
        if group not in self.layout.groups:
            raise ProtocolError(f"unknown slot group {group!r}; this protocol has: "
                                f"{', '.join(self.layout.groups)}",
                                source=self.protocol.source, key=key)
        return np.array([self.layout.owner_slot(group, w) for w in range(self.n)])

    def _setup_target(self):
        target = self.protocol.spec.target
        self._delay_line = None
        if isinstance(target, str) or target.delay_line is None:
            group = target if isinstance(target, str) else (target.group or "workers")
            self._target_rows = self._owner_rows(group, "target")
            return
        line = target.delay_line
        delay = self.protocol.evaluate(line.delay, self.n, "target.delay_line.delay")
        self._target_rows = None
        self._delay_line = (self.layout.rows(line.group),
                            BLOCKS["accumulate"](self._context, source=line.group, to=line.into),
                            self._delay_sampler(self._line_distribution(), delay))

    def _line_distribution(self) -> str:
        line = self.protocol.spec.target.delay_line
        return self.protocol.evaluate(line.distribution, self.n, "target.delay_line.distribution")

    def _delay_sampler(self, distribution: str, delay: int):
        rng = self._context.rng
        if distribution == "constant":
            return lambda: delay
        if distribution == "uniform":
            return lambda: int(rng.integers(0, 2 * delay + 1))
        if distribution == "geometric":
            cap = 4 * delay
            return lambda: min(int(rng.geometric(1.0 / (delay + 1))) - 1, cap)
        raise ProtocolError(f"unknown delay distribution {distribution!r}; allowed: "
                            "constant, uniform, geometric", source=self.protocol.source,
                            key="target.delay_line.distribution")

    def _build_rules(self) -> dict[str, list[_Rule]]:
        rules = {"round": [], "own-step": [], "step": []}
        for k, spec in enumerate(self.protocol.spec.communication):
            key = f"communication[{k}]"
            if spec.when is not None and not self.protocol.evaluate(
                "=" + spec.when.lstrip("="), self.n, f"{key}.when"
            ):
                continue
            block_cls = BLOCKS.get(spec.op)
            if block_cls is None:
                raise ProtocolError(f"unknown op {spec.op!r}; allowed: {', '.join(BLOCKS)}",
                                    source=self.protocol.source, key=f"{key}.op")
            args = {a: self.protocol.evaluate(v, self.n, f"{key}.args.{a}")
                    for a, v in spec.args.items()}
            self._context.key = key
            try:
                block = block_cls(self._context, **args)
            except TypeError as exc:
                raise ProtocolError(f"bad arguments for op {spec.op!r}: {exc}",
                                    source=self.protocol.source, key=f"{key}.args") from None
            every = self.protocol.evaluate(spec.every, self.n, f"{key}.every")
            if not isinstance(every, int) or every < 1:
                raise ProtocolError(f"every = {every!r} must be an integer >= 1",
                                    source=self.protocol.source, key=f"{key}.every")
            if spec.on == "round" and self.protocol.evaluate(
                    self.protocol.spec.schedule, self.n) != "sync":
                raise ProtocolError("'on: round' needs schedule sync",
                                    source=self.protocol.source, key=f"{key}.on")
            if spec.on == "own-step" and every != 1:
                raise ProtocolError(f"every = {every!r}: an own-step rule fires after each of "
                                    "the computing worker's steps; 'every' applies to 'on: "
                                    "round' and 'on: step'", source=self.protocol.source,
                                    key=f"{key}.every")
            if spec.on == "round" and getattr(block, "needs_worker", False):
                raise ProtocolError(f"op {spec.op!r} acts for the computing worker; a round "
                                    "has none: use 'on: own-step' or 'on: step'",
                                    source=self.protocol.source, key=f"{key}.on")
            rules[spec.on].append(_Rule(spec, block, every, self._rule_delay(spec, key),
                                        spec.op))
        return rules

    def _rule_delay(self, spec: RuleSpec, key: str):
        if spec.delay_steps is None:
            return None
        value = spec.delay_steps
        if isinstance(value, dict):
            low = self.protocol.evaluate(value.get("low", 0), self.n, f"{key}.delay_steps.low")
            high = self.protocol.evaluate(value.get("high"), self.n, f"{key}.delay_steps.high")
            if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
                raise ProtocolError(f"delay_steps needs integers 0 <= low <= high, got "
                                    f"{low!r}, {high!r}", source=self.protocol.source,
                                    key=f"{key}.delay_steps")
            rng = self._context.rng
            return lambda: int(rng.integers(low, high + 1))
        steps = self.protocol.evaluate(value, self.n, f"{key}.delay_steps")
        if not isinstance(steps, int) or steps < 0:
            raise ProtocolError(f"delay_steps {steps!r} must be an integer >= 0",
                                source=self.protocol.source, key=f"{key}.delay_steps")
        return lambda: steps

    # -- running ----------------------------------------------------------------------
    def run(self, steps: int) -> Simulation:
        """Run until ``steps`` computation events have happened in total (resumable).

        Communication events that follow computation ``steps - 1`` before computation
        ``steps`` are included, so the step operators ``M_0 ... M_{steps-1}`` are complete.
        """
        if self._failure is not None:
            raise StoppedError(f"this simulation stopped at step {self.step} with "
                               f"{self._failure}; it cannot continue: build a new one "
                               f"(the trace and the state keep what happened up to there)")
        if steps <= self.step:
            return self
        self._limit = steps
        self._done = self.env.event()
        if self._stopped:
            self._stopped = False
            if self._chained:
                # As resumed worker processes would: each computes without looking at
                # the limit again.
                blocked, self._blocked = self._blocked, []
                for worker in blocked:
                    self._async_step(worker)
            elif self._rounds_only:
                blocked, self._blocked = self._blocked, []
                for worker in blocked:
                    self._timed_computation(worker, None)
            else:
                resume, self._resume = self._resume, self.env.event()
                resume.succeed()
        try:
            self.env.run(until=self._done)
        except BaseException as exc:
            self._failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise
        finally:
            # The events recorded so far are applied, so state and trace agree.
            self._flush()
        return self

    def _flush(self) -> None:
        """Apply the recorded events not yet applied to the state."""
        ev_op = self.trace.ev_op
        if not self._deferred or self._applied == len(ev_op):
            return
        pending = np.array(ev_op[self._applied:], dtype=np.int64)
        arrays = self.trace.op_arrays()
        max_rows = max(int(np.diff(arrays[0]).max(initial=0)), 1)
        buf = np.empty((max_rows, self.d), dtype=self.X.dtype)
        _apply_sequence(self.X, pending, *arrays, buf)
        self._applied = len(ev_op)

    def _apply(self, op, kind: str, nodes) -> None:
        if self._eta is None:
            # Hot path: the kernel's arguments and the trace index are cached per operator.
            entry = self._op_cache.get(id(op))
            if entry is None:
                entry = self._cache_op(op)
            if not self._deferred:
                entry[1](entry[2])
            self._record_step(self.step - 1)
            self._record_time(self.env.now)
            self._record_kind(kind)
            self._record_op(entry[0])
            return
        coords = np.flatnonzero(self._rng_sparse.random(self.d) < self._eta)
        if coords.size == 0:
            return
        op.apply(self.X, coords)
        self.trace.record(self.step - 1, self.env.now, kind, op, coords)

    def _cache_op(self, op) -> tuple:
        """``(trace index, kernel, bound operator)`` of ``op``, kept for the next events.

        The kernel is :func:`~mixsim.operators._apply_bound`'s compiled code and the bound
        operator holds the state, the operator and a scratch buffer in one object, so an
        event applied at once unboxes one argument (both ``None`` while events are
        deferred).
        """
        apply = bound = None
        if not self._deferred:
            apply, bound = bound_kernel(self.X, op)
        entry = self._op_cache[id(op)] = (self.trace.register(op), apply, bound)
        return entry

    def _delay(self, events) -> float:
        if self._instant:
            return 0.0
        return max((self._links.delay(nodes, self._bytes) for _, nodes in events), default=0.0)

    def _computation(self, worker: int):
        """The computation event of ``worker`` and the events that follow it at once."""
        t = self.step
        if self.compute is not None:
            delta = self.compute(worker, self.X[self._view_rows[worker]], t)
            if delta is not None:
                if self._delay_line is not None:
                    rows, _, sampler = self._delay_line
                    row = rows[(t + sampler()) % rows.size]
                else:
                    row = self._target_rows[worker]
                self.X[row] += delta
                if not np.all(np.isfinite(self.X[row])):
                    raise DivergenceError(t, f"worker {worker}'s update is not finite")
                self.trace.record_update(t, self.env.now, worker, row, delta)
        self.step = t + 1
        self.trace.n_steps = self.step
        if self._delay_line is not None:
            rows, deliver, _ = self._delay_line
            self._apply(deliver.op_for_slot(int(rows[t % rows.size])), "deliver", [worker])
        if self._pending:
            for rule, op, nodes in self._pending.pop(t, ()):
                self._apply(op, rule.kind, nodes)
        for rule in self._step_rules:
            if (t + 1) % rule.every == 0:
                self._fire(rule, worker, (t + 1) // rule.every - 1)

    def _fire(self, rule: _Rule, worker, round_index):
        events = rule.block.events(worker, round_index)
        if rule.delay is None:
            for op, nodes in events:
                self._apply(op, rule.kind, nodes)
            return
        for op, nodes in events:
            due = self.step - 1 + rule.delay()
            if due == self.step - 1:
                self._apply(op, rule.kind, nodes)
            else:
                self._pending[due].append((rule, op, nodes))

    def _worker(self, worker: int):
        env = self.env
        own = self._own
        sync = self.schedule == "sync"
        compute_time = self._compute_time
        while True:
            yield env.timeout(compute_time(worker))
            if self.step >= self._limit:
                if not self._stopped:
                    self._stopped = True
                    self._done.succeed()
                yield self._resume
            self._computation(worker)
            for rule, later, make_events in own:
                if later:
                    self._send_later(rule, worker)
                    continue
                events = make_events(worker, self.round)
                if not self._instant:
                    delay = self._delay(events)
                    if delay > 0:
                        yield env.timeout(delay)
                for op, nodes in events:
                    self._apply(op, rule.kind, nodes)
            if sync:
                self._arrived += 1
                if self._arrived == self.n:
                    self._all_arrived.succeed()
                yield self._release

    def _held(self, worker: int) -> bool:
        """Whether the run has reached its limit; then ``worker`` waits for the next run."""
        if self.step < self._limit:
            return False
        self._blocked.append(worker)
        if not self._stopped:
            self._stopped = True
            self._done.succeed()
        return True

    def _timed_step(self, worker: int, _event) -> None:
        """Callback of an asynchronous worker's compute timer (see ``_chained``)."""
        if not self._held(worker):
            self._async_step(worker)

    def _plain_step(self, worker: int):
        """The compute-timer callback of ``worker`` in the common case of a timer chain.

        Without sparsification, a delay line, per-step rules or delayed events, a
        computation event and its own-step events need none of the general bookkeeping of
        :meth:`_timed_step`: this closure does the same work (same events, same records,
        same draws in the same order) with the lookups done once, as the engine's hot path.
        """
        env, trace, compute, X = self.env, self.trace, self.compute, self.X
        timeout, cache, cache_op = env.timeout, self._op_cache, self._cache_op
        # ``next(stream) * scale`` is ``self._compute_time(worker)``, without a Python call.
        stream, scale = self._compute_time.stream, self._compute_time.scale[worker]
        view_row = self._view_rows[worker]
        target_row = self._target_rows[worker]
        deferred = self._deferred
        record_step, record_time = self._record_step, self._record_time
        record_kind, record_op = self._record_kind, self._record_op
        # Asynchronous runs have no rounds: the round index stays 0.
        own = [(rule.block, rule.kind) for rule, _, _ in self._own]
        choice = None
        if len(own) == 1:
            method = getattr(own[0][0], "worker_choice", None)
            choice = None if method is None else method(worker)

        def updated(t: int) -> None:
            delta = compute(worker, X[view_row], t)
            if delta is not None:
                X[target_row] += delta
                if not np.all(np.isfinite(X[target_row])):
                    raise DivergenceError(t, f"worker {worker}'s update is not finite")
                trace.record_update(t, env.now, worker, target_row, delta)

        if choice is not None:
            # One own-step rule that picks among fixed event lists (every asynchronous
            # catalog protocol): each list's cache entries are looked up once, on first use
            # (so operators join the trace in the same order as event by event).
            picks, count, option = choice
            kind = own[0][1]
            prepared: list[tuple | None] = [None] * count

            def prepare(k: int) -> tuple:
                """Option ``k`` as ``(index, kernel, bound operator)`` if it is one event,
                else ``(-1, None, [such triples])`` (no event: a worker without a neighbour;
                built-in blocks have no options of several events)."""
                entries = [cache.get(id(op)) or cache_op(op) for op, _ in option(k)]
                prepared[k] = entries[0] if len(entries) == 1 else (-1, None, entries)
                return prepared[k]

            def step(_event) -> None:
                t = self.step
                if t >= self._limit:
                    self._held(worker)
                    return
                if compute is not None:
                    # :func:`updated`, inlined.
                    delta = compute(worker, X[view_row], t)
                    if delta is not None:
                        X[target_row] += delta
                        if not np.all(np.isfinite(X[target_row])):
                            raise DivergenceError(t, f"worker {worker}'s update is not finite")
                        trace.record_update(t, env.now, worker, target_row, delta)
                self.step = trace.n_steps = t + 1
                now = env._now  # the documented ``env.now`` without its property call
                k = next(picks)
                index, apply, bound = prepared[k] or prepare(k)
                if index >= 0:
                    # One event (the common case), unrolled.
                    if apply is not None:
                        apply(bound)
                    record_step(t)
                    record_time(now)
                    record_kind(kind)
                    record_op(index)
                else:
                    for index, apply, one in bound:
                        if apply is not None:
                            apply(one)
                        record_step(t)
                        record_time(now)
                        record_kind(kind)
                        record_op(index)
                timeout(next(stream) * scale).callbacks.append(step)

            return step

        own = [(block.events, kind) for block, kind in own]

        def step(_event) -> None:
            t = self.step
            if t >= self._limit:
                self._held(worker)
                return
            if compute is not None:
                updated(t)
            self.step = trace.n_steps = t + 1
            now = env.now
            for events, kind in own:
                for op, _ in events(worker, 0):
                    entry = cache.get(id(op)) or cache_op(op)
                    if not deferred:
                        entry[1](entry[2])
                    record_step(t)
                    record_time(now)
                    record_kind(kind)
                    record_op(entry[0])
            timeout(next(stream) * scale).callbacks.append(step)

        return step

    def _async_step(self, worker: int) -> None:
        """A computation event, the worker's own-step events, and its next compute timer."""
        self._computation(worker)
        for rule, later, make_events in self._own:
            if later:
                self._send_later(rule, worker)
                continue
            for op, nodes in make_events(worker, self.round):
                self._apply(op, rule.kind, nodes)
        self.env.timeout(self._compute_time(worker)).callbacks.append(self._callbacks[worker])

    def _send_later(self, rule: _Rule, worker: int):
        if rule.delay is not None:
            self._fire(rule, worker, self.round)
            return
        events = rule.block.events(worker, self.round)
        delay = self._delay(events)
        if delay <= 0:
            for op, nodes in events:
                self._apply(op, rule.kind, nodes)
            return
        timer = self.env.timeout(delay)
        timer.callbacks.append(
            lambda _event: [self._apply(op, rule.kind, nodes) for op, nodes in events]
        )

    def _timed_computation(self, worker: int, _event) -> None:
        """Callback of a worker's compute timer in a round (see ``_rounds``)."""
        if self._held(worker):
            return
        self._computation(worker)
        self._order.append(worker)
        if len(self._order) == self.n:
            self._round_done.succeed()

    def _rounds(self):
        env = self.env
        compute_time = self._compute_time
        while True:
            order, self._order = self._order, []
            for worker in order:
                env.timeout(compute_time(worker)).callbacks.append(self._callbacks[worker])
            yield self._round_done
            self._round_done = env.event()
            yield from self._communicate_round()

    def _communicate_round(self):
        env = self.env
        r = self.round
        events = []
        for rule in self._rules["round"]:
            if (r + 1) % rule.every == 0:
                events.extend((rule, op, nodes) for op, nodes in
                              rule.block.events(None, (r + 1) // rule.every - 1))
        if not self._instant:
            delay = self._delay([(op, nodes) for _, op, nodes in events])
            if delay > 0:
                yield env.timeout(delay)
        for rule, op, nodes in events:
            self._apply(op, rule.kind, nodes)
        self.round = r + 1

    def _coordinator(self):
        env = self.env
        while True:
            yield self._all_arrived
            self._all_arrived = env.event()
            self._arrived = 0
            yield from self._communicate_round()
            release, self._release = self._release, env.event()
            release.succeed()

