"""Memory schemes around a compressor: error feedback, Markov compression (EF21), CD-Adam,
and 1-bit Adam as a baseline.

Error feedback (seed 001 Alg. 1, lines 7-8)
    ``c = C(g + e)``, ``e = g + e - c``; the output (and message) is ``c``.
Markov compression / EF21 (seed 003 Alg. 1, lines 5-6)
    ``c = C(g - g_hat)``, ``g_hat = g_hat + c``; the message is ``c``, the receiver keeps its
    own copy of ``g_hat`` with :func:`accumulate`. ``markov(C)`` outputs ``g_hat`` (sender and
    receiver in one); ``markov(C, output="message")`` outputs ``c`` (the sender only).
CD-Adam (seed 003 Alg. 1)
    Markov compression worker -> server and server -> worker, AMSGrad on the workers:
    :func:`cd_adam` returns the three parties as transformations; :func:`two_way` is the
    same communication around any optimizer (with SGD and top-k: the two-way EF21 of
    seed 003 §7.2).
1-bit Adam (Tang et al. 2021, as a baseline of seed 003)
    Adam without bias correction during ``warmup`` steps, then the variance is frozen and the
    momentum is sent as error-compensated scaled sign: :func:`onebit_adam`.

Non-finite values: passed on, never kept. One rule for every scheme and every compressor
path (fused or not, whole vector or per layer): a non-finite value is passed on in the
output of the step where it is sent (so the run applying it stops at that step), and no
state keeps a value that a non-finite message would leave. Where the message is
non-finite, the error-feedback memory is 0 (the entry was sent; ``inf - inf`` would store
NaN), the Markov estimates of sender and receiver keep their value, and 1-bit Adam's
momentum, variance and error keep theirs. A non-finite entry that is not sent yet waits
in the error-feedback memory until it is (top-k sends it first).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from mixsim.errors import ConfigError
from mixsim.optim import _checks, _kernels, bits
from mixsim.optim.compressors import _count
from mixsim.optim.optimizers import _betas, _gradient, _rate, _target, _zeros, amsgrad
from mixsim.optim.transform import Spec, Transformation, chain

__all__ = [
    "ErrorFeedbackState",
    "MarkovState",
    "AccumulateState",
    "CDAdamServerState",
    "CDAdam",
    "OneBitAdamState",
    "error_feedback",
    "markov",
    "accumulate",
    "cd_adam",
    "two_way",
    "onebit_adam",
    "onebit_adam_parties",
    "OneBitAdam",
    "OneBitMessageState",
    "OneBitModelState",
    "make_memory",
]


class ErrorFeedbackState(NamedTuple):
    """State of :func:`error_feedback`: the error ``e`` and the compressor's state."""

    error: np.ndarray
    inner: Any


class MarkovState(NamedTuple):
    """State of :func:`markov`: the sender's estimate ``g_hat`` and the compressor's state."""

    estimate: np.ndarray
    inner: Any


class AccumulateState(NamedTuple):
    """State of :func:`accumulate`: the receiver's copy of the Markov estimate."""

    estimate: np.ndarray


class CDAdamServerState(NamedTuple):
    """State of the CD-Adam server: ``aggregate`` is ``g_hat`` (the mean of the workers'
    estimates), ``estimate`` is ``g_tilde`` (what the workers hold), ``inner`` the state of the
    downlink compressor."""

    aggregate: np.ndarray
    estimate: np.ndarray
    inner: Any


class OneBitMessageState(NamedTuple):
    """State of a sender of :func:`onebit_adam_parties`: count, compression error, bits."""

    count: int
    error: np.ndarray
    bits: int


class OneBitModelState(NamedTuple):
    """State of the model party of :func:`onebit_adam_parties`: count and moments."""

    count: int
    m: np.ndarray
    v: np.ndarray


