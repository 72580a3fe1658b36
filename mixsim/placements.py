"""Where the optimizer of a learning run runs: one small object per placement.

A placement is built once per run (:func:`make_placement`: it checks that the protocol
suits it and builds the per-worker and server transformations), then answers two
questions: what a computation event does with a worker's gradient (:meth:`compute`: the
update to add to the worker's target slot, or None while a synchronous round is still
collecting messages), and what its messages cost (the bits it adds to :class:`Traffic`
itself, and :attr:`copy_carries_model`: whether a server-to-worker copy event of the
protocol sends the model). The five placements:

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

A new placement is one class here and one entry in :data:`PLACEMENTS` (and its name in the
scenario schema).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from mixsim import optim
from mixsim._section import section
from mixsim.errors import ConfigError

__all__ = ["Traffic", "RunContext", "PLACEMENTS", "make_placement"]


@dataclass
class Traffic:
    """Bits sent so far: ``up`` (workers to server or peers) and ``down`` (server out)."""

    up: float = 0.0
    down: float = 0.0


@dataclass
class RunContext:
    """What a placement needs to know about the run it serves.

    Attributes
    ----------
    n, d : int
        Workers and parameters.
    dtype : numpy dtype
        The state's dtype.
    sim : mixsim.engine.Simulation
        The engine (its state ``X`` and ``schedule``).
    consensus_row : int
        The state row holding the consensus (server) model.
    to_server : bool
        Whether the workers' updates land in a server slot.
    has_server : bool
        Whether the layout has a server slot and the updates land there.
    protocol_name : str
        For error messages.
    traffic : Traffic
        Where the placement adds the bits of its messages.
    """

    n: int
    d: int
    dtype: np.dtype
    sim: object
    consensus_row: int
    to_server: bool
    has_server: bool
    protocol_name: str
    traffic: Traffic


def _compressor(section_spec, seed: int, offsets):
    from mixsim.optim.compressors import _COMPRESSORS

    params = section_spec.model_dump()
    name = params.pop("name")
    if offsets is not None and name != "none":
        params.setdefault("offsets", offsets)
    # A random compressor draws from the worker's own seed unless the scenario sets one.
    factory = _COMPRESSORS.get(name)
    if factory is not None and "seed" in inspect.signature(factory).parameters:
        params.setdefault("seed", seed)
    with section(None, "compressor"):
        return optim.make_compressor(name, **params)


def _method(section_spec):
    params = section_spec.model_dump()
    with section(None, "method"):
        return optim.make_optimizer(params.pop("name"), **params)


def _round_mean(messages: list[np.ndarray], dtype) -> np.ndarray:
    return np.mean(messages, axis=0).astype(dtype)


class _Placement:
    """Common set-up: the checks every placement shares and the round buffer."""

    name = ""
    #: The workers' updates must land in a server slot.
    needs_server = True
    #: The protocol must be synchronous (rounds of n messages).
    needs_sync = False
    #: A server-to-worker copy event sends the model (32 d bits); False when the workers
    #: update identical models themselves and the copy is only the simulator's bookkeeping.
    copy_carries_model = True

    def __init__(self, opt, run: RunContext, seeds: list[int], offsets):
        self.run = run
        self.compressed = opt.compressor.name != "none"
        self._messages: list[np.ndarray] = []
        self._build(opt, seeds, offsets, np.zeros(run.d, dtype=run.dtype))

    def _build(self, opt, seeds, offsets, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self, worker: int, g: np.ndarray, view: np.ndarray) -> np.ndarray | None:
        """The update a computation event adds to ``worker``'s target slot (None: none yet).

        Parameters
        ----------
        worker : int
            The computing worker.
        g : numpy.ndarray
            Its stochastic gradient at ``view``.
        view : numpy.ndarray
            Its view of the state (the model it computed at).
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def _collect(self, message: np.ndarray) -> np.ndarray | None:
        """The mean of a synchronous round's messages once all n have arrived."""
        self._messages.append(message)
        if len(self._messages) < self.run.n:
            return None
        mean = _round_mean(self._messages, self.run.dtype)
        self._messages = []
        return mean


class WorkerPlacement(_Placement):
    """Every worker runs the whole optimizer on its own gradient."""

    name = "worker"
    needs_server = False

    def _build(self, opt, seeds, offsets, x):
        self.worker_tx = []
        for w in range(self.run.n):
            method = _method(opt.method)
            if self.compressed:
                inner = optim.make_memory(opt.memory,
                                          _compressor(opt.compressor, seeds[w], offsets))
                method = optim.chain(inner, method)
            self.worker_tx.append(method)
        self.worker_state = [t.init(x) for t in self.worker_tx]

    def compute(self, worker, g, view):
        update, self.worker_state[worker] = self.worker_tx[worker].update(
            g, self.worker_state[worker], view)
        if self.run.to_server:
            # A method that compresses its own messages (1-bit Adam) reports their bits.
            sent = optim.message_bits(self.worker_state[worker])
            self.run.traffic.up += sent if (self.compressed or sent) else 32.0 * self.run.d
        return update


class ServerPlacement(_Placement):
    """Workers send (compressed) gradients; the server runs the method (SPARS-AMS)."""

    name = "server"

    def _build(self, opt, seeds, offsets, x):
        self.worker_tx = [
            optim.make_memory(opt.memory, _compressor(opt.compressor, seeds[w], offsets))
            for w in range(self.run.n)]
        self.worker_state = [t.init(x) for t in self.worker_tx]
        self.server_tx = _method(opt.method)
        self.server_state = self.server_tx.init(x)

    def compute(self, worker, g, view):
        run = self.run
        message, self.worker_state[worker] = self.worker_tx[worker].update(
            g, self.worker_state[worker], view)
        run.traffic.up += (optim.message_bits(self.worker_state[worker])
                           if self.compressed else 32.0 * run.d)
        if run.sim.schedule == "async":
            update, self.server_state = self.server_tx.update(
                message, self.server_state, run.sim.X[run.consensus_row])
            return update
        mean = self._collect(message)
        if mean is None:
            return None
        update, self.server_state = self.server_tx.update(
            mean, self.server_state, run.sim.X[run.consensus_row])
        return update


