"""The scalable first-passage scan (probe vectors and Lanczos tests) and structured
operators, against the exact dense scan, dense matrices and closed forms."""

import math

import naive
import numpy as np
import pytest

from mixsim import Simulation, blocks, load_protocol, mixing_time
from mixsim._passages import FirstPassages
from mixsim._probes import ProbeScan, _replay, _replay_transpose
from mixsim.mixing import default_starts, measure_trace
from mixsim.operators import Operator

#: The halving threshold of Assumption 2 (seed 002): 1/2, with the relative slack of 1e-9
#: both scans allow so that an exact halving (slack with gamma = 1/2) counts.
HALF = 0.5 * (1 + 1e-9)

CATALOG = [
    ("allreduce", None), ("local-step", None), ("slack", {"gamma": 0.3}),
    ("async-ps", None), ("sync-ps", None), ("sync-ring", None), ("async-ring", None),
    ("gossip", {"mode": "async", "graph": "path_graph"}), ("exponential-graph", None),
    ("one-peer-exponential", None), ("hogwild", None), ("delayed", {"distribution": "uniform"}),
    ("hybrid", {"group_size": 2}), ("sparse", {"base": "async-ring", "eta": 0.5}),
]


def _both_scans(sim, starts, coord=0, seed=0):
    compiled = sim.trace.compile(coord + 1)
    exact = FirstPassages(sim.trace.consensus.complement_basis(), starts, coord)
    probes = ProbeScan(sim.trace.consensus.normal(), starts, coord, seed=seed)
    return (exact.advance(compiled, sim.step).copy(), probes.advance(compiled, sim.step),
            probes)


@pytest.mark.parametrize("name, params", CATALOG)
@pytest.mark.parametrize("n", [5, 16])
def test_probe_scan_equals_the_exact_scan_on_the_catalog(name, params, n):
    for seed in (0, 1):
        d = 2 if name == "sparse" else 1
        sim = Simulation(name, n, d=d, seed=seed, params=params).run(40 * n)
        starts = np.arange(n)
        for coord in range(d):
            exact, probes, _ = _both_scans(sim, starts, coord, seed)
            assert np.array_equal(probes, exact), (name, n, seed, coord)


@pytest.mark.parametrize("name", ["async-ps", "async-ring", "hogwild", "allreduce",
                                  "one-peer-exponential", "hybrid"])
def test_probe_scan_equals_the_exact_scan_at_64_workers(name):
    sim = Simulation(name, 64, seed=3).run(12000 if name == "async-ring" else 2500)
    exact, probes, _ = _both_scans(sim, np.arange(64), seed=3)
    assert np.array_equal(probes, exact)
    assert np.all(exact > 0)


def test_probe_scan_matches_dense_products_with_structured_operators(monkeypatch):
    # Averages and slack stored as diagonal + rank one (forced here at a small size).
    monkeypatch.setattr(blocks, "DENSE_GROUP", 2)
    for name, params in (("allreduce", None), ("slack", {"gamma": 0.4}),
                         ("local-step", {"local_steps": 3})):
        sim = Simulation(name, 6, seed=0, params=params).run(120)
        assert any(op.low_rank for op in sim.trace.ops)
        expected = naive.first_passages(naive.step_matrices(sim.trace),
                                        sim.trace.consensus.complement_basis(), range(6),
                                        HALF)
        _, probes, _ = _both_scans(sim, np.arange(6))
        assert np.array_equal(probes, expected)


def test_a_probabilistic_halving_is_counted_and_reported():
    # The exponential graph's ratio (1 - 2/(1 + log2 n))^k is not an exact halving: the
    # Lanczos test declares it with the Kuczynski-Wozniakowski bound.
    result = mixing_time("exponential-graph", 128, method="trace", scan="probes")[0]
    rounds = math.ceil(math.log(0.5) / math.log(1 - 2 / (1 + math.log2(128))))
    assert result.t_mix == 128 * rounds
    assert result.scan == "probabilistic"
    assert 0 < result.failure_probability <= 1e-5
    assert result.as_dict()["scan"] == "probabilistic"


def test_dominated_starts_are_derived_not_scanned():
    # Synchronous rounds: only the start after each round's events is scanned.
    sim = Simulation("sync-ring", 8, seed=0).run(400)
    exact, probes, scan = _both_scans(sim, np.arange(24))
    assert np.array_equal(probes, exact)
    assert scan.counts["scanned_starts"] == 3


def test_scan_is_reproducible_and_resumable():
    sim = Simulation("async-ring", 12, seed=4).run(900)
    normal = sim.trace.consensus.normal()
    whole = ProbeScan(normal, np.arange(12), seed=9).advance(sim.trace.compile(1), sim.step)
    pieces = ProbeScan(normal, np.arange(12), seed=9)
    for steps in (60, 200, 900):
        base = pieces.needs_from
        pieces.advance(sim.trace.compile(1, first_step=base), steps, base)
    assert np.array_equal(pieces.lengths, whole)