class OneBitAdam(NamedTuple):
    """The three parties of 1-bit Adam with one compressor per worker (Tang et al. 2021).

    Attributes
    ----------
    worker : Transformation
        ``update(g_i, state, m)`` with ``m`` the synchronized momentum: the gradient during
        warm-up, then the error-compensated scaled sign of ``b1 m + (1 - b1) g_i``.
    server : Transformation
        ``update(mean of the workers' messages, state)``: the mean during warm-up, then its
        error-compensated scaled sign.
    model : Transformation
        ``step(server message, state, x)`` on every worker: Adam during warm-up, then
        ``m = message`` and ``x -= lr m / (sqrt(v) + eps)`` with ``v`` frozen.
    """

    worker: Transformation
    server: Transformation
    model: Transformation


class OneBitAdamState(NamedTuple):
    """State of :func:`onebit_adam`: count, moments, compression error, message bits."""

    count: int
    m: np.ndarray
    v: np.ndarray
    error: np.ndarray
    bits: int


def _keep_finite(state: np.ndarray, new: np.ndarray, message: np.ndarray) -> None:
    """``state[:] = new`` except where ``message`` is non-finite: there the state keeps its
    value (the rule of the module docstring: passed on, never kept)."""
    np.copyto(state, new, where=np.isfinite(message))


def _check_compressor(compressor) -> Transformation:
    if not isinstance(compressor, Transformation):
        raise TypeError(f"expected a compressor Transformation, got {type(compressor).__name__}")
    return compressor


def _is_plain_top_k(compressor: Transformation) -> bool:
    spec = compressor.spec
    return spec is not None and spec.name == "top-k" and spec.params["offsets"] is None


def error_feedback(compressor: Transformation) -> Transformation:
    """Error feedback: compress the gradient plus the remembered error, remember the rest.

    ``c = C(g + e)``, ``e = g + e - c`` (seed 001 Alg. 1), so ``c + e_new == g + e_old``.
    With whole-vector top-k the update runs as one fused kernel (the sum, the selection and
    the new error in one pass).

    Parameters
    ----------
    compressor : Transformation
        Any compressor of :mod:`mixsim.optim.compressors`.

    Returns
    -------
    Transformation
        Outputs ``c``; state :class:`ErrorFeedbackState` (``bits`` in ``state.inner``).

    Examples
    --------
    >>> import numpy as np
    >>> from mixsim.optim import top_k
    >>> ef = error_feedback(top_k(1))
    >>> state = ef.init(np.zeros(3))
    >>> c, state = ef.update(np.array([1.0, 2.0, 0.5]), state)
    >>> c.tolist(), state.error.tolist()
    ([0.0, 2.0, 0.0], [1.0, 0.0, 0.5])
    """
    compressor = _check_compressor(compressor)
    fused = _is_plain_top_k(compressor)

    def init(params):
        return ErrorFeedbackState(_zeros(params), compressor.init(params))

    def update(updates, state, params=None):
        g = _gradient(updates, state.error)
        if fused:
            d = g.shape[0]
            k = _count(compressor.spec.params["k"], compressor.spec.params["density"], d)
            idx = np.empty(k, np.int64)
            vals = np.empty(k, g.dtype)
            n = _kernels._ef_top_k(g, state.error, k, idx, vals)
            out = np.zeros_like(g)
            out[idx[:n]] = vals[:n]
            inner = state.inner._replace(bits=bits.sparse_bits(n, d))
            return out, state._replace(inner=inner)
        total = g + state.error
        out, inner = compressor.update(total, state.inner, params)
        # A non-finite value that was sent is not also remembered (inf - inf is NaN), as
        # in the fused top-k kernel.
        with np.errstate(invalid="ignore"):
            np.subtract(total, out, out=state.error)
        state.error[~np.isfinite(out)] = 0
        return out, state._replace(inner=inner)

    return Transformation(init, update, spec=Spec("error-feedback", {"compressor": compressor}))


