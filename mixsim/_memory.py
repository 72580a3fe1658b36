"""Memory estimates checked before allocating.

A size that cannot fit (a model of 10^10 parameters, 10^11 samples, 10^8 slots or runs)
ends at once with one line saying what it would need and what the machine has, instead of
a ``MemoryError`` (whose message is empty) after minutes of work. The estimates count the
large arrays and per-item objects only: they are lower bounds, so a size refused here
could never have run.
"""

from __future__ import annotations

import psutil

from mixsim.errors import ConfigError

__all__ = ["available", "require", "human"]

#: Bytes per Monte Carlo run held in memory: its seed, its ``SeedSequence`` child and its
#: result (measured with ``tracemalloc``: 415 bytes).
BYTES_PER_RUN = 512
#: Bytes per slot of the state besides its coordinates: the engine's per-slot and
#: per-worker Python objects (generators, rules, views).
BYTES_PER_SLOT = 2048
#: Bytes per sweep point before it runs: its resolved configuration and key (measured: a
#: quick-start point takes about 6 KB).
BYTES_PER_POINT = 8192


def available() -> int:
    """Bytes of memory this process can still take (free plus reclaimable)."""
    return int(psutil.virtual_memory().available)


def human(nbytes: float) -> str:
    """``12.3 GiB``-style size."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def require(nbytes: float, what: str, *, key: str, source: str | None = None) -> None:
    """Raise :class:`ConfigError` when ``nbytes`` exceed the memory available.

    Parameters
    ----------
    nbytes : float
        The estimate (a lower bound of what the work allocates).
    what : str
        What needs it, with its size (``"10,000,900,003 model parameters x 8 workers"``).
    key : str
        The setting that decides the size.
    source : str, optional
        Where the setting came from.
    """
    free = available()
    if nbytes > free:
        raise ConfigError(f"{what} need at least {human(nbytes)} of memory; this machine has "
                          f"{human(free)} available", key=key, source=source)
