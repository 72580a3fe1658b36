"""Building blocks of communication: each makes the linear operators of one kind of event.

A protocol file names blocks and gives their arguments; the engine calls a block when its
rule fires and applies the operators it returns. Operators are cached, so a pairwise average
over the same edge is one shared object however often it happens.

Every block is a class with a constructor ``Block(context, **args)`` and a method
``events(worker, round) -> list[(Operator, nodes)]``; ``worker`` is the computing worker
(``None`` for a round-wide event) and ``nodes`` are the endpoints whose link the message
crosses (worker indices or ``"server"``).
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.sparse as sp

from mixsim.errors import ConfigError, ProtocolError
from mixsim.operators import Operator
from mixsim.state import SlotLayout

__all__ = ["BLOCKS", "BlockContext"]


@dataclass
class BlockContext:
    """What a block may use: the layout, a random stream and where errors point."""

    layout: SlotLayout
    rng: np.random.Generator
    source: str | None = None
    key: str = "communication"

    def error(self, message: str, key: str) -> ProtocolError:
        return ProtocolError(message, source=self.source, key=f"{self.key}.{key}")

    def group(self, name: str, key: str = "args.group") -> str:
        if name not in self.layout.groups:
            known = ", ".join(self.layout.groups)
            raise self.error(f"unknown slot group {name!r}; this protocol has: {known}", key)
        return name


def _node(layout: SlotLayout, group: str, slot_index: int):
    return slot_index if group == "workers" else f"{group}:{slot_index}"


class _Block:
    kind = "block"

    def __init__(self, context: BlockContext):
        self.context = context
        self.layout = context.layout

    def matrix(self):
        """The operator's matrix on its group for stationary blocks (``None`` otherwise)."""
        return None

    def worker_choice(self, worker: int):
        """How ``events(worker, 0)`` picks its events, for the asynchronous engine's hot
        path (asynchronous runs have no rounds), or ``None`` if it is not a pick.

        A block whose events for ``worker`` are one of ``count`` fixed lists returns
        ``(picks, count, option)``: ``picks`` is an iterator of indices in
        ``range(count)`` drawn from the very stream ``events`` draws from, and a call of
        ``events(worker, 0)`` is ``option(next(picks))``. ``option(k)`` returns the same
        list every time, so the engine prepares each list once.
        """
        return None


#: Largest group whose average (or slack) is stored with every entry. Above it the
#: operator is a diagonal plus a rank-one part (``O(k)`` work per column, not ``O(k^2)``).
DENSE_GROUP = 64


def _mix_operator(layout: SlotLayout, rows: np.ndarray, gamma: float) -> Operator:
    """``x_i <- (1 - gamma) x_i + gamma mean(x_rows)`` on ``rows``."""
    k = rows.size
    if k > DENSE_GROUP:
        return Operator.mix(rows, gamma, layout.size)
    if gamma == 1.0:
        weight = 1.0 / k
        return Operator.from_rows({int(r): {int(c): weight for c in rows} for r in rows},
                                  layout.size)
    W = (1 - gamma) * np.eye(k) + gamma * np.full((k, k), 1.0 / k)
    return Operator.from_rows(
        {int(rows[i]): {int(rows[j]): W[i, j] for j in range(k)} for i in range(k)},
        layout.size)


class Average(_Block):
    """Every slot of ``group`` becomes the group's mean (AllReduce on ``workers``)."""

    kind = "average"

    def __init__(self, context, group: str = "workers"):
        super().__init__(context)
        self.group = context.group(group)
        rows = self.layout.rows(self.group)
        self.op = _mix_operator(self.layout, rows, 1.0)
        self.nodes = [_node(self.layout, self.group, i) for i in range(rows.size)]

    def events(self, worker, round):
        return [(self.op, self.nodes)]

    def matrix(self):
        k = self.layout.count(self.group)
        return np.full((k, k), 1.0 / k)


class Gossip(_Block):
    """All slots of ``group`` mix at once with a doubly stochastic gossip matrix ``W``.

    Parameters
    ----------
    graph : str
        A networkx generator name, ``"exponential"`` (static exponential graph), or a path
        to an edge-list file.
    graph_args : dict
        Keyword arguments of the generator.
    weights : {"metropolis", "uniform", "max-degree"}
    """

    kind = "gossip"

    def __init__(self, context, group="workers", graph="cycle_graph", graph_args=None,
                 weights="metropolis", seed=0):
        super().__init__(context)
        from mixsim import topology

        self.group = context.group(group)
        k = self.layout.count(self.group)
        self.graph = _make_graph(context, graph, k, graph_args, seed)
        try:
            W = topology.gossip_matrix(self.graph, weights=weights)
        except ConfigError as exc:  # the topology module names the allowed values
            raise context.error(exc.message, "args.weights") from None
        self.W = W
        rows = self.layout.rows(self.group)
        coo = sp.coo_array(W)
        new_rows = {int(rows[i]): {} for i in range(k)}
        for i, j, w in zip(coo.row, coo.col, coo.data, strict=True):
            new_rows[int(rows[i])][int(rows[j])] = float(w)
        self.op = Operator.from_rows(new_rows, self.layout.size)
        self.nodes = [_node(self.layout, self.group, i) for i in range(k)]

    def events(self, worker, round):
        return [(self.op, self.nodes)]

    def matrix(self):
        return self.W


