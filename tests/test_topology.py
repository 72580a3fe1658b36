import networkx as nx
import numpy as np
import pytest

from mixsim.errors import ConfigError
from mixsim.topology import (
    exponential_graph,
    gossip_matrix,
    is_doubly_stochastic,
    make_graph,
    one_peer_exponential_peer,
    ring_matrix,
)


def test_exponential_graph_edges_n8():
    expected = {(i, (i + step) % 8) for i in range(8) for step in (1, 2, 4)}
    G = exponential_graph(8)
    assert set(G.edges()) == expected
    assert sorted(G.nodes()) == list(range(8))
    assert G.number_of_edges() == 24


def test_exponential_graph_non_power_of_two_and_tiny():
    # tau = ceil(log2 6) = 3 offsets 1, 2, 4; n = 1 has no edge, n = 2 one edge each way.
    assert sorted(exponential_graph(6).successors(5)) == [0, 1, 3]
    assert exponential_graph(1).number_of_edges() == 0
    assert set(exponential_graph(2).edges()) == {(0, 1), (1, 0)}


def test_one_peer_exponential_peer():
    assert [one_peer_exponential_peer(3, r, 8) for r in range(6)] == [4, 5, 7, 4, 5, 7]
    assert one_peer_exponential_peer(0, 5, 1) == 0
    # tau rounds of pairwise averaging reach exact consensus for n a power of two.
    n = 16
    x = np.arange(n, dtype=float)
    for r in range(4):
        peers = [one_peer_exponential_peer(i, r, n) for i in range(n)]
        x = (x + x[peers]) / 2
    np.testing.assert_allclose(x, np.full(n, 7.5))


def _graphs():
    return {
        "path": nx.path_graph(7),
        "star": nx.star_graph(5),
        "petersen": nx.petersen_graph(),
        "torus": make_graph("grid_2d_graph", 12, args={"m": 3, "n": 4, "periodic": True}),
        "barbell": nx.barbell_graph(4, 2),
        "random regular": make_graph("random_regular_graph", 12, args={"d": 3}, seed=0),
    }


@pytest.mark.parametrize("name", list(_graphs()))
@pytest.mark.parametrize("weights", ["metropolis", "max-degree", "uniform"])
def test_gossip_matrix_doubly_stochastic(name, weights):
    G = _graphs()[name]
    if weights == "uniform" and not nx.is_regular(G):
        with pytest.raises(ConfigError, match="metropolis"):
            gossip_matrix(G, weights)
        return
    W = gossip_matrix(G, weights)
    assert W.shape == (G.number_of_nodes(),) * 2 and W.dtype == np.float64
    assert is_doubly_stochastic(W)
    dense = W.toarray()
    np.testing.assert_allclose(dense, dense.T)
    # The support is exactly the graph plus the diagonal.
    adjacency = nx.to_numpy_array(G, nodelist=sorted(G)) > 0
    assert np.all(
        (dense > 0)[~np.eye(len(dense), dtype=bool)] == adjacency[~np.eye(len(dense), dtype=bool)]
    )


def test_metropolis_and_max_degree_values():
    W = gossip_matrix(nx.star_graph(3), "metropolis").toarray()
    np.testing.assert_allclose(W[0], [1 - 3 / 4, 1 / 4, 1 / 4, 1 / 4])
    np.testing.assert_allclose(W[1], [1 / 4, 3 / 4, 0, 0])
    M = gossip_matrix(nx.path_graph(3), "max-degree").toarray()
    np.testing.assert_allclose(M, np.eye(3) - nx.laplacian_matrix(nx.path_graph(3)).toarray() / 3)


def test_uniform_on_exponential_digraph_receives():
    W = gossip_matrix(exponential_graph(8), "uniform").toarray()
    assert is_doubly_stochastic(W)
    # Row 0 receives from 0 - 1, 0 - 2, 0 - 4 (mod 8).
    np.testing.assert_allclose(np.flatnonzero(W[0]), [0, 4, 6, 7])
    np.testing.assert_allclose(W[0][W[0] > 0], 0.25)


