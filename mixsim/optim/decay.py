"""Weight decay around any optimizer: L2 (coupled) and decoupled (AdamW), as torch has them.

``weight_decay`` (L2, ``torch.optim.SGD`` / ``Adam(weight_decay=...)``): the method sees
``g + wd x`` instead of ``g``. ``decoupled_weight_decay`` (``torch.optim.AdamW``, also
``Adam(decoupled_weight_decay=True)``): before the method's step the parameters shrink,
``x <- (1 - lr_t wd) x``, with ``lr_t`` the method's step size at this update (a schedule
is evaluated at the same count the method uses). Seed 003 trains its ResNets with weight
decay 5e-4.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mixsim.optim import _checks
from mixsim.optim.transform import Spec, Transformation

__all__ = ["WeightDecayState", "weight_decay"]


class WeightDecayState(NamedTuple):
    """State of :func:`weight_decay`: the update count and the method's own state."""

    count: int
    inner: Any


def weight_decay(method: Transformation, lr, *, l2: float = 0.0,
                 decoupled: float = 0.0) -> Transformation:
    """``method`` with L2 and/or decoupled weight decay.

    Parameters
    ----------
    method : Transformation
        An optimizer (it has a ``step``).
    lr : float or callable
        The method's step size or schedule (the decoupled decay scales with it).
    l2 : float
        ``>= 0``, added as ``l2 * x`` to the gradient.
    decoupled : float
        ``>= 0``; ``x`` is multiplied by ``1 - lr_t * decoupled`` before the step.

    Returns
    -------
    Transformation
        State :class:`WeightDecayState`; ``update`` needs ``params`` (the decay depends on x).

    Raises
    ------
    ConfigError
        A coefficient out of range (keys ``"weight_decay"``, ``"decoupled_weight_decay"``).

    Examples
    --------
    >>> import numpy as np
    >>> from mixsim.optim import sgd
    >>> opt = weight_decay(sgd(0.1), 0.1, decoupled=0.5)
    >>> x = np.array([2.0])
    >>> state = opt.step(np.array([0.0]), opt.init(x), x)
    >>> x.tolist()  # (1 - 0.1 * 0.5) * 2
    [1.9]
    """
    l2 = _checks.real(l2, "weight_decay", low=0.0)
    decoupled = _checks.real(decoupled, "decoupled_weight_decay", low=0.0)
    if method.step is None:
        raise TypeError("weight decay wraps an optimizer (a transformation with a step)")

    def init(params):
        return WeightDecayState(0, method.init(params))

    def step(grads, state, params):
        count = state.count + 1
        x = _checks.vector(params, "params")
        if l2:
            grads = grads + x.dtype.type(l2) * x
        if decoupled:
            rate = lr(count) if callable(lr) else lr
            x *= x.dtype.type(1.0 - rate * decoupled)
        return WeightDecayState(count, method.step(grads, state.inner, x))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs the parameters: update(g, state, params)")
        x = _checks.vector(params, "params").copy()
        before = x.copy()
        new_state = step(updates, state, x)
        return x - before, new_state

    spec = Spec("weight-decay", {"method": method, "weight_decay": l2,
                                 "decoupled_weight_decay": decoupled})
    return Transformation(init, update, step, spec)
