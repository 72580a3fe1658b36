"""Compressors: top-k, rand-k, scaled sign, Bernoulli, uniform and adaptive sparsification.

A compressor is a :class:`~mixsim.optim.transform.Transformation` mapping a vector to its
decoded compressed version (same length, zeros where nothing was sent). Its state has a
``bits`` field: the size of the message produced by the last update (see
:mod:`mixsim.optim.bits`; :func:`~mixsim.optim.bits.message_bits` collects them).

Per-layer application (seed 000 §6): every compressor takes ``offsets``, the layer
boundaries ``[0, o_1, ..., d]``; it is then applied to each layer on its own, with a budget
proportional to the layer's size (``k`` split by largest remainders; expected densities are
the same in every layer) and the message costs the sum of the layers' costs.

Randomness: the random compressors take one keyword ``seed`` (None, an int, a
``numpy.random.SeedSequence`` or a ``numpy.random.Generator``); ``init`` builds the
generator, so initialising again replays the same stream. A Generator passed as ``seed`` is
used as it is (shared, not copied). The generator lives in the state (``state.rng``).

Non-finite input, by compressor:

* top-k: NaN ranks as an infinite magnitude, so NaN and inf entries are always sent;
* rand-k, uniform: selection ignores the values; a non-finite entry is sent if selected;
* scaled sign: a non-finite entry makes the whole output non-finite (the scale is);
* Bernoulli, adaptive: the probabilities depend on every entry; a non-finite entry makes
  the whole output NaN (never a silent drop). Adaptive's ``u`` sums only the finite part of
  what was sent, so one bad step does not poison the later ones (the rule of
  :mod:`mixsim.optim.memory`: passed on, never kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from mixsim.errors import ConfigError
from mixsim.optim import _checks, _kernels, bits
from mixsim.optim.transform import Spec, Transformation

__all__ = [
    "CompressorState",
    "RandomCompressorState",
    "AdaptiveState",
    "uncompressed",
    "top_k",
    "rand_k",
    "scaled_sign",
    "bernoulli",
    "uniform",
    "adaptive",
    "select_top_k",
    "adaptive_probabilities",
    "make_compressor",
]


class CompressorState(NamedTuple):
    """State of a deterministic compressor: the bits of the last message."""

    bits: int


class RandomCompressorState(NamedTuple):
    """State of a random compressor: bits of the last message and the generator."""

    bits: int
    rng: np.random.Generator


class AdaptiveState(NamedTuple):
    """State of :func:`adaptive`: bits, generator, and ``u`` the running sum of the squared
    past sparsified gradients (seed 000 §4.1)."""

    bits: int
    rng: np.random.Generator
    u: np.ndarray


def _layers(offsets, d: int) -> list[tuple[int, int]]:
    bounds = _checks.offsets(offsets, d)
    if bounds is None:
        return [(0, d)]
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


def _count(k, density, d: int) -> int:
    """The number of entries to keep, from ``k`` or ``density``, checked against ``d``."""
    if k is not None:
        if k > d:
            raise ConfigError(f"k must be in [0, d] = [0, {d}], got {k}", key="k")
        return k
    # A positive density keeps at least one entry: rounding a small density times a small d
    # down to 0 would silently send nothing at all.
    if density > 0 and d > 0:
        return max(1, round(density * d))
    return 0


def _split(total: int, layers: list[tuple[int, int]], d: int) -> list[int]:
    """Split ``total`` over layers proportionally to their sizes (largest remainders)."""
    if len(layers) == 1:
        return [total]
    sizes = np.array([b - a for a, b in layers], dtype=np.float64)
    exact = total * sizes / max(d, 1)
    share = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - share), kind="stable")
    share[order[: total - int(share.sum())]] += 1
    return share.tolist()


def _budget(k, density):
    if (k is None) == (density is None):
        raise ConfigError("give exactly one of k (an integer) or density (in [0, 1])", key="k")
    if k is not None:
        return _checks.integer(k, "k", low=0), None
    return None, _checks.real(density, "density", low=0.0, high=1.0)


def _sparse_cost(nnz: Sequence[int], layers) -> int:
    return sum(bits.sparse_bits(n, b - a) for n, (a, b) in zip(nnz, layers, strict=True))


def uncompressed() -> Transformation:
    """The identity compressor: sends the full vector, ``32 d`` bits.

    Returns
    -------
    Transformation
        State :class:`CompressorState`.

    Examples
    --------
    >>> import numpy as np
    >>> c = uncompressed()
    >>> out, state = c.update(np.ones(4), c.init(np.zeros(4)))
    >>> state.bits
    128
    """

    def init(params):
        _checks.vector(params, "params")
        return CompressorState(0)

    def update(updates, state, params=None):
        g = _checks.vector(updates, "updates")
        return g, state._replace(bits=bits.dense_bits(g.shape[0]))

    return Transformation(init, update, spec=Spec("none", {}))


def select_top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` entries of largest magnitude, in increasing order.

    Exact (not approximate): a sampled threshold, one pass over ``x`` and an exact
    selection among the candidates; ties at the k-th magnitude go to the lower indices; a
    NaN counts as an infinite magnitude.

    Parameters
    ----------
    x : numpy.ndarray
        1-D float32 or float64 array.
    k : int
        Number of entries, ``0 <= k <= len(x)``.

    Returns
    -------
    numpy.ndarray
        int64 indices, sorted increasingly, length ``k``.

    Raises
    ------
    ConfigError
        If ``k`` is outside ``[0, len(x)]`` (key ``"k"``).

    Examples
    --------
    >>> import numpy as np
    >>> select_top_k(np.array([0.5, -3.0, 1.0, 3.0]), 2).tolist()
    [1, 3]
    """
    x = _checks.vector(x, "x")
    k = _count(_checks.integer(k, "k", low=0), None, x.shape[0])
    idx = np.empty(k, np.int64)
    _kernels._top_k_select(x, k, idx)
    return idx


