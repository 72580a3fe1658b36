"""The exact first-passage scan behind the trace mixing time, against dense products."""

import naive
import numpy as np
import pytest

from mixsim import Simulation, _passages
from mixsim._passages import FirstPassages

#: The contraction a mixing window must reach: 1/2 in Assumption 2 of MixML (seed 002),
#: with a float64 rounding slack (a few hundred ulps over a few hundred products) so that an
#: exact halving (slack averaging, gamma = 1/2) still counts. Taken from the paper, not from
#: the scan's own threshold, so a changed threshold in the code is caught.
HALF = 0.5 * (1 + 256 * np.finfo(np.float64).eps)

CASES = [
    ("async-ring", 6, None),
    ("async-ps", 5, None),
    ("hogwild", 6, None),
    ("delayed", 4, {"distribution": "uniform"}),
    ("sync-ring", 6, None),
    ("slack", 4, {"gamma": 0.5}),
    ("hybrid", 8, {"group_size": 2}),
    ("local-step", 3, None),
    ("allreduce", 4, None),
    ("gossip", 7, {"mode": "async", "graph": "path_graph"}),
    ("one-peer-exponential", 8, None),
]


def _scan_in_pieces(sim, starts, coord, pieces):
    scan = FirstPassages(sim.trace.consensus.complement_basis(), starts, coord)
    for steps in pieces:
        sim.run(steps)
        base = scan.next_step
        scan.advance(sim.trace.compile(coord + 1, first_step=base), sim.step, base)
    return scan


@pytest.mark.parametrize("name, n, params", CASES)
def test_first_passages_equal_dense_products(name, n, params):
    sim = Simulation(name, n, seed=5, params=params)
    starts = np.array(list(range(n)) + [n + 3, 2 * n + 1, 40])
    # Fed in pieces, as the trace method grows a run.
    scan = _scan_in_pieces(sim, starts, 0, (13, 60, 61, 200, 420))
    basis = sim.trace.consensus.complement_basis()
    expected = naive.first_passages(naive.step_matrices(sim.trace), basis, starts, HALF)
    assert np.array_equal(scan.lengths, expected)
    assert np.all(expected[:n] > 0)


def test_exact_halvings_are_kept():
    # Slack averaging with gamma = 1/2 halves exactly: the window of one round counts.
    sim = Simulation("slack", 4, seed=0, params={"gamma": 0.5}).run(40)
    scan = FirstPassages(sim.trace.consensus.complement_basis(), np.arange(4))
    lengths = scan.advance(sim.trace.compile(1), sim.step)
    assert lengths.tolist() == [4, 3, 2, 1]
    # Every chunk closed: no step is left to examine.
    assert scan.done and scan.next_step == 0


def test_sparsified_coordinates_have_their_own_passages():
    sim = Simulation("sparse", 5, d=4, seed=2, params={"base": "async-ring", "eta": 0.5})
    sim.run(400)
    basis = sim.trace.consensus.complement_basis()
    for coord in range(4):
        scan = FirstPassages(basis, np.arange(5), coord)
        scan.advance(sim.trace.compile(4), sim.step)
        expected = naive.first_passages(naive.step_matrices(sim.trace, coord), basis,
                                        range(5), HALF)
        assert np.array_equal(scan.lengths, expected)


def test_starts_not_halved_by_the_end_stay_open():
    sim = Simulation("async-ring", 8, seed=1).run(30)
    scan = FirstPassages(sim.trace.consensus.complement_basis(), np.arange(8))
    lengths = scan.advance(sim.trace.compile(1), sim.step)
    expected = naive.first_passages(naive.step_matrices(sim.trace),
                                    sim.trace.consensus.complement_basis(), range(8), HALF)
    assert np.array_equal(lengths, expected)
    assert not scan.done and np.all(lengths == -1)
    assert scan.lower_bounds().shape == (8, 2)


def test_small_chunks_give_the_same_passages(monkeypatch):
    sim = Simulation("async-ps", 6, seed=3).run(300)
    basis = sim.trace.consensus.complement_basis()
    # Start 200 lies more than 4 * size + 64 steps after the first: a chunk of its own.
    starts = np.array([0, 1, 2, 3, 4, 5, 30, 31, 200])
    scan = FirstPassages(basis, starts)
    assert len(scan._chunks) == 2
    whole = scan.advance(sim.trace.compile(1), sim.step).copy()
    expected = naive.first_passages(naive.step_matrices(sim.trace), basis, starts, HALF)
    assert np.array_equal(whole, expected)
    monkeypatch.setattr(_passages, "_CHUNK_BYTES", 1)
    scan = FirstPassages(basis, starts[::-1])
    assert len(scan._chunks) == starts.size
    assert np.array_equal(scan.advance(sim.trace.compile(1), sim.step), whole[::-1])


