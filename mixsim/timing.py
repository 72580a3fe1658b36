"""Simulated time: how long computations take and how long messages travel.

Compute times are drawn per worker from a distribution (constant, exponential, lognormal),
optionally with a fraction of straggling workers slowed by a factor. A message between two
nodes takes the link's latency plus its size over the link's bandwidth.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from mixsim.errors import ConfigError

__all__ = ["ComputeTime", "Links", "Timing"]

_DISTRIBUTIONS = ("constant", "exponential", "lognormal")


def _blocks(draw, size: int = 1024):
    """Endless iterator over ``draw(size)`` blocks, one number at a time.

    Chained in C (no generator frame to resume per number): one number costs a ``next``
    on a list iterator, on the engine's hot path."""
    blocks = map(lambda _: draw(size).tolist(), itertools.repeat(None))
    return itertools.chain.from_iterable(blocks)


@dataclass(frozen=True)
class ComputeTime:
    """Distribution of one worker's computation time.

    Parameters
    ----------
    distribution : {"constant", "exponential", "lognormal"}
    mean : float
        Mean compute time (simulated seconds), > 0.
    sigma : float
        Shape of the lognormal (standard deviation of the log), >= 0.
    stragglers : float
        Fraction of workers, in [0, 1], that are stragglers.
    slowdown : float
        Factor (>= 1) by which a straggler's compute times are multiplied.
    """

    distribution: str = "exponential"
    mean: float = 1.0
    sigma: float = 0.5
    stragglers: float = 0.0
    slowdown: float = 4.0

    def __post_init__(self):
        if self.distribution not in _DISTRIBUTIONS:
            raise ConfigError(
                f"unknown distribution {self.distribution!r}; "
                f"allowed: {', '.join(_DISTRIBUTIONS)}",
                key="timing.compute.distribution",
            )
        checks = (
            ("mean", lambda v: v > 0, "finite and > 0"),
            ("sigma", lambda v: v >= 0, "finite and >= 0"),
            ("stragglers", lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("slowdown", lambda v: v >= 1, "finite and >= 1"),
        )
        for name, ok, allowed in checks:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and ok(value)):
                raise ConfigError(
                    f"{getattr(self, name)!r} is not allowed; must be {allowed}",
                    key=f"timing.compute.{name}",
                )

    def sampler(self, n_workers: int, rng: np.random.Generator):
        """A function ``worker -> compute time`` drawing from ``rng``.

        Draws are taken from ``rng`` in blocks, which gives the same numbers in the same
        order as one draw per call (``rng`` must serve this sampler alone).
        """
        scale = np.ones(n_workers)
        n_slow = int(round(self.stragglers * n_workers))
        if n_slow:
            scale[rng.choice(n_workers, size=n_slow, replace=False)] = self.slowdown
        scale = scale.tolist()
        mean = self.mean
        if self.distribution == "constant":
            draws = itertools.repeat(mean)
            sampler = lambda worker: mean * scale[worker]  # noqa: E731
        else:
            if self.distribution == "exponential":
                draws = _blocks(lambda size: rng.exponential(mean, size))
            else:
                mu = np.log(mean) - 0.5 * self.sigma**2
                sigma = self.sigma
                draws = _blocks(lambda size: rng.lognormal(mu, sigma, size))
            if n_slow == 0:
                # Every scale is 1.0, by which multiplying changes no bit.
                sampler = lambda worker: next(draws)  # noqa: E731
            else:
                sampler = lambda worker: next(draws) * scale[worker]  # noqa: E731
        # For the engine's hot path: ``next(sampler.stream) * sampler.scale[worker]`` is
        # ``sampler(worker)``, number for number, without a Python call.
        sampler.stream, sampler.scale = draws, scale
        return sampler