def top_k(
    k: int | None = None, *, density: float | None = None, offsets: Sequence[int] | None = None
) -> Transformation:
    """Top-k sparsification: keep the ``k`` entries of largest magnitude (exact).

    Parameters
    ----------
    k : int, optional
        Entries kept, ``0 <= k <= d`` (checked at ``init``).
    density : float, optional
        Alternatively the fraction kept in ``[0, 1]``: ``k = round(density d)``.
    offsets : sequence of int, optional
        Layer boundaries for per-layer application; ``k`` is split over the layers
        proportionally to their sizes.

    Returns
    -------
    Transformation
        State :class:`CompressorState`; ``bits`` is ``min(64 k, d + 32 k)`` (per layer).

    Raises
    ------
    ConfigError
        If neither or both of ``k`` and ``density`` are given, or one is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> c = top_k(2)
    >>> out, state = c.update(np.array([0.5, -3.0, 1.0, 3.0]), c.init(np.zeros(4)))
    >>> out.tolist(), state.bits
    ([0.0, -3.0, 0.0, 3.0], 68)
    """
    k, density = _budget(k, density)

    def init(params):
        d = _checks.vector(params, "params").shape[0]
        _count(k, density, d)
        _layers(offsets, d)
        return CompressorState(0)

    def update(updates, state, params=None):
        g = _checks.vector(updates, "updates")
        d = g.shape[0]
        layers = _layers(offsets, d)
        counts = _split(_count(k, density, d), layers, d)
        out = np.zeros_like(g)
        for (a, b), kl in zip(layers, counts, strict=True):
            idx = np.empty(kl, np.int64)
            _kernels._top_k_select(g[a:b], kl, idx)
            out[a + idx] = g[a + idx]
        return out, state._replace(bits=_sparse_cost(counts, layers))

    return Transformation(
        init, update, spec=Spec("top-k", {"k": k, "density": density, "offsets": offsets})
    )


