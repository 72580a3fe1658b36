"""A plain NumPy twin of a learning run, for the end-to-end tests of ``tests/test_learning.py``.

What the twin takes from the run (and nothing more):

* the order of the computation events: which worker computed at each step (a spy on the
  learner's computation callback records ``(step, worker)``; the engine's scheduling of
  simulated time is not what these tests are about);
* the communication events from the run's trace, read through ``Trace.events()``: their
  step, kind, the slots they touch (``participants``) and, for a sparsified protocol, the
  coordinates they exchange;
* the data set, the workers' shards, the state layout (``layout.rows``) and the initial
  state.

Everything else is recomputed here from the definitions, independently of ``mixsim``:
the dense matrix of each event, built by hand from its kind and slots (a copy, a pairwise
average 1/2-1/2, an AllReduce 1/k, the ring gossip matrix with weights 1/3, the delivery of
an in-flight slot); the mini-batch draw (``default_rng`` streams spawned from the
scenario's seed, ``choice`` without replacement: the learner's documented draw, rewritten);
the loss and its gradient (logistic or softmax, written out below); the optimizers from
``tests/naive.py`` (AMSGrad of seed 000 Alg. 1, top-k with error feedback of seed 001
Alg. 1, CD-Adam of seed 003 Alg. 1 with scaled sign); where updates land (from the
protocol files: the worker's own copy, the server or shared RAM slot, a delay line of
``D + 1`` buffer slots); and the consensus model ``M_inf X`` at every evaluation.
"""

from __future__ import annotations

import naive
import numpy as np
from scipy.special import expit, logsumexp

from mixsim import learning

B1, B2, EPS = 0.9, 0.999, 1e-8  # AMSGrad's defaults (seed 000 Alg. 1)


# ------------------------------------------------------------------ spying on the run


def spy_on_learner(monkeypatch) -> list:
    """Make :func:`mixsim.learning.run` use a learner that records its computation
    events; returns the list the learners of the next runs are appended to."""
    learners = []

    class Spy(learning._Learner):
        def __init__(self, scenario, source):
            super().__init__(scenario, source)
            self.initial_X = self.sim.X.copy()
            self.computations = []
            learners.append(self)

        def _compute(self, worker, view, step):
            self.computations.append((step, worker))
            return super()._compute(worker, view, step)

    monkeypatch.setattr(learning, "_Learner", Spy)
    return learners


# ------------------------------------------------------------------ problems, by hand


def logistic(x, A, y):
    """Mean logistic loss with labels ``y > 0`` positive, and its gradient."""
    s = np.where(y > 0, 1.0, -1.0)
    margins = s * (A @ x)
    loss = float(np.mean(np.logaddexp(0.0, -margins)))
    grad = A.T @ (-s * expit(-margins)) / A.shape[0]
    return loss, grad


def softmax(n_classes):
    """Mean cross-entropy of ``softmax(A W + b)``; ``x`` is ``W`` (row-major) then ``b``."""

    def loss_and_grad(x, A, y):
        p, c = A.shape[1], n_classes
        W, b = x[: p * c].reshape(p, c), x[p * c:]
        logits = A @ W + b
        lse = logsumexp(logits, axis=1)
        loss = float(np.mean(lse - logits[np.arange(A.shape[0]), y]))
        P = np.exp(logits - lse[:, None])
        P[np.arange(A.shape[0]), y] -= 1.0
        P /= A.shape[0]
        return loss, np.concatenate([(A.T @ P).ravel(), P.sum(axis=0)])

    return loss_and_grad


# ------------------------------------------------------------------ mini-batches, by hand


def batch_streams(seed: int, n: int):
    """The workers' mini-batch generators: the third of four streams spawned from the
    scenario's seed, spawned again into one ``default_rng`` per worker."""
    worker_seed = int(np.random.SeedSequence(seed).spawn(4)[2].generate_state(1)[0])
    return [np.random.default_rng(s) for s in np.random.SeedSequence(worker_seed).spawn(n)]


