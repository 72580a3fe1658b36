"""Step-size schedules: callables of the step count ``t = 1, 2, ...``.

Every optimizer takes ``lr`` either as a number or as one of these; the count is the
number of updates made so far including the current one (the first update sees ``t = 1``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from mixsim.optim import _checks

__all__ = ["constant", "inverse_sqrt", "step_decay", "cosine", "make_schedule"]


class Constant(NamedTuple):
    """``a_t = value``."""

    value: float

    def __call__(self, t: int) -> float:
        return self.value


class InverseSqrt(NamedTuple):
    """``a_t = value / sqrt(t)`` (seed 000 Theorem 1)."""

    value: float

    def __call__(self, t: int) -> float:
        return self.value / math.sqrt(max(t, 1))


class StepDecay(NamedTuple):
    """``a_t = value * factor ** floor((t - 1) / every)``."""

    value: float
    factor: float
    every: int

    def __call__(self, t: int) -> float:
        return self.value * self.factor ** ((max(t, 1) - 1) // self.every)


class Cosine(NamedTuple):
    """``a_t = low + (value - low) (1 + cos(pi min(t - 1, steps) / steps)) / 2``."""

    value: float
    steps: int
    low: float

    def __call__(self, t: int) -> float:
        done = min(max(t, 1) - 1, self.steps)
        return self.low + (self.value - self.low) * (1 + math.cos(math.pi * done / self.steps)) / 2


def constant(value: float) -> Constant:
    """Constant step size.

    Parameters
    ----------
    value : float
        The step size, ``>= 0``.

    Returns
    -------
    Constant
        ``schedule(t) == value``.

    Raises
    ------
    ConfigError
        If ``value < 0`` (key ``"lr"``).

    Examples
    --------
    >>> constant(0.1)(7)
    0.1
    """
    return Constant(_checks.real(value, "lr", low=0.0))


def inverse_sqrt(value: float) -> InverseSqrt:
    """Step size ``value / sqrt(t)``.

    Parameters
    ----------
    value : float
        The step size at ``t = 1``, ``>= 0``.

    Returns
    -------
    InverseSqrt
        ``schedule(t) == value / sqrt(t)``.

    Raises
    ------
    ConfigError
        If ``value < 0`` (key ``"lr"``).

    Examples
    --------
    >>> inverse_sqrt(1.0)(4)
    0.5
    """
    return InverseSqrt(_checks.real(value, "lr", low=0.0))


def step_decay(value: float, factor: float = 0.1, every: int = 1000) -> StepDecay:
    """Step size multiplied by ``factor`` every ``every`` steps.

    Parameters
    ----------
    value : float
        Initial step size, ``>= 0``.
    factor : float
        Multiplier in ``(0, 1]``.
    every : int
        Number of steps between two decays, ``>= 1``.

    Returns
    -------
    StepDecay
        ``schedule(t) == value * factor ** ((t - 1) // every)``.

    Raises
    ------
    ConfigError
        If an argument is out of range (keys ``"lr"``, ``"factor"``, ``"every"``).

    Examples
    --------
    >>> s = step_decay(1.0, factor=0.5, every=2)
    >>> [s(t) for t in (1, 2, 3, 5)]
    [1.0, 1.0, 0.5, 0.25]
    """
    return StepDecay(
        _checks.real(value, "lr", low=0.0),
        _checks.real(factor, "factor", low=0.0, high=1.0, low_open=True),
        _checks.integer(every, "every", low=1),
    )


def cosine(value: float, steps: int = 1000, low: float = 0.0) -> Cosine:
    """Cosine annealing from ``value`` to ``low`` over ``steps`` updates, then ``low``.

    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=steps, eta_min=low)``: update ``t``
    (from 1) uses torch's rate after ``t - 1`` scheduler steps.

    Parameters
    ----------
    value : float
        Initial step size, ``>= 0``.
    steps : int
        Length of the annealing, ``>= 1``.
    low : float
        Final step size, ``>= 0``.

    Returns
    -------
    Cosine

    Raises
    ------
    ConfigError
        If an argument is out of range (keys ``"lr"``, ``"steps"``, ``"low"``).

    Examples
    --------
    >>> s = cosine(1.0, steps=2)
    >>> [round(s(t), 12) for t in (1, 2, 3, 4)]
    [1.0, 0.5, 0.0, 0.0]
    """
    return Cosine(_checks.real(value, "lr", low=0.0), _checks.integer(steps, "steps", low=1),
                  _checks.real(low, "low", low=0.0))


_SCHEDULES = {"constant": constant, "inverse-sqrt": inverse_sqrt, "step-decay": step_decay,
              "cosine": cosine}


def make_schedule(name: str, **params) -> Constant | InverseSqrt | StepDecay | Cosine:
    """Build a schedule by its registry name.

    Parameters
    ----------
    name : {"constant", "inverse-sqrt", "step-decay", "cosine"}
        The schedule.
    **params
        Arguments of the matching factory (``value``, ``factor``, ``every``, ``steps``,
        ``low``).

    Returns
    -------
    callable
        The schedule.

    Raises
    ------
    ConfigError
        Unknown name (the message lists the allowed names) or bad parameter.

    Examples
    --------
    >>> make_schedule("inverse-sqrt", value=0.1)(100)
    0.01
    """
    return _checks.pick(name, _SCHEDULES, "schedule", params)
