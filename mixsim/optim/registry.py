"""Optimizers by registry name (the names scenario files use)."""

from __future__ import annotations

from typing import Any

from mixsim.optim import _checks
from mixsim.optim.memory import onebit_adam
from mixsim.optim.optimizers import (
    adam_family,
    amsgrad,
    amsgrad_torch,
    momentum,
    padam,
    rmsprop,
    sgd,
)
from mixsim.optim.transform import Transformation

__all__ = ["make_optimizer"]

_OPTIMIZERS = {
    "sgd": sgd,
    "momentum": momentum,
    "amsgrad": amsgrad,
    "amsgrad-torch": amsgrad_torch,
    "rmsprop": rmsprop,
    "padam": padam,
    "adam-family": adam_family,
    "onebit-adam": onebit_adam,
}


def make_optimizer(name: str, **params: Any) -> Transformation:
    """Build an optimizer by its registry name.

    Parameters
    ----------
    name : str
        One of ``"sgd"``, ``"momentum"``, ``"amsgrad"`` (seeds' form), ``"amsgrad-torch"``,
        ``"rmsprop"``, ``"padam"``, ``"adam-family"`` (with ``p``, ``b1``, ``b2``),
        ``"onebit-adam"``.
    **params
        Keyword arguments of the matching factory (``lr`` and the rest).

    Returns
    -------
    Transformation
        The optimizer; it has a ``step``.

    Raises
    ------
    ConfigError
        Unknown name (the message lists the allowed names and the closest one), unknown
        parameter, or parameter out of range.

    Examples
    --------
    >>> make_optimizer("amsgrad", lr=1e-3).spec.name
    'amsgrad'
    """
    return _checks.pick(name, _OPTIMIZERS, "optimizer", params)
