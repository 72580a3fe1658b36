"""Tests for mixsim.problems: gradients against finite differences, known values, constants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from mixsim.errors import ConfigError
from mixsim.problems import list_problems, make_problem, sample_batch

M, P, C = 7, 4, 3
# (name, n_classes, params) with small sizes so finite differences stay cheap.
CASES = [
    ("least-squares", None, {}),
    ("least-squares", None, {"reg": 0.3}),
    ("logistic", 2, {}),
    ("logistic", 2, {"reg": 0.2}),
    ("nonconvex-logistic", 2, {}),
    ("nonconvex-logistic", 2, {"lambda": 0.7}),
    ("softmax", C, {}),
    ("softmax", C, {"reg": 0.1, "bias": False}),
    ("mlp", C, {"hidden": [5, 4]}),
    ("mlp", C, {"hidden": [6], "reg": 0.05}),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


def _data(name, n_classes, seed=0, m=M):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, P))
    if n_classes is None:
        y = rng.standard_normal(m)
    else:
        y = rng.integers(n_classes, size=m)
    return A, y


def _random_point(problem, rng):
    return rng.standard_normal(problem.dim) * (0.5 if problem.name == "mlp" else 1.0)


def _central_differences(f, x, h=1e-6):
    grad = np.empty_like(x)
    for j in range(x.size):
        step = np.zeros_like(x)
        step[j] = h
        grad[j] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


def _naive_logistic(x, A, y):
    """Reference for the numba kernel: plain NumPy with {0,1} -> {-1,+1}."""
    s = np.where(y > 0, 1.0, -1.0)
    z = s * (A @ x)
    loss = np.mean(np.logaddexp(0, -z))
    grad = A.T @ (-s / (1 + np.exp(z))) / len(y)
    return loss, grad


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(("name", "n_classes", "params"), CASES, ids=IDS)
def test_gradient_matches_central_differences(name, n_classes, params):
    # Tolerance: central differences with h=1e-6 are accurate to ~1e-9 on smooth functions;
    # the MLP is checked at random points, where no ReLU kink lies within h (probability ~0).
    problem = make_problem(name, P, n_classes, **params)
    A, y = _data(name, n_classes)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = _random_point(problem, rng)
        numeric = _central_differences(lambda v: problem.loss(v, A, y), x)
        np.testing.assert_allclose(problem.grad(x, A, y), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("name", "n_classes", "params"), CASES, ids=IDS)
def test_float32_preserved_and_close_to_float64(name, n_classes, params):
    problem = make_problem(name, P, n_classes, **params)
    A, y = _data(name, n_classes)
    x = _random_point(problem, np.random.default_rng(2))
    value32, grad32 = problem.loss_and_grad(x.astype(np.float32), A.astype(np.float32), y)
    value64, grad64 = problem.loss_and_grad(x, A, y)
    assert grad32.dtype == np.float32
    assert isinstance(value32, float)
    np.testing.assert_allclose(value32, value64, rtol=1e-5)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-4, atol=1e-5)
    # A float64 A with a float32 x still gives float32 (A is converted).
    assert problem.grad(x.astype(np.float32), A, y).dtype == np.float32
    assert problem.init(0, dtype=np.float32).dtype == np.float32


@pytest.mark.parametrize(("name", "n_classes", "params"), CASES, ids=IDS)
def test_loss_and_grad_agree_and_out_is_used(name, n_classes, params):
    problem = make_problem(name, P, n_classes, **params)
    A, y = _data(name, n_classes)
    x = _random_point(problem, np.random.default_rng(3))
    out = np.full(problem.dim, np.nan)
    value, grad = problem.loss_and_grad(x, A, y, out=out)
    assert grad is out
    assert value == pytest.approx(problem.loss(x, A, y), rel=1e-12)
    np.testing.assert_allclose(problem.grad(x, A, y), out, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="out must have"):
        problem.grad(x, A, y, out=np.empty(problem.dim, dtype=np.float32))


@pytest.mark.parametrize(("name", "n_classes", "params"), CASES, ids=IDS)
def test_sparse_features_match_dense(name, n_classes, params):
    problem = make_problem(name, P, n_classes, **params)
    A, y = _data(name, n_classes)
    A[A < 0.3] = 0.0
    x = _random_point(problem, np.random.default_rng(4))
    value, grad = problem.loss_and_grad(x, A, y)
    sparse_value, sparse_grad = problem.loss_and_grad(x, sp.csr_matrix(A), y)
    assert sparse_value == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(sparse_grad, grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["logistic", "nonconvex-logistic"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logistic_kernel_matches_naive(name, dtype):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((50, P)).astype(dtype)
    y = rng.integers(2, size=50)
    x = rng.standard_normal(P).astype(dtype)
    problem = make_problem(name, P, 2, **({"lambda": 0.0} if name != "logistic" else {}))
    loss, grad = _naive_logistic(x.astype(np.float64), A.astype(np.float64), y)
    value, computed = problem.loss_and_grad(x, A, y)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert value == pytest.approx(loss, rel=tol)
    np.testing.assert_allclose(computed, grad, rtol=tol, atol=tol)
    # Labels given as -1/+1 give the same result as 0/1.
    assert problem.loss(x, A, 2 * y - 1) == value


# ----------------------------------------------------------------------------- known values


def test_logistic_loss_at_zero_is_log_two():
    A, y = _data("logistic", 2)
    for name in ("logistic", "nonconvex-logistic"):
        problem = make_problem(name, P, 2)
        assert problem.loss(problem.init(0), A, y) == pytest.approx(np.log(2), rel=1e-14)


def test_nonconvex_regularizer_value():
    problem = make_problem("nonconvex-logistic", 4, 2, **{"lambda": 0.1})
    x = np.array([1.0, -1.0, 0.0, 2.0])
    A = np.zeros((3, 4))  # data term: log 2 whatever x is
    y = np.array([0, 1, 1])
    expected = np.log(2) + 0.1 * (0.5 + 0.5 + 0.0 + 4.0 / 5.0)
    assert problem.loss(x, A, y) == pytest.approx(expected, rel=1e-14)
    # Its gradient: 2 lambda x / (1 + x^2)^2.
    np.testing.assert_allclose(problem.grad(x, A, y), 0.2 * x / (1 + x**2) ** 2, rtol=1e-14)


def test_least_squares_value_and_smoothness():
    A, y = _data("least-squares", None)
    problem = make_problem("least-squares", P, None, reg=0.25)
    x = np.arange(P, dtype=float)
    expected = np.sum((A @ x - y) ** 2) / (2 * M) + 0.125 * x @ x
    assert problem.loss(x, A, y) == pytest.approx(expected, rel=1e-14)
    L = np.linalg.eigvalsh(A.T @ A / M)[-1] + 0.25
    assert problem.smoothness(A) == pytest.approx(L, rel=1e-12)
    assert problem.smoothness(sp.csr_matrix(A)) == pytest.approx(L, rel=1e-8)


def test_softmax_with_two_classes_is_logistic():
    # p(y=1) = sigmoid(a^T (w_1 - w_0)): W = [0, x] without bias gives the logistic loss at x.
    A, y = _data("logistic", 2)
    x = np.random.default_rng(6).standard_normal(P)
    logistic = make_problem("logistic", P, 2)
    softmax = make_problem("softmax", P, 2, bias=False)
    W = np.column_stack([np.zeros(P), x]).ravel()
    assert softmax.loss(W, A, y) == pytest.approx(logistic.loss(x, A, y), rel=1e-13)
    grad = softmax.grad(W, A, y).reshape(P, 2)
    np.testing.assert_allclose(grad[:, 1], logistic.grad(x, A, y), rtol=1e-12)
    np.testing.assert_allclose(grad[:, 0], -grad[:, 1], rtol=1e-12)


def test_logistic_huge_margins_are_finite():
    A, y = _data("logistic", 2)
    A = A * 1e6
    problem = make_problem("logistic", P, 2)
    x = np.ones(P)
    margins = np.where(y > 0, 1, -1) * (A @ x)
    for features in (A, sp.csr_matrix(A)):
        for dtype in (np.float64, np.float32):
            value, grad = problem.loss_and_grad(x.astype(dtype), features.astype(dtype), y)
            assert np.isfinite(value) and np.all(np.isfinite(grad))
            # log(1 + exp(-z)) is 0 for large positive z and -z for large negative z.
            assert value == pytest.approx(np.mean(np.maximum(-margins, 0)), rel=1e-5)
    softmax = make_problem("softmax", P, 2)
    value, grad = softmax.loss_and_grad(np.ones(softmax.dim), A, y)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def _fd_hessian_top_eigenvalue(problem, x, A, y):
    hessian = np.column_stack(
        [
            _central_differences(lambda v, j=j: problem.grad(v, A, y)[j], x, h=1e-5)
            for j in range(problem.dim)
        ]
    )
    return np.linalg.eigvalsh((hessian + hessian.T) / 2)[-1]


@pytest.mark.parametrize(
    ("name", "n_classes", "params"),
    [("logistic", 2, {"reg": 0.1}), ("nonconvex-logistic", 2, {}), ("softmax", C, {})],
)
def test_smoothness_bounds_the_hessian(name, n_classes, params):
    problem = make_problem(name, P, n_classes, **params)
    A, y = _data(name, n_classes)
    L = problem.smoothness(A)
    rng = np.random.default_rng(7)
    for x in [np.zeros(problem.dim), *(rng.standard_normal(problem.dim) for _ in range(3))]:
        assert _fd_hessian_top_eigenvalue(problem, x, A, y) <= L * (1 + 1e-6)


def test_logistic_smoothness_is_tight_at_zero():
    A, y = _data("logistic", 2)
    problem = make_problem("logistic", P, 2)
    L = problem.smoothness(A)
    assert L == pytest.approx(np.linalg.eigvalsh(A.T @ A)[-1] / (4 * M), rel=1e-12)
    assert _fd_hessian_top_eigenvalue(problem, np.zeros(P), A, y) == pytest.approx(L, rel=1e-5)
    nonconvex = make_problem("nonconvex-logistic", P, 2, **{"lambda": 0.3})
    assert nonconvex.smoothness(A) == pytest.approx(L + 0.6, rel=1e-12)
    assert make_problem("mlp", P, C).smoothness(A) is None


# ----------------------------------------------------------------------------- variance


@pytest.mark.parametrize(("name", "n_classes", "params"), CASES, ids=IDS)
def test_gradient_variance_matches_enumeration(name, n_classes, params):
    m, batch = 6, 2
    problem = make_problem(name, P, n_classes, **params)
    A, y = _data(name, n_classes, seed=8, m=m)
    x = _random_point(problem, np.random.default_rng(9))
    full = problem.grad(x, A, y)
    deviations = [
        np.sum((problem.grad(x, A[list(rows)], y[list(rows)]) - full) ** 2)
        for rows in itertools.combinations(range(m), batch)
    ]
    assert problem.gradient_variance(x, A, y, batch) == pytest.approx(np.mean(deviations), rel=1e-9)
    assert problem.gradient_variance(x, A, y, None) == 0.0
    assert problem.gradient_variance(x, A, y, m) == 0.0


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize(("name", "n_classes", "params"), CASES, ids=IDS)
def test_layers_cover_the_parameters(name, n_classes, params):
    problem = make_problem(name, P, n_classes, **params)
    bounds = problem.offsets
    assert bounds[0] == 0 and bounds[-1] == problem.dim
    assert [start for start, _ in problem.layers] == bounds[:-1]
    assert all(stop > start for start, stop in problem.layers)


def test_mlp_layout_and_init():
    problem = make_problem("mlp", 64, 10)
    assert problem.hidden == (128, 64)
    sizes = [stop - start for start, stop in problem.layers]
    assert sizes == [64 * 128, 128, 128 * 64, 64, 64 * 10, 10]
    x0 = problem.init(3)
    np.testing.assert_array_equal(x0, problem.init(3))
    assert not np.array_equal(x0, problem.init(4))
    (w1, b1), _, (w3, b3) = problem._parameters(x0)
    assert np.all(b1 == 0) and np.all(b3 == 0)
    assert w1.std() == pytest.approx(np.sqrt(2 / 64), rel=0.05)
    assert w3.std() == pytest.approx(np.sqrt(2 / 74), rel=0.15)
    assert not np.any(make_problem("softmax", 64, 10).init(3))


def test_accuracy():
    rng = np.random.default_rng(10)
    A = rng.standard_normal((200, P))
    x = rng.standard_normal(P)
    y = (A @ x > 0).astype(int)
    assert make_problem("logistic", P, 2).accuracy(x, A, y) == 1.0
    assert make_problem("logistic", P, 2).accuracy(-x, A, 2 * y - 1) == 0.0
    softmax = make_problem("softmax", P, 2, bias=False)
    assert softmax.accuracy(np.column_stack([np.zeros(P), x]).ravel(), A, y) == 1.0
    assert np.isnan(make_problem("least-squares", P).accuracy(x, A, A @ x))


# ----------------------------------------------------------------------------- errors, helpers


def test_make_problem_errors():
    with pytest.raises(ConfigError, match="did you mean 'logistic'") as info:
        make_problem("logistc", P, 2)
    assert info.value.key == "problem.name"
    assert "least-squares" in str(info.value)
    with pytest.raises(ConfigError, match="needs data with 2 classes") as info:
        make_problem("logistic", P, 3)
    assert info.value.key == "problem.name"
    with pytest.raises(ConfigError, match=">= 2 classes"):
        make_problem("softmax", P, None)
    with pytest.raises(ConfigError, match="did you mean 'lambda'") as info:
        make_problem("nonconvex-logistic", P, 2, lamda=0.1)
    assert info.value.key == "problem.lamda"
    with pytest.raises(ConfigError, match="-1") as info:
        make_problem("logistic", P, 2, reg=-1)
    assert info.value.key == "problem.reg"
    with pytest.raises(ConfigError, match=r"\[0, 3\]") as info:
        make_problem("mlp", P, 2, hidden=[0, 3])
    assert info.value.key == "problem.hidden"
    with pytest.raises(ConfigError, match="data_dim"):
        make_problem("softmax", 0, 2)


def test_shape_errors_name_the_bad_shape():
    problem = make_problem("logistic", P, 2)
    A, y = _data("logistic", 2)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        problem.loss(np.zeros(3), A, y)
    with pytest.raises(ValueError, match=r"\(7, 5\)"):
        problem.loss(np.zeros(P), np.zeros((7, 5)), y)
    with pytest.raises(ValueError, match=r"\(6,\)"):
        problem.loss(np.zeros(P), A, y[:6])
    with pytest.raises(ValueError, match="int64"):
        problem.loss(np.zeros(P, dtype=np.int64), A, y)


def test_list_problems():
    names = [name for name, _ in list_problems()]
    assert names == ["least-squares", "logistic", "nonconvex-logistic", "softmax", "mlp", "torch"]
    assert all(summary for _, summary in list_problems())


def test_sample_batch():
    rng = np.random.default_rng(11)
    np.testing.assert_array_equal(sample_batch(rng, 5, None), np.arange(5))
    np.testing.assert_array_equal(sample_batch(rng, 5, 9), np.arange(5))
    batch = sample_batch(rng, 100, 30)
    assert batch.dtype == np.int64 and len(np.unique(batch)) == 30
    assert batch.min() >= 0 and batch.max() < 100
    again = sample_batch(np.random.default_rng(11), 100, 30)
    assert not np.array_equal(sample_batch(np.random.default_rng(12), 100, 30), again)
    with pytest.raises(ValueError, match="0"):
        sample_batch(rng, 10, 0)
    with pytest.raises(ValueError, match="-1"):
        sample_batch(rng, -1, 2)
