"""The global state ``X`` of the MixML model and its layout in slots.

External storage (worker copies, a server, caches, in-flight buffers) is laid out as named
groups of consecutive rows ("slots") of one array ``X`` with shape ``(slots, d)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SlotLayout"]


@dataclass(frozen=True)
class SlotLayout:
    """Named groups of consecutive slots.

    Parameters
    ----------
    groups : dict of str to int
        Group name to number of slots, in layout order. ``"workers"`` comes first and
        has one slot per worker.

    Examples
    --------
    >>> layout = SlotLayout({"workers": 4, "server": 1})
    >>> layout.size, layout.slot("server", 0)
    (5, 4)
    """

    groups: dict[str, int]

    def __post_init__(self):
        offsets, start = {}, 0
        for name, count in self.groups.items():
            offsets[name] = start
            start += count
        object.__setattr__(self, "_offsets", offsets)
        object.__setattr__(self, "size", start)

    @property
    def n_workers(self) -> int:
        """Number of workers (slots of the ``workers`` group)."""
        return self.groups["workers"]

    def count(self, group: str) -> int:
        """Number of slots in ``group``."""
        return self.groups[group]

    def slot(self, group: str, index: int) -> int:
        """Row of ``X`` holding slot ``index`` of ``group``."""
        return self._offsets[group] + index

    def rows(self, group: str) -> np.ndarray:
        """All rows of ``group`` as an int64 array."""
        start = self._offsets[group]
        return np.arange(start, start + self.groups[group], dtype=np.int64)

    def owner_slot(self, group: str, worker: int) -> int:
        """Row of the slot of ``group`` that worker ``worker`` is attached to.

        Workers are split into equal consecutive blocks, one per slot of the group: with
        one server every worker maps to it; with one cache per worker each maps to its own.
        """
        count = self.groups[group]
        return self._offsets[group] + (worker * count) // self.n_workers

    def group_of(self, row: int) -> str:
        """Name of the group that row ``row`` belongs to."""
        for name, start in self._offsets.items():
            if start <= row < start + self.groups[name]:
                return name
        raise IndexError(f"row {row} outside a layout of {self.size} slots")