class Slack(_Block):
    """Slack averaging ``x_i <- x_i + (gamma / n) sum_j (x_j - x_i)`` on ``group``."""

    kind = "slack"

    def __init__(self, context, gamma: float, group="workers"):
        super().__init__(context)
        if not 0 < gamma <= 1:
            raise context.error(f"gamma = {gamma!r} must be in (0, 1]", "args.gamma")
        self.group = context.group(group)
        self.gamma = gamma
        rows = self.layout.rows(self.group)
        self.op = _mix_operator(self.layout, rows, gamma)
        self.nodes = [_node(self.layout, self.group, i) for i in range(rows.size)]

    def events(self, worker, round):
        return [(self.op, self.nodes)]

    def matrix(self):
        k = self.layout.count(self.group)
        return (1 - self.gamma) * np.eye(k) + self.gamma * np.full((k, k), 1.0 / k)


class Pairwise(_Block):
    """The computing worker's slot averages with one uniformly random graph neighbour."""

    kind = "pairwise"
    #: Its events depend on the computing worker (none in a round).
    needs_worker = True

    def __init__(self, context, group="workers", graph="cycle_graph", graph_args=None, seed=0):
        super().__init__(context)
        self.group = context.group(group)
        k = self.layout.count(self.group)
        graph = _make_graph(context, graph, k, graph_args, seed)
        self.graph = graph
        self.neighbours = [np.array(sorted(graph.neighbors(i)), dtype=np.int64) for i in range(k)]
        self._events: dict[tuple[int, int], list] = {}
        self.rng = context.rng
        self._slot_of_worker = [
            self.layout.owner_slot(self.group, w) - self.layout.slot(self.group, 0)
            for w in range(self.layout.n_workers)
        ]
        self._choices = [[None] * neighbours.size for neighbours in self.neighbours]
        # Uniforms are drawn in blocks of 4096 and served one at a time by a C iterator:
        # the same stream as one draw per event, far fewer calls into the generator.
        rng = self.rng
        self._uniforms = itertools.chain.from_iterable(
            map(lambda _: rng.random(4096).tolist(), itertools.repeat(None)))

    def events(self, worker, round):
        slot = self._slot_of_worker[worker]
        choices = self._choices[slot]
        if not choices:
            return []
        index = int(next(self._uniforms) * len(choices))
        events = choices[index]
        if events is None:
            events = choices[index] = self._edge_events(slot, int(self.neighbours[slot][index]))
        return events

    def worker_choice(self, worker: int):
        slot = self._slot_of_worker[worker]
        choices = self._choices[slot]
        if not choices:
            return itertools.repeat(0), 1, lambda _: []

        def option(index: int) -> list:
            events = choices[index]
            if events is None:
                events = choices[index] = self._edge_events(
                    slot, int(self.neighbours[slot][index]))
            return events

        # ``int(u * degree)`` for each uniform ``u`` of the shared stream, chained in C
        # (``degree * u`` is ``u * degree`` to the bit).
        degree = float(len(choices))
        return map(int, map(partial(operator.mul, degree), self._uniforms)), len(choices), option

    def _edge_events(self, slot: int, other: int) -> list:
        """The (shared) event list of the average over the edge ``{slot, other}``."""
        key = (slot, other) if slot < other else (other, slot)
        events = self._events.get(key)
        if events is None:
            a, b = (self.layout.slot(self.group, s) for s in key)
            op = Operator.from_rows({a: {a: 0.5, b: 0.5}, b: {a: 0.5, b: 0.5}}, self.layout.size)
            events = [(op, [_node(self.layout, self.group, s) for s in key])]
            self._events[key] = events
        return events


