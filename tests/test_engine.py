"""The SimPy engine: steps, rounds, clock order, timing, errors."""

from pathlib import Path

import numpy as np
import pytest

from mixsim import ComputeTime, Links, ProtocolError, Simulation, Timing, load_protocol
from mixsim.errors import ConfigError, DivergenceError, StoppedError


def test_a_synchronous_round_is_n_steps_then_communication():
    sim = Simulation("allreduce", 4, seed=0).run(12)
    # One AllReduce after each round, labelled with the round's last step.
    assert sim.trace.ev_step == [3, 7, 11]
    assert sim.trace.ev_kind == ["average"] * 3
    np.testing.assert_allclose(sim.X, sim.X.mean(axis=0, keepdims=True).repeat(4, 0))


def test_run_is_resumable_and_equals_one_long_run():
    a = Simulation("async-ring", 5, seed=2).run(10).run(40)
    b = Simulation("async-ring", 5, seed=2).run(40)
    assert a.trace.ev_op == b.trace.ev_op
    assert np.array_equal(a.X, b.X)


def test_event_order_comes_from_the_clock():
    # Worker 0 is never a straggler here, the others are 10x slower: worker 0 takes
    # most of the steps of an asynchronous protocol.
    steps = []
    timing = Timing(compute=ComputeTime("constant", mean=1.0, stragglers=0.75, slowdown=10))

    def compute(worker, view, step):
        steps.append(worker)

    Simulation("async-ps", 4, timing=timing, seed=0, compute=compute).run(40)
    fast = max(set(steps), key=steps.count)
    assert steps.count(fast) > 25


def test_latency_delays_communication_on_the_clock():
    slow = Timing(compute=ComputeTime("constant", mean=1.0), links=Links(latency=0.5))
    sim = Simulation("allreduce", 3, timing=slow, seed=0).run(9)
    assert sim.trace.ev_time == pytest.approx([1.5, 3.0, 4.5])
    fast = Simulation("allreduce", 3, timing=Timing(compute=ComputeTime("constant")), seed=0)
    assert fast.run(9).trace.ev_time == pytest.approx([1.0, 2.0, 3.0])


def test_bandwidth_and_per_link_overrides():
    links = Links(latency=0.0, bandwidth=8.0,
                  overrides=[{"between": [0, 1], "latency": 1.0, "bandwidth": 8.0}])
    # d = 2 float32 values = 8 bytes: 1 s per message, 2 s on the slow link.
    assert links.delay([0, 2], 8) == pytest.approx(1.0)
    assert links.delay([0, 1], 8) == pytest.approx(2.0)


@pytest.mark.parametrize("distribution", ["constant", "exponential", "lognormal"])
def test_compute_time_means(distribution):
    sampler = ComputeTime(distribution, mean=2.0, sigma=0.5).sampler(
        3, np.random.default_rng(0))
    draws = np.array([sampler(1) for _ in range(20_000)])
    assert draws.mean() == pytest.approx(2.0, rel=0.03)