def rand_k(
    k: int | None = None,
    *,
    density: float | None = None,
    rescale: bool = False,
    offsets: Sequence[int] | None = None,
    seed=None,
) -> Transformation:
    """Rand-k sparsification: keep ``k`` entries chosen uniformly without replacement.

    Parameters
    ----------
    k : int, optional
        Entries kept, ``0 <= k <= d``.
    density : float, optional
        Alternatively the fraction kept in ``[0, 1]``.
    rescale : bool
        Multiply the kept entries by ``d / k`` (unbiased); the default keeps them as they
        are (the contractive form of seed 003 App. A, suited to error feedback).
    offsets : sequence of int, optional
        Layer boundaries for per-layer application.
    seed : None, int, SeedSequence or Generator
        Randomness, see the module notes.

    Returns
    -------
    Transformation
        State :class:`RandomCompressorState`; ``bits`` as for top-k.

    Raises
    ------
    ConfigError
        If the budget is missing, doubled or out of range.

    Examples
    --------
    >>> import numpy as np
    >>> c = rand_k(2, seed=0)
    >>> out, state = c.update(np.arange(1.0, 7.0), c.init(np.zeros(6)))
    >>> int(np.count_nonzero(out)), state.bits  # bitmap: 6 + 2 * 32
    (2, 70)
    """
    k, density = _budget(k, density)

    def init(params):
        d = _checks.vector(params, "params").shape[0]
        _count(k, density, d)
        _layers(offsets, d)
        return RandomCompressorState(0, np.random.default_rng(seed))

    def update(updates, state, params=None):
        g = _checks.vector(updates, "updates")
        d = g.shape[0]
        layers = _layers(offsets, d)
        counts = _split(_count(k, density, d), layers, d)
        out = np.zeros_like(g)
        for (a, b), kl in zip(layers, counts, strict=True):
            if kl == 0:
                continue
            idx = a + state.rng.choice(b - a, size=kl, replace=False, shuffle=False)
            scale = (b - a) / kl if rescale else 1.0
            out[idx] = g[idx] * g.dtype.type(scale)
        return out, state._replace(bits=_sparse_cost(counts, layers))

    spec = Spec("rand-k", {"k": k, "density": density, "rescale": rescale, "offsets": offsets})
    return Transformation(init, update, spec=spec)


def scaled_sign(*, offsets: Sequence[int] | None = None) -> Transformation:
    """Scaled sign ``||x||_1 sign(x) / d`` (seed 003 App. A), 1 bit per entry plus a scale.

    A zero entry is sent as ``+`` (one bit has no third symbol; DeepSpeed's 1-bit
    compression does the same). Then the error is exactly
    ``(1 - ||x||_1^2 / (d ||x||_2^2)) ||x||_2^2`` (seed 003 eq. A.2) for every ``x``.

    Parameters
    ----------
    offsets : sequence of int, optional
        Layer boundaries: one scale per layer.

    Returns
    -------
    Transformation
        State :class:`CompressorState`; ``bits`` is ``32 + d`` (per layer).

    Examples
    --------
    >>> import numpy as np
    >>> c = scaled_sign()
    >>> out, state = c.update(np.array([1.0, -3.0, 0.0, 4.0]), c.init(np.zeros(4)))
    >>> out.tolist(), state.bits
    ([2.0, -2.0, 2.0, 2.0], 36)
    """

    def init(params):
        _layers(offsets, _checks.vector(params, "params").shape[0])
        return CompressorState(0)

    def update(updates, state, params=None):
        g = _checks.vector(updates, "updates")
        layers = _layers(offsets, g.shape[0])
        out = np.empty_like(g)
        cost = 0
        for a, b in layers:
            if b > a:
                _kernels._scaled_sign(g[a:b], out[a:b])
                cost += bits.sign_bits(b - a)
        return out, state._replace(bits=cost)

    return Transformation(init, update, spec=Spec("scaled-sign", {"offsets": offsets}))


def adaptive_probabilities(
    g: np.ndarray, c: float, u: np.ndarray | None = None, xi: float = 0.5, eps: float = 1e-8
) -> np.ndarray:
    """Selection probabilities of seed 000 Theorem 2, computed by its Algorithm 2.

    ``p_i = min(r_i / sqrt(lambda), 1)`` with ``r_i = |g_i| / (u_i + eps)^xi`` (or
    ``r_i = |g_i|`` without ``u``: eq. 2, the non-adaptive case) and ``lambda`` such that
    ``sum(p) = c``. If fewer than ``c`` entries are non-zero they all get probability 1.

    Parameters
    ----------
    g : numpy.ndarray
        1-D float32 or float64 gradient.
    c : float
        Expected number of selected entries, in ``[0, d]``.
    u : numpy.ndarray, optional
        Running sum of squared past sparsified gradients, same length as ``g``.
    xi : float
        Power of ``u``, ``>= 0`` (seed 000 uses 1/4 and 1/2).
    eps : float
        ``>= 0``, added to ``u`` (``u`` starts at 0).

    Returns
    -------
    numpy.ndarray
        float64 probabilities in ``[0, 1]`` (all NaN if ``g`` or ``u`` has a non-finite entry).

    Raises
    ------
    ConfigError
        If ``c``, ``xi`` or ``eps`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> adaptive_probabilities(np.array([4.0, 1.0, 1.0, 0.0]), c=2.0).tolist()
    [1.0, 0.5, 0.5, 0.0]
    """
    g = _checks.vector(g, "g")
    d = g.shape[0]
    c = _checks.real(c, "c", low=0.0, high=float(d))
    xi = _checks.real(xi, "xi", low=0.0)
    eps = _checks.real(eps, "eps", low=0.0)
    if u is None:
        u = g[:0]
    elif _checks.vector(u, "u").shape != g.shape:
        raise ValueError(f"u has length {u.shape[0]}, g has {d}")
    p = np.empty(d, np.float64)
    if _kernels._ratios(g, u, xi, eps, p):
        _kernels._capped_probabilities(p.copy(), c, p, _kernels._CAPPED_ROUNDS)
    else:
        p[:] = np.nan
    return p


