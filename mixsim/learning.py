"""Learning runs: a scenario's problem, data and optimizer on the engine.

Each computation event computes a stochastic gradient at the worker's view of the state and
passes it through the scenario's optimizer; the protocol decides where the resulting update
lands and how the state mixes. Five placements of the optimizer:

``worker``
    Each worker runs ``chain(memory(compressor), method)`` on its own gradient and adds
    the step to its target slot (its own copy for D-PSGD, AD-PSGD, local SGD, Hogwild; the
    server for an asynchronous parameter server).
``server``
    SPARS-AMS (seed 001 Alg. 1): workers send ``memory(compressor)`` of their gradient; the
    server runs ``method`` on the mean of a round's messages (synchronous protocols) or on
    each message (asynchronous ones) and its step lands in the server slot.
``cd-adam``
    CD-Adam (seed 003 Alg. 1): Markov compression up and down, AMSGrad on the (identical)
    worker models; needs a synchronous protocol with a server (``sync-ps``).
``two-way``
    The same communication around any ``method`` (:func:`mixsim.optim.two_way`): with SGD
    and top-k, the two-way EF21 of seed 003 §7.2.
``onebit-adam``
    1-bit Adam as Tang et al. (2021) run it (:func:`mixsim.optim.onebit_adam_parties`):
    every worker compresses its own momentum, the server their mean; needs ``sync-ps``.
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from mixsim import _memory, optim
from mixsim.engine import Simulation
from mixsim.errors import ConfigError, DivergenceError
from mixsim.protocol import load_protocol
from mixsim.scenario import Scenario, load_scenario, with_seed
from mixsim.timing import ComputeTime, Links, Timing

__all__ = ["RunResult", "run", "check_scenario", "METRICS"]

#: Columns of the metrics table, in order.
METRICS = ("step", "epoch", "time", "loss", "grad_norm", "test_accuracy",
           "stationary_distance", "bits_up", "bits_down")


@dataclass
class RunResult:
    """What a learning run produced.

    Attributes
    ----------
    scenario : Scenario
        The resolved scenario.
    rows : list of dict
        One row per evaluation, with the columns of :data:`METRICS`.
    summary : dict
        Seed, versions, wall time, measured t_mix and xi, completion.
    out_dir : Path or None
        Where the outputs were written.
    complete : bool
        False when the run stopped early (divergence).
    """

    scenario: Scenario
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    out_dir: Path | None = None
    complete: bool = True

    @property
    def table(self) -> dict[str, np.ndarray]:
        """The metrics as columns (one NumPy array per metric)."""
        return {name: np.array([row[name] for row in self.rows]) for name in METRICS}


@contextmanager
def _section(source: str | None, prefix: str):
    """Re-raise a :class:`ConfigError` from inside a section with the scenario's file and
    the section's dotted key in front of the key it names."""
    try:
        yield
    except ConfigError as exc:
        if source is not None and exc.source == source:
            raise
        key = exc.key or ""
        for head in ("protocol", "workers", prefix):
            if key == head or key.startswith(head + "."):
                key = key[len(head):].lstrip(".")
        full = ".".join(part for part in (prefix, key) if part)
        origin = f" (in {exc.source})" if exc.source and exc.source != source else ""
        raise ConfigError(f"{exc.message}{origin}", source=source, key=full) from None


def _compressor(section, seed: int, offsets):
    from mixsim.optim.compressors import _COMPRESSORS

    params = section.model_dump()
    name = params.pop("name")
    if offsets is not None and name != "none":
        params.setdefault("offsets", offsets)
    # A random compressor draws from the worker's own seed unless the scenario sets one.
    factory = _COMPRESSORS.get(name)
    if factory is not None and "seed" in inspect.signature(factory).parameters:
        params.setdefault("seed", seed)
    with _section(None, "compressor"):
        return optim.make_compressor(name, **params)


def _method(section):
    params = section.model_dump()
    with _section(None, "method"):
        return optim.make_optimizer(params.pop("name"), **params)


