"""Stateful transformations as (init, update) pairs, and ``chain`` to compose them.

The optax pattern: a factory captures the hyper-parameters and returns a
:class:`Transformation`; ``init(params)`` builds a small NamedTuple state; ``update(updates,
state, params=None)`` returns ``(new_updates, new_state)``. Compressors and memory schemes
map a gradient to a (decoded) compressed gradient; optimizers map a gradient to the step to
*add* to the parameters (so ``params + update`` is the new point, as in optax).

Two departures from optax, both for speed at large ``d``:

* the arrays of a state are updated **in place**: the state passed to ``update`` is consumed
  (the returned state shares its arrays); copy it first if the old one is still needed;
* optimizers also have ``step(grads, state, params) -> state``, which adds the step to
  ``params`` in place in the same pass over memory (no step vector is materialised).
  ``chain`` has a ``step`` when its last member has one.

``chain`` recognises hot combinations and returns a fused transformation with the same state
layout and the same results (see :func:`mixsim.optim.fused_ef_top_k_amsgrad`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Spec", "Transformation", "chain", "identity", "register_fusion"]


class Spec(NamedTuple):
    """What a transformation is, for ``chain`` to recognise fusable combinations.

    Attributes
    ----------
    name : str
        Registry name (``"top-k"``, ``"error-feedback"``, ``"amsgrad"``, ...).
    params : dict
        The hyper-parameters given to the factory (for memory schemes, the inner
        compressor under ``"compressor"``).
    """

    name: str
    params: dict


class Transformation(NamedTuple):
    """A pair of functions ``init`` and ``update``, plus an optional in-place ``step``.

    Attributes
    ----------
    init : callable
        ``init(params) -> state``; ``params`` is a 1-D float32 or float64 array (only its
        length and dtype matter); the state arrays take that dtype.
    update : callable
        ``update(updates, state, params=None) -> (updates, state)``.
    step : callable or None
        ``step(grads, state, params) -> state``: adds the update to ``params`` in place.
        Present on optimizers and on chains ending with one.
    spec : Spec or None
        Description used by :func:`chain` to pick fused implementations.
    """

    init: Callable[[np.ndarray], Any]
    update: Callable[..., tuple[np.ndarray, Any]]
    step: Callable[..., Any] | None = None
    spec: Spec | None = None


class IdentityState(NamedTuple):
    """State of :func:`identity` (it has none)."""


def identity() -> Transformation:
    """The transformation that returns its input unchanged.

    Returns
    -------
    Transformation
        ``update(g, state) == (g, state)``.

    Examples
    --------
    >>> import numpy as np
    >>> t = identity()
    >>> g, _ = t.update(np.ones(3), t.init(np.zeros(3)))
    >>> g.tolist()
    [1.0, 1.0, 1.0]
    """

    def init(params):
        return IdentityState()

    def update(updates, state, params=None):
        return updates, state

    return Transformation(init, update, spec=Spec("identity", {}))


#: Functions that may replace the members of a chain by one fused transformation with the
#: same state layout and results (None: no fusion). :mod:`mixsim.optim.fused` adds its
#: own when the package is imported; this module, lower down, imports none of them.
_FUSIONS: list[Callable[[tuple], Transformation | None]] = []


def register_fusion(fuse: Callable[[tuple], Transformation | None]) -> None:
    """Let :func:`chain` try ``fuse(transformations)`` before composing them itself."""
    if fuse not in _FUSIONS:
        _FUSIONS.append(fuse)


def chain(*transformations: Transformation) -> Transformation:
    """Compose transformations: the output of each is the input of the next.

    Parameters
    ----------
    *transformations : Transformation
        Applied left to right.

    Returns
    -------
    Transformation
        Its state is the tuple of the members' states. If the last member has a ``step``,
        so does the chain (earlier members run ``update``, the last one ``step``).
        ``chain(error_feedback(top_k(k)), amsgrad(...))`` (top-k on the whole vector) is
        replaced by :func:`mixsim.optim.fused_ef_top_k_amsgrad`, which keeps the same state
        layout and gives the same numbers in two passes over memory.

    Raises
    ------
    TypeError
        If a member is not a :class:`Transformation`.

    Examples
    --------
    >>> import numpy as np
    >>> from mixsim.optim import chain, error_feedback, top_k, amsgrad
    >>> opt = chain(error_feedback(top_k(1)), amsgrad(0.1))
    >>> x = np.zeros(4)
    >>> state = opt.init(x)
    >>> state = opt.step(np.array([0.0, 3.0, -1.0, 0.5]), state, x)
    >>> np.flatnonzero(x).tolist()
    [1]
    """
    for t in transformations:
        if not isinstance(t, Transformation):
            raise TypeError(f"chain takes Transformations, got {type(t).__name__}")
    for fuse in _FUSIONS:
        fused = fuse(transformations)
        if fused is not None:
            return fused

    def init(params):
        return tuple(t.init(params) for t in transformations)

    def update(updates, state, params=None):
        new_state = []
        for t, s in zip(transformations, state, strict=True):
            updates, s = t.update(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    step = None
    if transformations and transformations[-1].step is not None:
        head, last = transformations[:-1], transformations[-1]

        def step(grads, state, params):
            new_state = []
            for t, s in zip(head, state[:-1], strict=True):
                grads, s = t.update(grads, s, params)
                new_state.append(s)
            new_state.append(last.step(grads, state[-1], params))
            return tuple(new_state)

    spec = Spec("chain", {"transformations": transformations})
    return Transformation(init, update, step, spec)
