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

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.cpython.unsafe.numbers import trailing_zeros as _trailing_zeros
from numba.extending import intrinsic

from mixsim import _numba

# mixsim's standard options plus numpy's error model: a division by zero gives inf/NaN
# instead of raising (kernels never raise), and the loops vectorise (the Python error
# model's zero check blocks SIMD: the AMSGrad step runs 3-4x slower with it).
njit = _numba.njit(error_model="numpy")

# Sample size of the threshold estimate in the top-k selection, and the size below which
# the selection goes straight to the exact O(d) path (sampling does not pay there).
_SAMPLE = 16384
_SMALL = 8 * _SAMPLE
# Rounds of Algorithm 2 (seed 000) before the probabilities are finished by sorting.
_CAPPED_ROUNDS = 32
# Error-feedback top-k (the fused step): sample size and margin of the threshold (standard
# deviations of the sampled count), block of the candidate pass, histogram buckets.
_EF_SAMPLE = 16384
_EF_SIGMAS = 3.0
_BLOCK = 1024
_BUCKETS = 4096
_AHEAD = 16
# Length of the fixed spans of the sparse AMSGrad pass.
_SPAN = 64


@intrinsic
def _prefetch_write(typingctx, arr, i):
    """Hint the CPU to fetch ``arr[i]`` for writing (``llvm.prefetch``); no effect on values."""

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, array_type, array, [args[1]])
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, i), codegen


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
def _ef_amsgrad_sparse_step(x, e, idx, vals, m, v, v_hat, lr, b1, c1, b2, c2, eps):
    """AMSGrad with the gradient given as increasing indices ``idx`` and values ``vals``
    (zero elsewhere), and ``e[idx] = 0`` (error feedback gives away what it sends): one
    streaming pass, no dense gradient materialised.

    Spans of ``_SPAN`` entries run the dense step on a small gradient buffer, zero except
    at the span's given indices: the same arithmetic as :func:`_amsgrad_step` on the
    scattered gradient (bit for bit, signed zeros included), in fixed-length vectorised
    loops (unsigned indices: a signed one makes numba emit the negative-index wrap-around,
    which stops vectorisation). ``e`` is prefetched a few indices ahead of its write, which
    would otherwise miss the cache and hold up the streaming stores.
    """
    d = x.shape[0]
    n = idx.shape[0]
    buf = np.zeros(_SPAN, x.dtype)
    j = 0
    full = d - d % _SPAN
    nxt = idx[0] if n > 0 else d
    for start in range(0, full, _SPAN):
        stop = start + _SPAN
        if nxt >= stop:
            for q in range(_SPAN):
                i = np.uint64(start + q)
                gi = buf[q]
                mi = b1 * m[i] + c1 * gi
                vi = b2 * v[i] + c2 * gi * gi
                hi = np.maximum(v_hat[i], vi)
                m[i] = mi
                v[i] = vi
                v_hat[i] = hi
                x[i] -= lr * mi / np.sqrt(hi + eps)
        else:
            j0 = j
            while j < n and idx[j] < stop:
                i = idx[j]
                _prefetch_write(e, idx[min(j + _AHEAD, n - 1)])
                e[i] = 0.0
                buf[i - start] = vals[j]
                j += 1
            nxt = idx[j] if j < n else d
            for q in range(_SPAN):
                i = np.uint64(start + q)
                gi = buf[q]
                mi = b1 * m[i] + c1 * gi
                vi = b2 * v[i] + c2 * gi * gi
                hi = np.maximum(v_hat[i], vi)
                m[i] = mi
                v[i] = vi
                v_hat[i] = hi
                x[i] -= lr * mi / np.sqrt(hi + eps)
            for q in range(j0, j):
                buf[idx[q] - start] = 0.0
    for i in range(full, d):
        gi = buf[0]
        if j < n and idx[j] == i:
            e[i] = 0.0
            gi = vals[j]
            j += 1
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        hi = np.maximum(v_hat[i], vi)
        m[i] = mi
        v[i] = vi
        v_hat[i] = hi
        x[i] -= lr * mi / np.sqrt(hi + eps)


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
    return sample[s - rank]


@njit
def _candidate_capacity(k, d, widen):
    expected = k * widen
    return min(d, int(2.0 * (expected + 4.0 * math.sqrt(expected * _SAMPLE) + 64.0)) + 1024)


@njit
def _merge_ties(above, n_above, tied, n_tied, idx):
    """The increasing merge of ``above[:n_above]`` and ``tied[:n_tied]`` into ``idx``."""
    a = 0
    b = 0
    for out in range(n_above + n_tied):
        if b == n_tied or (a < n_above and above[a] < tied[b]):
            idx[out] = above[a]
            a += 1
        else:
            idx[out] = tied[b]
            b += 1
    return n_above + n_tied