def markov(compressor: Transformation, *, output: str = "estimate") -> Transformation:
    """Markov compression (EF21): send ``c = C(g - g_hat)``, then ``g_hat += c``.

    Parameters
    ----------
    compressor : Transformation
        Any compressor.
    output : {"estimate", "message"}
        ``"estimate"`` returns the new ``g_hat`` (what a receiver reconstructs; use it in a
        chain before an optimizer); ``"message"`` returns ``c`` (to send, e.g. to
        :func:`accumulate` or to a server that averages messages).

    Returns
    -------
    Transformation
        State :class:`MarkovState` (``bits`` in ``state.inner``).

    Raises
    ------
    ConfigError
        If ``output`` is not one of the two names.

    Examples
    --------
    >>> import numpy as np
    >>> from mixsim.optim import top_k
    >>> mc = markov(top_k(1))
    >>> state = mc.init(np.zeros(2))
    >>> est, state = mc.update(np.array([3.0, 1.0]), state)
    >>> est, state = mc.update(np.array([3.0, 1.0]), state)
    >>> est.tolist()
    [3.0, 1.0]
    """
    compressor = _check_compressor(compressor)
    if output not in ("estimate", "message"):
        raise ConfigError(f"output must be 'estimate' or 'message', got {output!r}", key="output")

    def init(params):
        return MarkovState(_zeros(params), compressor.init(params))

    def update(updates, state, params=None):
        g = _gradient(updates, state.estimate)
        message, inner = compressor.update(g - state.estimate, state.inner, params)
        estimate = state.estimate + message
        _keep_finite(state.estimate, estimate, message)
        return (estimate if output == "estimate" else message), state._replace(inner=inner)

    spec = Spec("markov", {"compressor": compressor, "output": output})
    return Transformation(init, update, spec=spec)


def accumulate() -> Transformation:
    """The receiving end of Markov compression: ``g_hat += c``, output ``g_hat``.

    Returns
    -------
    Transformation
        State :class:`AccumulateState`.

    Examples
    --------
    >>> import numpy as np
    >>> acc = accumulate()
    >>> state = acc.init(np.zeros(2))
    >>> _, state = acc.update(np.array([1.0, 0.0]), state)
    >>> acc.update(np.array([0.0, 2.0]), state)[0].tolist()
    [1.0, 2.0]
    """

    def init(params):
        return AccumulateState(_zeros(params))

    def update(updates, state, params=None):
        message = _gradient(updates, state.estimate)
        estimate = state.estimate + message
        _keep_finite(state.estimate, estimate, message)
        return estimate, state

    return Transformation(init, update, spec=Spec("accumulate", {}))


class CDAdam(NamedTuple):
    """The three parties of CD-Adam (seed 003 Alg. 1), each a Transformation.

    Attributes
    ----------
    worker : Transformation
        On each worker: ``g_i -> c_i = C(g_i - g_hat_i)``, ``g_hat_i += c_i`` (lines 4-5).
    server : Transformation
        On the server, fed the mean of the workers' ``c_i``: ``g_hat += mean``,
        ``c = C(g_hat - g_tilde)``, ``g_tilde += c``; outputs ``c`` (lines 7-9).
    model : Transformation
        On each worker, fed the server's ``c``: ``g_tilde += c`` then AMSGrad (seeds' form)
        on ``g_tilde`` (lines 12-15); it has a ``step``.
    """

    worker: Transformation
    server: Transformation
    model: Transformation


def cd_adam(
    compressor: Transformation,
    lr=1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    server_compressor: Transformation | None = None,
) -> CDAdam:
    """CD-Adam: Markov compression both ways and AMSGrad on the workers (seed 003 Alg. 1).

    One synchronous round with ``n`` workers::

        c_i, ws[i] = cd.worker.update(g_i, ws[i])          # uplink, bits in ws[i]
        c, ss = cd.server.update(mean(c_i), ss)            # downlink, bits in ss
        ms = cd.model.step(c, ms, x)                       # every worker (same x)

    Parameters
    ----------
    compressor : Transformation
        Uplink compressor (scaled sign in the paper).
    lr : float or callable
        AMSGrad step size ``>= 0`` or a schedule.
    b1, b2 : float
        AMSGrad moment decays in ``[0, 1)``.
    eps : float
        ``nu`` of the paper, added to ``v_hat`` under the root.
    server_compressor : Transformation, optional
        Downlink compressor; by default the uplink one (a random compressor then draws the
        same stream as a worker initialised with the same seed: give it its own seed).

    Returns
    -------
    CDAdam
        ``worker``, ``server`` and ``model`` transformations.

    Examples
    --------
    >>> import numpy as np
    >>> from mixsim.optim import scaled_sign
    >>> cd = cd_adam(scaled_sign(), lr=0.1)
    >>> x = np.zeros(3)
    >>> ws, ss, ms = cd.worker.init(x), cd.server.init(x), cd.model.init(x)
    >>> c1, ws = cd.worker.update(np.array([1.0, -2.0, 3.0]), ws)
    >>> c, ss = cd.server.update(c1, ss)
    >>> ms = cd.model.step(c, ms, x)
    >>> (x < 0).tolist(), (x[1] > 0).item()
    ([True, False, True], True)
    """
    uplink = _check_compressor(compressor)
    downlink = uplink if server_compressor is None else _check_compressor(server_compressor)
    return two_way(uplink, amsgrad(lr, b1, b2, eps), server_compressor=downlink)