class OnePeerExponential(_Block):
    """Time-varying one-peer exponential graph: in round r, slot i averages with slot
    ``i + 2^(r mod tau)`` (weights 1/2), ``tau = ceil(log2 n)``."""

    kind = "one-peer-exponential"

    def __init__(self, context, group="workers"):
        super().__init__(context)
        self.group = context.group(group)
        self.k = self.layout.count(self.group)
        self.tau = max(1, int(np.ceil(np.log2(self.k)))) if self.k > 1 else 1
        self._ops: dict[int, Operator] = {}
        self.nodes = [_node(self.layout, self.group, i) for i in range(self.k)]

    def events(self, worker, round):
        phase = round % self.tau
        op = self._ops.get(phase)
        if op is None:
            rows = self.layout.rows(self.group)
            shift = 2**phase
            new_rows = {}
            for i in range(self.k):
                j = (i + shift) % self.k
                weights = {int(rows[i]): 0.5}
                weights[int(rows[j])] = weights.get(int(rows[j]), 0.0) + 0.5
                new_rows[int(rows[i])] = weights
            op = Operator.from_rows(new_rows, self.layout.size)
            self._ops[phase] = op
        return [(op, self.nodes)]


class Copy(_Block):
    """Slots of ``to`` take the value of the slot of ``source`` they are attached to.

    ``scope="self"``: the computing worker's own slot (a pull); ``"group"``: every slot of
    ``to`` attached to the same ``source`` slot as the computing worker, one event each (a
    cache refresh in shared memory); ``"all"``: every slot of ``to``, one event each (a
    broadcast).
    """

    kind = "copy"
    _SCOPES = ("self", "group", "all")

    def __init__(self, context, source="server", to="workers", scope="self"):
        super().__init__(context)
        self.source = context.group(source, "args.source")
        self.to = context.group(to, "args.to")
        if scope not in self._SCOPES:
            raise context.error(
                f"unknown scope {scope!r}; allowed: {', '.join(self._SCOPES)}", "args.scope"
            )
        self.scope = scope
        self._ops: dict[tuple[int, int], Operator] = {}
        self._own: dict[int, list] = {}
        n = self.layout.n_workers
        self.to_of_worker = [self.layout.owner_slot(self.to, w) for w in range(n)]
        self.src_of_worker = [self.layout.owner_slot(self.source, w) for w in range(n)]

    def _op(self, target_row: int, source_row: int) -> Operator:
        # Keyed by both rows: workers sharing a target slot may pull from different sources.
        op = self._ops.get((target_row, source_row))
        if op is None:
            op = Operator.from_rows({target_row: {source_row: 1.0}}, self.layout.size)
            self._ops[target_row, source_row] = op
        return op

    def _event(self, worker):
        return (
            self._op(self.to_of_worker[worker], self.src_of_worker[worker]),
            [worker, _node(self.layout, self.source, 0)],
        )

    def events(self, worker, round):
        if self.scope == "self" and worker is not None:
            events = self._own.get(worker)
            if events is None:
                events = self._own[worker] = [self._event(worker)]
            return events
        n = self.layout.n_workers
        if self.scope == "group" and worker is not None:
            mine = self.src_of_worker[worker]
            members = [w for w in range(n) if self.src_of_worker[w] == mine]
        else:
            members = range(n)
        seen, events = set(), []
        for w in members:
            if self.to_of_worker[w] not in seen:
                seen.add(self.to_of_worker[w])
                events.append(self._event(w))
        return events

    def worker_choice(self, worker: int):
        if self.scope != "self":
            return None
        # A pull is the same event every time: a choice of one, without a draw.
        events = self.events(worker, 0)
        return itertools.repeat(0), 1, lambda _: events


class Accumulate(_Block):
    """Deliver an in-flight slot: ``to += from``, then ``from = 0``."""

    kind = "accumulate"

    def __init__(self, context, source="buffer", to="server"):
        super().__init__(context)
        self.source = context.group(source, "args.source")
        self.to = context.group(to, "args.to")
        self._ops: dict[int, Operator] = {}

    def op_for_slot(self, source_row: int) -> Operator:
        op = self._ops.get(source_row)
        if op is None:
            target = self.layout.slot(self.to, 0)
            op = Operator.from_rows(
                {target: {target: 1.0, source_row: 1.0}, source_row: {}}, self.layout.size
            )
            self._ops[source_row] = op
        return op

    def events(self, worker, round):
        return [(self.op_for_slot(self.layout.owner_slot(self.source, worker)), [worker])]


BLOCKS = {
    cls.kind: cls
    for cls in (Average, Gossip, Slack, Pairwise, OnePeerExponential, Copy, Accumulate)
}


def _make_graph(context: BlockContext, graph, k: int, graph_args, seed: int):
    """The block's graph. A random graph is part of the protocol: it comes from the
    block's ``seed`` argument, not from the run's seed, so every run and every method
    (trace, Monte Carlo, spectral) sees the same graph."""
    from mixsim import topology

    try:
        if graph == "exponential":
            return topology.exponential_graph(k)
        return topology.make_graph(graph, k, args=graph_args or {}, seed=seed)
    except ConfigError as exc:
        raise context.error(exc.message, "args.graph") from None
