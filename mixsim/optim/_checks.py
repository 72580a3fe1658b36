"""Argument checks shared by the public factories (every failure is a ConfigError)."""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

from mixsim.errors import ConfigError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def real(
    value: Any,
    key: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float in the given interval, or a ConfigError naming the range."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    allowed = f"{left}{low}, {high}{right}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"expected a number in {allowed}, got {value!r}", key=key)
    x = float(value)
    too_low = x < low or (low_open and x == low)
    too_high = x > high or (high_open and x == high)
    if math.isnan(x) or too_low or too_high:
        raise ConfigError(f"must be in {allowed}, got {value!r}", key=key)
    return x


def integer(value: Any, key: str, *, low: int = 0) -> int:
    """``value`` as an int ``>= low``, or a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"expected an integer >= {low}, got {value!r}", key=key)
    if value < low:
        raise ConfigError(f"must be an integer >= {low}, got {value!r}", key=key)
    return int(value)


def learning_rate(value: Any) -> float | Callable[[int], float]:
    """A non-negative learning rate, or a schedule (a callable of the step count)."""
    if callable(value):
        return value
    return real(value, "lr", low=0.0)


def vector(array: Any, name: str) -> np.ndarray:
    """A 1-D float32/float64 array (not copied when it already is one)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.ndim != 1 or array.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a 1-D float32 or float64 array, got shape {array.shape} "
            f"dtype {array.dtype}"
        )
    return array


def offsets(value: Sequence[int] | None, d: int) -> np.ndarray | None:
    """Layer boundaries ``[0, o_1, ..., d]`` (non-decreasing), or None for one layer."""
    if value is None:
        return None
    bounds = np.asarray(value)
    if (
        bounds.ndim != 1
        or bounds.size < 2
        or not np.issubdtype(bounds.dtype, np.integer)
        or bounds[0] != 0
        or bounds[-1] != d
        or np.any(np.diff(bounds) < 0)
    ):
        raise ConfigError(
            f"layer offsets must be non-decreasing integers from 0 to d={d}, got {value!r}",
            key="offsets",
        )
    return bounds.astype(np.int64)


def pick(
    name: str, registry: Mapping[str, Callable[..., Any]], kind: str, params: Mapping[str, Any]
) -> Any:
    """Call ``registry[name](**params)``; unknown names and keys become ConfigErrors."""
    if name not in registry:
        allowed = ", ".join(sorted(registry))
        close = difflib.get_close_matches(str(name), list(registry), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown {kind} {name!r}; allowed: {allowed}.{hint}", key=kind)
    factory = registry[name]
    accepted = inspect.signature(factory).parameters
    for key in params:
        if key not in accepted:
            allowed = ", ".join(accepted)
            raise ConfigError(
                f"{kind} {name!r} takes no parameter {key!r}; allowed: {allowed}", key=key
            )
    return factory(**params)
