"""Optimizers: SGD, momentum SGD, the Stochastic Adaptive Methods, AMSGrad in two forms.

Each factory returns a :class:`~mixsim.optim.transform.Transformation` whose ``update``
returns the step to add to the parameters and whose ``step`` adds it in place in one pass.
The learning rate is a number ``>= 0`` or a schedule (:mod:`mixsim.optim.schedules`).

The Stochastic Adaptive Method of seed 002 §5.2 (eq. 11)::

    m = b1 m + (1 - b1) g
    v = max(b2 v + (1 - b2) g^2, v)
    x = x - a (v + eps)^(-p) m

covers AMSGrad-like updates (``p = 1/2``), RMSProp (``p = 1/2``, ``b1 = 0``), PAdam
(``0 < p < 1/2``) and EMA momentum (``p = 0``). AMSGrad itself comes in two named forms:

``amsgrad`` (the seeds, seed 000 Alg. 1 / seed 001 Alg. 1 / seed 003 Alg. 1)
    ``v = b2 v + (1 - b2) g^2`` and ``v_hat = max(v_hat, v)`` kept apart,
    ``x -= a m / sqrt(v_hat + eps)``; no bias correction.
``amsgrad-torch`` (``torch.optim.Adam(amsgrad=True)``)
    same moments, ``x -= (a / (1 - b1^t)) m / (sqrt(v_hat) / sqrt(1 - b2^t) + eps)``.

Non-finite gradients are not filtered: they propagate into the moments and the parameters
(the maximum propagates NaN), so a divergence is visible at the step that caused it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from mixsim.errors import ConfigError
from mixsim.optim import _checks, _kernels
from mixsim.optim.transform import Spec, Transformation

__all__ = [
    "SGDState",
    "MomentumState",
    "AdamFamilyState",
    "AMSGradState",
    "AdamState",
    "adam",
    "sgd",
    "momentum",
    "adam_family",
    "amsgrad",
    "amsgrad_torch",
    "rmsprop",
    "padam",
]


class SGDState(NamedTuple):
    """State of :func:`sgd`: the number of updates made."""

    count: int


class MomentumState(NamedTuple):
    """State of :func:`momentum`: update count and momentum buffer."""

    count: int
    momentum: np.ndarray


class AdamFamilyState(NamedTuple):
    """State of :func:`adam_family`: count, first moment ``m``, monotone second moment ``v``."""

    count: int
    m: np.ndarray
    v: np.ndarray


class AMSGradState(NamedTuple):
    """State of :func:`amsgrad` and :func:`amsgrad_torch`.

    ``v`` is the exponential average of squared gradients, ``v_hat`` its running maximum
    (torch's ``max_exp_avg_sq``).
    """

    count: int
    m: np.ndarray
    v: np.ndarray
    v_hat: np.ndarray


class AdamState(NamedTuple):
    """State of :func:`adam`: count and torch's ``exp_avg`` (``m``), ``exp_avg_sq`` (``v``)."""

    count: int
    m: np.ndarray
    v: np.ndarray


def _rate(lr, count: int) -> float:
    return lr(count) if callable(lr) else lr


def _gradient(grads, like: np.ndarray) -> np.ndarray:
    g = _checks.vector(grads, "grads")
    if g.shape != like.shape:
        raise ValueError(f"grads has length {g.shape[0]}, the state has {like.shape[0]}")
    return g if g.dtype == like.dtype else g.astype(like.dtype)


def _target(params, like: np.ndarray) -> np.ndarray:
    x = _checks.vector(params, "params")
    if x.shape != like.shape or x.dtype != like.dtype:
        raise ValueError(
            f"params must have the state's length {like.shape[0]} and dtype {like.dtype}, "
            f"got {x.shape[0]} and {x.dtype}"
        )
    return x


def _zeros(params) -> np.ndarray:
    return np.zeros_like(_checks.vector(params, "params"))


def _transformation(init, step, like, spec: Spec) -> Transformation:
    """Complete ``init`` and an in-place ``step`` into a Transformation.

    ``like(state)`` returns a state array fixing length and dtype; ``update`` runs ``step``
    on a zero vector, which yields the step itself.
    """

    def checked_step(grads, state, params):
        reference = like(state)
        return step(_gradient(grads, reference), state, _target(params, reference))

    def update(updates, state, params=None):
        reference = like(state)
        out = np.zeros_like(reference)
        new_state = step(_gradient(updates, reference), state, out)
        return out, new_state

    return Transformation(init, update, checked_step, spec)


def sgd(lr=1e-2) -> Transformation:
    """Plain stochastic gradient descent, ``x -= lr g``.

    Parameters
    ----------
    lr : float or callable
        Step size ``>= 0`` or a schedule of the step count.

    Returns
    -------
    Transformation
        State :class:`SGDState` (the step has the dtype of the gradient).

    Raises
    ------
    ConfigError
        If ``lr < 0`` (key ``"lr"``).

    Examples
    --------
    >>> import numpy as np
    >>> opt = sgd(0.5)
    >>> x = np.ones(2)
    >>> state = opt.step(np.array([1.0, -2.0]), opt.init(x), x)
    >>> x.tolist()
    [0.5, 2.0]
    """
    lr = _checks.learning_rate(lr)

    def init(params):
        _checks.vector(params, "params")
        return SGDState(0)

    def checked_step(grads, state, params):
        x = _checks.vector(params, "params")
        count = state.count + 1
        _kernels._sgd_step(x, _gradient(grads, x), x.dtype.type(_rate(lr, count)))
        return state._replace(count=count)

    def update(updates, state, params=None):
        g = _checks.vector(updates, "updates")
        out = np.zeros_like(g)
        return out, checked_step(g, state, out)

    return Transformation(init, update, checked_step, Spec("sgd", {"lr": lr}))


def momentum(lr=1e-2, mu: float = 0.9, nesterov: bool = False) -> Transformation:
    """Heavy-ball momentum SGD as in ``torch.optim.SGD``: ``b = mu b + g``, ``x -= lr b``.

    With ``nesterov``, torch's Nesterov form: ``b = mu b + g``, ``x -= lr (g + mu b)``.

    Parameters
    ----------
    lr : float or callable
        Step size ``>= 0`` or a schedule.
    mu : float
        Momentum in ``[0, 1)``.
    nesterov : bool
        Nesterov momentum (default False).

    Returns
    -------
    Transformation
        State :class:`MomentumState`.

    Raises
    ------
    ConfigError
        If ``lr < 0`` or ``mu`` is outside ``[0, 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> opt = momentum(1.0, mu=0.5)
    >>> x = np.zeros(1)
    >>> state = opt.init(x)
    >>> state = opt.step(np.ones(1), state, x)
    >>> state = opt.step(np.ones(1), state, x)
    >>> x.tolist()
    [-2.5]
    """
    lr = _checks.learning_rate(lr)
    mu = _checks.real(mu, "mu", low=0.0, high=1.0, high_open=True)
    if not isinstance(nesterov, bool):
        raise ConfigError(f"must be true or false, got {nesterov!r}", key="nesterov")

    def init(params):
        return MomentumState(0, _zeros(params))

    def step(g, state, x):
        count = state.count + 1
        t = x.dtype.type
        if nesterov:
            buf = state.momentum
            buf *= t(mu)
            buf += g
            x -= t(_rate(lr, count)) * (g + t(mu) * buf)
        else:
            _kernels._momentum_step(x, g, state.momentum, t(_rate(lr, count)), t(mu))
        return state._replace(count=count)

    spec = Spec("momentum", {"lr": lr, "mu": mu, "nesterov": nesterov})
    return _transformation(init, step, lambda s: s.momentum, spec)


def _betas(b1, b2):
    b1 = _checks.real(b1, "b1", low=0.0, high=1.0, high_open=True)
    b2 = _checks.real(b2, "b2", low=0.0, high=1.0, high_open=True)
    return b1, b2


def adam_family(
    lr=1e-3, p: float = 0.5, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> Transformation:
    """Stochastic Adaptive Method of seed 002 §5.2, eq. 11, with power ``p``.

    ``m = b1 m + (1 - b1) g``, ``v = max(b2 v + (1 - b2) g^2, v)``,
    ``x -= lr (v + eps)^(-p) m``.

    Parameters
    ----------
    lr : float or callable
        Step size ``>= 0`` or a schedule.
    p : float
        Power of the preconditioner in ``[0, 1/2]``: 0 is EMA momentum, 1/2 AMSGrad-like.
    b1, b2 : float
        Moment decays in ``[0, 1)``.
    eps : float
        ``>= 0``, added to ``v`` before the power (the constant of seed 002 Lemma 4 that
        keeps the denominator away from zero).

    Returns
    -------
    Transformation
        State :class:`AdamFamilyState`.

    Raises
    ------
    ConfigError
        If an argument is out of range (the message gives the range).

    Examples
    --------
    >>> import numpy as np
    >>> opt = adam_family(0.1, p=0.5, b1=0.0, b2=0.0, eps=0.0)
    >>> step, _ = opt.update(np.array([4.0, -9.0]), opt.init(np.zeros(2)))
    >>> step.round(12).tolist()
    [-0.1, 0.1]
    """
    lr = _checks.learning_rate(lr)
    p = _checks.real(p, "p", low=0.0, high=0.5)
    b1, b2 = _betas(b1, b2)
    eps = _checks.real(eps, "eps", low=0.0)
    params = {"lr": lr, "p": p, "b1": b1, "b2": b2, "eps": eps}

    def init(params):
        return AdamFamilyState(0, _zeros(params), _zeros(params))

    def step(g, state, x):
        count = state.count + 1
        t = x.dtype.type
        _kernels._adam_family_step(
            x,
            g,
            state.m,
            state.v,
            t(_rate(lr, count)),
            t(b1),
            t(1.0 - b1),
            t(b2),
            t(1.0 - b2),
            t(p),
            t(eps),
        )
        return state._replace(count=count)

    return _transformation(init, step, lambda s: s.m, Spec("adam-family", params))


def rmsprop(lr=1e-3, b2: float = 0.999, eps: float = 1e-8) -> Transformation:
    """RMSProp in its corrected (monotone ``v``) form: :func:`adam_family` with ``p = 1/2``,
    ``b1 = 0``.

    Parameters
    ----------
    lr : float or callable
        Step size ``>= 0`` or a schedule.
    b2 : float
        Second-moment decay in ``[0, 1)``.
    eps : float
        ``>= 0``, added to ``v`` under the root.

    Returns
    -------
    Transformation
        State :class:`AdamFamilyState`.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> opt = rmsprop(0.1, b2=0.0, eps=0.0)
    >>> opt.update(np.array([2.0]), opt.init(np.zeros(1)))[0].tolist()
    [-0.1]
    """
    return adam_family(lr, p=0.5, b1=0.0, b2=b2, eps=eps)


def padam(
    lr=1e-3, p: float = 0.125, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> Transformation:
    """Partially adaptive method (PAdam): :func:`adam_family` with ``0 < p < 1/2``.

    Parameters
    ----------
    lr : float or callable
        Step size ``>= 0`` or a schedule.
    p : float
        Partial power in ``(0, 1/2)``; 1/8 is PAdam's usual choice.
    b1, b2 : float
        Moment decays in ``[0, 1)``.
    eps : float
        ``>= 0``, added to ``v`` before the power.

    Returns
    -------
    Transformation
        State :class:`AdamFamilyState`.

    Raises
    ------
    ConfigError
        If ``p`` is not in ``(0, 1/2)`` or another argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> opt = padam(1.0, p=0.25, b1=0.0, b2=0.0, eps=0.0)
    >>> opt.update(np.array([16.0]), opt.init(np.zeros(1)))[0].tolist()
    [-4.0]
    """
    p = _checks.real(p, "p", low=0.0, high=0.5, low_open=True, high_open=True)
    return adam_family(lr, p=p, b1=b1, b2=b2, eps=eps)


def amsgrad(lr=1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Transformation:
    """AMSGrad as in the seeds: ``v`` and ``v_hat`` apart, ``x -= lr m / sqrt(v_hat + eps)``.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, ``v_hat = max(v_hat, v)``; no bias
    correction (seed 000 Alg. 1, seed 001 Alg. 1 line 16, seed 003 Alg. 1 with ``nu = eps``).

    Parameters
    ----------
    lr : float or callable
        Step size ``>= 0`` or a schedule.
    b1, b2 : float
        Moment decays in ``[0, 1)``.
    eps : float
        ``>= 0``, added to ``v_hat`` under the root.

    Returns
    -------
    Transformation
        State :class:`AMSGradState`.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> opt = amsgrad(0.1, b1=0.0, b2=0.0, eps=0.0)
    >>> opt.update(np.array([3.0, -0.5]), opt.init(np.zeros(2)))[0].round(12).tolist()
    [-0.1, 0.1]
    """
    lr = _checks.learning_rate(lr)
    b1, b2 = _betas(b1, b2)
    eps = _checks.real(eps, "eps", low=0.0)
    params = {"lr": lr, "b1": b1, "b2": b2, "eps": eps}

    def init(params):
        return AMSGradState(0, _zeros(params), _zeros(params), _zeros(params))

    def step(g, state, x):
        count = state.count + 1
        t = x.dtype.type
        _kernels._amsgrad_step(
            x,
            g,
            state.m,
            state.v,
            state.v_hat,
            t(_rate(lr, count)),
            t(b1),
            t(1.0 - b1),
            t(b2),
            t(1.0 - b2),
            t(eps),
        )
        return state._replace(count=count)

    return _transformation(init, step, lambda s: s.m, Spec("amsgrad", params))


def amsgrad_torch(lr=1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Transformation:
    """AMSGrad as ``torch.optim.Adam(amsgrad=True)`` computes it.

    With ``t`` the step count, ``bc1 = 1 - b1^t`` and ``bc2 = 1 - b2^t``:
    ``x -= (lr / bc1) m / (sqrt(v_hat) / sqrt(bc2) + eps)`` (bias correction, ``eps``
    outside the root). No weight decay.

    Parameters
    ----------
    lr : float or callable
        Step size ``>= 0`` or a schedule.
    b1, b2 : float
        Moment decays in ``[0, 1)``.
    eps : float
        ``>= 0``, added after the root.

    Returns
    -------
    Transformation
        State :class:`AMSGradState` (``v_hat`` is torch's ``max_exp_avg_sq``).

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> opt = amsgrad_torch(0.1, eps=0.0)
    >>> opt.update(np.array([3.0, -0.5]), opt.init(np.zeros(2)))[0].round(12).tolist()
    [-0.1, 0.1]
    """
    lr = _checks.learning_rate(lr)
    b1, b2 = _betas(b1, b2)
    eps = _checks.real(eps, "eps", low=0.0)
    params = {"lr": lr, "b1": b1, "b2": b2, "eps": eps}

    def init(params):
        return AMSGradState(0, _zeros(params), _zeros(params), _zeros(params))

    def step(g, state, x):
        count = state.count + 1
        t = x.dtype.type
        step_size = _rate(lr, count) / (1.0 - b1**count)
        sqrt_bc2 = math.sqrt(1.0 - b2**count)
        _kernels._amsgrad_torch_step(
            x,
            g,
            state.m,
            state.v,
            state.v_hat,
            t(step_size),
            t(1.0 - b1),
            t(b2),
            t(1.0 - b2),
            t(sqrt_bc2),
            t(eps),
        )
        return state._replace(count=count)

    return _transformation(init, step, lambda s: s.m, Spec("amsgrad-torch", params))


def adam(lr=1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Transformation:
    """Adam as ``torch.optim.Adam`` computes it (bias-corrected, ``eps`` after the root).

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, and with ``bc1 = 1 - b1^t``,
    ``bc2 = 1 - b2^t``: ``x -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)``. Weight decay:
    ``weight_decay`` (L2, torch's Adam) or ``decoupled_weight_decay`` (AdamW) in
    :func:`mixsim.optim.make_optimizer`.

    Parameters
    ----------
    lr : float or callable
        Step size ``>= 0`` or a schedule.
    b1, b2 : float
        Moment decays in ``[0, 1)``.
    eps : float
        ``>= 0``, added after the root.

    Returns
    -------
    Transformation
        State :class:`AdamState`.

    Raises
    ------
    ConfigError
        If an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> opt = adam(0.1, eps=0.0)
    >>> opt.update(np.array([3.0, -0.5]), opt.init(np.zeros(2)))[0].round(12).tolist()
    [-0.1, 0.1]
    """
    lr = _checks.learning_rate(lr)
    b1, b2 = _betas(b1, b2)
    eps = _checks.real(eps, "eps", low=0.0)
    params = {"lr": lr, "b1": b1, "b2": b2, "eps": eps}

    def init(params):
        return AdamState(0, _zeros(params), _zeros(params))

    def step(g, state, x):
        count = state.count + 1
        t = x.dtype.type
        m, v = state.m, state.v
        m *= t(b1)
        m += t(1.0 - b1) * g
        v *= t(b2)
        v += t(1.0 - b2) * (g * g)
        denominator = np.sqrt(v)
        denominator /= t(math.sqrt(1.0 - b2**count))
        denominator += t(eps)
        x -= t(_rate(lr, count) / (1.0 - b1**count)) * (m / denominator)
        return state._replace(count=count)

    return _transformation(init, step, lambda s: s.m, Spec("adam", params))