def two_way(
    compressor: Transformation,
    method: Transformation,
    *,
    server_compressor: Transformation | None = None,
) -> CDAdam:
    """Markov compression both ways with any optimizer on the workers.

    The communication of CD-Adam (seed 003 Alg. 1) around any ``method``: workers send
    ``c_i = C(g_i - g_hat_i)``; the server adds their mean to ``g_hat`` and sends
    ``c = C(g_hat - g_tilde)``; every worker adds ``c`` to its ``g_tilde`` and runs
    ``method`` on ``g_tilde``. With top-k and SGD this is the two-way EF21 of seed 003 §7.2
    (EF21 extended to server-to-worker compression); with AMSGrad it is :func:`cd_adam`.

    Parameters
    ----------
    compressor : Transformation
        Uplink compressor.
    method : Transformation
        The optimizer the workers run on ``g_tilde`` (it needs a ``step``).
    server_compressor : Transformation, optional
        Downlink compressor (default: the uplink one; give a random compressor its own
        seed).

    Returns
    -------
    CDAdam
        ``worker``, ``server`` and ``model`` transformations, used as in :func:`cd_adam`.

    Examples
    --------
    >>> import numpy as np
    >>> from mixsim.optim import sgd, top_k
    >>> ef21 = two_way(top_k(1), sgd(0.5))
    >>> x = np.zeros(3)
    >>> ws, ss, ms = ef21.worker.init(x), ef21.server.init(x), ef21.model.init(x)
    >>> c1, ws = ef21.worker.update(np.array([1.0, -2.0, 3.0]), ws)
    >>> c, ss = ef21.server.update(c1, ss)
    >>> ms = ef21.model.step(c, ms, x)
    >>> x.tolist()
    [0.0, 0.0, -1.5]
    """
    uplink = _check_compressor(compressor)
    downlink = uplink if server_compressor is None else _check_compressor(server_compressor)

    def server_init(params):
        return CDAdamServerState(_zeros(params), _zeros(params), downlink.init(params))

    def server_update(updates, state, params=None):
        np.add(state.aggregate, _gradient(updates, state.aggregate), out=state.aggregate)
        message, inner = downlink.update(state.aggregate - state.estimate, state.inner, params)
        np.add(state.estimate, message, out=state.estimate)
        return message, state._replace(inner=inner)

    server = Transformation(server_init, server_update, spec=Spec("two-way-server", {}))
    model = chain(accumulate(), method)
    return CDAdam(markov(uplink, output="message"), server, model)


def _onebit_params(lr, b1, b2, eps, warmup):
    """1-bit Adam's hyper-parameters, checked."""
    b1, b2 = _betas(b1, b2)
    return (_checks.learning_rate(lr), b1, b2, _checks.real(eps, "eps", low=0.0),
            _checks.integer(warmup, "warmup", low=0))


