"""Spectral quantities of gossip matrices: modulus of the second eigenvalue, gap, mixing rounds.

Every function takes a doubly stochastic ``W`` (dense or scipy.sparse). The consensus
eigenvalue 1 (eigenvector :math:`\\mathbf{1}`) is removed by working with
:math:`W - J`, :math:`J = \\mathbf{1}\\mathbf{1}^T / n`, applied as ``x -> W x - mean(x) 1``;
``J`` is never formed for large ``n``.

Small matrices (``n <= 500``) use dense LAPACK. Larger symmetric matrices use ARPACK:

* when a reverse Cuthill-McKee ordering gives a narrow band (rings, thin tori, paths), a
  shift-invert Lanczos on the pseudo-inverse of :math:`I - W` (LU of the grounded
  Laplacian, fill inside the band). It converges in a few iterations however small the gap is,
  and returns the gap with full relative precision (a 10,000-node ring has gap 1.3e-7);
* otherwise (expander-like graphs, where an LU would fill in) plain Lanczos on :math:`W - J`,
  which converges quickly because such graphs have large gaps; if it does not converge
  within its budget, the shift-invert path runs anyway.

A non-symmetric ``W`` uses Arnoldi on :math:`W - J`; if that stalls and ``W`` is normal, the
symmetric path on :math:`W^T W` (whose eigenvalues are the :math:`|\\lambda|^2`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from scipy.sparse.csgraph import connected_components, reverse_cuthill_mckee

from mixsim.errors import ConfigError

__all__ = [
    "second_eigenvalue_modulus",
    "spectral_gap",
    "consensus_rounds",
    "pairwise_expected_matrix",
    "pairwise_steps_to_halve",
    "gossip_bound_rounds",
]

_DENSE_MAX_N = 500
# The LU of the grounded Laplacian is used when its fill (bounded by the RCM band) stays
# within this multiple of nnz(W): memory O(edges).
_FILL_PER_NONZERO = 32
_LANCZOS_VECTORS = 40
_LANCZOS_RESTARTS = 300
_STOCHASTIC_TOL = 1e-8
_SYMMETRY_TOL = 1e-12
_NORMALITY_PROBES = 3
# Relative slack in "||W^k - J|| <= 1/2": exact ties (mu = 1/2) are not decided by rounding.
_TIE_RTOL = 1e-12
# Below this gap double precision cannot tell W from a matrix that does not mix.
_MIN_GAP = 64 * np.finfo(np.float64).eps
_MAX_DOUBLINGS = 48


def _as_matrix(W: Any) -> np.ndarray | sp.csr_array:
    """Validate a doubly stochastic W; dense ndarray for small n, CSR otherwise."""
    matrix = sp.csr_array(W, dtype=np.float64) if sp.issparse(W) else np.asarray(W, float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ConfigError(f"W must be a non-empty square matrix, got shape {matrix.shape}")
    rows = np.asarray(matrix.sum(axis=1)).ravel()
    columns = np.asarray(matrix.sum(axis=0)).ravel()
    worst = max(np.abs(rows - 1).max(), np.abs(columns - 1).max())
    if not worst <= _STOCHASTIC_TOL:
        raise ConfigError(
            "W must be doubly stochastic (rows and columns summing to 1), largest deviation "
            f"{worst:.3g}; build it with mixsim.topology.gossip_matrix"
        )
    n = matrix.shape[0]
    if n <= _DENSE_MAX_N:
        return matrix.toarray() if sp.issparse(matrix) else matrix
    return matrix if sp.issparse(matrix) else sp.csr_array(matrix)


def _is_symmetric(W: np.ndarray | sp.csr_array) -> bool:
    difference = W - W.T
    values = difference.data if sp.issparse(difference) else difference
    return values.size == 0 or float(np.abs(values).max()) <= _SYMMETRY_TOL


def _is_normal(W: np.ndarray | sp.csr_array) -> bool:
    """Whether :math:`W W^T = W^T W`, to 1e-12.

    Dense: compared entrywise. Sparse: compared on a few fixed Gaussian probe vectors
    (a non-zero difference survives a random probe with probability 1), which keeps memory
    O(edges) where the products :math:`W W^T` would need O(edges * degree).
    """
    if _is_symmetric(W):
        return True
    if not sp.issparse(W):
        return float(np.abs(W @ W.T - W.T @ W).max()) <= _SYMMETRY_TOL
    probes = np.random.default_rng(0).standard_normal((W.shape[0], _NORMALITY_PROBES))
    difference = W @ (W.T @ probes) - W.T @ (W @ probes)
    return float(np.abs(difference).max()) <= _SYMMETRY_TOL * float(np.abs(probes).max())


def _deflated(W: sp.csr_array) -> sla.LinearOperator:
    """``W - J`` as an operator: ``x -> W x - mean(x) 1`` (W doubly stochastic)."""

    def apply(x: np.ndarray) -> np.ndarray:
        return W @ x - x.mean(axis=0)

    def apply_transposed(x: np.ndarray) -> np.ndarray:
        return W.T @ x - x.mean(axis=0)

    n = W.shape[0]
    return sla.LinearOperator(
        (n, n), matvec=apply, matmat=apply, rmatvec=apply_transposed, dtype=np.float64
    )


def _is_connected(W: sp.csr_array) -> bool:
    return connected_components(W, directed=True, connection="strong", return_labels=False) == 1


def _band_is_narrow(S: sp.csr_array) -> tuple[bool, np.ndarray]:
    order = reverse_cuthill_mckee(S, symmetric_mode=True)
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    coo = S.tocoo()
    bandwidth = int(np.abs(position[coo.row] - position[coo.col]).max(initial=0))
    fill = 2 * S.shape[0] * (bandwidth + 1)
    return fill <= _FILL_PER_NONZERO * S.nnz, order


def _gap_by_shift_invert(S: sp.csr_array, order: np.ndarray | None) -> float:
    """``1 - lambda_2`` of a connected symmetric doubly stochastic S, to full relative precision.

    The largest eigenvalue of the pseudo-inverse :math:`L^+` of :math:`L = I - S` is
    :math:`1 / (1 - \\lambda_2)`. :math:`L^+ x` for :math:`x \\perp \\mathbf{1}` is the
    solution of the grounded system (node 0 fixed at 0), centred.
    """
    n = S.shape[0]
    laplacian = sp.csc_array(sp.eye_array(n, format="csc") - S)
    if order is None:
        grounded = sp.csc_array(laplacian[1:, 1:])
        factor = sla.splu(grounded, permc_spec="MMD_AT_PLUS_A")
        order = np.arange(n)
    else:
        permuted = laplacian[order][:, order]
        grounded = sp.csc_array(permuted[1:, 1:])
        # The RCM band bounds the fill only without pivoting; L restricted to a grounded
        # connected graph is positive definite, so no pivoting is needed.
        factor = sla.splu(
            grounded,
            permc_spec="NATURAL",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )

    def apply_pseudo_inverse(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).ravel()
        centred = (x - x.mean())[order]
        y = np.zeros(n)
        y[order[1:]] = factor.solve(centred[1:])
        return y - y.mean()

    operator = sla.LinearOperator((n, n), matvec=apply_pseudo_inverse, dtype=np.float64)
    largest = sla.eigsh(operator, k=1, which="LA", tol=0.0, return_eigenvectors=False)[0]
    return 1.0 / float(largest)


def _top_gap(S: sp.csr_array) -> float:
    """``1 - lambda_2(S)`` for a large symmetric doubly stochastic S (0 if disconnected)."""
    if not _is_connected(S):
        return 0.0
    narrow, order = _band_is_narrow(S)
    if narrow:
        return _gap_by_shift_invert(S, order)
    try:
        top = _lanczos_end(S, "LA")
    except sla.ArpackNoConvergence:
        return _gap_by_shift_invert(S, None)
    return 1.0 - float(top)


def _lanczos_end(S: sp.csr_array, which: str) -> float:
    """The largest (``"LA"``) or smallest (``"SA"``) eigenvalue of ``S`` off the consensus
    direction, by Lanczos with the restart budget (raises ``ArpackNoConvergence``)."""
    return sla.eigsh(
        _deflated(S),
        k=1,
        which=which,
        tol=0.0,
        ncv=min(S.shape[0], _LANCZOS_VECTORS),
        maxiter=_LANCZOS_RESTARTS,
        return_eigenvectors=False,
    )[0]


def _bottom_modulus(S: sp.csr_array, top: float) -> float:
    """``max(0, -lambda_n(S))``, skipped when Gershgorin shows it is below ``top``."""
    diagonal = S.diagonal()
    off_diagonal = np.asarray(abs(S).sum(axis=1)).ravel() - np.abs(diagonal)
    if -float((diagonal - off_diagonal).min()) <= top:
        return 0.0
    try:
        lowest = _lanczos_end(S, "SA")
    except sla.ArpackNoConvergence:
        # Eigenvalues clustered near -1: shift-invert there (the shift keeps S + I regular
        # even when W is periodic).
        lowest = sla.eigsh(
            sp.csc_array(S), k=2, sigma=-1.0 - 1e-9, which="LM", return_eigenvectors=False
        ).min()
    return max(0.0, -float(lowest))


def _symmetric_modulus(S: np.ndarray | sp.csr_array, psd: bool = False) -> tuple[float, float]:
    """``(mu, gap)`` of a symmetric S; ``gap`` carries full relative precision if available."""
    n = S.shape[0]
    if n == 1:
        return 0.0, 1.0
    if not sp.issparse(S):
        eigenvalues = np.linalg.eigvalsh(S - 1.0 / n)
        mu = float(np.abs(eigenvalues).max())
        return mu, 1.0 - mu
    gap = _top_gap(S)
    bottom = 0.0 if psd else _bottom_modulus(S, 1.0 - gap)
    if bottom > 1.0 - gap:
        return bottom, 1.0 - bottom
    return 1.0 - gap, gap


def _modulus(W: np.ndarray | sp.csr_array, symmetric: bool | None) -> tuple[float, float]:
    """``(mu, 1 - mu)`` of a validated W, dispatching on symmetry and size."""
    if symmetric is None:
        symmetric = _is_symmetric(W)
    if symmetric:
        return _symmetric_modulus(W)
    n = W.shape[0]
    if not sp.issparse(W):
        mu = float(np.abs(np.linalg.eigvals(W - 1.0 / n)).max())
        return mu, 1.0 - mu
    try:
        largest = sla.eigs(
            _deflated(W),
            k=1,
            which="LM",
            tol=0.0,
            ncv=min(n, _LANCZOS_VECTORS),
            maxiter=_LANCZOS_RESTARTS,
            return_eigenvectors=False,
        )
    except sla.ArpackNoConvergence as error:
        if not _is_normal(W):
            raise RuntimeError(
                "Arnoldi did not converge for this non-normal W; compute the eigenvalues "
                "densely (numpy.linalg.eigvals(W.toarray())) if n allows"
            ) from error
        # For normal W, |lambda|^2 are the eigenvalues of W^T W, which is symmetric.
        mu_squared, _ = _symmetric_modulus(sp.csr_array(W.T @ W), psd=True)
        mu = math.sqrt(mu_squared)
        return mu, 1.0 - mu
    mu = float(np.abs(largest).max())
    return mu, 1.0 - mu


def second_eigenvalue_modulus(W: Any, *, symmetric: bool | None = None) -> float:
    """Largest modulus among the eigenvalues of W other than the consensus eigenvalue 1.

    .. math:: \\mu(W) = \\max\\{|\\lambda| : \\lambda \\in \\operatorname{spec}(W - J)\\},
              \\qquad J = \\mathbf{1}\\mathbf{1}^T / n ,

    which for symmetric W is :math:`\\max(|\\lambda_2|, |\\lambda_n|)`. A disconnected W
    gives 1 (the eigenvalue 1 is repeated); a periodic one gives 1 through
    :math:`\\lambda = -1`.

    Parameters
    ----------
    W : array_like or scipy.sparse array
        Doubly stochastic ``n x n`` matrix.
    symmetric : bool, optional
        Whether W is symmetric; detected (to 1e-12) when omitted.

    Returns
    -------
    float
        :math:`\\mu(W)`, 0 for ``n = 1``.

    Raises
    ------
    ConfigError
        W is not square or not doubly stochastic.

    Examples
    --------
    >>> from mixsim.topology import ring_matrix
    >>> round(second_eigenvalue_modulus(ring_matrix(6)), 12)
    0.666666666667
    """
    matrix = _as_matrix(W)
    return _modulus(matrix, symmetric)[0]


def spectral_gap(W: Any) -> float:
    """Spectral gap :math:`\\lambda = 1 - \\mu(W)`.

    .. math:: \\lambda(W) = 1 - \\max\\{|\\lambda| : \\lambda \\in
              \\operatorname{spec}(W - \\mathbf{1}\\mathbf{1}^T/n)\\}

    For large banded symmetric W the gap is computed directly (not as ``1 - mu``), so it keeps
    its relative precision even when it is of order 1e-7.

    Parameters
    ----------
    W : array_like or scipy.sparse array
        Doubly stochastic matrix.

    Returns
    -------
    float

    Examples
    --------
    >>> from mixsim.topology import exponential_graph, gossip_matrix
    >>> round(spectral_gap(gossip_matrix(exponential_graph(16), "uniform")), 12)
    0.4
    """
    return _modulus(_as_matrix(W), None)[1]


def _rounds_below(gap: float, log_target: float) -> int:
    """Smallest ``k >= 1`` with ``(1 - gap)**k <= exp(log_target)``, up to ``_TIE_RTOL``."""
    if gap >= 1.0:
        return 1
    rate = math.log1p(-gap)
    return max(1, math.ceil((log_target + _TIE_RTOL) / rate))


def _require_mixing(gap: float, mu: float) -> None:
    if not gap > _MIN_GAP:
        raise ConfigError(
            f"W does not mix (disconnected or periodic): second eigenvalue modulus {mu:.17g}"
        )


def _power_norm_function(W: np.ndarray | sp.csr_array) -> Callable[[int], float]:
    """``k -> ||(W - J)^k||_2``, dense for small n, Lanczos on an operator otherwise."""
    n = W.shape[0]
    if not sp.issparse(W):
        deflated = W - 1.0 / n
        return lambda k: float(np.linalg.norm(np.linalg.matrix_power(deflated, k), 2))
    operator = _deflated(W)

    def norm(k: int) -> float:
        def forward(x: np.ndarray) -> np.ndarray:
            for _ in range(k):
                x = operator.matvec(x)
            return x

        def backward(x: np.ndarray) -> np.ndarray:
            for _ in range(k):
                x = operator.rmatvec(x)
            return x

        power = sla.LinearOperator((n, n), matvec=forward, rmatvec=backward, dtype=np.float64)
        return float(sla.svds(power, k=1, return_singular_vectors=False)[0])

    return norm


def _smallest_power_below_half(norm_of_power: Callable[[int], float]) -> int:
    """Exponential then binary search; ``||(W-J)^k||`` is non-increasing in k for W >= 0."""
    threshold = 0.5 * (1.0 + _TIE_RTOL)
    high = 1
    while norm_of_power(high) > threshold:
        if high >= 2**_MAX_DOUBLINGS:
            raise ConfigError("W does not mix (disconnected or periodic)")
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        if norm_of_power(middle) > threshold:
            low = middle
        else:
            high = middle
    return high


def consensus_rounds(W: Any, *, normal: bool | None = None) -> int:
    """Number of gossip rounds with W that halve the distance to consensus.

    .. math:: k(W) = \\min\\{k \\ge 1 : \\|W^k - \\mathbf{1}\\mathbf{1}^T/n\\|_2 \\le 1/2\\}

    For normal W (symmetric, circulant, ...) the norm is :math:`\\mu^k`, so
    :math:`k = \\lceil \\ln(1/2) / \\ln \\mu \\rceil` (1 when :math:`\\mu \\le 1/2`), computed
    as ``log1p(-gap)`` for precision. For non-normal W the definition is evaluated directly
    (dense powers for ``n <= 500``, otherwise an operator applying :math:`(W - J)` k times,
    cost O(k edges) per product) with an exponential and binary search over k, which assumes
    the norm does not increase with k (true for non-negative doubly stochastic W).
    The comparison with 1/2 allows a relative 1e-12 so that exact ties are not decided by
    rounding. A gossip round every ``n`` computation steps gives :math:`t_{mix} = n k`.

    Parameters
    ----------
    W : array_like or scipy.sparse array
        Doubly stochastic matrix.
    normal : bool, optional
        Whether :math:`W W^T = W^T W`; detected when omitted (to 1e-12; for large n on three
        fixed random probe vectors, memory O(edges)).

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        W is not doubly stochastic, or does not mix (disconnected or periodic).

    Examples
    --------
    >>> from mixsim.topology import ring_matrix
    >>> consensus_rounds(ring_matrix(8))
    4
    """
    matrix = _as_matrix(W)
    if matrix.shape[0] == 1:
        return 1
    symmetric = _is_symmetric(matrix)
    if normal is None:
        normal = symmetric or _is_normal(matrix)
    if not normal:
        return _smallest_power_below_half(_power_norm_function(matrix))
    mu, gap = _modulus(matrix, symmetric)
    _require_mixing(gap, mu)
    return _rounds_below(gap, math.log(0.5))


def pairwise_expected_matrix(G: nx.Graph) -> sp.csr_array:
    """Expected :math:`W^T W` of one step of randomized pairwise gossip on G.

    At each step a uniformly random node ``i`` picks a uniformly random neighbour ``j`` and
    both replace their values by the average:
    :math:`W_{ij} = I - \\tfrac12 (e_i - e_j)(e_i - e_j)^T`. This is a symmetric projection,
    so :math:`W_{ij}^T W_{ij} = W_{ij}` and

    .. math:: \\mathbb{E}[W^T W] = \\mathbb{E}[W] = I - \\frac{1}{2n} \\sum_i \\frac{1}{d_i}
              \\sum_{j \\in N(i)} (e_i - e_j)(e_i - e_j)^T ,

    i.e. ``I`` minus the Laplacian with edge weights
    :math:`c_{ij} = (1/d_i + 1/d_j) / (2n)`.

    Parameters
    ----------
    G : networkx.Graph
        Undirected graph; rows follow the sorted node order. Self-loops are ignored.

    Returns
    -------
    scipy.sparse.csr_array
        Symmetric, doubly stochastic, positive semi-definite ``n x n`` matrix.

    Raises
    ------
    ConfigError
        G is directed or has an isolated node (when ``n > 1``).

    Examples
    --------
    >>> import networkx as nx
    >>> pairwise_expected_matrix(nx.complete_graph(2)).toarray()
    array([[0.5, 0.5],
           [0.5, 0.5]])
    """
    if G.is_directed():
        raise ConfigError("pairwise gossip averages both ends of an edge: G must be undirected")
    nodes = sorted(G)
    n = len(nodes)
    adjacency = sp.csr_array(nx.to_scipy_sparse_array(G, nodelist=nodes, weight=None))
    adjacency.setdiag(0)
    adjacency.eliminate_zeros()
    adjacency.data[:] = 1.0
    degree = adjacency.sum(axis=1)
    if n > 1 and degree.min() == 0:
        isolated = nodes[int(np.argmin(degree))]
        raise ConfigError(f"node {isolated!r} has no neighbour: pairwise gossip cannot reach it")
    coo = adjacency.tocoo()
    weights = (1.0 / degree[coo.row] + 1.0 / degree[coo.col]) / (2.0 * n)
    off_diagonal = sp.csr_array((weights, (coo.row, coo.col)), shape=(n, n))
    return sp.csr_array(off_diagonal + sp.diags_array(1.0 - off_diagonal.sum(axis=1)))


def pairwise_steps_to_halve(G: nx.Graph) -> int:
    """Pairwise gossip steps after which the mean-square distance to consensus has halved.

    With :math:`\\rho` the second largest eigenvalue of
    :math:`\\mathbb{E}[W^T W]` (:func:`pairwise_expected_matrix`),
    :math:`\\mathbb{E}\\|x_t - \\bar x\\|^2 \\le \\rho^t \\|x_0 - \\bar x\\|^2`, so

    .. math:: t = \\min\\{t \\ge 1 : \\rho^t \\le 1/4\\}
              = \\lceil \\ln(1/4) / \\ln \\rho \\rceil

    steps halve the root-mean-square distance. This is a mean-square figure over the random
    choices, not a worst-case bound for every realisation. One step is one pairwise
    exchange; ``n`` steps are about one round.

    Parameters
    ----------
    G : networkx.Graph
        Connected undirected graph.

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        G is directed, has an isolated node, or is disconnected.

    Examples
    --------
    >>> import networkx as nx
    >>> pairwise_steps_to_halve(nx.complete_graph(3))
    2
    """
    expected = _as_matrix(pairwise_expected_matrix(G))
    rho, gap = _symmetric_modulus(expected, psd=True)
    _require_mixing(gap, rho)
    return _rounds_below(gap, math.log(0.25))


def gossip_bound_rounds(W: Any) -> float:
    """The classical bound of about :math:`\\ln(n) / \\lambda` gossip rounds.

    .. math:: \\frac{\\ln n}{\\lambda(W)}, \\qquad \\lambda(W) = 1 - \\mu(W)

    (seed 002 §5.1): an order-of-magnitude figure for comparison tables next to
    :func:`consensus_rounds`, not a count.

    Parameters
    ----------
    W : array_like or scipy.sparse array
        Doubly stochastic matrix.

    Returns
    -------
    float

    Raises
    ------
    ConfigError
        W does not mix.

    Examples
    --------
    >>> from mixsim.topology import ring_matrix
    >>> round(gossip_bound_rounds(ring_matrix(4)), 6)
    2.079442
    """
    matrix = _as_matrix(W)
    mu, gap = _modulus(matrix, None)
    _require_mixing(gap, mu)
    return math.log(matrix.shape[0]) / gap
