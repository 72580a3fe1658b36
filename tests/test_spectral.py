import itertools
import math

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from mixsim.errors import ConfigError
from mixsim.spectral import (
    consensus_rounds,
    gossip_bound_rounds,
    pairwise_expected_matrix,
    pairwise_steps_to_halve,
    second_eigenvalue_modulus,
    spectral_gap,
)
from mixsim.topology import exponential_graph, gossip_matrix, make_graph, ring_matrix


def _torus(n):
    side = math.isqrt(n)
    return gossip_matrix(
        make_graph("grid_2d_graph", n, args={"m": side, "n": n // side, "periodic": True}),
        "uniform",
    )


def _matrix(kind, n):
    if kind == "ring":
        return ring_matrix(n)
    if kind == "torus":
        return _torus(n)
    if kind == "exponential":
        return gossip_matrix(exponential_graph(n), "uniform")
    if kind == "random regular":
        return gossip_matrix(make_graph("random_regular_graph", n, args={"d": 3}, seed=n))
    if kind == "complete":
        return gossip_matrix(nx.complete_graph(n), "uniform")
    raise AssertionError(kind)


CASES = (
    [("ring", n) for n in (2, 3, 5, 8, 17, 64)]
    + [("torus", n) for n in (9, 16, 30, 64)]
    + [("exponential", n) for n in (2, 5, 8, 12, 32, 64)]
    + [("random regular", n) for n in (4, 10, 32, 64)]
    + [("complete", n) for n in (2, 7, 64)]
)


def _reference_modulus(W):
    dense = W.toarray()
    n = len(dense)
    eigenvalues = np.linalg.eigvals(dense)
    # Drop one eigenvalue 1 (the consensus one) and keep the largest remaining modulus.
    consensus = np.argmin(np.abs(eigenvalues - 1))
    rest = np.delete(eigenvalues, consensus)
    return float(np.abs(rest).max()) if n > 1 else 0.0


def _reference_rounds(W, rtol=1e-12):
    dense = W.toarray()
    n = len(dense)
    J = np.full((n, n), 1 / n)
    power = np.eye(n)
    for k in itertools.count(1):
        power = power @ dense
        if np.linalg.norm(power - J, 2) <= 0.5 * (1 + rtol):
            assert np.allclose(power, np.linalg.matrix_power(dense, k))
            return k


@pytest.mark.parametrize(("kind", "n"), CASES)
def test_second_eigenvalue_modulus_matches_dense(kind, n):
    W = _matrix(kind, n)
    assert second_eigenvalue_modulus(W) == pytest.approx(_reference_modulus(W), abs=1e-10)


@pytest.mark.parametrize(("kind", "n"), CASES)
def test_consensus_rounds_matches_definition(kind, n):
    W = _matrix(kind, n)
    assert consensus_rounds(W) == _reference_rounds(W)


@pytest.mark.parametrize("log_n", range(1, 9))
def test_exponential_graph_gap_power_of_two(log_n):
    W = gossip_matrix(exponential_graph(2**log_n), "uniform")
    assert spectral_gap(W) == pytest.approx(2 / (1 + log_n), abs=1e-12)


def test_exact_tie_at_one_half():
    # Hypercube of dimension 3 with uniform weights: eigenvalues 1, 1/2, 0, -1/2.
    W = gossip_matrix(nx.hypercube_graph(3), "uniform")
    assert second_eigenvalue_modulus(W) == pytest.approx(0.5, abs=1e-14)
    assert consensus_rounds(W) == 1


def _birkhoff(n, seed):
    """A non-normal doubly stochastic matrix: convex combination of permutations."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(3))
    W = weights[0] * np.eye(n)
    for weight in weights[1:]:
        W += weight * np.eye(n)[rng.permutation(n)]
    return W


@pytest.mark.parametrize("seed", range(4))
def test_non_normal(seed):
    W = _birkhoff(12, seed)
    assert not np.allclose(W @ W.T, W.T @ W)
    assert second_eigenvalue_modulus(W) == pytest.approx(
        _reference_modulus(sp.csr_array(W)), abs=1e-10
    )
    assert consensus_rounds(W) == _reference_rounds(sp.csr_array(W))


def test_non_normal_sparse_path_matches_dense():
    W = _birkhoff(510, 1)
    expected = _reference_rounds(sp.csr_array(W))
    assert consensus_rounds(sp.csr_array(W), normal=False) == expected


def _pairwise_by_enumeration(G):
    nodes = sorted(G)
    n = len(nodes)
    expected = np.zeros((n, n))
    for i in nodes:
        for j in G[i]:
            e = np.zeros(n)
            e[i], e[j] = 1.0, -1.0
            W = np.eye(n) - 0.5 * np.outer(e, e)
            expected += (W.T @ W) / (n * G.degree(i))
    return expected


@pytest.mark.parametrize(
    "G",
    [nx.path_graph(5), nx.star_graph(4), nx.petersen_graph(), nx.barbell_graph(3, 1)],
    ids=["path", "star", "petersen", "barbell"],
)
def test_pairwise_expected_matrix_exact(G):
    expected = _pairwise_by_enumeration(G)
    M = pairwise_expected_matrix(G)
    np.testing.assert_allclose(M.toarray(), expected, atol=1e-15)
    rho = np.sort(np.linalg.eigvalsh(expected))[-2]
    t = pairwise_steps_to_halve(G)
    assert rho**t <= 0.25 < rho ** (t - 1)


def test_pairwise_rejects_directed_and_isolated():
    with pytest.raises(ConfigError, match="undirected"):
        pairwise_expected_matrix(nx.DiGraph([(0, 1)]))
    G = nx.path_graph(3)
    G.add_node(3)
    with pytest.raises(ConfigError, match="no neighbour"):
        pairwise_expected_matrix(G)


def test_does_not_mix():
    disconnected = sp.block_diag([ring_matrix(3), ring_matrix(3)], format="csr")
    assert second_eigenvalue_modulus(disconnected) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="does not mix"):
        consensus_rounds(disconnected)
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ConfigError, match="does not mix"):
        consensus_rounds(swap)
    with pytest.raises(ConfigError, match="does not mix"):
        gossip_bound_rounds(swap)


def test_rejects_non_doubly_stochastic():
    with pytest.raises(ConfigError, match="doubly stochastic"):
        second_eigenvalue_modulus([[0.5, 0.5], [0.9, 0.1]])


def test_gossip_bound_rounds_value():
    # Ring of 4 with weights 1/3: eigenvalues 1, 1/3, 1/3, -1/3, so lambda = 2/3.
    assert gossip_bound_rounds(ring_matrix(4)) == pytest.approx(math.log(4) * 1.5)
    assert gossip_bound_rounds(ring_matrix(1)) == 0.0


def _ring_rounds_closed_form(n):
    gap = 4 / 3 * math.sin(math.pi / n) ** 2
    return math.ceil(math.log(0.5) / math.log1p(-gap))


def test_large_ring_sparse_path():
    n = 3000
    W = ring_matrix(n)
    expected = 1 / 3 + 2 / 3 * math.cos(2 * math.pi / n)
    assert second_eigenvalue_modulus(W) == pytest.approx(expected, abs=1e-14)
    assert spectral_gap(W) == pytest.approx(4 / 3 * math.sin(math.pi / n) ** 2, rel=1e-8)
    assert consensus_rounds(W) == _ring_rounds_closed_form(n)


def test_large_exponential_graph_sparse_path():
    W = gossip_matrix(exponential_graph(4096), "uniform")
    assert spectral_gap(W) == pytest.approx(2 / 13, abs=1e-12)
    assert consensus_rounds(W) == math.ceil(math.log(0.5) / math.log(11 / 13))


@pytest.mark.parametrize(
    "G",
    [
        nx.random_regular_graph(3, 700, seed=5),
        nx.barbell_graph(300, 100),
        nx.complete_bipartite_graph(300, 300),
        nx.path_graph(600),
    ],
    ids=["random regular", "barbell", "bipartite", "path"],
)
def test_sparse_paths_match_dense(G):
    # max-degree weights on the complete bipartite graph put an eigenvalue near -1, which
    # exercises the lower end of the spectrum.
    W = gossip_matrix(G, "max-degree")
    assert second_eigenvalue_modulus(W) == pytest.approx(_reference_modulus(W), abs=1e-10)


def test_normal_non_symmetric_sparse_fallback():
    # Lazy directed cycle: normal, tiny gap, Arnoldi stalls; W^T W takes over.
    n = 800
    shift = sp.csr_array(np.roll(np.eye(n), 1, axis=1))
    W = sp.csr_array((sp.eye_array(n) + shift) / 2)
    assert second_eigenvalue_modulus(W) == pytest.approx(math.cos(math.pi / n), abs=1e-12)


def _odd_ring_without_self_weight(n):
    # Eigenvalues cos(2 pi k / n): the largest modulus, cos(pi / n), is at the bottom end.
    shift = sp.csr_array(np.roll(np.eye(n), 1, axis=1))
    return sp.csr_array((shift + shift.T) / 2)


@pytest.mark.parametrize(
    "W",
    [gossip_matrix(nx.path_graph(600), "max-degree"), _odd_ring_without_self_weight(601)],
    ids=["path", "odd ring"],
)
def test_fallbacks_when_lanczos_stalls(W, monkeypatch):
    # Force the wide-band branch and starve Lanczos: the top of the spectrum must come from
    # the shift-invert fallback (MMD ordering), the bottom from shift-invert near -1.
    import mixsim.spectral as spectral

    monkeypatch.setattr(spectral, "_FILL_PER_NONZERO", 0)
    monkeypatch.setattr(spectral, "_LANCZOS_RESTARTS", 1)
    assert second_eigenvalue_modulus(W) == pytest.approx(_reference_modulus(W), abs=1e-10)


def test_odd_ring_bottom_end():
    n = 601
    W = _odd_ring_without_self_weight(n)
    assert second_eigenvalue_modulus(W) == pytest.approx(math.cos(math.pi / n), abs=1e-12)
