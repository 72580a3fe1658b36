"""The shared suite every catalog protocol must pass."""

import naive
import numpy as np
import pytest

from mixsim import Simulation, list_protocols, load_protocol, trace_mixing_time
from mixsim.protocol import catalog

PROTOCOLS = sorted(catalog())
N = 6


def test_catalog_has_the_required_protocols():
    required = {"allreduce", "local-step", "slack", "async-ps", "sync-ring", "async-ring",
                "gossip", "exponential-graph", "one-peer-exponential", "hogwild", "delayed",
                "sparse", "hybrid"}
    assert required <= set(PROTOCOLS)
    assert all(summary for _, summary in list_protocols())


def _sim(name, seed=0, **kwargs):
    d = 4
    rng = np.random.default_rng(seed + 100)

    def compute(worker, view, step):
        return rng.standard_normal(d) * 0.1

    return Simulation(name, N, d=d, seed=seed, compute=compute, record_updates=True,
                      **kwargs).run(6 * N)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_operators_preserve_consensus(name):
    sim = _sim(name)
    assert len(sim.trace) > 0
    assert sim.trace.check_assumption1() == []
    # The consensus state is a fixed point of every operator (up to the coordinates).
    X = sim.trace.consensus.apply(np.random.default_rng(1).standard_normal((sim.layout.size, 3)))
    for event in sim.trace.events():
        Y = X.copy()
        event.operator.apply(Y)
        np.testing.assert_allclose(Y, X, atol=1e-12)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_mixing_time_and_xi_are_finite(name):
    d = 4 if load_protocol(name).sparsify else 1
    t_mix, xi = trace_mixing_time(name, N, d=d)
    assert 1 <= t_mix < 10_000
    assert 1.0 <= xi < np.inf


@pytest.mark.parametrize("name", PROTOCOLS)
def test_same_seed_same_run(name):
    a, b, c = _sim(name, seed=5), _sim(name, seed=5), _sim(name, seed=6)
    assert np.array_equal(a.X, b.X)
    assert a.trace.ev_op == b.trace.ev_op and a.trace.ev_time == b.trace.ev_time
    assert not np.array_equal(a.X, c.X)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_trace_replays_to_the_same_state(name):
    # The engine's state against dense matrices applied one by one (tests/naive.py), and
    # the trace's own replay against the engine.
    sim = _sim(name)
    np.testing.assert_allclose(naive.replay(sim.trace), sim.X, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sim.trace.replay(), sim.X, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_steps_count_computation_events(name):
    sim = Simulation(name, N, seed=0).run(3 * N)
    assert sim.step == 3 * N == sim.trace.n_steps
    assert all(-1 <= s < 3 * N for s in sim.trace.ev_step)
    assert sim.trace.ev_step == sorted(sim.trace.ev_step)