def test_directed_graph_rejects_symmetric_rules():
    with pytest.raises(ConfigError, match="uniform"):
        gossip_matrix(exponential_graph(8), "metropolis")
    with pytest.raises(ConfigError, match="in- and out-degree"):
        gossip_matrix(nx.DiGraph([(0, 1), (1, 2), (2, 0), (0, 2)]), "uniform")


def test_unknown_weights_lists_allowed():
    with pytest.raises(ConfigError, match="metropolis, uniform, max-degree"):
        gossip_matrix(nx.cycle_graph(4), "laplacian")


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [[1.0]]),
        (2, [[0.5, 0.5], [0.5, 0.5]]),
        (3, np.full((3, 3), 1 / 3)),
    ],
)
def test_ring_matrix_small(n, expected):
    np.testing.assert_allclose(ring_matrix(n).toarray(), expected)


def test_ring_matrix_8():
    W = ring_matrix(8).toarray()
    expected = (np.eye(8) + np.roll(np.eye(8), 1, axis=1) + np.roll(np.eye(8), -1, axis=1)) / 3
    np.testing.assert_allclose(W, expected)
    assert is_doubly_stochastic(W)


def test_is_doubly_stochastic_rejects():
    assert not is_doubly_stochastic([[0.5, 0.5], [0.6, 0.4]])
    assert not is_doubly_stochastic([[1.5, -0.5], [-0.5, 1.5]])
    assert not is_doubly_stochastic(np.ones((2, 3)) / 3)


def test_make_graph_generator_args_and_relabel():
    G = make_graph("grid_2d_graph", 16, args={"m": 4, "n": 4, "periodic": True})
    assert sorted(G) == list(range(16))
    assert nx.is_regular(G) and G.degree(0) == 4
    # sorted relabelling: (0, 0) -> 0, (0, 1) -> 1, (1, 0) -> 4.
    assert G.has_edge(0, 1) and G.has_edge(0, 4) and G.has_edge(0, 3)
    assert nx.utils.graphs_equal(make_graph("cycle_graph", 5), nx.cycle_graph(5))


def test_make_graph_seed_determinism():
    def edges(seed):
        return sorted(make_graph("random_regular_graph", 20, args={"d": 3}, seed=seed).edges())

    assert edges(7) == edges(7)
    assert edges(7) != edges(8)


def test_make_graph_graph_object_is_copied_and_cleaned():
    original = nx.Graph([("b", "c"), ("a", "b"), ("c", "c")])
    G = make_graph(original, 3)
    assert sorted(tuple(sorted(edge)) for edge in G.edges()) == [(0, 1), (1, 2)]
    assert original.has_edge("c", "c")


def test_make_graph_edge_list_round_trip(tmp_path):
    original = make_graph("random_regular_graph", 10, args={"d": 4}, seed=3)
    path = tmp_path / "topology.edgelist"
    nx.write_edgelist(original, path, data=False)
    for source in (path, str(path)):
        assert nx.utils.edges_equal(make_graph(source, 10).edges(), original.edges())


def test_unknown_generator_suggests():
    with pytest.raises(ConfigError, match="did you mean 'cycle_graph'"):
        make_graph("cycle_grahp", 5)


def test_bad_args_name_the_argument():
    with pytest.raises(ConfigError, match="'degree'") as info:
        make_graph("random_regular_graph", 5, args={"degree": 2})
    assert info.value.key == "args.degree"
    with pytest.raises(ConfigError, match="'d'"):
        make_graph("random_regular_graph", 5)
    with pytest.raises(ConfigError, match="must be even"):
        make_graph("random_regular_graph", 5, args={"d": 3})


def test_wrong_node_count_names_generator_and_args():
    with pytest.raises(ConfigError, match=r"hypercube_graph\(n=8\) has 256 nodes, expected n = 8"):
        make_graph("hypercube_graph", 8)
    assert make_graph("hypercube_graph", 8, args={"n": 3}).number_of_nodes() == 8