class _Learner:
    """The computation callback and the bookkeeping of one learning run."""

    def __init__(self, scenario: Scenario, source: str | None):
        from mixsim import data as data_module
        from mixsim import problems

        self.scenario = scenario
        self.source = source
        seed = scenario.seed
        streams = np.random.SeedSequence(seed).spawn(4)
        data_seed, problem_seed, worker_seed, engine_seed = (
            int(s.generate_state(1)[0]) for s in streams)
        self.n = scenario.workers
        self._worker_seed = worker_seed
        spec = scenario.data.model_dump(exclude={"partition", "batch"})
        with _section(source, "data"):
            self.dataset = data_module.load_dataset(spec, seed=data_seed)
        ds = self.dataset
        with _section(source, "data.partition"):
            self.shards = data_module.partition_from_spec(
                ds, scenario.data.partition.model_dump(), self.n, seed=data_seed)
        with _section(source, "problem"):
            self.problem = problems.make_problem(
                scenario.problem.name, ds.A_train.shape[1], ds.n_classes,
                **scenario.problem.params)
        self.d = self.problem.dim
        self.dtype = ds.A_train.dtype
        with _section(source, "problem"):
            # The state (a copy per slot, at least one per worker, twice: X and the
            # recorded initial state) and each worker's optimizer moments and memory.
            _memory.require(self.dtype.itemsize * self.d * (2 * self.n + 6 * self.n + 2),
                            f"{self.d:,} model parameters x {self.n:,} workers",
                            key="problem.params")
        self.batch = scenario.data.batch
        self.rngs = [np.random.default_rng(s) for s in
                     np.random.SeedSequence(worker_seed).spawn(self.n)]
        with _section(source, "protocol"):
            self.protocol = load_protocol(scenario.protocol.name, scenario.protocol.params)
        with _section(source, "timing"):
            timing = Timing(ComputeTime(**scenario.timing.compute.model_dump()),
                            Links(**scenario.timing.links.model_dump()))
        x0 = self.problem.init(problem_seed).astype(self.dtype)
        with _section(source, "protocol"):
            self._build_sim(timing, engine_seed, x0)
        with _section(source, "optimizer"):
            self._build_optimizer(worker_seed)
        self.bits_up = 0.0
        self.bits_down = 0.0
        self._initial_loss = None
        self._counted_events = 0
        self._op_bits: dict[int, tuple[str, float]] = {}

    # -- set-up -------------------------------------------------------------------------
    def _build_sim(self, timing, engine_seed, x0):
        from mixsim.engine import build_layout

        layout = build_layout(self.protocol, self.n)
        with _section(self.source, "timing"):
            timing.links.check(layout)
        X0 = np.broadcast_to(x0, (layout.size, self.d)).copy()
        absorb = self.protocol.spec.consensus.absorb
        if absorb is not None:
            X0[layout.rows(absorb)] = 0.0
        self.sim = Simulation(self.protocol, self.n, d=self.d, timing=timing, seed=engine_seed,
                              compute=self._compute, initial_state=X0, dtype=self.dtype)
        self.layout = layout
        self.worker_rows = np.array([layout.owner_slot(self.protocol.spec.view, w)
                                     for w in range(self.n)])
        consensus = self.sim.trace.consensus
        self.consensus_row = int(layout.rows(consensus.average)[0])
        target = self.protocol.spec.target
        self.to_server = not isinstance(target, str) or target in ("server",)
        self.has_server = "server" in layout.groups and self.to_server

    def _build_optimizer(self, worker_seed: int):
        opt = self.scenario.optimizer
        placement = opt.placement
        key = "optimizer.placement"
        two_way = placement in ("cd-adam", "two-way", "onebit-adam")
        if placement != "worker" and not self.has_server:
            raise ConfigError(
                f"{placement!r} needs a protocol whose updates go to a server slot "
                f"(sync-ps, async-ps, delayed); {self.protocol.name} has none",
                source=self.source, key=key)
        if two_way and self.sim.schedule != "sync":
            raise ConfigError(f"{placement!r} needs a synchronous protocol (sync-ps); "
                              f"{self.protocol.name} is asynchronous", source=self.source,
                              key=key)
        offsets = None
        if opt.layerwise:
            offsets = self.problem.offsets
        seeds = [int(s.generate_state(1)[0]) for s in
                 np.random.SeedSequence(worker_seed + 1).spawn(self.n + 1)]
        compressed = opt.compressor.name != "none"
        x = np.zeros(self.d, dtype=self.dtype)
        if compressed:
            # Checks against d (top-k's k) name the compressor's key, not the optimizer's.
            with _section(None, "compressor"):
                _compressor(opt.compressor, seeds[0], offsets).init(x)
        self.placement = placement
        self.compressed = compressed
        self._messages: list[np.ndarray] = []
        if placement == "worker":
            self.worker_tx = []
            for w in range(self.n):
                method = _method(opt.method)
                if compressed:
                    inner = optim.make_memory(opt.memory,
                                              _compressor(opt.compressor, seeds[w], offsets))
                    method = optim.chain(inner, method)
                self.worker_tx.append(method)
            self.worker_state = [t.init(x) for t in self.worker_tx]
        elif placement == "server":
            self.worker_tx = [
                optim.make_memory(opt.memory, _compressor(opt.compressor, seeds[w], offsets))
                for w in range(self.n)]
            self.worker_state = [t.init(x) for t in self.worker_tx]
            self.server_tx = _method(opt.method)
            self.server_state = self.server_tx.init(x)
        elif placement == "onebit-adam":
            if opt.method.name != "onebit-adam":
                raise ConfigError("placement onebit-adam runs 1-bit Adam: set "
                                  "optimizer.method.name to onebit-adam", source=self.source,
                                  key="optimizer.method.name")
            params = opt.method.model_dump()
            params.pop("name")
            # The registry checks names and ranges (one-line errors); then the parties.
            _method(opt.method)
            parties = optim.onebit_adam_parties(**params)
            self.cd = [parties] * self.n
        else:
            if placement == "cd-adam" and opt.method.name != "amsgrad":
                raise ConfigError("cd-adam runs AMSGrad on the workers: set "
                                  "optimizer.method.name to amsgrad (or use placement "
                                  "two-way)", source=self.source, key="optimizer.method.name")
            self.cd = [optim.two_way(_compressor(opt.compressor, seeds[w], offsets),
                                     _method(opt.method),
                                     server_compressor=_compressor(opt.compressor, seeds[-1],
                                                                   offsets))
                       for w in range(self.n)]
        if two_way:
            self.worker_state = [cd.worker.init(x) for cd in self.cd]
            self.server_state = self.cd[0].server.init(x)
            self.model_state = self.cd[0].model.init(x)

    # -- computation events ---------------------------------------------------------------
    def _gradient(self, worker: int, view: np.ndarray) -> np.ndarray:
        shard = self.shards[worker]
        if self.batch is None or self.batch >= shard.size:
            rows = shard
        else:
            rows = shard[self.rngs[worker].choice(shard.size, self.batch, replace=False)]
        ds = self.dataset
        return self.problem.grad(view, ds.A_train[rows], ds.y_train[rows])

    def _compute(self, worker: int, view: np.ndarray, step: int):
        g = self._gradient(worker, view)
        if self.placement == "worker":
            update, self.worker_state[worker] = self.worker_tx[worker].update(
                g, self.worker_state[worker], view)
            if self.to_server:
                # A method that compresses its own messages (1-bit Adam) reports their bits.
                sent = optim.message_bits(self.worker_state[worker])
                self.bits_up += sent if (self.compressed or sent) else 32.0 * self.d
            return update
        if self.placement == "server":
            message, self.worker_state[worker] = self.worker_tx[worker].update(
                g, self.worker_state[worker], view)
            self.bits_up += (optim.message_bits(self.worker_state[worker])
                             if self.compressed else 32.0 * self.d)
            if self.sim.schedule == "async":
                update, self.server_state = self.server_tx.update(
                    message, self.server_state, self.sim.X[self.consensus_row])
                return update
            self._messages.append(message)
            if len(self._messages) < self.n:
                return None
            mean = np.mean(self._messages, axis=0).astype(self.dtype)
            self._messages = []
            update, self.server_state = self.server_tx.update(
                mean, self.server_state, self.sim.X[self.consensus_row])
            return update
        cd = self.cd[worker]
        # A 1-bit Adam worker compresses its momentum: it needs the synchronized one.
        momentum = self.model_state.m if self.placement == "onebit-adam" else None
        message, self.worker_state[worker] = cd.worker.update(g, self.worker_state[worker],
                                                              momentum)
        self.bits_up += optim.message_bits(self.worker_state[worker])
        self._messages.append(message)
        if len(self._messages) < self.n:
            return None
        mean = np.mean(self._messages, axis=0).astype(self.dtype)
        self._messages = []
        down, self.server_state = self.cd[0].server.update(mean, self.server_state)
        self.bits_down += self.n * optim.message_bits(self.server_state)
        x = self.sim.X[self.consensus_row].copy()
        before = x.copy()
        self.model_state = self.cd[0].model.step(down, self.model_state, x)
        return x - before

    # -- communication bits ---------------------------------------------------------------
    def count_communication(self) -> None:
        """Add the bits of the communication events recorded since the last call."""
        trace = self.sim.trace
        d = self.d
        for index in range(self._counted_events, len(trace.ev_op)):
            op_index = trace.ev_op[index]
            if op_index < 0:
                continue
            kind = trace.ev_kind[index]
            if op_index not in self._op_bits:
                op = trace.ops[op_index]
                if kind == "copy":
                    self._op_bits[op_index] = (
                        "down", 0.0 if self.placement in ("cd-adam", "two-way", "onebit-adam")
                        else 32.0 * d)
                elif kind in ("deliver", "accumulate"):
                    self._op_bits[op_index] = ("up", 0.0)
                else:
                    received = int(op.cols.size - np.isin(op.rows, op.cols).sum())
                    self._op_bits[op_index] = ("up", 32.0 * d * received)
            direction, bits = self._op_bits[op_index]
            coords = trace.ev_coords.get(index)
            if coords is not None:
                bits *= coords.size / d
            if direction == "up":
                self.bits_up += bits
            else:
                self.bits_down += bits
        self._counted_events = len(trace.ev_op)

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self) -> dict:
        self.count_communication()
        X = self.sim.X
        x_bar = self.sim.trace.consensus.apply(X)[self.consensus_row]
        ds = self.dataset
        loss = float(self.problem.loss(x_bar, ds.A_train, ds.y_train))
        grad_norm = float(np.linalg.norm(self.problem.grad(x_bar, ds.A_train, ds.y_train)))
        # test_fraction 0 holds out nothing: no test metric (NaN in the table).
        accuracy = self.problem.accuracy(x_bar, ds.A_test, ds.y_test) if ds.n_test else None
        views = X[self.worker_rows].astype(np.float64)
        distance = float(np.mean(np.sum((views - x_bar) ** 2, axis=1)))
        step = self.sim.step
        n_train = sum(s.size for s in self.shards)
        per_step = (self.batch or n_train / self.n)
        row = {
            "step": step,
            "epoch": step * min(per_step, n_train / self.n) / n_train,
            "time": float(self.sim.env.now),
            "loss": loss,
            "grad_norm": grad_norm,
            "test_accuracy": float("nan") if accuracy is None else float(accuracy),
            "stationary_distance": distance,
            "bits_up": self.bits_up,
            "bits_down": self.bits_down,
        }
        if not (np.isfinite(loss) and np.isfinite(grad_norm)):
            raise DivergenceError(step, f"loss {loss} and gradient norm {grad_norm} at the "
                                        "consensus model")
        ratio = self.scenario.divergence.loss_ratio
        if self._initial_loss is None:
            self._initial_loss = loss
        elif ratio is not None and self._initial_loss > 0 and loss > ratio * self._initial_loss:
            raise DivergenceError(step, f"loss {loss:.4g} is above {ratio:g} times the "
                                        f"initial loss {self._initial_loss:.4g} "
                                        "(divergence.loss_ratio)")
        return row

    def total_steps(self) -> int:
        if self.scenario.steps is not None:
            return self.scenario.steps
        n_train = sum(s.size for s in self.shards)
        per_step = min(self.batch or n_train, n_train / self.n)
        return max(1, int(np.ceil(self.scenario.epochs * n_train / per_step)))


