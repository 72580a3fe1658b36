"""Numba kernels of the optimizers, compressors and memory schemes.

Private on purpose: every function takes arrays and scalars only, never validates and never
raises. The public wrappers in :mod:`mixsim.optim` validate, convert scalars to the dtype of
the arrays (so float32 state is computed in float32) and call these.

Conventions shared by all kernels:

* optimizer kernels update ``x`` in place by ``x += step``; calling them on a zero ``x``
  yields the step itself;
* the maximum used by AMSGrad-type updates propagates NaN (like ``numpy.maximum``), so a
  non-finite gradient always reaches the parameters instead of hiding in the moments;
* for ranking by magnitude a NaN counts as an infinite magnitude; ties are broken by the
  lower index.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from mixsim._numba import JIT_OPTIONS

# mixsim's standard options plus numpy's error model: a division by zero gives inf/NaN
# instead of raising (kernels never raise), and the loops vectorise (the Python error
# model's zero check blocks SIMD: the AMSGrad step runs 3-4x slower with it).
njit = numba.njit(**JIT_OPTIONS, error_model="numpy")

# Sample size of the threshold estimate in the top-k selection, and the size below which
# the selection goes straight to the exact O(d) path (sampling does not pay there).
_SAMPLE = 16384
_SMALL = 8 * _SAMPLE
# Rounds of Algorithm 2 (seed 000) before the probabilities are finished by sorting.
_CAPPED_ROUNDS = 32


# ---------------------------------------------------------------- optimizers


@njit
def _sgd_step(x, g, lr):
    for i in range(x.shape[0]):
        x[i] -= lr * g[i]


@njit
def _momentum_step(x, g, buf, lr, mu):
    for i in range(x.shape[0]):
        b = mu * buf[i] + g[i]
        buf[i] = b
        x[i] -= lr * b


@njit
def _adam_family_step(x, g, m, v, lr, b1, c1, b2, c2, p, eps):
    """Stochastic Adaptive Method of seed 002 eq. 11 with ``V^-p`` (``p`` any power)."""
    half = p == 0.5
    for i in range(x.shape[0]):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        vi = np.maximum(vi, v[i])
        m[i] = mi
        v[i] = vi
        if half:
            x[i] -= lr * mi / np.sqrt(vi + eps)
        else:
            x[i] -= lr * mi * (vi + eps) ** (-p)


@njit
def _amsgrad_step(x, g, m, v, v_hat, lr, b1, c1, b2, c2, eps):
    """AMSGrad as in the seeds: ``v`` and ``v_hat`` apart, divide by sqrt(v_hat + eps)."""
    for i in range(x.shape[0]):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        hi = np.maximum(v_hat[i], vi)
        m[i] = mi
        v[i] = vi
        v_hat[i] = hi
        x[i] -= lr * mi / np.sqrt(hi + eps)


@njit
def _amsgrad_decay(x, m, v, v_hat, lr, b1, b2, eps, start, stop):
    """AMSGrad step on ``[start, stop)`` with a zero gradient (the moments decay).

    The index is unsigned: a signed one from ``range(start, stop)`` makes numba emit the
    negative-index wrap-around, which stops vectorisation.
    """
    for j in range(stop - start):
        i = np.uint64(start + j)
        mi = b1 * m[i]
        vi = b2 * v[i]
        hi = np.maximum(v_hat[i], vi)
        m[i] = mi
        v[i] = vi
        v_hat[i] = hi
        x[i] -= lr * mi / np.sqrt(hi + eps)


@njit
def _amsgrad_sparse_step(x, idx, vals, m, v, v_hat, lr, b1, c1, b2, c2, eps):
    """AMSGrad with the gradient given as increasing indices and values (zero elsewhere).

    The runs of zero gradient between two given indices are vectorised decay loops, the
    given entries are updated in between: one streaming pass over memory, the same numbers
    as the dense step on the scattered gradient, no dense gradient materialised.
    """
    start = 0
    for j in range(idx.shape[0]):
        i = idx[j]
        _amsgrad_decay(x, m, v, v_hat, lr, b1, b2, eps, start, i)
        gi = vals[j]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        hi = np.maximum(v_hat[i], vi)
        m[i] = mi
        v[i] = vi
        v_hat[i] = hi
        x[i] -= lr * mi / np.sqrt(hi + eps)
        start = i + 1
    _amsgrad_decay(x, m, v, v_hat, lr, b1, b2, eps, start, x.shape[0])


@njit
def _amsgrad_torch_step(x, g, m, v, v_max, step_size, c1, b2, c2, sqrt_bc2, eps):
    """``torch.optim.Adam(amsgrad=True)``: bias-corrected, eps outside the root.

    ``step_size`` is ``lr / (1 - b1^t)``, ``sqrt_bc2`` is ``sqrt(1 - b2^t)``. The first
    moment uses torch's ``lerp`` form ``m + (1 - b1) (g - m)``.
    """
    for i in range(x.shape[0]):
        gi = g[i]
        mi = m[i] + c1 * (gi - m[i])
        vi = b2 * v[i] + c2 * gi * gi
        hi = np.maximum(v_max[i], vi)
        m[i] = mi
        v[i] = vi
        v_max[i] = hi
        x[i] -= step_size * (mi / (np.sqrt(hi) / sqrt_bc2 + eps))


@njit
def _adam_plain_step(x, g, m, v, lr, b1, c1, b2, c2, eps):
    """Adam without bias correction (the warm-up of 1-bit Adam)."""
    for i in range(x.shape[0]):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        m[i] = mi
        v[i] = vi
        x[i] -= lr * mi / (np.sqrt(vi) + eps)


@njit
def _onebit_momentum_step(x, g, m, v, e, lr, b1, c1, eps):
    """1-bit Adam after warm-up: frozen ``v``, error-compensated scaled-sign momentum.

    ``a = b1 m + (1 - b1) g + e``; the message is ``c = ||a||_1 sign(a) / d``; ``e = a - c``;
    ``m = c``; ``x -= lr c / (sqrt(v) + eps)``.
    """
    d = x.shape[0]
    l1 = 0.0
    for i in range(d):
        a = b1 * m[i] + c1 * g[i] + e[i]
        e[i] = a
        l1 += abs(a)
    scale = l1 / d
    for i in range(d):
        a = e[i]
        m[i] = -scale if a < 0 else scale
        c = m[i]
        e[i] = a - c
        x[i] -= lr * c / (np.sqrt(v[i]) + eps)


# ---------------------------------------------------------------- top-k selection


@njit
def _magnitude(value):
    a = abs(value)
    if a != a:
        return np.inf
    return float(a)


@njit
def _gather_top(values, cand, n, k, idx):
    """Write to ``idx`` the ``k`` candidates of largest ``|values[:n]|``, in index order.

    ``values[j]`` is the entry at index ``cand[j]``; ``cand`` is increasing; ties at the
    k-th magnitude go to the lower indices.
    """
    mags = np.empty(n, np.float64)
    for j in range(n):
        mags[j] = _magnitude(values[j])
    kth = np.partition(mags, n - k)[n - k]
    above = 0
    for j in range(n):
        if mags[j] > kth:
            above += 1
    ties = k - above
    out = 0
    for j in range(n):
        mj = mags[j]
        if mj > kth:
            idx[out] = cand[j]
            out += 1
        elif mj == kth and ties > 0:
            idx[out] = cand[j]
            out += 1
            ties -= 1
    return out


@njit
def _top_k_exact(x, k, idx):
    d = x.shape[0]
    return _gather_top(x, np.arange(d), d, k, idx)


@njit
def _sample_threshold(sample, k, d, widen):
    """Magnitude threshold expected to leave a little more than ``k`` entries above it.

    Returns ``-1.0`` when the sample cannot separate (go exact).
    """
    s = sample.shape[0]
    expected = k * s / d * widen
    rank = int(math.ceil(expected + 4.0 * math.sqrt(expected) + 4.0))
    if rank >= s:
        return -1.0
    t = sample[s - rank]
    if t <= 0.0:
        return -1.0
    return t


@njit
def _candidate_capacity(k, d, widen):
    expected = k * widen
    return min(d, int(2.0 * (expected + 4.0 * math.sqrt(expected * _SAMPLE) + 64.0)) + 1024)


@njit
def _strided_sample(x, y, d):
    """Sorted magnitudes of ``x + y`` (``y`` may be empty) at ``_SAMPLE`` evenly spread points."""
    stride = d // _SAMPLE
    sample = np.empty(_SAMPLE, np.float64)
    with_y = y.shape[0] == d
    for j in range(_SAMPLE):
        i = j * stride
        value = x[i] + y[i] if with_y else x[i]
        sample[j] = _magnitude(value)
    sample.sort()
    return sample


@njit
def _top_k_select(x, k, idx):
    """Indices (increasing) of the ``k`` largest ``|x|`` into ``idx[:k]``; returns ``k``.

    Exact, not a full sort: a threshold estimated from a strided sample, one pass that
    collects the entries at or above it, an exact selection among those candidates. If the
    estimate misses (too few or too many candidates) the threshold is widened, and after
    that the exact O(d) selection on all entries is used.
    """
    d = x.shape[0]
    if k <= 0:
        return 0
    if k >= d:
        for i in range(d):
            idx[i] = i
        return d
    if d < _SMALL:
        return _top_k_exact(x, k, idx)
    sample = _strided_sample(x, x[:0], d)
    widen = 1.0
    for _ in range(2):
        t = _sample_threshold(sample, k, d, widen)
        if t < 0.0:
            break
        cap = _candidate_capacity(k, d, widen)
        cand = np.empty(cap, np.int64)
        found = np.empty(cap, x.dtype)
        n = 0
        for i in range(d):
            a = x[i]
            if not (abs(a) < t):
                if n < cap:
                    cand[n] = i
                    found[n] = a
                n += 1
        if n > cap:
            break
        if n >= k:
            return _gather_top(found, cand, n, k, idx)
        widen *= 4.0
    return _top_k_exact(x, k, idx)


@njit
def _ef_collect(g, e, t, cap, cand, found):
    """``e += g``; collect into ``cand``/``found`` the indices and values with ``|e| >= t``
    (or NaN).

    Chunks of 16: a vectorised pass adds and flags the chunk, and only flagged chunks are
    scanned one by one, so the pass runs at memory speed. Indices are unsigned inside the
    chunks: a signed index from ``range(start, stop)`` makes numba emit the negative-index
    wrap-around, which stops vectorisation. Returns the number of candidates (it may
    exceed ``cap``; only ``cap`` are stored).
    """
    d = e.shape[0]
    n = 0
    chunk = 16
    for block in range(d // chunk):
        base = np.uint64(block * chunk)
        hit = False
        for j in range(chunk):
            i = base + np.uint64(j)
            a = e[i] + g[i]
            e[i] = a
            hit |= not (abs(a) < t)
        if hit:
            for j in range(chunk):
                i = base + np.uint64(j)
                a = e[i]
                if not (abs(a) < t):
                    if n < cap:
                        cand[n] = i
                        found[n] = a
                    n += 1
    for i in range(d - d % chunk, d):
        a = e[i] + g[i]
        e[i] = a
        if not (abs(a) < t):
            if n < cap:
                cand[n] = i
                found[n] = a
            n += 1
    return n


@njit
def _ef_top_k(g, e, k, idx, vals):
    """Error feedback with top-k in one pass: ``e += g``, select top-k of ``e``, move them out.

    On return ``vals[:k] = (g + e_old)[idx[:k]]`` and ``e`` holds the remainder (the selected
    entries set to zero). Returns ``k``.
    """
    d = e.shape[0]
    n = -1
    if 0 < k < d and d >= _SMALL:
        sample = _strided_sample(g, e, d)
        t = _sample_threshold(sample, k, d, 1.0)
        if t >= 0.0:
            cap = _candidate_capacity(k, d, 1.0)
            cand = np.empty(cap, np.int64)
            found = np.empty(cap, e.dtype)
            count = _ef_collect(g, e, t, cap, cand, found)
            if k <= count <= cap:
                n = _gather_top(found, cand, count, k, idx)
            else:
                n = _top_k_select(e, k, idx)
    if n < 0:
        for i in range(d):
            e[i] += g[i]
        n = _top_k_select(e, k, idx)
    for j in range(n):
        i = idx[j]
        vals[j] = e[i]
        e[i] = 0.0
    return n


# ---------------------------------------------------------------- other compressors


@njit
def _scaled_sign(x, out):
    """``out = ||x||_1 sign(x) / d`` with ``sign(0) = +1`` (the l1 norm summed in float64).

    A message has one bit per coordinate, so there is no symbol for zero.
    """
    d = x.shape[0]
    l1 = 0.0
    for i in range(d):
        l1 += abs(x[i])
    scale = l1 / d
    for i in range(d):
        out[i] = -scale if x[i] < 0 else scale


@njit
def _ratios(g, u, xi, eps, r):
    """``r = |g| / (u + eps)^xi``; ``u`` empty means plain magnitudes (``xi = 0``).

    Returns False if a ratio is not finite (the caller then outputs NaN).
    """
    d = g.shape[0]
    finite = True
    adaptive = u.shape[0] == d
    for i in range(d):
        a = abs(g[i])
        if adaptive:
            if xi == 0.5:
                a = a / np.sqrt(u[i] + eps)
            elif xi == 0.25:
                a = a / np.sqrt(np.sqrt(u[i] + eps))
            elif xi != 0.0:
                a = a / (u[i] + eps) ** xi
        r[i] = a
        if not (a < np.inf):
            finite = False
    return finite


@njit
def _capped_probabilities(r, c, p, rounds):
    """``p = min(r / sqrt(lambda), 1)`` with ``sum(p) = c`` (seed 000 Thm 2, Algorithm 2).

    Runs Algorithm 2 (fix every coordinate whose normalised probability reaches 1, repeat
    with ``c`` reduced) for at most ``rounds`` rounds, then finishes exactly by sorting the
    remaining coordinates (eq. 5-6), so the cost stays O(d log d) on adversarial inputs.
    ``r`` must be finite and non-negative. If fewer than ``c`` entries are non-zero, those
    get probability 1 and the rest 0. The free probabilities are ``r_i left / total``,
    never through ``left / total`` alone, which overflows for tiny ``r``.
    """
    d = r.shape[0]
    fixed = np.zeros(d, np.bool_)
    left = c
    total = 0.0
    done = False
    for _ in range(rounds):
        total = 0.0
        for i in range(d):
            if not fixed[i]:
                total += r[i]
        if total <= 0.0 or left <= 0.0:
            done = True
            break
        newly = 0
        for i in range(d):
            if not fixed[i] and r[i] * left >= total:
                fixed[i] = True
                newly += 1
        if newly == 0:
            done = True
            break
        left -= newly
    if not done:
        active = 0
        for i in range(d):
            if not fixed[i]:
                active += 1
        values = np.empty(active, np.float64)
        j = 0
        for i in range(d):
            if not fixed[i]:
                values[j] = r[i]
                j += 1
        values.sort()
        # Sums of the smallest values, so that removing the largest never cancels.
        below = np.cumsum(values)
        cut = np.inf
        total = 0.0
        for j in range(active - 1, -1, -1):
            total = below[j]
            if total <= 0.0 or left <= 0.0:
                break
            top = values[j]
            if top * left < total:
                break
            cut = top
            left -= 1.0
            total = below[j - 1] if j > 0 else 0.0
        for i in range(d):
            if not fixed[i] and r[i] >= cut:
                fixed[i] = True
    for i in range(d):
        if fixed[i]:
            p[i] = 1.0
        elif total <= 0.0 or left <= 0.0:
            p[i] = 0.0
        else:
            p[i] = min(r[i] * left / total, 1.0)


@njit
def _sparsify(g, p, uniforms, out):
    """``out_i = g_i / p_i`` if ``uniforms_i < p_i`` else 0; returns the number kept."""
    kept = 0
    for i in range(g.shape[0]):
        if uniforms[i] < p[i]:
            out[i] = g[i] / p[i]
            kept += 1
        else:
            out[i] = 0.0
    return kept


@njit
def _sparsify_uniform(g, prob, uniforms, out):
    """``out_i = g_i / prob`` if ``uniforms_i < prob`` else 0; returns the number kept."""
    kept = 0
    for i in range(g.shape[0]):
        if uniforms[i] < prob:
            out[i] = g[i] / prob
            kept += 1
        else:
            out[i] = 0.0
    return kept


@njit
def _accumulate_squares(u, x):
    for i in range(u.shape[0]):
        u[i] += x[i] * x[i]
