"""Fused implementations of hot chains, picked by :func:`mixsim.optim.chain` automatically.

``chain(error_feedback(top_k(k)), amsgrad(lr, b1, b2, eps))`` (top-k on the whole vector)
runs as two passes over memory instead of five: pass one adds the gradient to the error and
collects the top-k candidates (entries above a sampled threshold, packed 64 comparisons to a
word, branch-free); an exact selection among the candidates follows (histogram, then a
partition of one bucket); pass two is the AMSGrad step with the sparse message merged in
(fixed 64-entry spans on a small gradient buffer, the sent entries of the error cleared in
the same pass). The state has the layout of the unfused chain and the numbers are the same
bit for bit, so the two are interchangeable; the fused form is also available explicitly as
:func:`fused_ef_top_k_amsgrad`. Scratch arrays of the selection are kept between steps
(per thread); they never carry information from one step to the next.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from mixsim.optim import _checks, _kernels, bits
from mixsim.optim.compressors import CompressorState, _budget, _count
from mixsim.optim.memory import ErrorFeedbackState
from mixsim.optim.optimizers import (
    AMSGradState,
    _betas,
    _gradient,
    _rate,
    _target,
    _zeros,
)
from mixsim.optim.transform import Spec, Transformation, register_fusion

__all__ = ["fused_ef_top_k_amsgrad", "fuse"]


def fused_ef_top_k_amsgrad(
    k: int | None = None,
    *,
    density: float | None = None,
    lr=1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> Transformation:
    """Error feedback + top-k + AMSGrad (seeds' form) in two passes over memory.

    Equivalent to ``chain(error_feedback(top_k(k, density=density)), amsgrad(lr, b1, b2,
    eps))``: same state layout ``(ErrorFeedbackState, AMSGradState)``, same results. This is
    SPARS-AMS (seed 001 Alg. 2) on one worker.

    Parameters
    ----------
    k : int, optional
        Entries sent per step, ``0 <= k <= d``.
    density : float, optional
        Alternatively the fraction sent, in ``[0, 1]``.
    lr : float or callable
        Step size ``>= 0`` or a schedule.
    b1, b2 : float
        Moment decays in ``[0, 1)``.
    eps : float
        ``>= 0``, added to ``v_hat`` under the root.

    Returns
    -------
    Transformation
        With ``init``, ``update`` and an in-place ``step``; the bits of the message are in
        ``state[0].inner.bits``.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> opt = fused_ef_top_k_amsgrad(1, lr=0.1)
    >>> x = np.zeros(3)
    >>> state = opt.step(np.array([0.1, -2.0, 0.3]), opt.init(x), x)
    >>> np.flatnonzero(x).tolist(), state[0].error.tolist()
    ([1], [0.1, 0.0, 0.3])
    """
    k, density = _budget(k, density)
    lr = _checks.learning_rate(lr)
    b1, b2 = _betas(b1, b2)
    eps = _checks.real(eps, "eps", low=0.0)

    def init(params):
        d = _checks.vector(params, "params").shape[0]
        _count(k, density, d)
        ams = AMSGradState(0, _zeros(params), _zeros(params), _zeros(params))
        return (ErrorFeedbackState(_zeros(params), CompressorState(0)), ams)

    scratch = threading.local()

    def buffers(kk, d, dtype):
        """Scratch arrays of the selection, kept between steps (per thread): fresh ones
        would cost a page fault per page on first touch, several percent of a step."""
        key = (kk, d, dtype)
        if getattr(scratch, "key", None) != key:
            size = _kernels._ef_capacity(kk, d) + _kernels._BLOCK
            scratch.arrays = (
                np.empty(kk, np.int64),
                np.empty(kk, dtype),
                np.empty(size, np.int64),
                np.empty(size, dtype),
                np.empty(size, np.uint16),
            )
            scratch.key = key
        return scratch.arrays

    def raw_step(g, state, x):
        ef, ams = state
        d = x.shape[0]
        kk = _count(k, density, d)
        idx, vals, cand, found, buckets = buffers(kk, d, x.dtype)
        n = _kernels._ef_select(g, ef.error, kk, idx, vals, cand, found, buckets)
        count = ams.count + 1
        t = x.dtype.type
        _kernels._ef_amsgrad_sparse_step(
            x,
            ef.error,
            idx[:n],
            vals[:n],
            ams.m,
            ams.v,
            ams.v_hat,
            t(_rate(lr, count)),
            t(b1),
            t(1.0 - b1),
            t(b2),
            t(1.0 - b2),
            t(eps),
        )
        ef = ef._replace(inner=ef.inner._replace(bits=bits.sparse_bits(n, d)))
        return (ef, ams._replace(count=count))

    def step(grads, state, params):
        reference = state[1].m
        return raw_step(_gradient(grads, reference), state, _target(params, reference))

    def update(updates, state, params=None):
        reference = state[1].m
        out = np.zeros_like(reference)
        return out, raw_step(_gradient(updates, reference), state, out)

    params = {"k": k, "density": density, "lr": lr, "b1": b1, "b2": b2, "eps": eps}
    return Transformation(init, update, step, Spec("fused-ef-top-k-amsgrad", params))


def fuse(transformations: Sequence[Transformation]) -> Transformation | None:
    """The fused equivalent of a chain of ``transformations``, or None if there is none.

    Parameters
    ----------
    transformations : sequence of Transformation
        The members of a chain.

    Returns
    -------
    Transformation or None
        :func:`fused_ef_top_k_amsgrad` for ``[error_feedback(top_k(...)), amsgrad(...)]``
        with whole-vector top-k; None otherwise.

    Examples
    --------
    >>> from mixsim.optim import error_feedback, top_k, amsgrad, amsgrad_torch
    >>> fuse([error_feedback(top_k(3)), amsgrad(0.1)]).spec.name
    'fused-ef-top-k-amsgrad'
    >>> fuse([error_feedback(top_k(3)), amsgrad_torch(0.1)]) is None
    True
    """
    specs = [t.spec for t in transformations]
    if len(specs) != 2 or any(s is None for s in specs):
        return None
    memory, optimizer = specs
    if memory.name != "error-feedback" or optimizer.name != "amsgrad":
        return None
    inner = memory.params["compressor"].spec
    if inner is None or inner.name != "top-k" or inner.params["offsets"] is not None:
        return None
    return fused_ef_top_k_amsgrad(
        inner.params["k"], density=inner.params["density"], **optimizer.params
    )


register_fusion(fuse)
