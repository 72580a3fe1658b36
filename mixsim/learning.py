"""Learning runs: a scenario's problem, data and optimizer on the engine.

Each computation event computes a stochastic gradient at the worker's view of the state and
passes it to the scenario's placement of the optimizer (:mod:`mixsim.placements`: on the
workers, on a server, or two-way compressed); the protocol decides where the resulting update
lands and how the state mixes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from mixsim import _memory
from mixsim._section import section as _section
from mixsim.engine import Simulation
from mixsim.errors import ConfigError, DivergenceError
from mixsim.metrics import METRICS
from mixsim.placements import RunContext, Traffic, _compressor, make_placement
from mixsim.protocol import load_protocol
from mixsim.scenario import Scenario, load_scenario, with_seed
from mixsim.timing import ComputeTime, Links, Timing

__all__ = ["RunResult", "run", "check_scenario", "check_learner", "METRICS"]


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


def _make_problem(scenario: Scenario, ds, source: str | None):
    """The scenario's problem on the data ``ds`` (a torch module is given the image shape
    and the scenario's folder, which model file paths are relative to)."""
    from mixsim import problems

    spec = scenario.problem
    if spec.name == "torch":
        from mixsim.torch_problem import make_torch_problem

        return make_torch_problem(
            spec.params, data_dim=ds.A_train.shape[1], n_classes=ds.n_classes,
            sample_shape=ds.sample_shape,
            base_dir=Path(source).parent if source is not None else None)
    return problems.make_problem(spec.name, ds.A_train.shape[1], ds.n_classes, **spec.params)


class _Learner:
    """The computation callback and the bookkeeping of one learning run."""

    def __init__(self, scenario: Scenario, source: str | None):
        from mixsim import data as data_module

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
            self.problem = _make_problem(scenario, ds, source)
        self.worker_problems = [self.problem.for_worker(w) for w in range(self.n)]
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
        self.traffic = Traffic()
        context = RunContext(n=self.n, d=self.d, dtype=self.dtype, sim=self.sim,
                             consensus_row=self.consensus_row, to_server=self.to_server,
                             has_server=self.has_server, protocol_name=self.protocol.name,
                             traffic=self.traffic)
        offsets = self.problem.offsets if opt.layerwise else None
        if opt.compressor.name != "none":
            # Checks against d (top-k's k) name the compressor's key, not the optimizer's.
            with _section(None, "compressor"):
                _compressor(opt.compressor, 0, offsets).init(np.zeros(self.d, self.dtype))
        self.placement = make_placement(opt, context, worker_seed, offsets)

    # -- computation events ---------------------------------------------------------------
    def _gradient(self, worker: int, view: np.ndarray) -> np.ndarray:
        shard = self.shards[worker]
        if self.batch is None or self.batch >= shard.size:
            rows = shard
        else:
            rows = shard[self.rngs[worker].choice(shard.size, self.batch, replace=False)]
        ds = self.dataset
        return self.worker_problems[worker].grad(view, ds.A_train[rows], ds.y_train[rows])

    def _compute(self, worker: int, view: np.ndarray, step: int):
        return self.placement.compute(worker, self._gradient(worker, view), view)

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
                        "down", 32.0 * d if self.placement.copy_carries_model else 0.0)
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
                self.traffic.up += bits
            else:
                self.traffic.down += bits
        self._counted_events = len(trace.ev_op)

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self) -> dict:
        self.count_communication()
        X = self.sim.X
        x_bar = self.sim.trace.consensus.apply(X)[self.consensus_row]
        ds = self.dataset
        # One pass for both: a deep model's full-data loss and gradient are its costliest part.
        loss, grad = self.problem.loss_and_grad(x_bar, ds.A_train, ds.y_train)
        loss = float(loss)
        grad_norm = float(np.linalg.norm(grad))
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
            "bits_up": self.traffic.up,
            "bits_down": self.traffic.down,
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
    check_learner(scenario, str(path))
    return scenario


