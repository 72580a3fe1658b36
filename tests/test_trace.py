"""Traces: step operators, replay and the checks of Assumptions 1 and 3."""

import numpy as np

from mixsim import Simulation

BAD_PROTOCOL = """
name: bad-pull
summary: A pull whose consensus is the workers' mean, which a pull does not preserve.
slots: {server: 1}
schedule: async
communication:
  - on: own-step
    op: copy
    args: {source: server, to: workers, scope: self}
consensus: {average: workers}
"""


def test_step_operator_is_the_product_of_the_events_of_the_step():
    sim = Simulation("sync-ring", 5, seed=0).run(10)
    M = sim.trace.step_operator(4).toarray()
    W = np.zeros((5, 5))
    for i in range(5):
        for j in (i - 1, i, i + 1):
            W[i, j % 5] = 1 / 3
    np.testing.assert_allclose(M, W)
    np.testing.assert_allclose(sim.trace.step_operator(3).toarray(), np.eye(5))


def test_assumption1_violation_names_the_event(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_PROTOCOL)
    sim = Simulation(str(path), 3, seed=0).run(6)
    violations = sim.trace.check_assumption1()
    assert violations and violations[0].assumption == 1
    assert violations[0].kind == "copy"
    assert "event 0 (copy" in violations[0].message


def test_assumption3_reports_growth_beyond_xi():
    sim = Simulation("async-ps", 4, seed=0).run(20)
    assert sim.trace.check_assumption3(xi_max=3.0) == []
    violations = sim.trace.check_assumption3(xi_max=1.2)
    assert violations and violations[0].assumption == 3 and violations[0].value > 1.2


def test_events_carry_step_time_kind_participants():
    sim = Simulation("async-ring", 4, seed=1).run(8)
    events = list(sim.trace.events())
    assert len(events) == 8
    for event in events:
        assert event.kind == "pairwise" and len(event.participants) == 2
        assert event.time > 0