# ------------------------------------------------------------------ operators, by hand


def event_matrix(kind: str, slots, layout) -> np.ndarray:
    """The dense ``M`` of a communication event from its kind and the slots it touches."""
    size = layout.size
    M = np.eye(size)
    slots = [int(s) for s in slots]
    workers = set(layout.rows("workers").tolist())
    if kind == "copy":  # a worker's copy takes the value of its server / RAM slot
        (target,) = [s for s in slots if s in workers]
        (source,) = [s for s in slots if s not in workers]
        M[target] = 0.0
        M[target, source] = 1.0
    elif kind == "pairwise":
        a, b = slots
        M[np.ix_([a, b], [a, b])] = 0.5
    elif kind == "average":
        M[np.ix_(slots, slots)] = 1.0 / len(slots)
    elif kind == "gossip":  # a ring: weights 1/3 on self and both neighbours
        k = len(slots)
        if k >= 3:
            for i in range(k):
                M[slots[i]] = 0.0
                for j in (i - 1, i, i + 1):
                    M[slots[i], slots[j % k]] = 1.0 / 3.0
        elif k == 2:  # a ring of two is one edge: each keeps 1/2
            M[np.ix_(slots, slots)] = 0.5
        # a ring of one slot gossips with nobody: the identity
    elif kind == "deliver":  # the server adds an in-flight slot, which is emptied
        (server,) = layout.rows("server").tolist()
        (buffer,) = [s for s in slots if s != server]
        M[server, buffer] = 1.0
        M[buffer, buffer] = 0.0
    else:  # pragma: no cover - a kind no test here uses
        raise AssertionError(f"no hand-built matrix for event kind {kind!r}")
    return M


def events_by_step(trace, layout, steps: int) -> list[list]:
    """``(M, coords)`` of every communication event, grouped by the step they follow
    (index 0: before the first computation)."""
    by_step = [[] for _ in range(steps + 1)]
    cache = {}
    for event in trace.events():
        key = (event.kind, tuple(np.asarray(event.participants).tolist()))
        if key not in cache:
            cache[key] = event_matrix(event.kind, key[1], layout)
        assert -1 <= event.step < steps, event
        by_step[event.step + 1].append((cache[key], event.coords))
    return by_step


def event_steps(learner) -> list[tuple[int, str]]:
    """``(step, kind)`` of every communication event of the run, in order."""
    return [(int(event.step), event.kind) for event in learner.sim.trace.events()]


def event_bits(kind: str, slots, d: int) -> tuple[float, float]:
    """``(up, down)`` bits of a communication event on all ``d`` coordinates, by the rule
    of docs/scenarios.md: a slot receiving a model from a neighbour costs 32 d bits (up;
    a ring slot hears its two neighbours, an AllReduce slot the k - 1 others, a pairwise
    average one each way), a server or RAM copy to a worker 32 d (down); delivering an
    in-flight update inside the server costs nothing."""
    k = len(slots)
    received = {"pairwise": 2, "average": k * (k - 1), "gossip": k * min(2, k - 1),
                "deliver": 0, "copy": 0}[kind]
    return 32.0 * d * received, (32.0 * d if kind == "copy" else 0.0)


def communication_bits(learner, message_bits: float):
    """Cumulative ``(bits_up, bits_down)`` at every evaluation: each event of the run's
    trace by :func:`event_bits` (times the fraction of coordinates a sparsified event
    exchanges), plus ``message_bits`` up per computation event (the messages a placement
    sends a server)."""
    scenario = learner.scenario
    steps, every = scenario.steps, scenario.eval_every
    d = learner.initial_X.shape[1]
    up, down = np.zeros(steps + 1), np.zeros(steps + 1)
    for event in learner.sim.trace.events():
        u, w = event_bits(event.kind, np.asarray(event.participants), d)
        share = 1.0 if event.coords is None else event.coords.size / d
        up[event.step + 1] += u * share
        down[event.step + 1] += w * share
    up[1:] += message_bits
    marks = np.arange(0, steps + 1, every)
    return np.cumsum(up)[marks], np.cumsum(down)[marks]


