"""Learning problems: differentiable objectives on a flat parameter vector.

A problem is an objective ``f(x) = (1/m) sum_i loss(x; a_i, y_i) + regularizer(x)`` on a flat
vector ``x`` (float32 or float64; the dtype of ``x`` is the dtype of every result), evaluated on
a minibatch ``(A, y)`` with ``A`` of shape ``(m, p)``. Every problem has analytic gradients
and the same small interface:

``dim``, ``layers``, ``offsets``
    Number of parameters; ``(start, stop)`` blocks of ``x`` (one for a linear model, one per
    weight matrix and per bias for the MLP) used by per-layer compression; the same boundaries
    as ``[0, o_1, ..., dim]`` for the compressors' ``offsets``.
``init(seed)``
    The starting point: zeros for the linear models, He / Glorot normal for the MLP.
``loss``, ``grad``, ``loss_and_grad``, ``accuracy``
    On a minibatch.
``smoothness(A)``, ``gradient_variance(x, A, y, batch)``
    The constants ``L`` and ``sigma^2`` of the MixML bounds (seed 002, Theorem 1).

The binary logistic models evaluate loss and gradient in one fused numba pass over the rows
(private kernel ``_logistic_data_term``: about three times faster than NumPy at minibatch 128
with 64 features, even at 300 features, as fast or faster on full batches); the others use
NumPy matrix products (BLAS). Sparse ``scipy.sparse`` feature matrices work everywhere
(through ``A @ ...``); see ``docs/problems-and-data.md`` for timings and the BLAS thread
setting.

Problems are built by name with :func:`make_problem`; :func:`list_problems` lists them.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.special import expit

from mixsim._numba import njit
from mixsim.errors import ConfigError

__all__ = [
    "Problem",
    "LeastSquares",
    "Logistic",
    "NonconvexLogistic",
    "Softmax",
    "MLP",
    "make_problem",
    "list_problems",
    "sample_batch",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Above this many features the Gram matrix A^T A is not formed; a sparse SVD finds ||A||_2.
_DENSE_GRAM_LIMIT = 2000


# ----------------------------------------------------------------------------- helpers


def _as_features(A, dtype):
    """``A`` in the working dtype (no copy when it already matches)."""
    if sp.issparse(A):
        return A.astype(dtype, copy=False).tocsr()
    return np.asarray(A, dtype=dtype)


def _row_squared_norms(A) -> np.ndarray:
    """``||a_i||^2`` of every row, in float64."""
    if sp.issparse(A):
        return np.asarray(A.multiply(A).sum(axis=1), dtype=np.float64).ravel()
    A64 = np.asarray(A, dtype=np.float64)
    return np.einsum("ij,ij->i", A64, A64)


def _largest_singular_value_squared(A) -> float:
    """``||A||_2^2``: eigvalsh of the Gram matrix when small, else a sparse SVD."""
    m, p = A.shape
    if not sp.issparse(A) and min(m, p) <= _DENSE_GRAM_LIMIT:
        A64 = np.asarray(A, dtype=np.float64)
        gram = A64.T @ A64 if p <= m else A64 @ A64.T
        return float(np.linalg.eigvalsh(gram)[-1])
    A64 = A.astype(np.float64)
    sigma = spla.svds(A64, k=1, return_singular_vectors=False)
    return float(sigma[0] ** 2)


def _with_bias_column(A):
    ones = np.ones((A.shape[0], 1))
    if sp.issparse(A):
        return sp.hstack([A, sp.csr_matrix(ones)], format="csr")
    return np.hstack([np.asarray(A, dtype=np.float64), ones])


def _matmul_into(left, right, out: np.ndarray) -> None:
    """``out[...] = left @ right`` without a temporary when both are dense."""
    if sp.issparse(left) or sp.issparse(right):
        out[...] = left @ right
    else:
        np.matmul(left, right, out=out)


def _signed_labels(y, dtype) -> np.ndarray:
    """Labels as -1/+1: values > 0 are the positive class, so {0, 1} and {-1, +1} both work."""
    y = np.asarray(y)
    return np.where(y > 0, 1, -1).astype(dtype)


def _softmax_residual(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Summed cross-entropy and ``softmax(logits) - onehot(labels)`` (overwrites ``logits``).

    Stable log-sum-exp: the row maximum is subtracted before exponentiating.
    """
    rows = np.arange(logits.shape[0])
    logits -= logits.max(axis=1, keepdims=True)
    picked = logits[rows, labels].astype(np.float64)
    np.exp(logits, out=logits)
    totals = logits.sum(axis=1, keepdims=True)
    loss = float(np.sum(np.log(totals.ravel().astype(np.float64)) - picked))
    logits /= totals
    logits[rows, labels] -= 1
    return loss, logits