def _probability_sparsifier(
    name: str, density: float, xi: float | None, eps: float, offsets, seed
) -> Transformation:
    """Bernoulli (``xi is None``) or adaptive sparsification, with expected ``density``."""
    density = _checks.real(density, "density", low=0.0, high=1.0)
    eps = _checks.real(eps, "eps", low=0.0)
    if xi is not None:
        xi = _checks.real(xi, "xi", low=0.0)

    def init(params):
        x = _checks.vector(params, "params")
        _layers(offsets, x.shape[0])
        rng = np.random.default_rng(seed)
        if xi is None:
            return RandomCompressorState(0, rng)
        return AdaptiveState(0, rng, np.zeros_like(x))

    def update(updates, state, params=None):
        g = _checks.vector(updates, "updates")
        d = g.shape[0]
        out = np.empty_like(g)
        r = np.empty(d, np.float64)
        p = np.empty(d, np.float64)
        uniforms = state.rng.random(d)
        u = g[:0] if xi is None else state.u
        kept = []
        layers = _layers(offsets, d)
        for a, b in layers:
            ul = u if xi is None else u[a:b]
            if _kernels._ratios(g[a:b], ul, xi or 0.0, eps, r[a:b]):
                _kernels._capped_probabilities(
                    r[a:b], density * (b - a), p[a:b], _kernels._CAPPED_ROUNDS
                )
                kept.append(_kernels._sparsify(g[a:b], p[a:b], uniforms[a:b], out[a:b]))
            else:
                out[a:b] = np.nan
                kept.append(b - a)
        if xi is not None:
            # u sums what was sent; a non-finite message is passed on, not summed.
            _kernels._accumulate_squares(state.u, np.where(np.isfinite(out), out, 0) if
                                         not np.isfinite(out).all() else out)
        return out, state._replace(bits=_sparse_cost(kept, layers))

    # The spec holds the factory's own arguments: Bernoulli takes no xi and no eps.
    params = {"density": density, "offsets": offsets, "seed": seed}
    if xi is not None:
        params.update(xi=xi, eps=eps)
    return Transformation(init, update, spec=Spec(name, params))


def bernoulli(density: float, *, offsets: Sequence[int] | None = None, seed=None) -> Transformation:
    """Bernoulli sparsification of seed 000 eq. 1-2: send ``g_i / p_i`` with probability
    ``p_i = min(lambda |g_i|, 1)``.

    ``lambda`` is chosen so that the expected number of entries sent is ``density d``
    (Algorithm 2 of seed 000 without ``u``). Unbiased: ``E[out] = g``.

    Parameters
    ----------
    density : float
        Expected fraction of entries sent, in ``[0, 1]``.
    offsets : sequence of int, optional
        Layer boundaries (the same expected density in every layer).
    seed : None, int, SeedSequence or Generator
        Randomness, see the module notes.

    Returns
    -------
    Transformation
        State :class:`RandomCompressorState`; ``bits`` from the entries actually sent.

    Raises
    ------
    ConfigError
        If ``density`` is outside ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> c = bernoulli(0.5, seed=0)
    >>> out, state = c.update(np.array([4.0, 0.0, 0.0, 0.0]), c.init(np.zeros(4)))
    >>> out.tolist()
    [4.0, 0.0, 0.0, 0.0]
    """
    return _probability_sparsifier("bernoulli", density, None, 0.0, offsets, seed)