def check_learner(scenario: Scenario, source: str | None = None) -> None:
    """Build a validated scenario's data, problem, protocol, simulation and optimizer
    without running them: what only the built pieces can check (a placement the protocol
    lacks, a top-k ``k`` above the model's dimension) raises :class:`ConfigError`."""
    _Learner(_corollary1(scenario, source, measure=False)[0], source)


def _corollary1(scenario: Scenario, source: str | None, *, measure: bool = True):
    """``optimizer.method.lr: corollary1``: the scenario with seed 002's Corollary 1 step
    size, and the choice with its inputs (:func:`mixsim.bounds.corollary1_choice`).

    ``t_mix`` and ``xi`` are measured before the run, on one run of the protocol with the
    scenario's seed and timing. Other scenarios are returned unchanged, with None.
    """
    from mixsim import bounds
    from mixsim.mixing import trace_mixing_time
    from mixsim.scenario import apply_overrides

    if scenario.optimizer.method.lr != "corollary1":
        return scenario, None

    def with_lr(lr):
        return Scenario.model_validate(apply_overrides(scenario.model_dump(),
                                                       {"optimizer.method.lr": lr}))

    probe = _Learner(with_lr(1.0), source)
    which, reason = bounds.applicable(scenario, probe)
    if which != "theorem1":
        reason = reason or f"method {scenario.optimizer.method.name!r} is not SGD"
        raise ConfigError(f"'corollary1' is the step size of SGD under Theorem 1, which does "
                          f"not apply here: {reason}", source=source, key="optimizer.method.lr")
    if not measure:
        return with_lr(1.0), None
    timing = Timing(ComputeTime(**scenario.timing.compute.model_dump()),
                    Links(**scenario.timing.links.model_dump()))
    with _section(source, "protocol"):
        # Every coordinate of a sparsified protocol mixes on its own: as many as
        # `mixsim mixing-time` simulates, not coordinate 0 alone.
        t_mix, xi = trace_mixing_time(probe.protocol, scenario.workers, seed=scenario.seed,
                                      timing=timing,
                                      d=16 if probe.protocol.sparsify is not None else 1)
    choice = bounds.corollary1_choice(scenario, probe, probe.total_steps(), t_mix, xi)
    return with_lr(choice["lr"]), choice


def run(scenario, *, out=None, overrides: dict | None = None, seed: int | None = None,
        progress: bool = False, overwrite: bool = False) -> RunResult:
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
    overwrite : bool
        Replace the outputs of a different scenario found in the output folder (by default
        a run refuses them; its own earlier outputs are always replaced).

    Returns
    -------
    RunResult

    Raises
    ------
    ConfigError
        Invalid scenario (file, line, key and value in the message), or an output folder
        holding the outputs of another scenario (without ``overwrite``).
    DivergenceError
        A non-finite value appeared; the outputs up to that point are written first and the
        summary says ``"complete": false``; the error's ``result`` holds the rows so far.
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
        return _run(scenario, source, out_dir, started, progress, overwrite)


def _run(scenario, source, out_dir, started, progress, overwrite) -> RunResult:
    from tqdm import tqdm

    from mixsim import report

    scenario, corollary1 = _corollary1(scenario, source)
    learner = _Learner(scenario, source)
    result = RunResult(scenario, out_dir=out_dir)
    total = learner.total_steps()
    writer = report.Writer(out_dir, scenario, overwrite=overwrite) \
        if out_dir is not None else None
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
    except KeyboardInterrupt:
        if writer is not None:
            # The metrics so far are on disk; the summary says the run did not finish.
            writer.interrupted(learner.sim.step)
        raise
    finally:
        bar.close()
    t_mix, xi = (None, None)
    if scenario.outputs.measure_mixing and learner.sim.trace.n_steps:
        from mixsim.mixing import measure_trace

        t_mix, xi = measure_trace(learner.sim.trace)
    result.summary = report.summary(scenario, learner, result, t_mix, xi,
                                    time.perf_counter() - started, error, corollary1)
    if writer is not None:
        writer.finish(result, learner)
    if error is not None:
        error.result = result
        raise error
    return result