@njit
def _logistic_data_term(x, A, y, grad, with_grad):
    """``mean log(1 + exp(-s_i a_i^T x))`` with ``s_i = +1 if y_i > 0 else -1``.

    When ``with_grad``, writes its gradient into ``grad`` (float64, length ``p``). One pass
    over the rows; margins and sums in float64. Each branch exponentiates a non-positive
    number only, so no margin overflows.
    """
    m, p = A.shape
    if with_grad:
        grad[:] = 0.0
    total = 0.0
    for i in range(m):
        sign = 1.0 if y[i] > 0 else -1.0
        margin = 0.0
        for j in range(p):
            margin += A[i, j] * x[j]
        margin *= sign
        if margin > 0:
            tail = np.exp(-margin)
            total += np.log1p(tail)
            coefficient = -sign * tail / (1.0 + tail)
        else:
            tail = np.exp(margin)
            total += np.log1p(tail) - margin
            coefficient = -sign / (1.0 + tail)
        if with_grad:
            for j in range(p):
                grad[j] += coefficient * A[i, j]
    if with_grad:
        for j in range(p):
            grad[j] /= m
    return total / m


def sample_batch(rng: np.random.Generator, n_samples: int, batch: int | None) -> np.ndarray:
    """Indices of one minibatch, drawn without replacement.

    Parameters
    ----------
    rng : numpy.random.Generator
        The stream to draw from (derived from the scenario's ``seed`` by the caller).
    n_samples : int
        Number of rows to draw from.
    batch : int or None
        Minibatch size. None, or a value ``>= n_samples``, means the full batch: all indices in
        order (no randomness is consumed).

    Returns
    -------
    numpy.ndarray
        ``int64`` indices, distinct within the batch.

    Raises
    ------
    ValueError
        ``n_samples < 1`` or ``batch < 1``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sample_batch(rng, 10, None)
    array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    >>> len(set(sample_batch(rng, 10, 4).tolist()))
    4
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if batch is None or batch >= n_samples:
        return np.arange(n_samples, dtype=np.int64)
    if batch < 1:
        raise ValueError(f"batch must be >= 1 or None (full batch), got {batch}")
    return rng.choice(n_samples, size=batch, replace=False).astype(np.int64)


# ----------------------------------------------------------------------------- base class


class Problem:
    """Common interface of every problem (see the module docstring).

    Subclasses implement ``_evaluate`` (loss and optionally gradient), ``_sample_terms``
    (per-sample squared gradient norms and their mean, for the variance) and ``_scores``
    (predictions, for the accuracy).

    Attributes
    ----------
    name : str
        Registry name.
    data_dim : int
        Number of features ``p`` the problem expects.
    n_classes : int or None
        Number of classes (None for regression).
    dim : int
        Number of parameters.
    layers : list of (int, int)
        ``(start, stop)`` of every parameter block of ``x``.
    reg : float
        Coefficient of the ``(reg / 2) ||x||^2`` term.
    """

    name = ""
    task = "classification"

    def __init__(
        self,
        data_dim: int,
        n_classes: int | None,
        dim: int,
        layers: list[tuple[int, int]],
        reg: float,
    ):
        self.data_dim = int(data_dim)
        self.n_classes = n_classes
        self.dim = int(dim)
        self.layers = list(layers)
        self.reg = float(reg)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(data_dim={self.data_dim}, n_classes={self.n_classes}, "
            f"dim={self.dim})"
        )

    @property
    def offsets(self) -> list[int]:
        """Layer boundaries ``[0, o_1, ..., dim]`` (the compressors' ``offsets``)."""
        return [0] + [stop for _, stop in self.layers]

    # -- validation ---------------------------------------------------------------------

    def _check(self, x, A, y):
        x = np.asarray(x)
        if x.ndim != 1 or x.shape[0] != self.dim:
            raise ValueError(f"x must have shape ({self.dim},), got {x.shape}")
        if x.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"x must be float32 or float64, got {x.dtype}")
        if not sp.issparse(A):
            A = np.asarray(A)
        if A.ndim != 2 or A.shape[1] != self.data_dim or A.shape[0] < 1:
            raise ValueError(f"A must have shape (m >= 1, {self.data_dim}), got {A.shape}")
        y = np.asarray(y)
        if y.shape != (A.shape[0],):
            raise ValueError(f"y must have shape ({A.shape[0]},) to match A, got {y.shape}")
        return x, _as_features(A, x.dtype), y

    def _check_features(self, A):
        if not sp.issparse(A):
            A = np.asarray(A)
        if A.ndim != 2 or A.shape[1] != self.data_dim or A.shape[0] < 1:
            raise ValueError(f"A must have shape (m >= 1, {self.data_dim}), got {A.shape}")
        return A

    # -- public interface ---------------------------------------------------------------

    def init(self, seed: int | None = None, *, dtype=np.float64) -> np.ndarray:
        """Starting point ``x0``.

        Parameters
        ----------
        seed : int or None
            Seed of ``numpy.random.default_rng`` (unused by the linear models: zeros).
        dtype : numpy dtype, optional
            float32 or float64 (default).

        Returns
        -------
        numpy.ndarray
            Shape ``(dim,)``.
        """
        dtype = np.dtype(dtype)
        if dtype not in _FLOAT_DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        return self._init(np.random.default_rng(seed)).astype(dtype)

    def _init(self, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(self.dim)

    def for_worker(self, worker: int) -> Problem:
        """The problem as ``worker`` computes its gradients: the same object (a NumPy
        problem keeps no per-worker state; a torch model keeps its BatchNorm statistics)."""
        return self

    def loss(self, x: np.ndarray, A, y: np.ndarray) -> float:
        """Objective on the minibatch ``(A, y)``.

        Parameters
        ----------
        x : numpy.ndarray
            Parameters, shape ``(dim,)``, float32 or float64.
        A : numpy.ndarray or scipy.sparse matrix
            Features, shape ``(m, data_dim)``; converted to the dtype of ``x`` (pass it in that
            dtype to avoid a copy per call).
        y : numpy.ndarray
            Labels (or targets), shape ``(m,)``.

        Returns
        -------
        float
        """
        x, A, y = self._check(x, A, y)
        value, _ = self._evaluate(x, A, y, None)
        return value

    def grad(self, x: np.ndarray, A, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Gradient of :meth:`loss` with respect to ``x``.

        Parameters
        ----------
        x, A, y
            As in :meth:`loss`.
        out : numpy.ndarray, optional
            Array of shape ``(dim,)`` and the dtype of ``x`` to write into.

        Returns
        -------
        numpy.ndarray
            The gradient (``out`` when given), dtype of ``x``.
        """
        return self.loss_and_grad(x, A, y, out=out)[1]

    def loss_and_grad(
        self, x: np.ndarray, A, y: np.ndarray, out: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """:meth:`loss` and :meth:`grad` in one pass.

        Returns
        -------
        (float, numpy.ndarray)
        """
        x, A, y = self._check(x, A, y)
        if out is None:
            out = np.empty_like(x)
        elif out.shape != x.shape or out.dtype != x.dtype:
            raise ValueError(
                f"out must have shape {x.shape} and dtype {x.dtype}, got {out.shape} {out.dtype}"
            )
        return self._evaluate(x, A, y, out)

    def accuracy(self, x: np.ndarray, A, y: np.ndarray) -> float:
        """Fraction of rows classified correctly (NaN for regression problems).

        Returns
        -------
        float
        """
        x, A, y = self._check(x, A, y)
        if self.task != "classification":
            return float("nan")
        return float(np.mean(self._predict(x, A) == self._class_labels(y)))

    def smoothness(self, A) -> float | None:
        """Global Lipschitz constant ``L`` of the gradient of the objective on data ``A``.

        Returns None when no global constant exists (the ReLU network).

        Parameters
        ----------
        A : numpy.ndarray or scipy.sparse matrix
            The features the objective averages over (usually the training set).

        Returns
        -------
        float or None
        """
        return None

    def gradient_variance(self, x: np.ndarray, A, y: np.ndarray, batch: int | None) -> float:
        """Exact ``sigma^2 = E ||g_B(x) - grad f(x)||^2`` of a minibatch gradient at ``x``.

        ``g_B`` is the gradient on a batch of ``batch`` rows drawn uniformly without replacement
        (as :func:`sample_batch` does) from the ``m`` rows of ``(A, y)``, and ``grad f`` the
        gradient on all of them. With per-sample gradients ``g_i`` and
        ``S^2 = (1/m) sum_i ||g_i - grad f||^2``,

        .. math:: \\sigma^2 = \\frac{m - b}{b (m - 1)} S^2 ,

        computed exactly from closed-form per-sample gradient norms (no sampling). The
        regularizer is the same for every sample and cancels. Zero for the full batch.

        Parameters
        ----------
        x, A, y
            As in :meth:`loss`; ``(A, y)`` is the whole dataset a worker samples from.
        batch : int or None
            Minibatch size (None: full batch).

        Returns
        -------
        float
            ``sigma^2`` (Assumption 5 of seed 002), in float64.
        """
        x, A, y = self._check(x, A, y)
        m = A.shape[0]
        if batch is None or batch >= m:
            return 0.0
        if batch < 1:
            raise ValueError(f"batch must be >= 1 or None (full batch), got {batch}")
        x64 = x.astype(np.float64)
        sample_sq, mean_grad = self._sample_terms(x64, _as_features(A, np.float64), y)
        spread = max(float(np.mean(sample_sq) - mean_grad @ mean_grad), 0.0)
        return spread * (m - batch) / (batch * (m - 1))

    # -- pieces the subclasses provide -----------------------------------------------------

    def _class_labels(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.intp, copy=False)

    def _evaluate(self, x, A, y, out):  # pragma: no cover - abstract
        raise NotImplementedError

    def _sample_terms(self, x, A, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, x, A):  # pragma: no cover - abstract
        raise NotImplementedError


# ----------------------------------------------------------------------------- linear models


class LeastSquares(Problem):
    """Least squares ``f(x) = (1/2m) ||A x - y||^2 + (reg/2) ||x||^2``.

    Parameters
    ----------
    data_dim : int
        Number of features.
    reg : float, optional
        l2 coefficient (default 0).

    Notes
    -----
    ``L = lambda_max(A^T A / m) + reg`` exactly.
    """

    name = "least-squares"
    task = "regression"

    def __init__(self, data_dim: int, *, reg: float = 0.0):
        super().__init__(data_dim, None, data_dim, [(0, data_dim)], reg)

    def _evaluate(self, x, A, y, out):
        m = A.shape[0]
        residual = A @ x - y.astype(x.dtype, copy=False)
        value = float(residual.astype(np.float64) @ residual) / (2 * m)
        value += 0.5 * self.reg * float(x.astype(np.float64) @ x)
        if out is None:
            return value, None
        _matmul_into(A.T, residual, out)
        out /= m
        if self.reg:
            out += self.reg * x
        return value, out

    def _sample_terms(self, x, A, y):
        residual = A @ x - y
        sample_sq = _row_squared_norms(A) * residual**2
        return sample_sq, (A.T @ residual) / A.shape[0]

    def smoothness(self, A) -> float:
        """``lambda_max(A^T A / m) + reg`` (exact)."""
        A = self._check_features(A)
        return _largest_singular_value_squared(A) / A.shape[0] + self.reg


class Logistic(Problem):
    """Binary logistic regression ``f(x) = mean log(1 + exp(-y a^T x)) + (reg/2) ||x||^2``.

    Labels: values ``> 0`` are the positive class and every other value the negative one, so
    ``{0, 1}`` and ``{-1, +1}`` labels are both accepted as they are. The loss uses
    ``logaddexp(0, -z)`` and the gradient ``expit``: finite for any margin.

    Parameters
    ----------
    data_dim : int
        Number of features (no bias term: append a column of ones to ``A`` for one).
    reg : float, optional
        l2 coefficient (default 0).

    Notes
    -----
    ``L = ||A||_2^2 / (4m) + reg`` (the logistic loss has curvature at most 1/4).
    The accuracy predicts +1 when ``a^T x >= 0``.
    """

    name = "logistic"

    def __init__(self, data_dim: int, *, reg: float = 0.0):
        super().__init__(data_dim, 2, data_dim, [(0, data_dim)], reg)

    def _regularizer(self, x, out):
        """Value of the regularizer; adds its gradient to ``out`` when given."""
        if not self.reg:
            return 0.0
        if out is not None:
            out += self.reg * x
        return 0.5 * self.reg * float(x.astype(np.float64) @ x)

    def _evaluate(self, x, A, y, out):
        if sp.issparse(A):
            value = self._sparse_data_term(x, A, y, out)
        else:
            scratch = np.empty(self.dim if out is not None else 0)
            value = float(_logistic_data_term(x, A, y, scratch, out is not None))
            if out is not None:
                out[:] = scratch
        return value + self._regularizer(x, out), out

    def _sparse_data_term(self, x, A, y, out):
        m = A.shape[0]
        signs = _signed_labels(y, x.dtype)
        margins = signs * (A @ x)
        value = float(np.mean(np.logaddexp(0, -margins), dtype=np.float64))
        if out is not None:
            # d/dz log(1 + exp(-z)) = -expit(-z), bounded for every z.
            coefficients = -signs * expit(-margins)
            _matmul_into(A.T, coefficients, out)
            out /= m
        return value

    def _sample_terms(self, x, A, y):
        signs = _signed_labels(y, np.float64)
        coefficients = -signs * expit(-signs * (A @ x))
        sample_sq = _row_squared_norms(A) * coefficients**2
        return sample_sq, (A.T @ coefficients) / A.shape[0]

    def _class_labels(self, y):
        return (np.asarray(y) > 0).astype(np.intp)

    def _predict(self, x, A):
        return (A @ x >= 0).astype(np.intp)

    def smoothness(self, A) -> float:
        """``||A||_2^2 / (4m) + reg`` (an upper bound, tight near ``x = 0``)."""
        A = self._check_features(A)
        return _largest_singular_value_squared(A) / (4 * A.shape[0]) + self.reg


class NonconvexLogistic(Logistic):
    """Logistic regression with the nonconvex regularizer of seed 003, eq. 7.1.

    .. math:: f(x) = \\frac{1}{m} \\sum_i \\log(1 + e^{-y_i a_i^T x})
              + \\lambda \\sum_j \\frac{x_j^2}{1 + x_j^2}

    Parameters
    ----------
    data_dim : int
        Number of features.
    lam : float, optional
        The regularizer weight ``lambda`` (default 0.1 as in seed 003; the scenario key is
        ``lambda``).

    Notes
    -----
    Labels as in :class:`Logistic`. The regularizer's second derivative
    ``2 (1 - 3 x^2) / (1 + x^2)^3`` lies in ``[-1/2, 2]``, so
    ``L = ||A||_2^2 / (4m) + 2 lambda``.
    """

    name = "nonconvex-logistic"

    def __init__(self, data_dim: int, *, lam: float = 0.1):
        super().__init__(data_dim, reg=0.0)
        self.lam = float(lam)

    def _regularizer(self, x, out):
        squares = x * x
        denominator = 1 + squares
        if out is not None:
            out += (2 * self.lam) * x / (denominator * denominator)
        return self.lam * float(np.sum(squares / denominator, dtype=np.float64))

    def smoothness(self, A) -> float:
        """``||A||_2^2 / (4m) + 2 lambda``."""
        A = self._check_features(A)
        return _largest_singular_value_squared(A) / (4 * A.shape[0]) + 2 * self.lam


class Softmax(Problem):
    """Multinomial logistic regression (softmax and cross-entropy).

    ``x`` holds ``W`` of shape ``(data_dim, n_classes)`` flattened row-major, then the bias
    ``b`` of length ``n_classes`` (when ``bias``). Objective:
    ``mean_i [logsumexp(a_i^T W + b) - (a_i^T W + b)_{y_i}] + (reg/2) ||x||^2`` with a stable
    log-sum-exp. Labels are class indices ``0 .. n_classes - 1``.

    Parameters
    ----------
    data_dim : int
        Number of features.
    n_classes : int
        Number of classes (>= 2).
    reg : float, optional
        l2 coefficient on every parameter (default 0).
    bias : bool, optional
        Include the bias (default True).

    Notes
    -----
    The Hessian of the cross-entropy in the logits is at most ``1/2`` (Böhning's bound), so
    ``L <= lambda_max(Ã^T Ã) / (2m) + reg`` with ``Ã = [A, 1]`` (``A`` alone without bias).
    """

    name = "softmax"

    def __init__(self, data_dim: int, n_classes: int, *, reg: float = 0.0, bias: bool = True):
        dim = data_dim * n_classes + (n_classes if bias else 0)
        super().__init__(data_dim, n_classes, dim, [(0, dim)], reg)
        self.bias = bool(bias)

    def _logits(self, x, A):
        p, c = self.data_dim, self.n_classes
        logits = np.asarray(A @ x[: p * c].reshape(p, c))
        if self.bias:
            logits = logits + x[p * c :]
        return logits

    def _evaluate(self, x, A, y, out):
        m = A.shape[0]
        p, c = self.data_dim, self.n_classes
        total, residual = _softmax_residual(self._logits(x, A), self._class_labels(y))
        value = total / m + 0.5 * self.reg * float(x.astype(np.float64) @ x)
        if out is None:
            return value, None
        residual /= m
        _matmul_into(A.T, residual, out[: p * c].reshape(p, c))
        if self.bias:
            residual.sum(axis=0, out=out[p * c :])
        if self.reg:
            out += self.reg * x
        return value, out

    def _sample_terms(self, x, A, y):
        m = A.shape[0]
        _, residual = _softmax_residual(self._logits(x, A), self._class_labels(y))
        # Per-sample gradient of W is a_i r_i^T, whose squared norm is ||a_i||^2 ||r_i||^2.
        row_sq = _row_squared_norms(A) + (1.0 if self.bias else 0.0)
        sample_sq = row_sq * np.einsum("ij,ij->i", residual, residual)
        mean_grad = [np.asarray(A.T @ residual).ravel() / m]
        if self.bias:
            mean_grad.append(residual.sum(axis=0) / m)
        return sample_sq, np.concatenate(mean_grad)

    def _predict(self, x, A):
        return np.argmax(self._logits(x, A), axis=1)

    def smoothness(self, A) -> float:
        """``lambda_max(Ã^T Ã) / (2m) + reg`` (an upper bound)."""
        A = self._check_features(A)
        features = _with_bias_column(A) if self.bias else A
        return _largest_singular_value_squared(features) / (2 * A.shape[0]) + self.reg


# ----------------------------------------------------------------------------- MLP


class MLP(Problem):
    """Fully connected ReLU network with a softmax output and cross-entropy (seed 000 §6).

    Layers ``data_dim -> hidden[0] -> ... -> hidden[-1] -> n_classes``; the default
    ``hidden=(128, 64)`` is the "2-layer 128fc-64fc" network of seed 000. ``x`` holds, for
    every layer in order, the weight matrix ``(fan_in, fan_out)`` flattened row-major and then
    its bias; :attr:`layers` has one block per weight matrix and one per bias.
    Backpropagation is written out with NumPy matrix products.

    Parameters
    ----------
    data_dim : int
        Number of features.
    n_classes : int
        Number of classes (>= 2).
    hidden : sequence of int, optional
        Hidden layer widths (default ``(128, 64)``).
    reg : float, optional
        l2 coefficient on every parameter (default 0).

    Notes
    -----
    :meth:`init` draws weights from ``N(0, 2 / fan_in)`` (He) for the ReLU layers and
    ``N(0, 2 / (fan_in + fan_out))`` (Glorot) for the output layer; biases start at zero.
    :meth:`smoothness` is None: a ReLU network has no global gradient Lipschitz constant.
    At a ReLU kink (pre-activation exactly 0) the derivative 0 is used.
    """

    name = "mlp"

    def __init__(
        self, data_dim: int, n_classes: int, *, hidden: Sequence[int] = (128, 64), reg: float = 0.0
    ):
        self.hidden = tuple(int(h) for h in hidden)
        widths = (int(data_dim), *self.hidden, int(n_classes))
        self.shapes = list(zip(widths[:-1], widths[1:], strict=True))
        layers = []
        start = 0
        for fan_in, fan_out in self.shapes:
            layers.append((start, start + fan_in * fan_out))
            layers.append((start + fan_in * fan_out, start + fan_in * fan_out + fan_out))
            start += fan_in * fan_out + fan_out
        super().__init__(data_dim, n_classes, start, layers, reg)

    def _init(self, rng):
        x = np.zeros(self.dim)
        last = len(self.shapes) - 1
        for index, (fan_in, fan_out) in enumerate(self.shapes):
            start, stop = self.layers[2 * index]
            variance = 2.0 / (fan_in + fan_out) if index == last else 2.0 / fan_in
            x[start:stop] = rng.normal(0.0, np.sqrt(variance), size=stop - start)
        return x

    def _parameters(self, x):
        """``(W, b)`` views into ``x`` for every layer."""
        views = []
        for index, (fan_in, fan_out) in enumerate(self.shapes):
            (w_start, w_stop), (b_start, b_stop) = self.layers[2 * index : 2 * index + 2]
            views.append((x[w_start:w_stop].reshape(fan_in, fan_out), x[b_start:b_stop]))
        return views

    def _forward(self, x, A):
        """Activations of every layer (input first) and the output logits."""
        params = self._parameters(x)
        activations = [A]
        for weight, bias in params[:-1]:
            hidden = np.asarray(activations[-1] @ weight)
            hidden += bias
            np.maximum(hidden, 0, out=hidden)
            activations.append(hidden)
        weight, bias = params[-1]
        logits = np.asarray(activations[-1] @ weight) + bias
        return params, activations, logits

    def _backward(self, params, activations, delta, each):
        """Call ``each(layer, inputs, delta)`` from the output layer down to the first."""
        for index in range(len(params) - 1, -1, -1):
            each(index, activations[index], delta)
            if index:
                delta = delta @ params[index][0].T
                delta *= activations[index] > 0

    def _evaluate(self, x, A, y, out):
        m = A.shape[0]
        params, activations, logits = self._forward(x, A)
        total, delta = _softmax_residual(logits, self._class_labels(y))
        value = total / m + 0.5 * self.reg * float(x.astype(np.float64) @ x)
        if out is None:
            return value, None
        delta /= m
        out_params = self._parameters(out)

        def store(index, inputs, layer_delta):
            weight_grad, bias_grad = out_params[index]
            _matmul_into(inputs.T, layer_delta, weight_grad)
            layer_delta.sum(axis=0, out=bias_grad)

        self._backward(params, activations, delta, store)
        if self.reg:
            out += self.reg * x
        return value, out

    def _sample_terms(self, x, A, y):
        m = A.shape[0]
        params, activations, logits = self._forward(x, A)
        _, delta = _softmax_residual(logits, self._class_labels(y))
        sample_sq = np.zeros(m)
        mean_grad = np.zeros(self.dim)
        mean_params = self._parameters(mean_grad)

        def accumulate(index, inputs, layer_delta):
            # Per-sample weight gradient h_i d_i^T has squared norm ||h_i||^2 ||d_i||^2.
            delta_sq = np.einsum("ij,ij->i", layer_delta, layer_delta)
            sample_sq[:] += (_row_squared_norms(inputs) + 1.0) * delta_sq
            weight_mean, bias_mean = mean_params[index]
            weight_mean[...] = np.asarray(inputs.T @ layer_delta) / m
            bias_mean[...] = layer_delta.sum(axis=0) / m

        self._backward(params, activations, delta, accumulate)
        return sample_sq, mean_grad

    def _predict(self, x, A):
        return np.argmax(self._forward(x, A)[2], axis=1)


# ----------------------------------------------------------------------------- registry

_PROBLEMS: dict[str, tuple[type[Problem], str]] = {
    "least-squares": (LeastSquares, "(1/2m)||Ax - y||^2 + (reg/2)||x||^2 (regression)"),
    "logistic": (Logistic, "binary logistic regression, labels {0,1} or {-1,+1}"),
    "nonconvex-logistic": (
        NonconvexLogistic,
        "logistic loss + lambda sum x^2/(1+x^2) (seed 003 eq 7.1, lambda=0.1)",
    ),
    "softmax": (Softmax, "multinomial logistic regression (W and bias, stable log-sum-exp)"),
    "mlp": (MLP, "ReLU MLP, hidden (128, 64), softmax + cross-entropy (seed 000 §6)"),
}

#: Problems built elsewhere, listed with the rest (the torch problem needs the data's image
#: shape and the scenario's folder: mixsim.torch_problem.make_torch_problem).
_OTHER_PROBLEMS = {
    "torch": "a torch.nn.Module (built-in resnet20, cnn, mlp, or module:factory); needs "
             "mixsim[torch]",
}

# Scenario keys that are not Python identifiers in the constructors.
_PARAMETER_ALIASES = {"lambda": "lam"}


def list_problems() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every registered problem.

    Returns
    -------
    list of (str, str)
    """
    return ([(name, summary) for name, (_, summary) in _PROBLEMS.items()]
            + list(_OTHER_PROBLEMS.items()))


def _positive_int(value, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}, got {value!r}", key=key)
    return int(value)


def _nonnegative_float(value, key: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.number)
        or not (np.isfinite(value) and value >= 0)
    ):
        raise ConfigError(f"must be a finite number >= 0, got {value!r}", key=key)
    return float(value)


def make_problem(name: str, data_dim: int, n_classes: int | None = None, **params: Any) -> Problem:
    """Build a problem by its registry name (the names scenario files use).

    Parameters
    ----------
    name : str
        ``"least-squares"``, ``"logistic"``, ``"nonconvex-logistic"``, ``"softmax"`` or
        ``"mlp"``.
    data_dim : int
        Number of features of the data.
    n_classes : int or None
        Number of classes of the data (None for regression). ``logistic`` and
        ``nonconvex-logistic`` need 2, ``softmax`` and ``mlp`` at least 2;
        ``least-squares`` ignores it.
    **params
        Problem parameters: ``reg`` (least-squares, logistic, softmax, mlp), ``lambda``
        (nonconvex-logistic), ``bias`` (softmax), ``hidden`` (mlp).

    Returns
    -------
    Problem

    Raises
    ------
    ConfigError
        Unknown name (with the allowed names and the closest one, ``key="problem.name"``),
        unknown parameter, a parameter out of range (``key="problem.<param>"``), or a class
        count the problem cannot use (``key="problem.name"``).

    Examples
    --------
    >>> make_problem("mlp", 64, 10).dim
    17226
    >>> make_problem("nonconvex-logistic", 30, 2, **{"lambda": 0.1}).lam
    0.1
    """
    if name in _OTHER_PROBLEMS:
        from mixsim.torch_problem import make_torch_problem

        return make_torch_problem(params, data_dim=data_dim, n_classes=n_classes)
    if name not in _PROBLEMS:
        allowed = [*_PROBLEMS, *_OTHER_PROBLEMS]
        close = difflib.get_close_matches(str(name), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown problem {name!r}; allowed: {', '.join(allowed)}{hint}", key="problem.name"
        )
    cls = _PROBLEMS[name][0]
    data_dim = _positive_int(data_dim, "problem.data_dim")
    accepted = [
        key
        for key in inspect.signature(cls.__init__).parameters
        if key not in ("self", "data_dim", "n_classes")
    ]
    public = {_PARAMETER_ALIASES.get(key, key): key for key in params}
    for internal, key in public.items():
        if internal not in accepted:
            shown = [
                next((k for k, v in _PARAMETER_ALIASES.items() if v == a), a) for a in accepted
            ]
            close = difflib.get_close_matches(key, shown, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"problem {name!r} takes no parameter {key!r}; allowed: "
                f"{', '.join(shown) or '(none)'}{hint}",
                key=f"problem.{key}",
            )
    kwargs = {internal: params[key] for internal, key in public.items()}
    for internal in ("reg", "lam"):
        if internal in kwargs:
            key = public[internal]
            kwargs[internal] = _nonnegative_float(kwargs[internal], f"problem.{key}")
    if "hidden" in kwargs:
        hidden = kwargs["hidden"]
        if isinstance(hidden, int | np.integer):
            hidden = [hidden]
        if (
            not isinstance(hidden, Sequence)
            or len(hidden) == 0
            or any(
                isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1 for h in hidden
            )
        ):
            raise ConfigError(
                f"must be a non-empty list of positive integers, got {kwargs['hidden']!r}",
                key="problem.hidden",
            )
        kwargs["hidden"] = tuple(int(h) for h in hidden)
    if "bias" in kwargs and not isinstance(kwargs["bias"], bool):
        raise ConfigError(f"must be true or false, got {kwargs['bias']!r}", key="problem.bias")

    if cls is LeastSquares:
        return cls(data_dim, **kwargs)
    if cls in (Logistic, NonconvexLogistic):
        if n_classes != 2:
            raise ConfigError(
                f"problem {name!r} is binary and needs data with 2 classes, got n_classes="
                f"{n_classes!r}; use 'softmax' or 'mlp' for more classes",
                key="problem.name",
            )
        return cls(data_dim, **kwargs)
    if n_classes is None or isinstance(n_classes, bool) or int(n_classes) < 2:
        raise ConfigError(
            f"problem {name!r} needs classification data with >= 2 classes, got n_classes="
            f"{n_classes!r}",
            key="problem.name",
        )
    return cls(data_dim, int(n_classes), **kwargs)