def test_compiling_from_a_step_is_the_tail_of_the_whole():
    sim = Simulation("hogwild", 5, seed=0).run(120)
    whole = sim.trace.compile(2)
    tail = sim.trace.compile(2, first_step=50)
    first = whole.step_ptr[50]
    assert np.array_equal(tail.step_ptr, whole.step_ptr[50:] - first)
    assert np.array_equal(tail.ev_op, whole.ev_op[first:])
    assert np.array_equal(tail.ev_mask, whole.ev_mask[first:])


@pytest.mark.parametrize("name, n", [("async-ps", 4), ("delayed", 3), ("hogwild", 4),
                                     ("hybrid", 8)])
def test_xi_is_the_largest_norm_over_every_window(name, n):
    # Assumption 3: xi = max over all windows s <= e of ||M_e ... M_s||_2, by dense products.
    from mixsim.mixing import _all_windows_norm, _arrays_of

    sim = Simulation(name, n, seed=1).run(70)
    steps = naive.step_matrices(sim.trace)
    best = 1.0
    for s in range(len(steps)):
        product = np.eye(sim.layout.size)
        for e in range(s, len(steps)):
            product = steps[e] @ product
            best = max(best, np.linalg.norm(product, 2))
    got = _all_windows_norm(sim.step, 0, sim.layout.size, *_arrays_of(sim.trace.compile(1)),
                            1.0)
    assert got == pytest.approx(best, rel=1e-9)
    assert got > 1.0


def test_lower_bounds_of_open_starts_certify_that_they_are_not_halved():
    # An open start's bound is the largest singular value of its window on two vectors: at
    # most the window ratio (dense products), and above 1/2, since the scan keeps a start
    # open only on a certificate (a bound above the threshold, or a failed exact test that
    # turns the vectors to the top singular pair).
    sim = Simulation("async-ring", 8, seed=1).run(30)
    basis = sim.trace.consensus.complement_basis()
    scan = FirstPassages(basis, np.arange(8))
    scan.advance(sim.trace.compile(1), sim.step)
    steps = naive.step_matrices(sim.trace)
    bounds = scan.lower_bounds()
    assert bounds.shape == (8, 2)
    for s, (length, bound) in enumerate(bounds):
        Y = basis
        for e in range(s, sim.step):
            Y = steps[e] @ Y
        assert length == sim.step - s
        assert 0.5 < bound <= np.linalg.norm(Y, 2) * (1 + 1e-12)


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8])
def test_positive_definite_agrees_with_the_eigenvalues(m):
    # The exact halving test factorises h^2 I - Y^T Y; the reference is its smallest
    # eigenvalue (numpy), on matrices whose smallest eigenvalue is clearly above or below 0.
    rng = np.random.default_rng(m)
    for _ in range(200):
        Q, _ = np.linalg.qr(rng.standard_normal((m, m)))
        eigenvalues = rng.uniform(0.05, 2.0, m) * rng.choice([1.0, 1.0, -1.0], m)
        A = (Q * eigenvalues) @ Q.T
        A = (A + A.T) / 2
        expected = bool(np.linalg.eigvalsh(A).min() > 0)
        assert _passages._positive_definite(A.copy()) == expected


def test_a_trace_of_several_rank_one_operators_against_dense_products():
    # Averages and slack over sub-groups (a diagonal plus a rank-one part each) and a
    # pairwise average, several operators in one trace (no catalog protocol mixes them).
    # The passages equal the dense products, and every open start keeps U_s = Y_s V_s
    # (its two bound vectors, updated with each operator's rank-one part).
    from mixsim import Operator
    from mixsim.state import SlotLayout
    from mixsim.trace import Consensus, Trace

    size, n_steps = 6, 60
    layout = SlotLayout({"workers": size})
    trace = Trace(layout, Consensus(layout))
    ops = [Operator.from_rows({0: {0: 0.5, 5: 0.5}, 5: {0: 0.5, 5: 0.5}}, size),
           Operator.mix([0, 1, 2], 0.5, size), Operator.mix([2, 3, 4, 5], 0.7, size),
           Operator.mix([1, 3, 5], 1.0, size)]
    rng = np.random.default_rng(0)
    for step in range(n_steps):
        for k in rng.choice(len(ops), rng.integers(0, 3)):
            trace.record(step, float(step), "gossip", ops[k])
    trace.n_steps = n_steps
    assert all(op.low_rank for op in ops[1:])
    basis = trace.consensus.complement_basis()
    starts = np.array([*range(10), 56, 57, 58])
    scan = FirstPassages(basis, starts)
    lengths = scan.advance(trace.compile(1), n_steps)
    steps = naive.step_matrices(trace)
    assert np.array_equal(lengths, naive.first_passages(steps, basis, starts, HALF))
    (chunk,) = scan._chunks
    c = chunk.starts.size
    open_starts = [s for s in range(c) if chunk.length[s] < 0]
    assert open_starts
    for s in open_starts:
        Y = basis
        for e in range(chunk.starts[s], n_steps):
            Y = steps[e] @ Y
        got = np.stack([chunk.U[:, s], chunk.U[:, c + s]], axis=1)
        np.testing.assert_allclose(got, Y @ chunk.V[s], rtol=1e-12, atol=1e-12)
