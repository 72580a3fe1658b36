"""Slow, obviously correct NumPy references for the numba kernels (compared in the tests).

Each function works on copies and returns the new arrays; none is written for speed.
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------- mixsim.optim optimizers


def sgd_step(x, g, lr):
    return x - lr * g


def momentum_step(x, g, buf, lr, mu):
    buf = mu * buf + g
    return x - lr * buf, buf


def adam_family_step(x, g, m, v, lr, p, b1, b2, eps):
    m = b1 * m + (1 - b1) * g
    v = np.maximum(b2 * v + (1 - b2) * g * g, v)
    return x - lr * m * (v + eps) ** (-p), m, v


def amsgrad_step(x, g, m, v, v_hat, lr, b1, b2, eps):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    v_hat = np.maximum(v_hat, v)
    return x - lr * m / np.sqrt(v_hat + eps), m, v, v_hat


def amsgrad_torch_step(x, g, m, v, v_max, t, lr, b1, b2, eps):
    """``torch.optim.Adam(amsgrad=True)`` step number ``t`` (1-based), as documented by torch."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    v_max = np.maximum(v_max, v)
    bc1 = 1 - b1**t
    bc2 = 1 - b2**t
    denom = np.sqrt(v_max) / np.sqrt(bc2) + eps
    return x - (lr / bc1) * m / denom, m, v, v_max


def adam_plain_step(x, g, m, v, lr, b1, b2, eps):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return x - lr * m / (np.sqrt(v) + eps), m, v


def onebit_momentum_step(x, g, m, v, e, lr, b1, eps):
    a = b1 * m + (1 - b1) * g + e
    c = scaled_sign(a)
    return x - lr * c / (np.sqrt(v) + eps), c, a - c


# ---------------------------------------------------------------- mixsim.optim compressors


def magnitude_order(x):
    """Indices by decreasing magnitude (NaN as infinite), ties by increasing index."""
    mags = np.abs(x).astype(np.float64)
    mags[np.isnan(mags)] = np.inf
    return np.lexsort((np.arange(x.shape[0]), -mags))


def top_k_indices(x, k):
    return np.sort(magnitude_order(x)[:k])


def top_k(x, k):
    out = np.zeros_like(x)
    idx = top_k_indices(x, k)
    out[idx] = x[idx]
    return out


def scaled_sign(x):
    """``||x||_1 sign(x) / d`` with zeros sent as ``+`` (one bit per coordinate)."""
    if x.shape[0] == 0:
        return x.copy()
    sign = np.where(x < 0, -1.0, 1.0)
    return (np.abs(x.astype(np.float64)).sum() / x.shape[0] * sign).astype(x.dtype)


def capped_probabilities(r, c):
    """Closed form of seed 000 eq. 5-6: sort decreasingly, find the smallest ``k`` with
    ``(c - k) r_(k+1) <= sum_{i > k} r_(i)``; the first ``k`` get 1, the rest
    ``r_i (c - k) / sum_{i > k} r_(i)``."""
    r = np.asarray(r, dtype=np.float64)
    d = r.shape[0]
    p = np.zeros(d)
    nonzero = np.count_nonzero(r)
    if c >= nonzero:
        p[r > 0] = 1.0
        return p
    order = np.argsort(-r, kind="stable")
    ranked = r[order]
    tails = np.concatenate([np.cumsum(ranked[::-1])[::-1], [0.0]])
    for k in range(d):
        if (c - k) * ranked[k] <= tails[k]:
            break
    p[order[:k]] = 1.0
    rest = order[k:]
    p[rest] = np.minimum(r[rest] * (c - k) / tails[k], 1.0)
    return p


def adaptive_ratios(g, u, xi, eps):
    return np.abs(g.astype(np.float64)) / (u.astype(np.float64) + eps) ** xi


def sparsify(g, p, uniforms):
    keep = uniforms < p
    out = np.zeros_like(g)
    out[keep] = g[keep] / p[keep]
    return out


# ---------------------------------------------------------------- mixsim.optim memory schemes


def error_feedback_top_k(g, e, k):
    total = g + e
    c = top_k(total, k)
    return c, total - c


# ---------------------------------------------------------------- mixsim mixing time


def step_matrices(trace, coord=0):
    """Dense ``M_t`` for every step of ``trace``, as seen by coordinate ``coord``."""
    size = trace.layout.size
    steps = [np.eye(size) for _ in range(trace.n_steps)]
    for event in trace.events():
        if event.step < 0 or (event.coords is not None and coord not in event.coords):
            continue
        steps[event.step] = event.operator.to_dense() @ steps[event.step]
    return steps


def first_passages(steps, basis, starts, half):
    """For each start ``s``, the first ``L`` with ``||M_{s+L-1} ... M_s basis||_2 <= half``
    (-1 when no window of the run halves)."""
    out = []
    for s in starts:
        Y = basis.copy()
        length = -1
        for e in range(s, len(steps)):
            Y = steps[e] @ Y
            if np.linalg.norm(Y, 2) <= half:
                length = e - s + 1
                break
        out.append(length)
    return np.array(out)


def replay(trace):
    """The run's final state from its initial one: each event's dense operator (on its
    coordinates) and each recorded update, in recorded order."""
    X = np.array(trace.initial_state, dtype=np.float64, copy=True)
    items = [(event.index, event) for event in trace.events()]
    items += [(index, update) for index, update in trace.updates.items()]
    for _, item in sorted(items, key=lambda pair: pair[0]):
        if not hasattr(item, "operator"):  # an update (worker, row, delta)
            _, row, delta = item
            X[row] += delta
            continue
        cols = slice(None) if item.coords is None else item.coords
        X[:, cols] = item.operator.to_dense() @ X[:, cols]
    return X
