"""Communication topologies and the gossip matrices defined on them.

A topology is a :class:`networkx.Graph` (or :class:`networkx.DiGraph`) whose nodes are the
workers ``0 .. n-1``. :func:`make_graph` builds one from a networkx generator, a graph object or
an edge-list file; :func:`gossip_matrix` turns it into a doubly stochastic mixing matrix.
The static and one-peer exponential graphs of Ying et al. (NeurIPS 2021, as in BlueFog) are
the only generators defined here, because networkx has no equivalent.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp

from mixsim.errors import ConfigError

__all__ = [
    "make_graph",
    "exponential_graph",
    "one_peer_exponential_peer",
    "gossip_matrix",
    "ring_matrix",
    "is_doubly_stochastic",
]

# Keywords networkx adds to every generator for its backend dispatch; they are not part of a
# generator's own parameters.
_DISPATCH_PARAMETERS = frozenset({"backend", "backend_kwargs"})
_EDGE_LIST_SUFFIXES = (".edgelist", ".edges", ".txt", ".csv", ".tsv", ".el")


def _generator_names() -> list[str]:
    return sorted(
        name
        for name in dir(nx.generators)
        if not name.startswith("_") and inspect.isfunction(getattr(nx.generators, name))
    )


def _looks_like_path(generator: str | os.PathLike) -> bool:
    if isinstance(generator, os.PathLike):
        return True
    return (
        os.sep in generator
        or (os.altsep is not None and os.altsep in generator)
        or generator.endswith(_EDGE_LIST_SUFFIXES)
        or os.path.isfile(generator)
    )


def _describe(name: str, args: Mapping[str, Any]) -> str:
    rendered = ", ".join(f"{key}={value!r}" for key, value in args.items())
    return f"{name}({rendered})"


def _call_generator(name: str, n: int, args: Mapping[str, Any], seed: Any) -> tuple[nx.Graph, str]:
    function = getattr(nx.generators, name, None)
    if not inspect.isfunction(function):
        close = difflib.get_close_matches(name, _generator_names(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown graph generator {name!r}{hint} "
            "(any function of networkx.generators, a networkx graph, or an edge-list file path)",
            key="generator",
        )
    parameters = {
        p.name: p
        for p in inspect.signature(function).parameters.values()
        if p.name not in _DISPATCH_PARAMETERS and p.kind is not p.VAR_KEYWORD
    }
    unknown = sorted(set(args) - set(parameters))
    if unknown:
        raise ConfigError(
            f"{name} has no parameter {', '.join(repr(u) for u in unknown)}; "
            f"its parameters are {', '.join(parameters)}",
            key=f"args.{unknown[0]}",
        )
    if "seed" in args:
        raise ConfigError(
            "pass the seed through the seed keyword of make_graph, not in args", key="args.seed"
        )
    kwargs = dict(args)
    if "n" in parameters and "n" not in kwargs:
        kwargs["n"] = n
    if "seed" in parameters:
        kwargs["seed"] = seed
    missing = [
        p.name
        for p in parameters.values()
        if p.default is p.empty and p.kind is not p.VAR_POSITIONAL and p.name not in kwargs
    ]
    if missing:
        raise ConfigError(
            f"{name} needs argument {', '.join(repr(m) for m in missing)} in args "
            f"(got {_describe(name, args)})",
            key=f"args.{missing[0]}",
        )
    try:
        graph = function(**kwargs)
    except (TypeError, ValueError, nx.NetworkXError) as error:
        raise ConfigError(f"{_describe(name, kwargs)} failed: {error}", key="args") from error
    if not isinstance(graph, nx.Graph):
        raise ConfigError(
            f"networkx.generators.{name} returns {type(graph).__name__}, not a graph",
            key="generator",
        )
    return graph, _describe(name, kwargs)


def _read_edge_list(path: str | os.PathLike, args: Mapping[str, Any]) -> nx.Graph:
    if not os.path.isfile(path):
        raise ConfigError(f"edge-list file {os.fspath(path)!r} does not exist", key="generator")
    try:
        return nx.read_edgelist(path, nodetype=int, **args)
    except (TypeError, ValueError, nx.NetworkXError) as error:
        raise ConfigError(
            f"cannot read edge-list file {os.fspath(path)!r} with args {dict(args)!r}: {error}",
            key="generator",
        ) from error


def _relabel_sorted(graph: nx.Graph) -> nx.Graph:
    try:
        return nx.convert_node_labels_to_integers(graph, ordering="sorted")
    except TypeError:
        # Node labels of mixed types cannot be sorted; keep the insertion order instead.
        return nx.convert_node_labels_to_integers(graph, ordering="default")


def make_graph(
    generator: nx.Graph | str | os.PathLike,
    n: int,
    *,
    args: Mapping[str, Any] | None = None,
    seed: Any = None,
) -> nx.Graph:
    """Build the communication graph of ``n`` workers.

    Parameters
    ----------
    generator : networkx.Graph, str or path
        A graph (copied, never modified), the name of a function of
        :mod:`networkx.generators` (``"cycle_graph"``, ``"random_regular_graph"``,
        ``"grid_2d_graph"``, ...), or the path of an edge-list file with integer nodes
        (read with :func:`networkx.read_edgelist`).
    n : int
        Number of workers; the graph must have exactly ``n`` nodes.
    args : mapping, optional
        Keyword arguments of the generator (of :func:`networkx.read_edgelist` for a file).
        If the generator has a parameter ``n`` and ``args`` does not set it, it receives the
        number of workers (note that ``hypercube_graph(n)`` takes the *dimension*).
    seed : int, numpy.random.Generator or None, optional
        Passed as ``seed`` to generators that accept one; the only source of randomness.

    Returns
    -------
    networkx.Graph
        A connected (strongly connected if directed) graph on nodes ``0 .. n-1``, relabelled
        in sorted order of the original labels, without self-loops. Multigraphs become simple
        graphs.

    Raises
    ------
    ConfigError
        Unknown generator (with close matches), unknown or missing argument, a generator
        error, a node count other than ``n``, or a disconnected graph.

    Examples
    --------
    >>> G = make_graph("grid_2d_graph", 16, args={"m": 4, "n": 4, "periodic": True})
    >>> sorted(d for _, d in G.degree()) == [4] * 16
    True
    >>> make_graph("random_regular_graph", 10, args={"d": 3}, seed=1).number_of_edges()
    15
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"number of workers must be a positive integer, got {n!r}", key="n")
    args = dict(args or {})
    if isinstance(generator, nx.Graph):
        graph, origin = generator, f"the given {type(generator).__name__}"
    elif isinstance(generator, str | os.PathLike):
        if isinstance(generator, str) and not _looks_like_path(generator):
            graph, origin = _call_generator(generator, n, args, seed)
        else:
            graph = _read_edge_list(generator, args)
            origin = f"edge list {os.fspath(generator)!r}"
    else:
        raise ConfigError(
            "generator must be a networkx graph, a networkx.generators function name or an "
            f"edge-list path, got {type(generator).__name__}",
            key="generator",
        )

    if graph.is_multigraph():
        graph = nx.DiGraph(graph) if graph.is_directed() else nx.Graph(graph)
    graph = _relabel_sorted(graph)
    graph.remove_edges_from(list(nx.selfloop_edges(graph)))

    if graph.number_of_nodes() != n:
        raise ConfigError(
            f"{origin} has {graph.number_of_nodes()} nodes, expected n = {n} workers",
            key="generator",
        )
    connected = nx.is_strongly_connected(graph) if graph.is_directed() else nx.is_connected(graph)
    if not connected:
        kind = "strongly connected" if graph.is_directed() else "connected"
        raise ConfigError(f"{origin} is not {kind}; gossip cannot reach consensus", key="generator")
    return graph