class _TwoWayPlacement(_Placement):
    """Compressed messages both ways; every worker applies the same step to its model.

    Subclasses set :attr:`parties` (one ``(worker, server, model)`` triple per worker)."""

    needs_sync = True
    copy_carries_model = False
    #: The worker compresses the synchronized momentum (1-bit Adam) rather than a gradient.
    uses_momentum = False

    def _init_parties(self, x):
        self.worker_state = [p.worker.init(x) for p in self.parties]
        self.server_state = self.parties[0].server.init(x)
        self.model_state = self.parties[0].model.init(x)

    def compute(self, worker, g, view):
        run = self.run
        momentum = self.model_state.m if self.uses_momentum else None
        message, self.worker_state[worker] = self.parties[worker].worker.update(
            g, self.worker_state[worker], momentum)
        run.traffic.up += optim.message_bits(self.worker_state[worker])
        mean = self._collect(message)
        if mean is None:
            return None
        down, self.server_state = self.parties[0].server.update(mean, self.server_state)
        run.traffic.down += run.n * optim.message_bits(self.server_state)
        x = run.sim.X[run.consensus_row].copy()
        before = x.copy()
        self.model_state = self.parties[0].model.step(down, self.model_state, x)
        return x - before


class TwoWayPlacement(_TwoWayPlacement):
    """Markov compression up and down around any method (two-way EF21 with SGD)."""

    name = "two-way"

    def _build(self, opt, seeds, offsets, x):
        self.parties = [optim.two_way(_compressor(opt.compressor, seeds[w], offsets),
                                      _method(opt.method),
                                      server_compressor=_compressor(opt.compressor, seeds[-1],
                                                                    offsets))
                        for w in range(self.run.n)]
        self._init_parties(x)


class CDAdamPlacement(TwoWayPlacement):
    """CD-Adam (seed 003 Alg. 1): the two-way placement with AMSGrad."""

    name = "cd-adam"

    def _build(self, opt, seeds, offsets, x):
        if opt.method.name != "amsgrad":
            raise ConfigError("cd-adam runs AMSGrad on the workers: set "
                              "optimizer.method.name to amsgrad (or use placement "
                              "two-way)", key="optimizer.method.name")
        super()._build(opt, seeds, offsets, x)


class OneBitAdamPlacement(_TwoWayPlacement):
    """1-bit Adam: each worker compresses its own momentum, the server their mean."""

    name = "onebit-adam"
    uses_momentum = True

    def _build(self, opt, seeds, offsets, x):
        if opt.method.name != "onebit-adam":
            raise ConfigError("placement onebit-adam runs 1-bit Adam: set "
                              "optimizer.method.name to onebit-adam",
                              key="optimizer.method.name")
        params = opt.method.model_dump()
        params.pop("name")
        # The registry checks names and ranges (one-line errors); then the parties.
        _method(opt.method)
        for key in ("weight_decay", "decoupled_weight_decay"):
            if params.pop(key, 0):
                raise ConfigError("weight decay is not available with placement onebit-adam "
                                  "(it would enter the compressed momentum)",
                                  key=f"optimizer.method.{key}")
        schedule = params.pop("schedule", None)
        if schedule is not None:
            spec = dict(schedule)
            params["lr"] = optim.make_schedule(spec.pop("name"), value=params["lr"], **spec)
        self.parties = [optim.onebit_adam_parties(**params)] * self.run.n
        self._init_parties(x)


#: Every placement by its scenario name.
PLACEMENTS: dict[str, type[_Placement]] = {
    cls.name: cls for cls in (WorkerPlacement, ServerPlacement, CDAdamPlacement,
                              TwoWayPlacement, OneBitAdamPlacement)
}


def make_placement(opt, run: RunContext, worker_seed: int, offsets) -> _Placement:
    """Check that the protocol suits ``opt.placement`` and build it.

    Parameters
    ----------
    opt : mixsim.scenario.OptimizerSection
        The scenario's ``optimizer`` section.
    run : RunContext
        The run it serves.
    worker_seed : int
        The workers' stream; compressor seeds derive from it.
    offsets : list of int or None
        Layer boundaries for per-layer compression (None: whole vector).

    Raises
    ------
    ConfigError
        The protocol has no server slot or is asynchronous where the placement needs one
        or a synchronous round (``key="optimizer.placement"``), or the method does not
        suit the placement (``key="optimizer.method.name"``).
    """
    cls = PLACEMENTS[opt.placement]
    key = "optimizer.placement"
    if cls.needs_server and not run.has_server:
        raise ConfigError(
            f"{cls.name!r} needs a protocol whose updates go to a server slot "
            f"(sync-ps, async-ps, delayed); {run.protocol_name} has none", key=key)
    if cls.needs_sync and run.sim.schedule != "sync":
        raise ConfigError(f"{cls.name!r} needs a synchronous protocol (sync-ps); "
                          f"{run.protocol_name} is asynchronous", key=key)
    seeds = [int(s.generate_state(1)[0]) for s in
             np.random.SeedSequence(worker_seed + 1).spawn(run.n + 1)]
    return cls(opt, run, seeds, offsets)