def check_scenario(path, overrides: dict | None = None) -> Scenario:
    """Validate a scenario completely without running it: the file, then the data, the
    problem, the protocol and the optimizer are built (raises :class:`ConfigError`)."""
    scenario = load_scenario(path, overrides)
    _Learner(scenario, str(path))
    return scenario


def run(scenario, *, out=None, overrides: dict | None = None, seed: int | None = None,
        progress: bool = False) -> RunResult:
    """Run a learning scenario.

    Parameters
    ----------
    scenario : str, Path or Scenario
        A scenario file or a validated :class:`~mixsim.scenario.Scenario`.
    out : str or Path, optional
        Output folder (default: the scenario's ``outputs.dir``; none: nothing is written).
    overrides : dict, optional
        Dotted keys to set (``{"optimizer.method.lr": 0.01}``).
    seed : int, optional
        Overrides the scenario's seed.
    progress : bool
        Show a progress bar (quiet when not on a terminal).

    Returns
    -------
    RunResult

    Raises
    ------
    ConfigError
        Invalid scenario (file, line, key and value in the message).
    DivergenceError
        A non-finite value appeared; the outputs up to that point are written first and the
        summary says ``"complete": false``.
    """


    source = None
    if not isinstance(scenario, Scenario):
        source = str(scenario)
        scenario = load_scenario(scenario, overrides)
    elif overrides:
        from mixsim.scenario import apply_overrides

        scenario = Scenario.model_validate(apply_overrides(scenario.model_dump(), overrides))
    if seed is not None:
        scenario = with_seed(scenario, seed)
    out_dir = Path(out) if out is not None else (
        Path(scenario.outputs.dir) if scenario.outputs.dir else None)
    if out_dir is not None:
        from mixsim.report import check_out_dir

        check_out_dir(out_dir, "--out" if out is not None else
                      ": ".join(part for part in (source, "outputs.dir") if part))
    started = time.perf_counter()
    # The simulated workers run one after another on small matrices: one BLAS thread is
    # faster than several fighting over the cores (and than oversubscribing Dask workers).
    # Overflow on the way to a divergence is reported once, by the divergence check with
    # its step; NumPy's warnings would only print lines before it.
    with threadpool_limits(limits=1), np.errstate(over="ignore", invalid="ignore",
                                                  divide="ignore"):
        return _run(scenario, source, out_dir, started, progress)


