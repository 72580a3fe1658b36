"""Mixing times against the values theory gives (BRIEF §1), computed independently here."""

import math

import networkx as nx
import numpy as np
import pytest

from mixsim import load_protocol, mixing_time, trace_mixing_time


def _rounds_to_halve(W: np.ndarray) -> int:
    """Smallest k with ||W^k - 11^T/n||_2 <= 1/2, by direct matrix powers."""
    n = W.shape[0]
    J = np.full((n, n), 1.0 / n)
    P = np.eye(n)
    for k in range(1, 100_000):
        P = P @ W
        if np.linalg.norm(P - J, 2) <= 0.5 + 1e-12:
            return k
    raise AssertionError("did not mix")


def _ring_W(n: int) -> np.ndarray:
    W = np.zeros((n, n))
    for i in range(n):
        for j in (i - 1, i, i + 1):
            W[i, j % n] += 1.0 / 3
    return W


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 16])
def test_allreduce_is_n(n):
    assert trace_mixing_time("allreduce", n)[0] == n


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_local_step_is_m_times_n(n, m):
    t_mix, xi = trace_mixing_time(load_protocol("local-step", {"local_steps": m}), n)
    assert t_mix == m * n
    assert xi == 1.0


@pytest.mark.parametrize("n", [2, 4, 7])
@pytest.mark.parametrize("gamma", [1.0, 0.5, 0.3, 0.1, 0.02])
def test_slack_formula(n, gamma):
    expected = n * math.ceil(math.log(0.5) / math.log(1 - gamma)) if gamma < 1 else n
    protocol = load_protocol("slack", {"gamma": gamma})
    assert trace_mixing_time(protocol, n)[0] == expected
    assert protocol.theory_t_mix(n) == expected


@pytest.mark.parametrize("n", [3, 4, 5, 8, 12, 16, 24])
def test_sync_ring_is_n_times_k(n):
    k = _rounds_to_halve(_ring_W(n))
    assert trace_mixing_time("sync-ring", n)[0] == n * k
    assert load_protocol("sync-ring").theory_t_mix(n) == n * k


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
def test_one_peer_exponential_is_n_log2_n(n):
    assert trace_mixing_time("one-peer-exponential", n)[0] == n * int(math.log2(n))


@pytest.mark.parametrize("n", [4, 8, 16, 32])
def test_exponential_graph_against_dense_powers(n):
    W = np.zeros((n, n))
    tau = int(math.ceil(math.log2(n)))
    for i in range(n):
        for j in [0] + [2**e for e in range(tau)]:
            W[i, (i + j) % n] += 1.0 / (tau + 1)
    assert trace_mixing_time("exponential-graph", n)[0] == n * _rounds_to_halve(W)


@pytest.mark.parametrize(
    ("graph", "args", "n"),
    [("cycle_graph", {}, 10), ("grid_2d_graph", {"m": 4, "n": 4, "periodic": True}, 16),
     ("complete_graph", {}, 6), ("hypercube_graph", {"n": 3}, 8)],
)
def test_spectral_against_numpy_eigenvalues(graph, args, n):
    protocol = load_protocol("gossip", {"graph": graph, "graph_args": args,
                                        "weights": "metropolis"})
    G = nx.convert_node_labels_to_integers(getattr(nx, graph)(**(args or {"n": n})),
                                           ordering="sorted")
    degrees = dict(G.degree())
    W = np.zeros((n, n))
    for i, j in G.edges():
        W[i, j] = W[j, i] = 1.0 / (1 + max(degrees[i], degrees[j]))
    W += np.diag(1.0 - W.sum(axis=1))
    eigenvalues = np.sort(np.abs(np.linalg.eigvalsh(W)))
    mu = eigenvalues[-2]
    k = 1 if mu <= 0.5 + 1e-12 else math.ceil(math.log(0.5) / math.log(mu))
    spectral = mixing_time(protocol, n, method="spectral")[0]
    traced = mixing_time(protocol, n, method="trace")[0]
    assert spectral.t_mix == n * k == traced.t_mix