@dataclass(frozen=True)
class Links:
    """Latency and bandwidth of the links between nodes.

    Parameters
    ----------
    latency : float
        Default one-way latency (simulated seconds), finite and >= 0.
    bandwidth : float
        Default bandwidth in bytes per simulated second, > 0 (``inf`` for none).
    overrides : list of dict
        Per-link values: ``{"between": [a, b], "latency": ..., "bandwidth": ...}`` where
        ``a`` and ``b`` are worker indices or slot groups of the protocol (``"server"``;
        ``"cache:2"`` names one slot of a group of several). Checked against the protocol
        by :meth:`check`.
    """

    latency: float = 0.0
    bandwidth: float = float("inf")
    overrides: list = field(default_factory=list)

    def __post_init__(self):
        _check_latency(self.latency, "timing.links.latency")
        _check_bandwidth(self.bandwidth, "timing.links.bandwidth")
        table = {}
        for k, item in enumerate(self.overrides):
            key = f"timing.links.overrides[{k}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{item!r} is not a mapping {{between: [a, b], latency, "
                                  "bandwidth}", key=key)
            unknown = sorted(set(item) - {"between", "latency", "bandwidth"})
            if unknown:
                raise ConfigError(f"unknown key {unknown[0]!r}; allowed: between, latency, "
                                  "bandwidth", key=f"{key}.{unknown[0]}")
            between = item.get("between")
            if not isinstance(between, list | tuple) or len(between) != 2:
                raise ConfigError(f"{between!r}: needs 'between: [a, b]'", key=f"{key}.between")
            latency = item.get("latency")
            latency = self.latency if latency is None else latency
            bandwidth = item.get("bandwidth")
            bandwidth = self.bandwidth if bandwidth is None else bandwidth
            _check_latency(latency, f"{key}.latency")
            _check_bandwidth(bandwidth, f"{key}.bandwidth")
            ends = tuple(_node_name(end, f"{key}.between") for end in between)
            table[frozenset(ends)] = (float(latency), float(bandwidth))
        object.__setattr__(self, "_table", table)

    def check(self, layout) -> None:
        """Raise :class:`ConfigError` for an override naming a node the protocol lacks.

        Parameters
        ----------
        layout : mixsim.state.SlotLayout
            The slot groups of the protocol for its number of workers.
        """
        groups = ", ".join(g for g in layout.groups if g != "workers") or "none"
        allowed = f"worker indices 0 .. {layout.n_workers - 1}; slot groups: {groups}"
        for k, item in enumerate(self.overrides):
            for end in item["between"]:
                node = _node_name(end, "")
                if isinstance(node, int):
                    ok = node < layout.n_workers
                else:
                    group, _, index = node.partition(":")
                    ok = group in layout.groups and group != "workers" and \
                        int(index) < layout.count(group)
                if not ok:
                    raise ConfigError(f"{end!r} is not a node of this protocol; allowed: "
                                      f"{allowed}", key=f"timing.links.overrides[{k}].between")

    def delay(self, nodes, n_bytes: float) -> float:
        """Time for a message of ``n_bytes`` exchanged among ``nodes`` (slowest link)."""
        if not self._table:
            return self.latency + n_bytes / self.bandwidth
        nodes = list(nodes)
        worst = 0.0
        for i, a in enumerate(nodes):
            for b in nodes[i + 1 :]:
                latency, bandwidth = self._table.get(
                    frozenset((a, b)), (self.latency, self.bandwidth)
                )
                worst = max(worst, latency + n_bytes / bandwidth)
        return worst if len(nodes) > 1 else self.latency + n_bytes / self.bandwidth


def _check_latency(value, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise ConfigError(f"{value!r} must be a finite number >= 0", key=key)


def _check_bandwidth(value, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{value!r} must be a number > 0 (inf: no limit)", key=key)


def _node_name(end, key: str):
    """The engine's name of a link endpoint: a worker index, or ``group:index``."""
    if isinstance(end, bool) or not isinstance(end, int | str) or (
            isinstance(end, int) and end < 0):
        raise ConfigError(f"{end!r} is not a worker index >= 0 or a slot group", key=key)
    if isinstance(end, str):
        group, colon, index = end.partition(":")
        if colon and not index.isdigit():
            raise ConfigError(f"{end!r}: a slot is written group:index", key=key)
        return f"{group}:{int(index) if colon else 0}"
    return end


@dataclass(frozen=True)
class Timing:
    """Compute-time distribution and link model of a simulated cluster."""

    compute: ComputeTime = field(default_factory=ComputeTime)
    links: Links = field(default_factory=Links)

    @classmethod
    def from_dict(cls, data: dict | None, source: str | None = None) -> Timing:
        """Build from ``{"compute": {...}, "links": {...}}`` (YAML form)."""
        data = dict(data or {})
        unknown = set(data) - {"compute", "links"}
        if unknown:
            raise ConfigError(
                f"unknown key {sorted(unknown)[0]!r}; allowed: compute, links",
                source=source, key="timing",
            )
        try:
            compute = ComputeTime(**(data.get("compute") or {}))
            links = Links(**(data.get("links") or {}))
        except TypeError as exc:
            raise ConfigError(str(exc), source=source, key="timing") from None
        except ConfigError as exc:
            raise ConfigError(exc.message, source=source, key=exc.key) from None
        return cls(compute, links)