def _run(scenario, source, out_dir, started, progress) -> RunResult:
    from tqdm import tqdm

    from mixsim import report

    learner = _Learner(scenario, source)
    result = RunResult(scenario, out_dir=out_dir)
    total = learner.total_steps()
    writer = report.Writer(out_dir, scenario) if out_dir is not None else None
    error = None
    bar = tqdm(total=total, desc=scenario.name, disable=not progress, unit="step")
    try:
        result.rows.append(learner.evaluate())
        while learner.sim.step < total:
            target = min(total, learner.sim.step + scenario.eval_every)
            before = learner.sim.step
            learner.sim.run(target)
            bar.update(learner.sim.step - before)
            result.rows.append(learner.evaluate())
            if writer is not None:
                writer.write_metrics(result.rows)
    except DivergenceError as exc:
        error = exc
        result.complete = False
    finally:
        bar.close()
    t_mix, xi = (None, None)
    if scenario.outputs.measure_mixing and learner.sim.trace.n_steps:
        from mixsim.mixing import measure_trace

        t_mix, xi = measure_trace(learner.sim.trace)
    result.summary = report.summary(scenario, learner, result, t_mix, xi,
                                    time.perf_counter() - started, error)
    if writer is not None:
        writer.finish(result, learner)
    if error is not None:
        raise error
    return result
