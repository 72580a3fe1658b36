"""Optimizers by registry name (the names scenario files use)."""

from __future__ import annotations

from typing import Any

from mixsim.errors import ConfigError
from mixsim.optim import _checks
from mixsim.optim.decay import weight_decay
from mixsim.optim.memory import onebit_adam
from mixsim.optim.optimizers import (
    adam,
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
    "adam": adam,
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
        One of ``"sgd"``, ``"momentum"`` (``nesterov``), ``"adam"`` (torch's form),
        ``"amsgrad"`` (seeds' form), ``"amsgrad-torch"``, ``"rmsprop"``, ``"padam"``,
        ``"adam-family"`` (with ``p``, ``b1``, ``b2``), ``"onebit-adam"``.
    **params
        Keyword arguments of the matching factory (``lr`` and the rest), and for every
        method: ``schedule`` (a mapping ``{name: step-decay | cosine | inverse-sqrt |
        constant, ...}``: the step size follows it from ``lr``), ``weight_decay`` (L2
        added to the gradient, torch's SGD and Adam) and ``decoupled_weight_decay``
        (``x <- (1 - lr_t wd) x`` before each step, AdamW), both default 0
        (:func:`mixsim.optim.decay.weight_decay`).

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
    >>> make_optimizer("sgd", lr=0.1, schedule={"name": "cosine", "steps": 10},
    ...                weight_decay=5e-4).spec.name
    'weight-decay'
    """
    from mixsim.optim.schedules import make_schedule

    params = dict(params)
    schedule = params.pop("schedule", None)
    l2 = params.pop("weight_decay", 0.0)
    decoupled = params.pop("decoupled_weight_decay", 0.0)
    if schedule is not None:
        if not isinstance(schedule, dict) or "name" not in schedule:
            raise ConfigError(f"must be a mapping with a name (step-decay, cosine, ...), got "
                              f"{schedule!r}", key="schedule")
        spec = dict(schedule)
        if "value" in spec:
            raise ConfigError("the schedule starts from lr: remove 'value'", key="schedule")
        params["lr"] = make_schedule(spec.pop("name"), value=params.get("lr", 1e-3), **spec)
    method = _checks.pick(name, _OPTIMIZERS, "optimizer", params)
    if l2 or decoupled:
        lr = params.get("lr", 1e-3)
        return weight_decay(method, lr, l2=l2, decoupled=decoupled)
    return method