@njit
def _strided_sample(x, d):
    """Sorted magnitudes of ``x`` at ``_SAMPLE`` evenly spread points."""
    stride = d // _SAMPLE
    sample = np.empty(_SAMPLE, np.float64)
    for j in range(_SAMPLE):
        sample[j] = _magnitude(x[j * stride])
    sample.sort()
    return sample


@njit
def _top_k_select(x, k, idx):
    """Indices (increasing) of the ``k`` largest ``|x|`` into ``idx[:k]``; returns ``k``.

    Exact, not a full sort: a threshold estimated from a strided sample, one pass that
    collects the entries at or above it, an exact selection among those candidates. If the
    estimate misses (too few or too many candidates) the threshold is widened, and after
    that the exact O(d) selection on all entries is used. The pass keeps the entries tied
    at the threshold apart (the first ``k`` of them): when fewer than ``k`` lie strictly
    above it, the threshold is the k-th magnitude and the answer is those entries and the
    first ties, however many entries are tied (integer-valued or constant input).
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
    sample = _strided_sample(x, d)
    widen = 1.0
    for _ in range(2):
        t = _sample_threshold(sample, k, d, widen)
        if t < 0.0:
            break
        cap = _candidate_capacity(k, d, widen)
        cand = np.empty(cap, np.int64)
        found = np.empty(cap, x.dtype)
        tied = np.empty(k, np.int64)
        above = 0
        at = 0
        for i in range(d):
            a = x[i]
            if not (abs(a) < t):
                if _magnitude(a) > t:
                    if above < cap:
                        cand[above] = i
                        found[above] = a
                    above += 1
                else:
                    if at < k:
                        tied[at] = i
                    at += 1
        if above + at < k:
            widen *= 4.0
            continue
        if above < k:
            # t is the k-th magnitude: every entry above it, then the first ties.
            return _merge_ties(cand, above, tied, k - above, idx)
        if above <= cap:
            return _gather_top(found, cand, above, k, idx)
        break
    return _top_k_exact(x, k, idx)


@njit
def _typed(like, value):
    """``value`` converted to the dtype of the array ``like`` (float32 stays float32)."""
    box = np.empty(1, like.dtype)
    box[0] = value
    return box[0]


@njit
def _ef_threshold(g, e, k, d):
    """Threshold for the error-feedback top-k: about ``_EF_SIGMAS`` standard deviations
    below the expected k-th magnitude of ``e + g``, estimated from a strided sample of
    ``_EF_SAMPLE`` entries (``np.partition``, not a sort). ``-1.0`` if the sample cannot
    separate."""
    stride = d // _EF_SAMPLE
    sample = np.empty(_EF_SAMPLE, np.float64)
    for j in range(_EF_SAMPLE):
        i = j * stride
        sample[j] = _magnitude(e[i] + g[i])
    expected = k * _EF_SAMPLE / d
    rank = int(math.ceil(expected + _EF_SIGMAS * math.sqrt(expected) + 2.0))
    if rank >= _EF_SAMPLE:
        return -1.0
    t = np.partition(sample, _EF_SAMPLE - rank)[_EF_SAMPLE - rank]
    if not (t > 0.0) or t == np.inf:
        return -1.0
    return t


@njit
def _ef_collect(g, e, t, cap, cand, found):
    """``e += g``; collect into ``cand``/``found`` the indices and values with ``|e| >= t``
    (or NaN), in increasing index order. ``t`` has ``e``'s dtype.

    Branch-free: a vectorised loop adds and packs the comparisons of 64 entries into the
    bits of one word (``_BLOCK`` entries at a time), then only the set bits are visited
    (count trailing zeros, clear the lowest bit). ``cand`` and ``found`` must hold
    ``cap + _BLOCK`` entries. Returns the number of candidates; if it exceeds ``cap`` not
    all of them are stored (storing stops at the first block that starts with ``cap``).
    """
    d = e.shape[0]
    words = _BLOCK // 64
    masks = np.zeros(words, np.uint64)
    one = np.uint64(1)
    top = one << np.uint64(63)
    n = 0
    full = d - d % _BLOCK
    for start in range(0, full, _BLOCK):
        for w in range(words):
            bits = np.uint64(0)
            for j in range(64):
                i = np.uint64(start + 64 * w + j)
                a = e[i] + g[i]
                e[i] = a
                bits |= np.uint64(not (abs(a) < t)) << np.uint64(j)
            masks[w] = bits
        if n < cap:
            for w in range(words):
                bits = masks[w]
                base = start + 64 * w
                # The first two set bits without a branch (a word has at most two in all
                # but a few per cent of cases at 1% density): a branch per word would be
                # mispredicted about half the time. An empty word stores a harmless
                # candidate at n without counting it (bit 63 keeps the index in range).
                for _ in range(2):
                    i = base + np.int64(_trailing_zeros(bits | top))
                    cand[n] = i
                    found[n] = e[i]
                    n += np.int64(bits != 0)
                    bits &= bits - one
                while bits != 0:
                    i = base + np.int64(_trailing_zeros(bits))
                    cand[n] = i
                    found[n] = e[i]
                    n += 1
                    bits &= bits - one
        else:
            for w in range(words):
                bits = masks[w]
                while bits != 0:
                    n += 1
                    bits &= bits - one
    for i in range(full, d):
        a = e[i] + g[i]
        e[i] = a
        if not (abs(a) < t):
            if n <= cap:
                cand[n] = i
                found[n] = a
            n += 1
    return n


@njit
def _gather_above(found, cand, n, k, t, idx, vals, buckets):
    """Like :func:`_gather_top` for candidates whose magnitudes are all ``>= t > 0``; the
    selected values go to ``vals``.

    The k-th magnitude is found with a histogram on ``[t, 2t)`` (``_BUCKETS`` buckets plus
    one for everything above) and an exact selection inside the one bucket that holds it.
    The bucket of a magnitude is a monotone function of it, so the answer is that of a full
    selection; the passes over the candidates are vectorised or branch-free. ``buckets``
    is uint16 scratch of at least ``n`` entries.
    """
    base = float(t)
    scale = _BUCKETS / base
    top = float(_BUCKETS)
    for j in range(n):
        a = abs(float(found[j]))
        q = (a - base) * scale
        q = q if q < top else top  # NaN and inf land in the top bucket
        q = q if q > 0.0 else 0.0
        buckets[j] = np.uint16(q)
    counts = np.zeros(_BUCKETS + 1, np.int64)
    for j in range(n):
        counts[buckets[j]] += 1
    above = 0
    b = _BUCKETS
    while above + counts[b] < k:
        above += counts[b]
        b -= 1
    inside = np.empty(counts[b], np.float64)
    q = 0
    for j in range(n):
        if buckets[j] == b:
            inside[q] = _magnitude(found[j])
            q += 1
    r = q - (k - above)
    kth = np.partition(inside, r)[r]
    bigger = above
    for j in range(q):
        if inside[j] > kth:
            bigger += 1
    ties = k - bigger
    bb = np.uint16(b)
    out = 0
    for j in range(n):
        if out >= k:
            break
        bj = buckets[j]
        take = bj > bb
        if bj == bb:
            mj = _magnitude(found[j])
            take = mj > kth
            if mj == kth and ties > 0:
                take = True
                ties -= 1
        idx[out] = cand[j]
        vals[out] = found[j]
        out += np.int64(take)
    return out


@njit
def _ef_capacity(k, d):
    """Candidates the error-feedback top-k stores at most (its buffers hold ``+ _BLOCK``)."""
    return min(d, 2 * k + 4 * _BLOCK)


@njit
def _ef_select(g, e, k, idx, vals, cand, found, buckets):
    """``e += g`` and the top-k of the new ``e``: indices (increasing) into ``idx[:k]``,
    values into ``vals[:k]``; ``e`` is left unchanged otherwise (the caller clears the
    selected entries). Returns ``k``.

    ``cand`` (int64), ``found`` (``e``'s dtype) and ``buckets`` (uint16) are scratch of
    ``_ef_capacity(k, d) + _BLOCK`` entries, passed in so that a caller can reuse them
    (fresh pages cost a page fault each on first touch).
    """
    d = e.shape[0]
    n = -1
    if 0 < k < d and d >= _SMALL:
        t = _ef_threshold(g, e, k, d)
        if t > 0.0:
            tt = _typed(e, t)
            cap = _ef_capacity(k, d)
            count = _ef_collect(g, e, tt, cap, cand, found)
            if k <= count <= cap:
                return _gather_above(found, cand, count, k, tt, idx, vals, buckets)
            n = _top_k_select(e, k, idx)
    if n < 0:
        for i in range(d):
            e[i] += g[i]
        n = _top_k_select(e, k, idx)
    for j in range(n):
        vals[j] = e[idx[j]]
    return n


@njit
def _ef_top_k(g, e, k, idx, vals):
    """Error feedback with top-k: ``e += g``, select top-k of ``e``, move them out.

    On return ``vals[:k] = (g + e_old)[idx[:k]]`` and ``e`` holds the remainder (the selected
    entries set to zero). Returns ``k``.
    """
    size = _ef_capacity(k, e.shape[0]) + _BLOCK
    cand = np.empty(size, np.int64)
    found = np.empty(size, e.dtype)
    buckets = np.empty(size, np.uint16)
    n = _ef_select(g, e, k, idx, vals, cand, found, buckets)
    for j in range(n):
        e[idx[j]] = 0.0
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
