"""Errors from inside a section of a scenario, renamed to the scenario's keys."""

from __future__ import annotations

from contextlib import contextmanager

from mixsim.errors import ConfigError

__all__ = ["section"]


@contextmanager
def section(source: str | None, prefix: str):
    """Re-raise a :class:`ConfigError` from inside a section with the scenario's file and
    the section's dotted key in front of the key it names."""
    try:
        yield
    except ConfigError as exc:
        if source is not None and exc.source == source:
            raise
        key = exc.key or ""
        for head in ("protocol", "workers", prefix):
            if key == head or key.startswith(head + "."):
                key = key[len(head):].lstrip(".")
        full = ".".join(part for part in (prefix, key) if part)
        origin = f" (in {exc.source})" if exc.source and exc.source != source else ""
        raise ConfigError(f"{exc.message}{origin}", source=source, key=full) from None