@pytest.mark.parametrize("seed", range(3))
def test_transposed_replay_is_the_transpose_of_the_window(seed):
    monkey = blocks.DENSE_GROUP
    blocks.DENSE_GROUP = 3
    try:
        sim = Simulation("hybrid", 8, seed=seed, params={"group_size": 2}).run(60)
        sims = [sim, Simulation("slack", 5, seed=seed, params={"gamma": 0.3}).run(30)]
    finally:
        blocks.DENSE_GROUP = monkey
    for run in sims:
        steps = naive.step_matrices(run.trace)
        compiled = run.trace.compile(1)
        size = run.layout.size
        s, e = 3, run.step - 2
        P = np.eye(size)
        for t in range(s, e + 1):
            P = steps[t] @ P
        X = np.random.default_rng(seed).standard_normal((size, 3))
        buf = np.empty((compiled.max_rows(), 3))
        forward, backward = X.copy(), X.copy()
        _replay(forward, s, e, 0, 0, compiled.step_ptr, compiled.ev_op, compiled.ev_mask,
                compiled.op_arrays(), buf)
        _replay_transpose(backward, s, e, 0, 0, compiled.step_ptr, compiled.ev_op,
                          compiled.ev_mask, compiled.op_arrays(), buf)
        np.testing.assert_allclose(forward, P @ X, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(backward, P.T @ X, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("gamma", [1.0, 0.25])
def test_mix_operator_against_its_dense_matrix(gamma):
    group = np.array([1, 2, 4, 5])
    op = Operator.mix(group, gamma, size=7)
    dense = np.eye(7)
    k = group.size
    for i in group:
        dense[i] = 0.0
        dense[i, i] = 1 - gamma
        dense[i, group] += gamma / k
    np.testing.assert_allclose(op.to_dense(), dense, rtol=0, atol=1e-15)
    X = np.random.default_rng(0).standard_normal((7, 5))
    Y = X.copy()
    op.apply(Y)
    np.testing.assert_allclose(Y, dense @ X, rtol=1e-14, atol=1e-14)
    coords = np.array([0, 3])
    Z = X.copy()
    op.apply(Z, coords)
    expected = X.copy()
    expected[:, coords] = dense @ X[:, coords]
    np.testing.assert_allclose(Z, expected, rtol=1e-14, atol=1e-14)
    assert op.norm() == pytest.approx(np.linalg.norm(dense, 2), rel=1e-12)


def test_a_large_average_is_linear_in_its_group():
    op = blocks.Average(blocks.BlockContext(
        Simulation("allreduce", 5000, seed=0).layout, np.random.default_rng(0))).op
    assert op.low_rank and op.cols.size == 0 and op.lr_cols.size == 5000
    assert op.norm() == 1.0


@pytest.mark.parametrize("n", [128, 1024, 4096])
def test_closed_forms_at_scale(n):
    # Seed 002 §3.1 and §6, Ying et al. 2021: with the default method and scan.
    assert mixing_time("allreduce", n)[0].t_mix == n
    assert mixing_time(load_protocol("local-step", {"local_steps": 3}), n)[0].t_mix == 3 * n
    gamma = 0.3
    slack = mixing_time(load_protocol("slack", {"gamma": gamma}), n)[0]
    assert slack.t_mix == n * math.ceil(math.log(0.5) / math.log(1 - gamma))
    exponential = mixing_time("one-peer-exponential", n)[0]
    assert exponential.t_mix == n * int(math.log2(n))
    assert exponential.method == "trace" and exponential.scan == "exact"


def test_sync_ring_at_128_workers_is_n_times_k():
    W = np.zeros((128, 128))
    for i in range(128):
        for j in (i - 1, i, i + 1):
            W[i, j % 128] += 1.0 / 3
    eigenvalues = np.sort(np.abs(np.linalg.eigvalsh(W)))
    second = eigenvalues[-2]
    k = math.ceil(math.log(0.5) / math.log(second))
    result = mixing_time("sync-ring", 128)[0]
    assert result.method == "trace" and result.t_mix == 128 * k


def test_auto_measures_a_fixed_random_graph_once_by_trace():
    protocol = load_protocol("gossip", {"graph": "random_regular_graph",
                                        "graph_args": {"d": 3}, "graph_seed": 5})
    result = mixing_time(protocol, 32)[0]
    assert result.method == "trace" and result.runs == 1


def test_default_starts_keep_the_exact_range_and_cap_above_it():
    assert default_starts(4) == 4 and default_starts(256) == 256
    assert default_starts(1024) == 64 and default_starts(100_000) == 16
    assert default_starts(200, slots=300) == 200 and default_starts(1000, slots=1001) == 65


def test_xi_of_the_probe_scan_is_a_lower_bound_of_the_exact_value():
    exact = mixing_time("async-ps", 6, runs=3, scan="exact")[0]
    probes = mixing_time("async-ps", 6, runs=3, scan="probes")[0]
    assert exact.xi_kind == "exact" and probes.xi_kind == "lower bound"
    assert 1.0 < probes.xi <= exact.xi * (1 + 1e-12)
    assert np.array_equal(exact.samples, probes.samples)


def test_measure_trace_uses_the_probe_scan_above_the_exact_range():
    sim = Simulation("one-peer-exponential", 512, seed=0).run(512 * 10)
    t_mix, xi = measure_trace(sim.trace)
    assert t_mix == 512 * 9 and xi == 1.0


def test_xi_of_a_trace_run_is_its_largest_window_norm():
    # hybrid, 16 workers, seed 0: the earlier 8 sampled starts gave 2.406; every window of
    # the run's trace, by dense products, gives more.
    from mixsim.mixing import _Measure

    measure = _Measure(load_protocol("hybrid"), 16, 0, None, None, 1)
    t_mix = measure.t_mix(64)
    steps = naive.step_matrices(measure.sim.trace)
    best = 1.0
    for s in range(len(steps)):
        product = np.eye(measure.sim.layout.size)
        for e in range(s, len(steps)):
            product = steps[e] @ product
            best = max(best, np.linalg.norm(product, 2))
    xi, kind = measure.xi(t_mix)
    assert kind == "exact" and xi == pytest.approx(best, rel=1e-9) and xi > 2.406


def test_starts_beyond_the_longest_run_are_refused():
    from mixsim.errors import ProtocolError

    with pytest.raises(ProtocolError, match="starts = 1000000000000 must be at most"):
        mixing_time("allreduce", 4, starts=10**12)