def onebit_adam_parties(
    lr=1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, warmup: int = 100
) -> OneBitAdam:
    """1-bit Adam as Tang et al. (2021) run it: each worker compresses its own momentum.

    One synchronous round with ``n`` workers (``ms.m`` is the synchronized momentum)::

        c_i, ws[i] = ob.worker.update(g_i, ws[i], ms.m)     # bits in ws[i]
        c, ss = ob.server.update(mean(c_i), ss)             # bits in ss
        ms = ob.model.step(c, ms, x)                        # every worker (same x)

    For the first ``warmup`` rounds the messages are the gradients and their mean (``32 d``
    bits each way) and the model runs Adam without bias correction. Afterwards the variance
    is frozen; worker ``i`` sends the error-compensated scaled sign of its local momentum
    ``b1 m + (1 - b1) g_i``, the server the error-compensated scaled sign of the mean
    (``32 + d`` bits each way), and every worker sets ``m`` to the server's message and
    steps ``x -= lr m / (sqrt(v) + eps)``. :func:`onebit_adam` is the same method run
    once on the mean gradient (one compressor, at the server).

    Parameters
    ----------
    lr : float or callable
        Step size ``>= 0`` or a schedule (of the round).
    b1, b2 : float
        Moment decays in ``[0, 1)``.
    eps : float
        ``>= 0``, added after the root.
    warmup : int
        Number of uncompressed Adam rounds, ``>= 0``.

    Returns
    -------
    OneBitAdam
        ``worker``, ``server`` and ``model`` transformations.

    Examples
    --------
    >>> import numpy as np
    >>> ob = onebit_adam_parties(0.1, warmup=1)
    >>> x = np.zeros(4)
    >>> ws, ss, ms = ob.worker.init(x), ob.server.init(x), ob.model.init(x)
    >>> for g in (np.ones(4), np.array([1.0, -1.0, 2.0, 0.0])):
    ...     c1, ws = ob.worker.update(g, ws, ms.m)
    ...     c, ss = ob.server.update(c1, ss)
    ...     ms = ob.model.step(c, ms, x)
    >>> ws.bits, ss.bits
    (36, 36)
    """
    lr, b1, b2, eps, warmup = _onebit_params(lr, b1, b2, eps, warmup)

    def sender_init(params):
        return OneBitMessageState(0, _zeros(params), 0)

    def send(a, state):
        """``a`` in warm-up, else the error-compensated scaled sign of ``a``."""
        count = state.count + 1
        d = a.shape[0]
        if count <= warmup:
            return a.copy(), state._replace(count=count, bits=bits.dense_bits(d))
        a = a + state.error
        c = (np.abs(a).sum() / d * np.where(a >= 0, 1.0, -1.0)).astype(a.dtype)
        error = state.error.copy()
        _keep_finite(error, a - c, c)
        return c, OneBitMessageState(count, error, bits.sign_bits(d))

    def worker_update(updates, state, params=None):
        g = _gradient(updates, state.error)
        if state.count + 1 <= warmup:
            return send(g, state)
        m = _gradient(params, state.error)
        return send(b1 * m + (1.0 - b1) * g, state)

    def server_update(updates, state, params=None):
        return send(_gradient(updates, state.error), state)

    def model_init(params):
        return OneBitModelState(0, _zeros(params), _zeros(params))

    def model_step(grads, state, params):
        x = _target(params, state.m)
        c = _gradient(grads, state.m)
        count = state.count + 1
        t = x.dtype.type
        rate = t(_rate(lr, count))
        if count <= warmup:
            m = t(b1) * state.m + t(1.0 - b1) * c
            v = t(b2) * state.v + t(1.0 - b2) * c * c
        else:
            m, v = c, state.v
        x -= rate * m / (np.sqrt(v) + t(eps))
        _keep_finite(state.m, m, c)
        _keep_finite(state.v, v, c)
        return state._replace(count=count)

    def model_update(updates, state, params=None):
        out = np.zeros_like(state.m)
        return out, model_step(updates, state, out)

    params = {"lr": lr, "b1": b1, "b2": b2, "eps": eps, "warmup": warmup}
    return OneBitAdam(
        Transformation(sender_init, worker_update, spec=Spec("onebit-adam-worker", params)),
        Transformation(sender_init, server_update, spec=Spec("onebit-adam-server", params)),
        Transformation(model_init, model_update, model_step, Spec("onebit-adam-model", params)),
    )