def adaptive(
    density: float,
    xi: float = 0.5,
    *,
    eps: float = 1e-8,
    offsets: Sequence[int] | None = None,
    seed=None,
) -> Transformation:
    """Adaptive sparsification of seed 000 Theorem 2 / Algorithm 2.

    ``p_i = min(|g_i| / ((u_i + eps)^xi sqrt(lambda)), 1)`` with ``sum(p) = density d``;
    sends ``g_i / p_i`` with probability ``p_i`` and then adds the square of what was sent
    to ``u`` (the running sum of squared past sparsified gradients). Unbiased.

    Parameters
    ----------
    density : float
        Expected fraction of entries sent ``s = c / d``, in ``[0, 1]``.
    xi : float
        Power of ``u`` (seed 000 tries 1/4 and 1/2), ``>= 0``.
    eps : float
        ``>= 0``, keeps ``(u + eps)^xi`` positive at the start, when ``u = 0``.
    offsets : sequence of int, optional
        Layer boundaries (the same expected density in every layer).
    seed : None, int, SeedSequence or Generator
        Randomness, see the module notes.

    Returns
    -------
    Transformation
        State :class:`AdaptiveState`.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> c = adaptive(0.25, xi=0.5, seed=0)
    >>> state = c.init(np.zeros(4))
    >>> out, state = c.update(np.array([2.0, 0.0, 0.0, 0.0]), state)
    >>> out.tolist(), state.u.tolist()
    ([2.0, 0.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0])
    """
    return _probability_sparsifier("adaptive", density, xi, eps, offsets, seed)


def uniform(density: float, *, offsets: Sequence[int] | None = None, seed=None) -> Transformation:
    """Uniform sparsification: send ``g_i / p`` with probability ``p = c / d = density``.

    Parameters
    ----------
    density : float
        Probability of sending each entry, in ``[0, 1]``.
    offsets : sequence of int, optional
        Layer boundaries (bits are counted per layer; the probability is the same).
    seed : None, int, SeedSequence or Generator
        Randomness, see the module notes.

    Returns
    -------
    Transformation
        State :class:`RandomCompressorState`; unbiased for ``density > 0``.

    Raises
    ------
    ConfigError
        If ``density`` is outside ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> c = uniform(1.0, seed=0)
    >>> c.update(np.array([1.0, 2.0]), c.init(np.zeros(2)))[0].tolist()
    [1.0, 2.0]
    """
    density = _checks.real(density, "density", low=0.0, high=1.0)

    def init(params):
        _layers(offsets, _checks.vector(params, "params").shape[0])
        return RandomCompressorState(0, np.random.default_rng(seed))

    def update(updates, state, params=None):
        g = _checks.vector(updates, "updates")
        d = g.shape[0]
        out = np.empty_like(g)
        uniforms = state.rng.random(d)
        layers = _layers(offsets, d)
        kept = [
            _kernels._sparsify_uniform(g[a:b], density, uniforms[a:b], out[a:b]) for a, b in layers
        ]
        return out, state._replace(bits=_sparse_cost(kept, layers))

    return Transformation(
        init, update, spec=Spec("uniform", {"density": density, "offsets": offsets})
    )


_COMPRESSORS = {
    "none": uncompressed,
    "top-k": top_k,
    "rand-k": rand_k,
    "scaled-sign": scaled_sign,
    "bernoulli": bernoulli,
    "uniform": uniform,
    "adaptive": adaptive,
}


def make_compressor(name: str, **params: Any) -> Transformation:
    """Build a compressor by its registry name (the names scenario files use).

    Parameters
    ----------
    name : {"none", "top-k", "rand-k", "scaled-sign", "bernoulli", "uniform", "adaptive"}
        The compressor.
    **params
        Keyword arguments of the matching factory.

    Returns
    -------
    Transformation
        The compressor.

    Raises
    ------
    ConfigError
        Unknown name (the message lists the allowed names and the closest one), unknown
        parameter, or parameter out of range.

    Examples
    --------
    >>> c = make_compressor("top-k", k=10)
    >>> c.spec.name
    'top-k'
    """
    return _checks.pick(name, _COMPRESSORS, "compressor", params)