# ------------------------------------------------------------------ optimizers, by hand


class AMSGrad:
    def __init__(self, d, lr):
        self.lr = lr
        self.m, self.v, self.v_hat = (np.zeros(d) for _ in range(3))

    def step(self, g):
        delta, self.m, self.v, self.v_hat = naive.amsgrad_step(
            np.zeros_like(g), g, self.m, self.v, self.v_hat, self.lr, B1, B2, EPS)
        return delta


class SGD:
    def __init__(self, d, lr):
        self.lr = lr

    def step(self, g):
        return naive.sgd_step(np.zeros_like(g), g, self.lr)


METHODS = {"amsgrad": AMSGrad, "sgd": SGD}


class ErrorFeedbackTopK:
    """Seed 001 Alg. 1: send ``c = top_k(g + e)``, keep ``e = g + e - c``."""

    def __init__(self, d, k):
        self.k, self.e = k, np.zeros(d)

    def message(self, g):
        c, self.e = naive.error_feedback_top_k(g, self.e, self.k)
        return c


class Identity:
    def message(self, g):
        return g


def _compressor(opt, d):
    """The messages' compressor of an ``optimizer`` section: none, or top-k at
    ``density`` with error feedback, ``k = max(1, round(density d))``."""
    name = opt.compressor.name
    if name == "none":
        return Identity
    assert name == "top-k" and opt.memory == "error-feedback", opt
    k = max(1, round(opt.compressor.model_dump()["density"] * d))
    return lambda: ErrorFeedbackTopK(d, k)


class WorkerPlacement:
    """Every worker runs (compression then) AMSGrad on its own gradient."""

    def __init__(self, opt, n, d, synchronous):
        make = _compressor(opt, d)
        self.memory = [make() if make is not Identity else Identity() for _ in range(n)]
        self.methods = [METHODS[opt.method.name](d, opt.method.lr) for _ in range(n)]

    def compute(self, worker, g):
        return self.methods[worker].step(self.memory[worker].message(g))


class ServerPlacement:
    """SPARS-AMS (seed 001 Alg. 1): the server runs AMSGrad on the mean of a round's
    messages (synchronous) or on each message as it arrives (asynchronous)."""

    def __init__(self, opt, n, d, synchronous):
        make = _compressor(opt, d)
        self.memory = [make() if make is not Identity else Identity() for _ in range(n)]
        self.server = AMSGrad(d, opt.method.lr)
        self.n, self.synchronous, self.round = n, synchronous, []

    def compute(self, worker, g):
        message = self.memory[worker].message(g)
        if not self.synchronous:
            return self.server.step(message)
        self.round.append(message)
        if len(self.round) < self.n:
            return None
        mean, self.round = np.mean(self.round, axis=0), []
        return self.server.step(mean)


class CDAdamPlacement:
    """CD-Adam (seed 003 Alg. 1) with scaled sign ``C`` both ways: worker ``i`` sends
    ``c_i = C(g_i - g_hat_i)`` and sets ``g_hat_i += c_i``; the server sets ``g_hat +=
    mean(c_i)``, sends ``c = C(g_hat - g_tilde)`` and sets ``g_tilde += c``; every worker
    sets ``g_tilde += c`` and takes an AMSGrad step on ``g_tilde``."""

    def __init__(self, opt, n, d, synchronous):
        assert synchronous and opt.compressor.name == "scaled-sign", opt
        self.g_hat_workers = [np.zeros(d) for _ in range(n)]
        self.g_hat, self.g_tilde_server, self.g_tilde = np.zeros(d), np.zeros(d), np.zeros(d)
        self.method = AMSGrad(d, opt.method.lr)
        self.n, self.round = n, []

    def compute(self, worker, g):
        c_i = naive.scaled_sign(g - self.g_hat_workers[worker])
        self.g_hat_workers[worker] = self.g_hat_workers[worker] + c_i
        self.round.append(c_i)
        if len(self.round) < self.n:
            return None
        mean, self.round = np.mean(self.round, axis=0), []
        self.g_hat = self.g_hat + mean
        c = naive.scaled_sign(self.g_hat - self.g_tilde_server)
        self.g_tilde_server = self.g_tilde_server + c
        self.g_tilde = self.g_tilde + c
        return self.method.step(self.g_tilde)


