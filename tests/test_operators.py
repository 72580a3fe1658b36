"""Operators and their numba kernels against plain NumPy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixsim import Operator


def _random_operator(rng, size):
    rows = rng.choice(size, size=rng.integers(1, size + 1), replace=False)
    new_rows = {int(r): {int(c): float(rng.standard_normal())
                         for c in rng.choice(size, size=rng.integers(1, size + 1))}
                for r in rows}
    return Operator.from_rows(new_rows, size), new_rows


def _naive_apply(new_rows, X):
    Y = X.copy()
    for r, weights in new_rows.items():
        Y[r] = sum(w * X[c] for c, w in weights.items())
    return Y


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_apply_matches_numpy(size, d, seed):
    rng = np.random.default_rng(seed)
    op, new_rows = _random_operator(rng, size)
    X = rng.standard_normal((size, d))
    expected = _naive_apply(new_rows, X)
    Y = X.copy()
    op.apply(Y)
    np.testing.assert_allclose(Y, expected, atol=1e-12)
    np.testing.assert_allclose(op.to_dense() @ X, expected, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_apply_on_coordinates_is_identity_elsewhere(size, d, seed):
    rng = np.random.default_rng(seed)
    op, new_rows = _random_operator(rng, size)
    X = rng.standard_normal((size, d))
    coords = np.flatnonzero(rng.random(d) < 0.5)
    expected = X.copy()
    expected[:, coords] = _naive_apply(new_rows, X)[:, coords]
    Y = X.copy()
    op.apply(Y, coords)
    np.testing.assert_allclose(Y, expected, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype):
    op = Operator.from_rows({0: {0: 0.5, 1: 0.5}, 1: {0: 0.5, 1: 0.5}}, 2)
    X = np.array([[1.0], [3.0]], dtype=dtype)
    op.apply(X)
    assert X.dtype == dtype and X[:, 0].tolist() == [2.0, 2.0]


def test_from_matrix_keeps_only_changed_rows_and_norm():
    M = np.eye(4)
    M[1] = [0.5, 0.5, 0, 0]
    op = Operator.from_matrix(M)
    assert op.rows.tolist() == [1]
    np.testing.assert_allclose(op.to_dense(), M)
    assert op.norm() == pytest.approx(np.linalg.norm(M, 2))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(0, 12), st.integers(0, 2**31 - 1))
def test_apply_sequence_matches_dense_products(size, d, length, seed):
    from mixsim.operators import _apply_sequence
    from mixsim.state import SlotLayout
    from mixsim.trace import Consensus, Trace

    rng = np.random.default_rng(seed)
    ops = [_random_operator(rng, size)[0] for _ in range(3)]
    trace = Trace(SlotLayout({"workers": size}), Consensus(SlotLayout({"workers": size})))
    sequence = [int(k) for k in rng.integers(-1, 3, size=length)]
    for k in sequence:
        if k >= 0:
            trace.register(ops[k])
    X = rng.standard_normal((size, d))
    expected = X.copy()
    for k in sequence:
        if k >= 0:
            expected = ops[k].to_dense() @ expected
    index = {id(op): i for i, op in enumerate(trace.ops)}
    ev_op = np.array([index[id(ops[k])] if k >= 0 else -1 for k in sequence], dtype=np.int64)
    buf = np.empty((size, d))
    Y = X.copy()
    _apply_sequence(Y, ev_op, *trace.op_arrays(), buf)
    np.testing.assert_allclose(Y, expected, atol=1e-10)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 7), st.integers(0, 2**31 - 1))
def test_norm_equals_the_dense_spectral_norm(size, seed):
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(size, rng.integers(1, size + 1), replace=False))
    new_rows = {int(r): {int(c): float(rng.normal() * 0.6)
                         for c in rng.choice(size, rng.integers(0, size + 1), replace=False)}
                for r in rows}
    op = Operator.from_rows(new_rows, size)
    dense = np.linalg.norm(op.to_dense(), 2)
    assert op.norm() == pytest.approx(dense, abs=1e-12)
    assert op._row_col_bound() >= dense - 1e-12


def test_norm_of_an_average_is_one():
    op = Operator.from_rows({0: {0: 0.5, 2: 0.5}, 2: {0: 0.5, 2: 0.5}}, 4)
    assert op.norm() == 1.0


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 7), st.integers(1, 4), st.integers(0, 2**31 - 1),
       st.sampled_from([np.float64, np.float32]), st.booleans())
def test_bound_operator_kernel_matches_numpy(size, d, seed, dtype, rank_one):
    # The engine's per-event kernel: the operator packed in two arrays and bound to X in
    # one numba structure. Reference: the rows written out by hand (or the slack average
    # x_i <- (1 - gamma) x_i + gamma mean(x_group) in closed form).
    from mixsim.operators import _BoundOp, bound_kernel

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((size, d)).astype(dtype)
    if rank_one:
        group = np.unique(rng.choice(size, size=rng.integers(1, size + 1)))
        # gamma = 1 (an average: no sparse part at all) or a slack (a diagonal as long as
        # the rank-one part): the packed parts then have different lengths.
        gamma = 1.0 if rng.random() < 0.5 else float(rng.uniform(0.1, 0.9))
        op = Operator.mix(group, gamma, size)
        expected = X.astype(np.float64)
        expected[group] = (1 - gamma) * expected[group] + gamma * expected[group].mean(axis=0)
    else:
        op, new_rows = _random_operator(rng, size)
        expected = _naive_apply(new_rows, X.astype(np.float64))
    kernel, bound = bound_kernel(X, op)
    assert isinstance(bound, _BoundOp)  # one compiled structure, not the Python fallback
    kernel(bound)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(X, expected, rtol=tol, atol=tol * size)
    assert X.dtype == dtype


def _structured_operator(rng, size, scale=1.0):
    """A random operator with a sparse part and a rank-one part, and its dense matrix built
    from the documented rule: new ``X[rows[a]]`` is the sparse row plus
    ``lr_coef[a] * sum_q lr_vals[q] X[lr_cols[q]]``, other rows unchanged."""
    rows = rng.choice(size, size=rng.integers(1, size + 1), replace=False)
    counts = rng.integers(0, size + 1, size=rows.size)
    row_ptr = np.concatenate([[0], np.cumsum(counts)])
    cols = np.concatenate([np.sort(rng.choice(size, c, replace=False)) for c in counts])
    vals = scale * rng.standard_normal(cols.size)
    lr_cols = rng.choice(size, size=rng.integers(1, size + 1), replace=False)
    lr_vals = scale * rng.standard_normal(lr_cols.size)
    lr_coef = scale * rng.standard_normal(rows.size)
    dense = np.eye(size)
    for a, r in enumerate(rows):
        dense[r] = 0.0
        for p in range(row_ptr[a], row_ptr[a + 1]):
            dense[r, cols[p]] += vals[p]
        for q in range(lr_cols.size):
            dense[r, lr_cols[q]] += lr_coef[a] * lr_vals[q]
    op = Operator(rows, row_ptr, cols, vals, size, lr_cols=lr_cols, lr_vals=lr_vals,
                  lr_coef=lr_coef)
    return op, dense


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7), st.integers(1, 5), st.floats(0.2, 1.0), st.integers(0, 2**31 - 1))
def test_an_operator_with_a_rank_one_part_against_its_dense_matrix(size, d, scale, seed):
    rng = np.random.default_rng(seed)
    op, dense = _structured_operator(rng, size, scale)
    assert op.low_rank
    np.testing.assert_allclose(op.to_dense(), dense, rtol=0, atol=1e-14)
    X = rng.standard_normal((size, d))
    Y = X.copy()
    op.apply(Y)
    np.testing.assert_allclose(Y, dense @ X, rtol=1e-13, atol=1e-13)
    Y = X.copy()
    op.apply(Y)  # the scratch rows of the first call are reused
    np.testing.assert_allclose(Y, dense @ X, rtol=1e-13, atol=1e-13)
    coords = np.flatnonzero(rng.random(d) < 0.5)
    Z = X.copy()
    op.apply(Z, coords)
    expected = X.copy()
    expected[:, coords] = (dense @ X)[:, coords]
    np.testing.assert_allclose(Z, expected, rtol=1e-13, atol=1e-13)
    norm = np.linalg.norm(dense, 2)
    assert op.norm() == pytest.approx(norm, rel=1e-12, abs=1e-12)
    assert op._row_col_bound() >= norm * (1 - 1e-12)
    assert op._keeps_constants() == bool(np.allclose(dense.sum(axis=1), 1.0, rtol=0,
                                                     atol=1e-12))


@pytest.mark.parametrize("n", range(2, 9))
def test_a_doubly_stochastic_operator_on_every_slot_has_norm_exactly_one(n):
    # ||W||_2 = 1 for a doubly stochastic W (W 1 = 1 and ||W||_2 <= sqrt(||W||_1 ||W||_inf)
    # = 1): exactly 1.0, not the 1 +- ulp a singular value decomposition gives, so that a
    # window of averages never counts as expanding (xi > 1).
    from mixsim.topology import ring_matrix

    for op in (*(Operator.mix(range(n), gamma, n) for gamma in (0.25, 0.3, 0.5, 1.0)),
               Operator.from_matrix(ring_matrix(n))):
        assert op.participants().size == n
        assert op.norm() == 1.0


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(0, 12), st.integers(0, 2**31 - 1))
def test_apply_sequence_of_structured_operators_matches_dense_products(size, d, length, seed):
    from mixsim.operators import _apply_sequence
    from mixsim.state import SlotLayout
    from mixsim.trace import Consensus, Trace

    rng = np.random.default_rng(seed)
    ops = [_structured_operator(rng, size) for _ in range(3)]
    trace = Trace(SlotLayout({"workers": size}), Consensus(SlotLayout({"workers": size})))
    for op, _ in ops:
        trace.register(op)
    index = {id(op): i for i, op in enumerate(trace.ops)}
    sequence = [int(k) for k in rng.integers(-1, 3, size=length)]
    X = rng.standard_normal((size, d))
    expected = X.copy()
    for k in sequence:
        if k >= 0:
            expected = ops[k][1] @ expected
    ev_op = np.array([index[id(ops[k][0])] if k >= 0 else -1 for k in sequence],
                     dtype=np.int64)
    Y = X.copy()
    _apply_sequence(Y, ev_op, *trace.op_arrays(), np.empty((size, d)))
    np.testing.assert_allclose(Y, expected, rtol=1e-10, atol=1e-10)