def test_spectral_pairwise_is_mean_square_from_expected_matrix():
    n = 12
    G = nx.cycle_graph(n)
    expected = np.eye(n)
    for i in range(n):
        for j in G.neighbors(i):
            e = np.zeros(n)
            e[i], e[j] = 1, -1
            expected -= np.outer(e, e) / (2 * n * G.degree(i))
    rho = np.sort(np.linalg.eigvalsh(expected))[-2]
    steps = math.ceil(math.log(0.25) / math.log(rho))
    assert mixing_time("async-ring", n, method="spectral")[0].t_mix == steps


def test_hogwild_within_its_bound():
    for tau in (1, 2, 4):
        protocol = load_protocol("hogwild", {"tau": tau})
        samples = mixing_time(protocol, 6, runs=5, method="montecarlo").pop().samples
        assert np.all(samples <= tau) and np.all(samples >= 1)


def test_async_ps_with_constant_compute_times_is_n():
    from mixsim import ComputeTime, Timing

    timing = Timing(compute=ComputeTime("constant", mean=1.0))
    for n in (2, 5, 9):
        assert trace_mixing_time("async-ps", n, timing=timing)[0] == n


def test_sparsified_mixes_slower_than_base():
    dense = trace_mixing_time("sync-ring", 8)[0]
    sparse = trace_mixing_time(load_protocol("sparse", {"eta": 0.25}), 8, d=8)[0]
    assert sparse > 2 * dense


def test_montecarlo_interval_contains_mean_and_is_reproducible():
    a = mixing_time("async-ring", 6, runs=20, seed=3)[0]
    b = mixing_time("async-ring", 6, runs=20, seed=3)[0]
    c = mixing_time("async-ring", 6, runs=20, seed=4)[0]
    assert a.method == "montecarlo"
    assert a.ci95[0] < a.t_mix < a.ci95[1]
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def test_auto_uses_trace_for_deterministic_protocols():
    result = mixing_time("sync-ring", 8, runs=50)[0]
    assert result.method == "trace" and result.ci95 is None and result.t_mix == 32


def test_a_random_graph_is_the_same_for_every_method_and_run():
    protocol = load_protocol("gossip", {"graph": "random_regular_graph",
                                        "graph_args": {"d": 3}, "graph_seed": 5})
    spectral = mixing_time(protocol, 32, method="spectral")[0].t_mix
    assert mixing_time(protocol, 32, method="trace", seed=1)[0].t_mix == spectral
    assert mixing_time(protocol, 32, method="trace", seed=2)[0].t_mix == spectral
    other = load_protocol("gossip", {"graph": "random_regular_graph",
                                     "graph_args": {"d": 3}, "graph_seed": 6})
    assert mixing_time(other, 32, method="spectral")[0].t_mix > 0


def _torus_W(side: int) -> np.ndarray:
    """Metropolis weights on the side x side torus: every node has degree 4, so each
    neighbour and the node itself weigh 1/5."""
    n = side * side
    W = np.zeros((n, n))
    for r in range(side):
        for c in range(side):
            i = r * side + c
            for dr, dc in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
                W[i, ((r + dr) % side) * side + (c + dc) % side] += 1.0 / 5
    return W


def test_nested_graph_args_expressions_from_a_parameter(tmp_path):
    path = tmp_path / "torus.yaml"
    path.write_text("""\
name: torus
summary: gossip on a side x side torus
params:
  side: {type: int, default: 3, min: 3}
communication:
  - on: round
    op: gossip
    args: {group: workers, graph: grid_2d_graph,
           graph_args: {m: "=side", n: "=side", periodic: true}}
""")
    (result,) = mixing_time(str(path), [16], params={"side": 4}, method="trace")
    assert result.t_mix == 16 * _rounds_to_halve(_torus_W(4))


def test_graph_args_derived_from_the_worker_count():
    args = {"graph": "grid_2d_graph",
            "graph_args": {"m": "=isqrt(n)", "n": "=isqrt(n)", "periodic": True}}
    results = mixing_time("gossip", [9, 25], params=args, method="trace")
    assert [r.t_mix for r in results] == [n * _rounds_to_halve(_torus_W(side))
                                          for n, side in ((9, 3), (25, 5))]