PLACEMENTS = {"worker": WorkerPlacement, "server": ServerPlacement, "cd-adam": CDAdamPlacement}


# ------------------------------------------------------------------ the re-simulation


def simulate(learner, loss_and_grad, *, target, consensus, synchronous, worker_grad=None):
    """Re-run ``learner``'s (finished) run in NumPy; returns the losses at the evaluation
    steps ``0, eval_every, 2 eval_every, ...`` and the final state.

    Parameters
    ----------
    learner : the spy learner of the run (see :func:`spy_on_learner`)
    loss_and_grad : ``f(x, A, y) -> (loss, gradient)``
    target : ``"own"`` (each worker's copy), a group name (``"server"``, ``"ram"``: the
        slot a worker is attached to, consecutive blocks of workers per slot), or
        ``("delay", D)``: the update of step ``t`` enters buffer slot ``(t + D) mod (D + 1)``
        (a constant delay line, seed 000 §5.1).
    consensus : ``(group, absorb)``: ``M_inf X`` is the mean of ``group``'s slots plus the
        sum of ``absorb``'s slots divided by ``|group|`` (protocol file's ``consensus``).
    synchronous : whether the protocol runs in rounds (a server placement averages them).
    worker_grad : ``g(worker, x, A, y)``, a worker's training gradient (default: the
        gradient of ``loss_and_grad``).

    The state keeps the run's dtype (a float32 run rounds where the run rounds: after each
    event and update); the optimizers' states are float64.
    """
    scenario = learner.scenario
    n, steps, every = scenario.workers, scenario.steps, scenario.eval_every
    layout = learner.layout
    ds = learner.dataset
    A, y = ds.A_train, ds.y_train
    X = np.array(learner.initial_X, copy=True)
    d = X.shape[1]
    placement = PLACEMENTS[scenario.optimizer.placement](scenario.optimizer, n, d, synchronous)
    rngs = batch_streams(scenario.seed, n)
    batch = scenario.data.batch
    views = layout.rows("workers")

    def target_row(t, worker):
        if target == "own":
            return views[worker]
        if isinstance(target, tuple):
            buffers = layout.rows("buffer")
            assert buffers.size == target[1] + 1
            return buffers[(t + target[1]) % buffers.size]
        rows = layout.rows(target)
        return rows[worker * rows.size // n]

    def consensus_loss():
        group, absorb = consensus
        value = X[layout.rows(group)].sum(axis=0)
        if absorb is not None:
            value = value + X[layout.rows(absorb)].sum(axis=0)
        return loss_and_grad(value / layout.rows(group).size, A, y)[0]

    def communicate(events):
        for M, coords in events:
            if coords is None:
                X[:] = M @ X
            else:
                X[:, coords] = M @ X[:, coords]

    by_step = events_by_step(learner.sim.trace, layout, steps)
    assert len(learner.computations) == steps
    communicate(by_step[0])
    losses = [consensus_loss()]
    for t, (step, worker) in enumerate(learner.computations):
        assert step == t
        shard = learner.shards[worker]
        rows = shard if batch is None or batch >= shard.size else \
            shard[rngs[worker].choice(shard.size, batch, replace=False)]
        view = X[views[worker]].copy()
        g = loss_and_grad(view, A[rows], y[rows])[1] if worker_grad is None else \
            worker_grad(worker, view, A[rows], y[rows])
        delta = placement.compute(worker, g)
        if delta is not None:
            X[target_row(t, worker)] += delta
        communicate(by_step[t + 1])
        if (t + 1) % every == 0:
            losses.append(consensus_loss())
    return np.array(losses), X