def onebit_adam(
    lr=1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, warmup: int = 100
) -> Transformation:
    """1-bit Adam (Tang et al. 2021) as a baseline: full Adam, then 1-bit momentum.

    For the first ``warmup`` steps: Adam without bias correction,
    ``x -= lr m / (sqrt(v) + eps)``, message = the gradient (``32 d`` bits). Afterwards ``v``
    is frozen and the momentum is sent error-compensated in scaled sign:
    ``a = b1 m + (1 - b1) g + e``, ``c = ||a||_1 sign(a) / d``, ``e = a - c``, ``m = c``,
    ``x -= lr c / (sqrt(v) + eps)`` (``32 + d`` bits).

    Parameters
    ----------
    lr : float or callable
        Step size ``>= 0`` or a schedule.
    b1, b2 : float
        Moment decays in ``[0, 1)``.
    eps : float
        ``>= 0``, added after the root.
    warmup : int
        Number of uncompressed Adam steps, ``>= 0``.

    Returns
    -------
    Transformation
        State :class:`OneBitAdamState`; it has a ``step``.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> opt = onebit_adam(0.1, warmup=1)
    >>> x = np.zeros(4)
    >>> state = opt.init(x)
    >>> state = opt.step(np.ones(4), state, x)
    >>> state.bits
    128
    >>> state = opt.step(np.ones(4), state, x)
    >>> state.bits
    36
    """
    lr, b1, b2, eps, warmup = _onebit_params(lr, b1, b2, eps, warmup)

    def init(params):
        return OneBitAdamState(0, _zeros(params), _zeros(params), _zeros(params), 0)

    def raw_step(g, state, x):
        count = state.count + 1
        t = x.dtype.type
        rate = t(_rate(lr, count))
        d = x.shape[0]
        # A non-finite gradient reaches x; the moments and the error keep their values.
        saved = None if np.isfinite(g).all() else (state.m.copy(), state.v.copy(),
                                                   state.error.copy())
        _onebit_kernel_step(g, state, x, count, rate, t)
        if saved is not None:
            for kept, old in zip((state.m, state.v, state.error), saved, strict=True):
                np.copyto(kept, old, where=~np.isfinite(kept))
        cost = bits.dense_bits(d) if count <= warmup else bits.sign_bits(d)
        return state._replace(count=count, bits=cost)

    def _onebit_kernel_step(g, state, x, count, rate, t):
        if count <= warmup:
            _kernels._adam_plain_step(
                x, g, state.m, state.v, rate, t(b1), t(1.0 - b1), t(b2), t(1.0 - b2), t(eps)
            )
        else:
            _kernels._onebit_momentum_step(
                x, g, state.m, state.v, state.error, rate, t(b1), t(1.0 - b1), t(eps)
            )

    def step(grads, state, params):
        return raw_step(_gradient(grads, state.m), state, _target(params, state.m))

    def update(updates, state, params=None):
        out = np.zeros_like(state.m)
        return out, raw_step(_gradient(updates, state.m), state, out)

    params = {"lr": lr, "b1": b1, "b2": b2, "eps": eps, "warmup": warmup}
    return Transformation(init, update, step, Spec("onebit-adam", params))


_MEMORIES = {"error-feedback": error_feedback, "markov": markov, "ef21": markov}


def make_memory(name: str, compressor: Transformation, **params: Any) -> Transformation:
    """Wrap a compressor in a memory scheme by its registry name.

    Parameters
    ----------
    name : {"none", "error-feedback", "markov", "ef21"}
        ``"none"`` returns the compressor unchanged (naive compression); ``"ef21"`` is an
        alias of ``"markov"``.
    compressor : Transformation
        The compressor to wrap.
    **params
        Extra keyword arguments of the scheme (``output`` for Markov compression).

    Returns
    -------
    Transformation
        The wrapped compressor.

    Raises
    ------
    ConfigError
        Unknown name (the message lists the allowed names) or parameter.

    Examples
    --------
    >>> from mixsim.optim import top_k
    >>> make_memory("error-feedback", top_k(5)).spec.name
    'error-feedback'
    """
    if name == "none" and not params:
        return _check_compressor(compressor)
    registry = {"none": lambda compressor: compressor, **_MEMORIES}
    return _checks.pick(name, registry, "memory", {"compressor": compressor, **params})