def test_disconnected_rejected():
    with pytest.raises(ConfigError, match="not connected"):
        make_graph(nx.Graph([(0, 1), (2, 3)]), 4)
    with pytest.raises(ConfigError, match="not strongly connected"):
        make_graph(nx.DiGraph([(0, 1), (1, 2)]), 3)


def test_missing_edge_list_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        make_graph(str(tmp_path / "missing.edgelist"), 4)


@pytest.mark.parametrize("G", [nx.barbell_graph(4, 2), nx.lollipop_graph(5, 3),
                               nx.gnp_random_graph(12, 0.3, seed=4)])
def test_metropolis_follows_the_max_degree_rule_on_irregular_graphs(G):
    # The rule written out edge by edge: 1 / (1 + max(d_i, d_j)), where the mean or the
    # smaller degree would give other weights on these graphs.
    nodes = sorted(G)
    expected = np.zeros((len(nodes), len(nodes)))
    for i, j in G.edges():
        expected[i, j] = expected[j, i] = 1.0 / (1 + max(G.degree(i), G.degree(j)))
    expected[np.diag_indices(len(nodes))] = 1.0 - expected.sum(axis=1)
    assert not nx.is_regular(G)
    np.testing.assert_allclose(gossip_matrix(G, "metropolis").toarray(), expected,
                               rtol=0, atol=4 * np.finfo(float).eps)


def test_a_single_worker_has_a_graph_and_the_identity_matrix():
    G = make_graph("complete_graph", 1)
    assert list(G.nodes()) == [0]
    for weights in ("metropolis", "max-degree", "uniform"):
        assert gossip_matrix(G, weights).toarray().tolist() == [[1.0]]


def test_networkx_dispatch_keywords_are_not_generator_arguments():
    with pytest.raises(ConfigError, match="no parameter 'backend'") as info:
        make_graph("cycle_graph", 4, args={"backend": "networkx"})
    assert info.value.key == "args.backend"
    assert "backend" not in str(info.value).split("its parameters are")[1]


@pytest.mark.parametrize("n", [0, -3, True, 2.0])
def test_a_worker_count_that_is_not_a_positive_integer_is_refused(n):
    # Each builder checks its own n: a bool, a float and n < 1 are each refused on their own.
    for build in (lambda: make_graph("cycle_graph", n), lambda: exponential_graph(n),
                  lambda: ring_matrix(n)):
        with pytest.raises(ConfigError) as info:
            build()
        assert info.value.key == "n"


@pytest.mark.parametrize(("i", "round", "n"), [(8, 0, 8), (-1, 0, 8), (0, -1, 8), (0, 0, 0)])
def test_one_peer_exponential_peer_refuses_a_node_or_round_out_of_range(i, round, n):
    with pytest.raises(ConfigError, match="need 0 <= i < n"):
        one_peer_exponential_peer(i, round, n)


def test_a_missing_generator_argument_is_named_before_the_call():
    # The check of required parameters, not networkx's own TypeError, names the argument.
    with pytest.raises(ConfigError, match=r"needs argument 'd' in args") as info:
        make_graph("random_regular_graph", 5)
    assert info.value.key == "args.d"


def test_is_doubly_stochastic_at_zero_tolerance_and_for_non_square_matrices():
    # Exact dyadic sums pass with tol = 0 (the sums and the sign test are inclusive) ...
    assert is_doubly_stochastic(np.eye(3), tol=0.0)
    assert is_doubly_stochastic([[0.75, 0.25], [0.25, 0.75]], tol=0.0)
    assert not is_doubly_stochastic([[0.75, 0.25], [0.25, 0.5]], tol=0.0)
    # ... and a non-square matrix is refused even when a loose tolerance would accept its
    # sums (row sum 1, column sums 1/2, within 0.6 of 1).
    assert not is_doubly_stochastic([[0.5, 0.5]], tol=0.6)
    assert not is_doubly_stochastic(np.full((2, 1), 0.5), tol=0.6)
    assert not is_doubly_stochastic(np.ones(3) / 3)