def _tau(n: int) -> int:
    """``ceil(log2 n)`` computed exactly on integers."""
    return (n - 1).bit_length()


def exponential_graph(n: int) -> nx.DiGraph:
    """Static exponential graph of Ying et al. (NeurIPS 2021), as used by BlueFog.

    Node ``i`` sends to :math:`(i + 2^j) \\bmod n` for :math:`j = 0, \\dots, \\tau - 1`,

    .. math:: \\tau = \\lceil \\log_2 n \\rceil ,

    so every node has ``tau`` out- and ``tau`` in-neighbours (the offsets ``2^j < n`` are
    distinct and non-zero).

    Parameters
    ----------
    n : int
        Number of nodes, at least 1.

    Returns
    -------
    networkx.DiGraph
        Nodes ``0 .. n-1``; edge ``i -> k`` means ``i`` sends to ``k``.

    Examples
    --------
    >>> sorted(exponential_graph(8).successors(0))
    [1, 2, 4]
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"exponential graph needs n >= 1 nodes, got {n!r}", key="n")
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from((i, (i + 2**j) % n) for i in range(n) for j in range(_tau(n)))
    return graph


def one_peer_exponential_peer(i: int, round: int, n: int) -> int:
    """Peer of node ``i`` in round ``round`` of the one-peer exponential graph.

    .. math:: \\operatorname{peer}(i, r) = (i + 2^{r \\bmod \\tau}) \\bmod n,
              \\qquad \\tau = \\lceil \\log_2 n \\rceil .

    Node ``i`` averages (weights 1/2) with that peer; for ``n`` a power of two, ``tau``
    consecutive rounds give exact consensus (Ying et al., NeurIPS 2021).

    Parameters
    ----------
    i : int
        Node, ``0 <= i < n``.
    round : int
        Round number, ``>= 0``.
    n : int
        Number of nodes; with ``n = 1`` the node is its own peer.

    Returns
    -------
    int
        The peer node.

    Examples
    --------
    >>> [one_peer_exponential_peer(0, r, 8) for r in range(4)]
    [1, 2, 4, 1]
    """
    if n < 1 or not 0 <= i < n or round < 0:
        raise ConfigError(f"need 0 <= i < n and round >= 0, got i={i}, round={round}, n={n}")
    if n == 1:
        return i
    return (i + 2 ** (round % _tau(n))) % n


def _node_order(G: nx.Graph) -> list:
    try:
        return sorted(G)
    except TypeError:
        return list(G)


def _adjacency(G: nx.Graph) -> sp.csr_array:
    """0/1 adjacency (row = sender for a DiGraph) in sorted node order, no self-loops."""
    A = nx.to_scipy_sparse_array(G, nodelist=_node_order(G), weight=None, format="csr")
    A = sp.csr_array(A, dtype=np.float64)
    A.setdiag(0.0)
    A.eliminate_zeros()
    A.data[:] = 1.0
    return A


def _metropolis(A: sp.csr_array, directed: bool) -> sp.csr_array:
    degree = A.sum(axis=1)
    coo = A.tocoo()
    weights = 1.0 / (1.0 + np.maximum(degree[coo.row], degree[coo.col]))
    off = sp.csr_array((weights, (coo.row, coo.col)), shape=A.shape)
    return off + sp.diags_array(1.0 - off.sum(axis=1))


def _max_degree(A: sp.csr_array, directed: bool) -> sp.csr_array:
    degree = A.sum(axis=1)
    scale = 1.0 / (1.0 + (degree.max() if degree.size else 0.0))
    return sp.csr_array(A * scale + sp.diags_array(1.0 - degree * scale))


def _uniform(A: sp.csr_array, directed: bool) -> sp.csr_array:
    # Row i averages i with every node it receives from: the column pattern of A transposed.
    receive = sp.csr_array(A.T)
    in_degree = receive.sum(axis=1)
    out_degree = A.sum(axis=1)
    degrees = np.unique(np.concatenate([in_degree, out_degree]))
    if degrees.size > 1:
        kind = "in- and out-degree" if directed else "degree"
        advice = (
            "a directed graph needs every node to have the same in- and out-degree"
            if directed
            else "use weights='metropolis' or 'max-degree' for irregular graphs"
        )
        raise ConfigError(
            f"uniform weights need every node to have the same {kind}, got degrees "
            f"{degrees.min():g}..{degrees.max():g}; {advice}",
            key="weights",
        )
    degree = degrees[0] if degrees.size else 0.0
    n = A.shape[0]
    return sp.csr_array((receive + sp.eye_array(n)) / (degree + 1.0))


_GOSSIP_WEIGHTS: dict[str, Callable[[sp.csr_array, bool], sp.csr_array]] = {
    "metropolis": _metropolis,
    "uniform": _uniform,
    "max-degree": _max_degree,
}


def gossip_matrix(G: nx.Graph, weights: str = "metropolis") -> sp.csr_array:
    """Doubly stochastic gossip matrix of a graph.

    Rows and columns follow the sorted node order (node ``i`` is row ``i`` for a graph from
    :func:`make_graph`); self-loops are ignored and :math:`d_i` counts distinct neighbours.

    * ``"metropolis"``: :math:`w_{ij} = 1 / (1 + \\max(d_i, d_j))` on edges,
      :math:`w_{ii} = 1 - \\sum_{j \\ne i} w_{ij}`.
    * ``"uniform"``: :math:`w_{ij} = 1/(d+1)` on ``i`` itself and its neighbours; regular
      graphs only. For a directed graph, row ``i`` puts :math:`1/(\\tau+1)` on ``i`` and on
      each node ``i`` *receives* from, which needs every in- and out-degree equal to ``tau``.
    * ``"max-degree"``: :math:`W = I - L / (\\Delta + 1)` with ``L`` the graph Laplacian and
      :math:`\\Delta` the maximum degree.

    Parameters
    ----------
    G : networkx.Graph or networkx.DiGraph
        The topology.
    weights : {"metropolis", "uniform", "max-degree"}
        Weighting rule; a directed graph only admits ``"uniform"``.

    Returns
    -------
    scipy.sparse.csr_array
        ``n x n`` float64, rows and columns summing to 1.

    Raises
    ------
    ConfigError
        Unknown rule, ``"uniform"`` on an irregular graph, or a symmetric rule on a
        directed graph.

    Examples
    --------
    >>> import networkx as nx
    >>> gossip_matrix(nx.path_graph(3)).toarray()
    array([[0.66666667, 0.33333333, 0.        ],
           [0.33333333, 0.33333333, 0.33333333],
           [0.        , 0.33333333, 0.66666667]])
    """
    rule = _GOSSIP_WEIGHTS.get(weights)
    if rule is None:
        raise ConfigError(
            f"unknown gossip weights {weights!r}; allowed: {', '.join(_GOSSIP_WEIGHTS)}",
            key="weights",
        )
    directed = G.is_directed()
    if directed and weights != "uniform":
        raise ConfigError(
            f"{weights!r} weights are defined through symmetric neighbourhoods and are not "
            "doubly stochastic on a directed graph; use weights='uniform' (every node with "
            "the same in- and out-degree), as for the exponential graph",
            key="weights",
        )
    return sp.csr_array(rule(_adjacency(G), directed))


def ring_matrix(n: int) -> sp.csr_array:
    """Gossip matrix of the ring: weight 1/3 on each node and its two neighbours.

    Special cases: ``n = 2`` gives weights 1/2 (one neighbour), ``n = 1`` gives ``[[1]]``.

    Parameters
    ----------
    n : int
        Number of nodes, at least 1.

    Returns
    -------
    scipy.sparse.csr_array
        ``gossip_matrix(networkx.cycle_graph(n), "uniform")``.

    Examples
    --------
    >>> ring_matrix(2).toarray()
    array([[0.5, 0.5],
           [0.5, 0.5]])
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"a ring needs n >= 1 nodes, got {n!r}", key="n")
    return gossip_matrix(nx.cycle_graph(n), "uniform")


def is_doubly_stochastic(W: Any, tol: float = 1e-12) -> bool:
    """Whether ``W`` is square, non-negative and has unit row and column sums.

    .. math:: W \\ge 0, \\quad W \\mathbf{1} = \\mathbf{1}, \\quad \\mathbf{1}^T W = \\mathbf{1}^T

    each up to the absolute tolerance ``tol``.

    Parameters
    ----------
    W : array_like or scipy.sparse array
        The matrix.
    tol : float
        Absolute tolerance on entries and sums.

    Returns
    -------
    bool

    Examples
    --------
    >>> is_doubly_stochastic(ring_matrix(5))
    True
    >>> is_doubly_stochastic([[1.0, 0.0], [1.0, 0.0]])
    False
    """
    matrix = sp.csr_array(W) if sp.issparse(W) else np.asarray(W, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        return False
    entries = matrix.data if sp.issparse(matrix) else matrix
    if entries.size and entries.min() < -tol:
        return False
    rows = np.asarray(matrix.sum(axis=1)).ravel()
    columns = np.asarray(matrix.sum(axis=0)).ravel()
    return bool(np.all(np.abs(rows - 1.0) <= tol) and np.all(np.abs(columns - 1.0) <= tol))