def test_stragglers_are_slowed_by_the_factor():
    sampler = ComputeTime("constant", mean=1.0, stragglers=0.5, slowdown=3.0).sampler(
        4, np.random.default_rng(0))
    assert sorted(sampler(w) for w in range(4)) == [1.0, 1.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"distribution": "gauss"}, "distribution"), ({"mean": -1}, "mean"),
     ({"stragglers": 2}, "stragglers"), ({"slowdown": 0.5}, "slowdown")],
)
def test_bad_timing_is_named(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        ComputeTime(**kwargs)


def test_updates_land_in_the_target_slot():
    def compute(worker, view, step):
        return np.ones(2)

    sim = Simulation("async-ps", 3, d=2, seed=0, compute=compute,
                     initial_state=np.zeros((4, 2))).run(5)
    # Five unit updates reached the server; every worker pulled after its own step.
    np.testing.assert_allclose(sim.X[sim.layout.slot("server", 0)], [5.0, 5.0])


def test_delayed_updates_arrive_after_the_delay():
    arrivals = []

    def compute(worker, view, step):
        return np.ones(1) if step == 0 else None

    sim = Simulation("delayed", 2, d=1, seed=0, compute=compute, params={"delay": 3},
                     initial_state=np.zeros((2 + 1 + 4, 1)))
    server = sim.layout.slot("server", 0)
    for steps in range(1, 7):
        sim.run(steps)
        arrivals.append(float(sim.X[server, 0]))
    assert arrivals == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


def test_divergence_names_the_step():
    def compute(worker, view, step):
        return np.array([np.inf]) if step == 7 else np.zeros(1)

    with pytest.raises(DivergenceError, match="step 7"):
        Simulation("allreduce", 2, compute=compute).run(20)


def test_workers_must_be_positive():
    with pytest.raises(ProtocolError, match="workers"):
        Simulation("allreduce", 0)


@pytest.mark.parametrize("name", ["async-ring", "sync-ring", "async-ps", "hogwild"])
def test_runs_without_computation_apply_every_event(name):
    # No compute callback: events are applied together when run() returns; the state must
    # be what applying them one by one gives, at every resumption.
    sim = Simulation(name, 6, d=3, seed=2)
    for steps in (7, 30, 31, 90):
        sim.run(steps)
        np.testing.assert_allclose(sim.X, sim.trace.replay(), rtol=0, atol=1e-12)


def _run_pieces(name, timing, chained, monkeypatch, compute=None, params=None):
    monkeypatch.setattr(Simulation, "_use_timer_chains", chained)
    sim = Simulation(name, 5, seed=3, timing=timing, compute=compute, params=params)
    for steps in (1, 7, 40, 41, 130):
        sim.run(steps)
    return sim


@pytest.mark.parametrize("name, params", [
    ("async-ps", None), ("async-ring", None), ("hogwild", None),
    ("hybrid", {"group_size": 2, "gossip_every": 3}),
    ("delayed", {"distribution": "geometric"}), ("gossip", {"mode": "async"}),
    ("sparse", {"base": "async-ring"}),
])
@pytest.mark.parametrize("compute", [
    ComputeTime("exponential"),
    ComputeTime("constant"),
    ComputeTime("lognormal", stragglers=0.4, slowdown=3.0),
])
def test_timer_chains_replay_worker_processes_exactly(name, params, compute, monkeypatch):
    # Asynchronous workers run as timer chains; worker processes are the reference. Same
    # events, same times, same order and state, also across resumed runs and ties.
    timing = Timing(compute=compute)
    chained = _run_pieces(name, timing, True, monkeypatch, params=params)
    assert chained._chained
    processes = _run_pieces(name, timing, False, monkeypatch, params=params)
    assert not processes._chained
    a, b = chained.trace, processes.trace
    assert chained.step == processes.step
    assert a.ev_step == b.ev_step and a.ev_kind == b.ev_kind and a.ev_time == b.ev_time
    assert [a.ops[i].rows.tolist() + a.ops[i].cols.tolist() for i in a.ev_op] == \
        [b.ops[i].rows.tolist() + b.ops[i].cols.tolist() for i in b.ev_op]
    assert np.array_equal(chained.X, processes.X)


def test_timer_chains_with_updates_match_worker_processes(monkeypatch):
    def compute(worker, view, step):
        return 0.01 * (worker + 1) - 0.1 * view

    runs = [_run_pieces("async-ps", Timing(), chained, monkeypatch, compute)
            for chained in (True, False)]
    assert runs[0]._chained and not runs[1]._chained
    assert runs[0].trace.ev_time == runs[1].trace.ev_time
    assert np.array_equal(runs[0].X, runs[1].X)


_DELAYED_PULL = """
name: delayed-pull
summary: Asynchronous parameter server whose pull lands a set number of steps late.
params:
  lag: {type: int, default: 3, min: 0, doc: "steps"}
slots: {server: 1}
view: workers
target: server
schedule: async
communication:
  - on: own-step
    op: copy
    args: {source: server, to: workers, scope: self}
    delay_steps: {delay}
consensus: {average: server}
"""


def _delayed_pulls(tmp_path, delay, steps, n=4):
    path = tmp_path / "delayed-pull.yaml"
    path.write_text(_DELAYED_PULL.replace("{delay}", delay))
    workers = {}

    def compute(worker, view, step):
        workers[step] = worker

    sim = Simulation(path, n, seed=4, compute=compute).run(steps)
    # (step the pull was applied after, worker it pulled to), in recorded order.
    pulls = [(event.step, int(event.operator.rows[0])) for event in sim.trace.events()]
    return sim, workers, pulls


@pytest.mark.parametrize("lag", [0, 1, 3])
def test_delay_steps_applies_an_event_that_many_computations_later(tmp_path, lag):
    # The pull fired by computation t lands after computation t + lag: the due step is
    # counted from the computation that fired it (an off-by-one shifts every pair).
    steps = 40
    sim, workers, pulls = _delayed_pulls(tmp_path, str(lag), steps)
    worker_rows = [sim.layout.owner_slot("workers", w) for w in range(4)]
    expected = [(t + lag, worker_rows[workers[t]]) for t in range(steps - lag)]
    assert pulls == expected


def test_uniform_delay_steps_stay_within_their_bounds_and_use_all_of_them(tmp_path):
    steps = 400
    sim, workers, pulls = _delayed_pulls(tmp_path, "{low: 1, high: 3}", steps)
    worker_rows = [sim.layout.owner_slot("workers", w) for w in range(4)]
    # Each pull lands 1 to 3 computations after one of its worker's computations; where
    # only one lag explains it, that lag was drawn, and every lag of the range is drawn.
    drawn = set()
    for step, row in pulls:
        lags = {step - t for t in range(step - 3, step) if t >= 0 and
                worker_rows[workers[t]] == row and step - t >= 1}
        assert lags, (step, row)
        if len(lags) == 1:
            drawn |= lags
    assert drawn == {1, 2, 3}
    assert steps - 3 <= len(pulls) <= steps


def test_rounds_are_counted_from_zero():
    # Local steps every 3 rounds: the first average closes round 3, after step 3 n - 1.
    sim = Simulation("local-step", 4, seed=0, params={"local_steps": 3}).run(24)
    assert sim.trace.ev_step == [11, 23]


def test_running_to_the_current_step_changes_nothing():
    sim = Simulation("async-ring", 4, seed=0).run(10)
    now, events = sim.env.now, len(sim.trace)
    sim.run(10)
    assert sim.env.now == now and len(sim.trace) == events and sim.step == 10


@pytest.mark.parametrize(("distribution", "low", "high"),
                         [("constant", 2, 2), ("uniform", 0, 4), ("geometric", 0, 8)])
def test_delay_line_lags_follow_their_law(distribution, low, high):
    # delay = 2: the update of computation t lands in buffer slot (t + D_t) mod length,
    # D_t constant 2, uniform on 0..4, or geometric (mean 2) truncated at 4 * 2 = 8.
    sim = Simulation("delayed", 3, seed=1, compute=lambda worker, view, step: np.ones(1),
                     record_updates=True,
                     params={"delay": 2, "distribution": distribution}).run(600)
    rows = sim.layout.rows("buffer")
    lags = [(int(np.flatnonzero(rows == row)[0]) - step) % rows.size
            for step, (_, row, _) in zip(
                (sim.trace.ev_step[i] for i in sorted(sim.trace.updates)),
                (sim.trace.updates[i] for i in sorted(sim.trace.updates)), strict=True)]
    assert min(lags) == low and max(lags) == high
    if distribution == "geometric":
        np.testing.assert_allclose(np.mean(lags), 2.0, atol=0.3)
    if distribution == "uniform":
        # Each of the 5 lags about 600 / 5 = 120 times (binomial sd 9.8): a wider law
        # folded onto the buffer (lags 5 and 6 landing on 0 and 1) would double two counts.
        counts = np.bincount(lags, minlength=5)
        assert np.all(np.abs(counts - 120) < 40), counts


_SYNC_PULL = """
name: sync-pull
summary: Synchronous parameter server whose workers pull the model after each own step.
slots: {server: 1}
view: workers
target: server
schedule: sync
communication:
  - on: own-step
    op: copy
    args: {source: server, to: workers, scope: self}
consensus: {average: server}
"""


def test_synchronous_workers_with_own_step_events_wait_for_each_round(tmp_path):
    path = tmp_path / "sync-pull.yaml"
    path.write_text(_SYNC_PULL)
    workers = []
    sim = Simulation(path, 4, seed=2,
                     compute=lambda worker, view, step: workers.append(worker)).run(12)
    # Every worker computes once per round (a barrier), each followed by its own pull.
    assert [sorted(workers[r:r + 4]) for r in (0, 4, 8)] == [[0, 1, 2, 3]] * 3
    assert sim.trace.ev_step == list(range(12))


def test_a_rule_switched_off_by_when_leaves_the_later_rules_on():
    # gossip's first rule (sync rounds) is off in async mode; the pairwise rule after it
    # fires after every computation.
    sim = Simulation("gossip", 5, seed=0, params={"mode": "async"}).run(20)
    assert sim.trace.ev_step == list(range(20))
    assert set(sim.trace.ev_kind) == {"pairwise"}


def test_a_pull_of_d_float32_values_takes_its_size_over_the_bandwidth():
    # d = 2 float32 values = 8 bytes at 8 bytes/s: each pull lands 1 s after its step.
    timing = Timing(compute=ComputeTime("constant", mean=1.0), links=Links(bandwidth=8.0))
    sim = Simulation("async-ps", 1, d=2, seed=0, timing=timing).run(3)
    assert sim.trace.ev_time == [2.0, 4.0, 6.0]


def test_a_target_group_given_as_a_mapping_is_the_same_target(tmp_path):
    text = Path(load_protocol("async-ps").source).read_text()
    assert "target: server" in text
    path = tmp_path / "mapping.yaml"
    path.write_text(text.replace("target: server", "target: {group: server}"))

    def compute(worker, view, step):
        return np.full(1, 0.1 * (worker + 1))

    a = Simulation("async-ps", 3, seed=1, compute=compute).run(30)
    b = Simulation(path, 3, seed=1, compute=compute).run(30)
    assert np.array_equal(a.X, b.X) and a.trace.ev_op == b.trace.ev_op


def test_per_step_rules_fire_after_every_kth_computation():
    # hybrid: the groups gossip after computations 3, 7, 11, ... (gossip_every = 4).
    sim = Simulation("hybrid", 8, seed=0, params={"group_size": 2, "gossip_every": 4}).run(16)
    gossip = [step for step, kind in zip(sim.trace.ev_step, sim.trace.ev_kind, strict=True)
              if kind == "gossip"]
    assert sorted(set(gossip)) == [3, 7, 11, 15]


def test_round_rules_see_their_round_index():
    # One-peer exponential graph, 8 workers: round r pairs i with i + 2^r (mod 8).
    sim = Simulation("one-peer-exponential", 8, seed=0).run(24)
    assert len(sim.trace) == 3
    for r, event in enumerate(sim.trace.events()):
        W = event.operator.to_dense()
        assert W[0, 2 ** (r % 3)] > 0, r


@pytest.mark.parametrize("delay", ["-1", '"=lag - 4"', '"=lag / 2"', "{low: 3, high: 1}",
                                   "{low: -1, high: 2}", "{low: 0, high: 2.5}",
                                   "{low: 0.5, high: 2}"])
def test_delay_steps_must_be_a_non_negative_integer(tmp_path, delay):
    with pytest.raises(ProtocolError, match="delay_steps") as info:
        _delayed_pulls(tmp_path, delay, 5)
    assert info.value.key.endswith(".delay_steps")


def test_a_delay_line_of_delay_zero_delivers_at_once():
    sim = Simulation("delayed", 3, seed=0, compute=lambda worker, view, step: np.ones(1),
                     record_updates=True, params={"delay": 0}).run(10)
    # Each update is delivered right after its own computation, before the pull.
    assert list(zip(sim.trace.ev_step, sim.trace.ev_kind, strict=True)) == [
        (t, kind) for t in range(10) for kind in ("update", "deliver", "copy")]
    assert sim.layout.rows("buffer").size == 1


def test_an_own_step_rule_after_a_delayed_one_still_fires(tmp_path):
    # Two pulls per computation: one a step late, one at once.
    text = _DELAYED_PULL.replace("{delay}", "1") + """  - on: own-step
    op: copy
    args: {source: server, to: workers, scope: self}
"""
    text = text.replace("consensus: {average: server}\n", "") + "consensus: {average: server}\n"
    path = tmp_path / "two-pulls.yaml"
    path.write_text(text)
    sim = Simulation(path, 3, seed=0).run(20)
    per_step = np.bincount(sim.trace.ev_step, minlength=20)
    assert per_step[0] == 1 and np.all(per_step[1:] == 2)


_PAIRWISE_ON = """
name: pairwise-{graph}
summary: Asynchronous pairwise averages with a random neighbour on an irregular graph.
schedule: async
communication:
  - on: own-step
    op: pairwise
    args: {group: workers, graph: {graph}}
"""


@pytest.mark.parametrize("graph", ["path_graph", "wheel_graph", "complete_graph"])
@pytest.mark.parametrize("with_compute", [False, True])
def test_timer_chains_pick_neighbours_as_worker_processes_do(graph, with_compute, tmp_path,
                                                             monkeypatch):
    # The chains draw a neighbour through Pairwise.worker_choice (uniforms scaled by the
    # degree in C), the processes through Pairwise.events: on graphs whose degrees differ
    # from worker to worker (1 and 2; 3 and n - 1), every pick, time and state must agree.
    # With a compute callback every event is applied at once by the bound-operator kernel.
    path = tmp_path / f"{graph}.yaml"
    path.write_text(_PAIRWISE_ON.replace("{graph}", graph))

    def compute(worker, view, step):
        return 0.05 * np.sin(view + step) + 0.01 * worker

    runs = []
    for chained in (True, False):
        monkeypatch.setattr(Simulation, "_use_timer_chains", chained)
        sim = Simulation(path, 6, d=2, seed=5, compute=compute if with_compute else None)
        for steps in (1, 9, 60, 200):
            sim.run(steps)
        runs.append(sim)
    a, b = runs
    assert a._chained and not b._chained
    assert a.trace.ev_step == b.trace.ev_step and a.trace.ev_time == b.trace.ev_time
    edges = [[tuple(t.ops[i].rows.tolist()) for i in t.ev_op] for t in (a.trace, b.trace)]
    assert edges[0] == edges[1]
    assert len(set(edges[0])) > 1
    assert np.array_equal(a.X, b.X)
    # And the state is the trace's operators applied in order (updates included), by a
    # dense NumPy product, independent of the kernels.
    if not with_compute:
        X = a.trace.initial_state.copy()
        for i in a.trace.ev_op:
            X = a.trace.ops[i].to_dense() @ X
        np.testing.assert_allclose(a.X, X, rtol=0, atol=1e-12)


def test_the_compute_callback_sees_every_earlier_event_applied():
    # The fast path applies an event at once (bound-operator kernel) when a compute
    # callback may read the state: each view must equal the dense replay of every event
    # recorded before that computation, at the computing worker's own slot.
    seen = []

    def compute(worker, view, step):
        seen.append((worker, len(sim.trace.ev_op), view.copy()))
        return None

    sim = Simulation("async-ring", 5, d=3, seed=8, compute=compute)
    sim.run(80)
    trace = sim.trace
    assert sim._chained and len(seen) == 80
    X, applied = trace.initial_state.copy(), 0
    for worker, recorded, view in seen:
        for i in trace.ev_op[applied:recorded]:
            X = trace.ops[i].to_dense() @ X
        applied = recorded
        row = sim.layout.owner_slot("workers", worker)
        np.testing.assert_allclose(view, X[row], rtol=0, atol=1e-12)
    assert applied > 70


_TWO_OWN_RULES = """
name: pull-then-gossip
summary: Asynchronous server pull followed by a pairwise average, two own-step rules.
slots: {server: 1}
view: workers
target: server
schedule: async
communication:
  - on: own-step
    op: copy
    args: {source: server, to: workers, scope: self}
  - on: own-step
    op: pairwise
    args: {group: workers, graph: cycle_graph}
consensus: {average: server}
"""


@pytest.mark.parametrize("with_compute", [False, True])
def test_timer_chains_with_two_own_step_rules_match_worker_processes(with_compute, tmp_path,
                                                                     monkeypatch):
    # Two own-step rules take the general closure (every rule, in order), not the
    # one-rule fast path: the same events as worker processes, pulls and averages
    # interleaved worker by worker.
    path = tmp_path / "two.yaml"
    path.write_text(_TWO_OWN_RULES)

    def compute(worker, view, step):
        return 0.1 * np.cos(view) - 0.01 * step

    runs = []
    for chained in (True, False):
        monkeypatch.setattr(Simulation, "_use_timer_chains", chained)
        sim = Simulation(path, 5, d=2, seed=6, compute=compute if with_compute else None)
        for steps in (3, 40, 120):
            sim.run(steps)
        runs.append(sim)
    a, b = runs
    assert a._chained and not b._chained
    assert a.trace.ev_kind == b.trace.ev_kind and a.trace.ev_time == b.trace.ev_time
    assert a.trace.ev_kind[:2] == ["copy", "pairwise"] and len(a.trace.ev_kind) == 240
    assert [a.trace.ops[i].rows.tolist() for i in a.trace.ev_op] == \
        [b.trace.ops[i].rows.tolist() for i in b.trace.ev_op]
    assert np.array_equal(a.X, b.X)


_NO_WAIT = """
name: ring-no-wait
summary: Asynchronous ring whose average travels on its own (the worker does not wait).
schedule: async
communication:
  - on: own-step
    op: pairwise
    args: {group: workers, graph: cycle_graph}
    wait: false
"""


def test_an_event_that_does_not_wait_on_an_instant_link_follows_its_computation(tmp_path):
    # Constant compute times: all workers finish together (ties). Over instant links an
    # own-step event that does not wait costs no time, so it applies right after its own
    # computation, before the next worker's: the k-th event follows computation k.
    path = tmp_path / "no-wait.yaml"
    path.write_text(_NO_WAIT)
    sim = Simulation(path, 4, seed=1, timing=Timing(compute=ComputeTime("constant"))).run(12)
    assert sim.trace.ev_step == list(range(12))
    assert sim.trace.ev_time == [1.0] * 4 + [2.0] * 4 + [3.0] * 4


def test_a_state_that_does_not_fit_in_memory_is_refused_before_it_is_allocated(monkeypatch):
    # The documented estimate: three float64 copies of the state (slots x d) plus a fixed
    # overhead per slot (mixsim._memory.BYTES_PER_SLOT). async-ps with 10 workers has 11
    # slots; at d = 1000 that is 11 * (3 * 8 * 1000 + 2048) = 286,528 bytes.
    from mixsim import _memory

    needed = 11 * (3 * 8 * 1000 + 2048)
    monkeypatch.setattr(_memory, "available", lambda: needed - 1)
    with pytest.raises(ConfigError, match="11 slots x 1,000 coordinates"):
        Simulation("async-ps", 10, d=1000)
    monkeypatch.setattr(_memory, "available", lambda: needed)
    assert Simulation("async-ps", 10, d=1000).X.shape == (11, 1000)


_RING_WITH_ROUNDS = """
name: ring-and-average
summary: Asynchronous ring averages and a global average after every third computation.
schedule: async
communication:
  - on: own-step
    op: pairwise
    args: {group: workers, graph: cycle_graph}
  - on: step
    every: 3
    op: average
    args: {group: workers}
"""


def test_timer_chains_with_a_per_step_rule_match_worker_processes(tmp_path, monkeypatch):
    # A per-step rule (every 3rd computation, whoever computed) beside an own-step rule:
    # the chains must take the general step, which fires it, as worker processes do.
    path = tmp_path / "ring-and-average.yaml"
    path.write_text(_RING_WITH_ROUNDS)
    runs = []
    for chained in (True, False):
        monkeypatch.setattr(Simulation, "_use_timer_chains", chained)
        sim = Simulation(path, 5, seed=2)
        for steps in (4, 30):
            sim.run(steps)
        runs.append(sim)
    a, b = runs
    assert a._chained and not b._chained
    averages = [s for s, k in zip(a.trace.ev_step, a.trace.ev_kind, strict=True)
                if k == "average"]
    assert averages == list(range(2, 30, 3))
    assert a.trace.ev_kind == b.trace.ev_kind and a.trace.ev_time == b.trace.ev_time
    assert np.array_equal(a.X, b.X)


def test_a_worker_with_nothing_to_send_does_not_wait_for_a_link():
    # A ring of one worker has no neighbour: latency 0.5 on every link, but no event, so
    # the worker computes every 1.0 exactly.
    times = []
    timing = Timing(compute=ComputeTime("constant"), links=Links(latency=0.5))
    sim = Simulation("async-ring", 1, seed=0, timing=timing,
                     compute=lambda worker, view, step: times.append(sim.env.now))
    sim.run(4)
    assert len(sim.trace) == 0 and not sim._chained
    assert times == [1.0, 2.0, 3.0, 4.0]


_SHARED_CACHES = """
name: shared-caches
summary: Workers pull their server slot into a cache slot that workers of other servers share.
slots: {server: 2, cache: 3}
view: cache
target: server
schedule: async
communication:
  - on: own-step
    op: copy
    args: {source: server, to: cache, scope: self}
consensus: {average: server}
"""


@pytest.mark.parametrize("chained", [True, False])
def test_each_pull_copies_the_pulling_workers_own_source(chained, tmp_path, monkeypatch):
    # 7 workers over 2 server slots and 3 cache slots: a cache slot serves workers of both
    # servers. The pull after computation t copies the server slot of the worker that
    # computed, into that worker's cache slot (both read off the layout).
    path = tmp_path / "caches.yaml"
    path.write_text(_SHARED_CACHES)
    monkeypatch.setattr(Simulation, "_use_timer_chains", chained)
    workers = {}

    def compute(worker, view, step):
        workers[step] = worker

    sim = Simulation(path, 7, seed=3, compute=compute,
                     timing=Timing(compute=ComputeTime("constant", stragglers=0.3))).run(130)
    assert sim._chained == chained
    layout = sim.layout
    assert len({(layout.owner_slot("cache", w), layout.owner_slot("server", w))
                for w in range(7)}) > 3  # some cache slot is shared across servers
    pulls = [(e.step, e.operator.rows.tolist(), e.operator.cols.tolist())
             for e in sim.trace.events()]
    assert len(pulls) == 130
    for step, rows, cols in pulls:
        worker = workers[step]
        assert rows == [layout.owner_slot("cache", worker)]
        assert cols == [layout.owner_slot("server", worker)]


def test_a_divergence_inside_a_worker_process_keeps_its_step():
    # With link latency the asynchronous ring runs as worker processes; SimPy re-creates
    # an exception raised in a process from its args: the step must survive that.
    timing = Timing(links=Links(latency=0.1))
    sim = Simulation("async-ring", 4, seed=0, timing=timing,
                     compute=lambda worker, view, step: np.inf if step == 5 else None)
    with pytest.raises(DivergenceError) as info:
        sim.run(20)
    assert not sim._chained
    assert info.value.step == 5
    assert str(info.value).startswith("diverged at step 5: worker ")
    assert str(info.value).count("diverged") == 1


@pytest.mark.parametrize("name", ["async-ring", "async-ps", "sync-ring"])
@pytest.mark.parametrize("error", [ValueError("bad batch"), KeyboardInterrupt()])
def test_a_run_stopped_by_an_error_keeps_its_record_and_refuses_to_continue(name, error):
    # An error inside a run can leave a worker between two events: the simulation keeps
    # what happened (state and trace agree) and says it cannot continue.
    def compute(worker, view, step):
        if step == 7:
            raise error
        return 0.01 * view

    sim = Simulation(name, 4, d=2, seed=1, compute=compute, record_updates=True)
    with pytest.raises(type(error)):
        sim.run(30)
    assert sim.step == 7 and sim.trace.n_steps == 7
    np.testing.assert_allclose(sim.X, sim.trace.replay(), rtol=0, atol=1e-12)
    with pytest.raises(StoppedError, match=f"stopped at step 7 with {type(error).__name__}"):
        sim.run(40)
    assert sim.step == 7


@pytest.mark.parametrize(("rule", "key", "message"), [
    ("on: own-step\n    every: 3\n    op: pairwise\n    args: {group: workers}",
     "communication[0].every", "an own-step rule fires after each"),
    ("on: round\n    op: pairwise\n    args: {group: workers}",
     "communication[0].on", "a round has none"),
])
def test_rules_that_cannot_mean_what_they_say_are_refused(rule, key, message, tmp_path,
                                                          capsys):
    schedule = "sync" if "round" in rule else "async"
    path = tmp_path / "p.yaml"
    path.write_text(f"name: p\nsummary: s\nschedule: {schedule}\ncommunication:\n  - {rule}\n")
    with pytest.raises(ProtocolError, match=message) as info:
        Simulation(path, 4)
    assert info.value.key == key
    from mixsim.cli import main

    assert main(["validate", str(path), "--workers", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"d": 0}, "d"), ({"d": 2.5}, "d"), ({"d": "3"}, "d"), ({"d": True}, "d"),
    ({"dtype": np.float16}, "dtype"), ({"dtype": np.int64}, "dtype"),
    ({"dtype": np.longdouble}, "dtype")])
def test_a_bad_state_shape_or_type_is_named(kwargs, key):
    with pytest.raises(ConfigError) as info:
        Simulation("async-ring", 4, **kwargs)
    assert info.value.key == key


def test_float32_and_float64_states_are_both_kept_in_their_type():
    for dtype in (np.float32, np.float64):
        sim = Simulation("async-ring", 4, d=2, dtype=dtype, record_updates=True,
                         compute=lambda worker, view, step: 0.5 * view).run(20)
        assert sim.X.dtype == dtype
        np.testing.assert_allclose(sim.X, sim.trace.replay(),
                                   rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_a_lone_worker_in_a_timer_chain_computes_without_events():
    # A ring of one: the pick has no neighbour (an option of no event) on the fast path.
    sim = Simulation("async-ring", 1, seed=0, compute=lambda worker, view, step: None)
    sim.run(5)
    assert sim._chained and sim.step == 5 and len(sim.trace) == 0
