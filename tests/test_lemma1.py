"""Lemma 1 of seed 002 (eq. 2) checked on the traces mixsim records."""

import json

import numpy as np
import pytest

from mixsim import Simulation
from mixsim.mixing import trace_mixing_time
from mixsim.protocol import list_protocols

CATALOG = [name for name, _ in list_protocols()]


def _windows_by_hand(trace, t_mix, xi, coord=0):
    """Every window's ratio from dense step operators (an independent twin)."""
    T = trace.n_steps
    m_inf = trace.consensus.matrix().toarray()
    steps = [np.eye(m_inf.shape[0]) for _ in range(T)]
    for event in trace.events():
        if 0 <= event.step < T and (event.coords is None or coord in event.coords):
            steps[event.step] = event.operator.to_dense() @ steps[event.step]
    ratios = {}
    for s in range(T + 1):
        product = np.eye(m_inf.shape[0])
        for t in range(s, T + 1):
            if t > s:
                product = steps[t - 1] @ product
            bound = 2.0 ** -((t - s) // t_mix) * (1 + xi) * xi
            ratios[(s, t)] = np.linalg.norm(product - m_inf, 2) / bound
    return ratios


@pytest.mark.parametrize("name", CATALOG)
@pytest.mark.parametrize("n", [4, 8, 16])
def test_lemma1_holds_on_every_catalog_trace(name, n):
    # Several seeds where the operator sequence depends on them, one where it cannot.
    seeds = (0, 1, 2) if n < 16 else (0,)
    for seed in seeds:
        t_mix, xi = trace_mixing_time(name, n, seed=seed)
        steps = 2 * int(t_mix) + n
        # Exact for this trace: every window start of it is measured, and xi is raised to
        # the largest product norm of the trace (the sampled xi is a lower bound).
        exact_t_mix, _ = trace_mixing_time(name, n, seed=seed, starts=steps)
        trace = Simulation(name, n, seed=seed).run(steps).trace
        first = trace.check_lemma1(exact_t_mix, xi)
        exact_xi = max(xi, first.trace_xi)
        check = trace.check_lemma1(exact_t_mix, exact_xi)
        assert check.holds, check.message()
        assert check.steps == steps and check.windows == (steps + 1) * (steps + 2) // 2
        assert 0 < check.worst_ratio <= 1 + 1e-9


def test_check_matches_dense_windows_and_names_the_first_broken_window():
    trace = Simulation("async-ring", 4, seed=3).run(30).trace
    t_mix, xi = 2, 1.0
    check = trace.check_lemma1(t_mix, xi)
    ratios = _windows_by_hand(trace, t_mix, xi)
    worst = max(ratios, key=ratios.get)
    assert check.worst_ratio == pytest.approx(ratios[worst], rel=1e-9)
    assert ratios[check.worst_window] == pytest.approx(ratios[worst], rel=1e-9)
    broken = sorted((t, s) for (s, t), r in ratios.items() if r > 1 + 1e-9)
    assert broken, "t_mix = 2 should be too small for the asynchronous ring"
    t, s = broken[0]
    assert check.violation[:2] == (s, t)
    assert check.violation[2] == pytest.approx(ratios[(s, t)], rel=1e-9)


def test_allreduce_with_too_small_t_mix_breaks_at_the_second_step():
    # No averaging happens before step 3: every window [s, t) with t <= 3 is the identity,
    # at distance ||I - M_inf|| = 1 from consensus. With t_mix = 1 and xi = 1 the bound is
    # 2 * 2^-(t - s): window [0, 1) meets it (ratio 1), window [0, 2) is twice over it.
    trace = Simulation("allreduce", 4).run(12).trace
    check = trace.check_lemma1(1, 1.0)
    assert check.violation == (0, 2, pytest.approx(2.0, rel=1e-12))
    assert not check.holds and "t_mix is too small" in check.message()
    assert trace.check_lemma1(4, 1.0).holds


def test_expansive_protocol_reports_the_trace_xi():
    trace = Simulation("hybrid", 8, seed=1).run(40).trace
    m_inf = trace.consensus.matrix().toarray()
    product, largest = np.eye(m_inf.shape[0]), 1.0
    for t in range(trace.n_steps):
        product = trace.step_operator(t).toarray() @ product
        largest = max(largest, np.linalg.norm(product, 2))
    check = trace.check_lemma1(1, 1.0)
    # Windows from step 0 reach the largest norm among those products, others may exceed it.
    assert check.trace_xi >= largest - 1e-12 and check.trace_xi > 1
    assert not check.holds and "xi was too small" in check.message()


def test_sparsified_trace_is_checked_per_coordinate():
    sim = Simulation("sparse", 4, seed=0, d=3).run(40)
    t_mix, xi = 6, 1.0
    worst = max(max(_windows_by_hand(sim.trace, t_mix, xi, coord).values())
                for coord in range(3))
    check = sim.trace.check_lemma1(t_mix, xi, coordinates=3)
    assert check.worst_ratio == pytest.approx(worst, rel=1e-9)
    assert check.windows == 3 * 41 * 42 // 2
    exact_t_mix, xi = trace_mixing_time("sparse", 4, seed=0, d=3, starts=40)
    assert sim.trace.check_lemma1(exact_t_mix, xi, coordinates=3).holds


def test_check_refuses_values_below_one():
    trace = Simulation("allreduce", 2).run(4).trace
    with pytest.raises(ValueError, match="t_mix = 0"):
        trace.check_lemma1(0, 1.0)


def test_cli_mixing_time_check_reports_each_size(capsys):
    from mixsim.cli import main

    assert main(["mixing-time", "allreduce", "--workers", "4", "8", "--check", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    for row, n in zip(results, (4, 8), strict=True):
        lemma1 = row["lemma1"]
        assert lemma1["holds"] and lemma1["t_mix"] == n and lemma1["steps"] == 3 * n
        assert lemma1["worst_ratio"] == pytest.approx(0.5)
    assert main(["mixing-time", "async-ring", "--workers", "4", "--runs", "3", "--check"]) == 0
    assert "holds on every window" in capsys.readouterr().out


def test_cli_mixing_time_check_exits_1_when_the_lemma_breaks(capsys, monkeypatch):
    from mixsim import trace
    from mixsim.cli import main

    real = trace.Trace.check_lemma1
    # As if the measurement had reported t_mix = 1: the real check then finds the break.
    monkeypatch.setattr(trace.Trace, "check_lemma1",
                        lambda self, t_mix, xi, **kw: real(self, 1, xi, **kw))
    assert main(["mixing-time", "allreduce", "--workers", "4", "--check"]) == 1
    captured = capsys.readouterr()
    assert "first broken by window [0, 2)" in captured.out
    assert "Lemma 1 does not hold" in captured.err


def test_cli_check_refuses_the_spectral_method(capsys):
    from mixsim.cli import main

    assert main(["mixing-time", "sync-ring", "--method", "spectral", "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--method trace or montecarlo" in err


def test_check_says_when_the_window_products_do_not_fit(monkeypatch):
    from mixsim import _memory
    from mixsim.errors import ConfigError

    trace = Simulation("async-ring", 6, seed=0).run(40).trace
    # 41 window products of 6 x 6 slots, five copies of 8-byte numbers: 59,040 bytes.
    monkeypatch.setattr(_memory, "available", lambda: 59_039)
    with pytest.raises(ConfigError, match="41 window products of 6 x 6 slots"):
        trace.check_lemma1(10, 1.0)
    monkeypatch.setattr(_memory, "available", lambda: 59_040)
    assert trace.check_lemma1(10, 1.0).steps == 40


@pytest.mark.parametrize("base", ["sync-ring", "async-ring", "allreduce"])
def test_the_violation_is_the_earliest_window_over_every_coordinate(base):
    # Each coordinate of a sparsified trace has its own windows: the reported violation is
    # the earliest end, then earliest start, over all of them (dense twin per coordinate).
    sim = Simulation("sparse", 3, d=4, seed=1, params={"base": base, "eta": 0.3}).run(12)
    t_mix, xi = 2, 1.0
    broken = [(t, s, r) for coord in range(4)
              for (s, t), r in _windows_by_hand(sim.trace, t_mix, xi, coord).items()
              if r > 1 + 1e-9]
    assert broken
    t, s, ratio = min(broken)
    check = sim.trace.check_lemma1(t_mix, xi, coordinates=4)
    assert check.violation[:2] == (s, t)
    assert any(check.violation[2] == pytest.approx(r, rel=1e-9)
               for t2, s2, r in broken if (t2, s2) == (t, s))
