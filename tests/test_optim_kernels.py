"""Optimizer kernels of mixsim.optim against the NumPy references in tests/naive.py."""

import importlib.util

import naive
import numpy as np
import pytest

from mixsim.errors import ConfigError
from mixsim.optim import (
    _kernels,
    adam_family,
    amsgrad,
    amsgrad_torch,
    inverse_sqrt,
    momentum,
    onebit_adam,
    padam,
    rmsprop,
    sgd,
)

DTYPES = [np.float32, np.float64]
# Tolerances follow the dtype: a few ulps times the few dozen operations of a short run.
RTOL = {np.float32: 2e-6, np.float64: 1e-13}
ATOL = {np.float32: 1e-7, np.float64: 1e-15}


def gradients(d, steps, dtype, seed=0):
    rng = np.random.default_rng(seed)
    gs = [rng.standard_normal(d).astype(dtype) for _ in range(steps)]
    if d > 2:
        gs[0][:2] = 0.0  # exact zeros: v_hat stays 0 there on the first step
        gs[1][1] = gs[1][2]  # ties
    return gs


def run(opt, gs, dtype, use_step=True):
    x = np.linspace(-1.0, 1.0, gs[0].shape[0]).astype(dtype)
    state = opt.init(x)
    for g in gs:
        if use_step:
            state = opt.step(g, state, x)
        else:
            delta, state = opt.update(g, state)
            x = x + delta
    return x, state


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 7, 1000])
def test_amsgrad_matches_naive(dtype, d):
    gs = gradients(d, 4, dtype)
    x, state = run(amsgrad(0.01, b1=0.9, b2=0.99, eps=1e-8), gs, dtype)
    rx = np.linspace(-1.0, 1.0, d).astype(dtype)
    m = v = vh = np.zeros(d, dtype)
    for g in gs:
        rx, m, v, vh = naive.amsgrad_step(rx, g, m, v, vh, 0.01, 0.9, 0.99, 1e-8)
    np.testing.assert_allclose(x, rx, rtol=RTOL[dtype], atol=ATOL[dtype])
    np.testing.assert_allclose(state.v_hat, vh, rtol=RTOL[dtype])
    assert x.dtype == dtype and state.m.dtype == dtype and state.count == 4


@pytest.mark.parametrize("dtype", DTYPES)
def test_amsgrad_torch_form_matches_naive(dtype):
    gs = gradients(50, 5, dtype)
    x, _ = run(amsgrad_torch(0.01, b1=0.9, b2=0.999, eps=1e-8), gs, dtype)
    rx = np.linspace(-1.0, 1.0, 50).astype(dtype)
    m = v = vm = np.zeros(50, dtype)
    for t, g in enumerate(gs, start=1):
        rx, m, v, vm = naive.amsgrad_torch_step(rx, g, m, v, vm, t, 0.01, 0.9, 0.999, 1e-8)
    np.testing.assert_allclose(x, rx, rtol=10 * RTOL[dtype], atol=ATOL[dtype])


def test_the_two_amsgrad_forms_differ():
    gs = gradients(20, 3, np.float64)
    x_seed, _ = run(amsgrad(0.01), gs, np.float64)
    x_torch, _ = run(amsgrad_torch(0.01), gs, np.float64)
    assert np.max(np.abs(x_seed - x_torch)) > 1e-4


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
@pytest.mark.parametrize("dtype", DTYPES)
def test_amsgrad_torch_form_matches_torch(dtype):
    import torch

    gs = gradients(64, 6, dtype, seed=3)
    x, _ = run(amsgrad_torch(0.05, b1=0.8, b2=0.99, eps=1e-6), gs, dtype)
    p = torch.nn.Parameter(torch.from_numpy(np.linspace(-1.0, 1.0, 64).astype(dtype)))
    opt = torch.optim.Adam([p], lr=0.05, betas=(0.8, 0.99), eps=1e-6, amsgrad=True)
    for g in gs:
        p.grad = torch.from_numpy(g.copy())
        opt.step()
    np.testing.assert_allclose(x, p.detach().numpy(), rtol=10 * RTOL[dtype], atol=10 * ATOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.125, 0.25, 0.5])
def test_adam_family_matches_naive(dtype, p):
    gs = gradients(100, 4, dtype)
    x, state = run(adam_family(0.01, p=p, b1=0.9, b2=0.9, eps=1e-6), gs, dtype)
    rx = np.linspace(-1.0, 1.0, 100).astype(dtype)
    m = v = np.zeros(100, dtype)
    for g in gs:
        rx, m, v = naive.adam_family_step(rx, g, m, v, 0.01, p, 0.9, 0.9, 1e-6)
    np.testing.assert_allclose(x, rx, rtol=10 * RTOL[dtype], atol=10 * ATOL[dtype])
    np.testing.assert_allclose(state.v, v, rtol=RTOL[dtype])


def test_adam_family_v_is_monotone():
    opt = adam_family(0.1, p=0.5, b2=0.5)
    state = opt.init(np.zeros(1))
    _, state = opt.update(np.array([4.0]), state)
    v1 = state.v[0]
    _, state = opt.update(np.array([0.0]), state)
    assert state.v[0] == v1 == 8.0


def test_rmsprop_and_padam_are_adam_family_members():
    gs = gradients(30, 3, np.float64)
    np.testing.assert_array_equal(
        run(rmsprop(0.01, b2=0.9), gs, np.float64)[0],
        run(adam_family(0.01, p=0.5, b1=0.0, b2=0.9), gs, np.float64)[0],
    )
    np.testing.assert_array_equal(
        run(padam(0.01, p=0.2), gs, np.float64)[0],
        run(adam_family(0.01, p=0.2), gs, np.float64)[0],
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_and_momentum_match_naive(dtype):
    gs = gradients(10, 3, dtype)
    x, _ = run(sgd(0.1), gs, dtype)
    rx = np.linspace(-1.0, 1.0, 10).astype(dtype)
    for g in gs:
        rx = naive.sgd_step(rx, g, 0.1)
    np.testing.assert_allclose(x, rx, rtol=RTOL[dtype])
    x, state = run(momentum(0.1, mu=0.5), gs, dtype)
    rx, buf = np.linspace(-1.0, 1.0, 10).astype(dtype), np.zeros(10, dtype)
    for g in gs:
        rx, buf = naive.momentum_step(rx, g, buf, 0.1, 0.5)
    np.testing.assert_allclose(x, rx, rtol=RTOL[dtype])
    np.testing.assert_allclose(state.momentum, buf, rtol=RTOL[dtype])


@pytest.mark.parametrize(
    "factory", [sgd, momentum, amsgrad, amsgrad_torch, adam_family, rmsprop, padam, onebit_adam]
)
def test_update_returns_the_step_that_step_applies(factory):
    gs = gradients(40, 3, np.float64)
    x_step, _ = run(factory(0.01), gs, np.float64, use_step=True)
    x_update, _ = run(factory(0.01), gs, np.float64, use_step=False)
    np.testing.assert_allclose(x_step, x_update, rtol=1e-14, atol=1e-15)


def test_schedule_is_called_with_the_step_count():
    gs = gradients(5, 3, np.float64)
    x, _ = run(sgd(inverse_sqrt(1.0)), gs, np.float64)
    expected = np.linspace(-1.0, 1.0, 5) - sum(g / np.sqrt(t) for t, g in enumerate(gs, 1))
    np.testing.assert_allclose(x, expected, rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_onebit_adam_matches_naive(dtype):
    gs = gradients(25, 6, dtype)
    x, state = run(onebit_adam(0.01, b1=0.9, b2=0.99, eps=1e-8, warmup=3), gs, dtype)
    rx = np.linspace(-1.0, 1.0, 25).astype(dtype)
    m = v = e = np.zeros(25, dtype)
    for g in gs[:3]:
        rx, m, v = naive.adam_plain_step(rx, g, m, v, 0.01, 0.9, 0.99, 1e-8)
    for g in gs[3:]:
        rx, m, e = naive.onebit_momentum_step(rx, g, m, v, e, 0.01, 0.9, 1e-8)
    np.testing.assert_allclose(x, rx, rtol=20 * RTOL[dtype], atol=10 * ATOL[dtype])
    np.testing.assert_allclose(state.error, e, rtol=20 * RTOL[dtype], atol=10 * ATOL[dtype])
    assert state.bits == 32 + 25


def test_onebit_adam_sends_full_precision_during_warmup():
    opt = onebit_adam(0.01, warmup=2)
    x = np.zeros(10)
    state = opt.init(x)
    sizes = []
    for _ in range(4):
        state = opt.step(np.ones(10), state, x)
        sizes.append(state.bits)
    assert sizes == [320, 320, 42, 42]


@pytest.mark.parametrize("factory", [amsgrad, amsgrad_torch, adam_family, sgd, momentum])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_gradient_reaches_the_parameters(factory, bad):
    opt = factory(0.1)
    x = np.ones(4)
    state = opt.init(x)
    g = np.array([0.5, bad, -0.5, 0.0])
    state = opt.step(g, state, x)
    assert not np.isfinite(x[1])
    assert np.all(np.isfinite(x[[0, 2, 3]]))
    state = opt.step(np.ones(4), state, x)
    assert not np.isfinite(x[1])


def test_amsgrad_keeps_nan_in_v_hat():
    opt = amsgrad(0.1)
    state = opt.init(np.zeros(2))
    _, state = opt.update(np.array([np.nan, 1.0]), state)
    _, state = opt.update(np.array([1.0, 1.0]), state)
    assert np.isnan(state.v_hat[0]) and np.isfinite(state.v_hat[1])


@pytest.mark.parametrize(
    ("call", "key", "fragment"),
    [
        (lambda: amsgrad(-0.1), "lr", "[0.0, inf]"),
        (lambda: amsgrad(0.1, b1=1.0), "b1", "[0.0, 1.0)"),
        (lambda: amsgrad(0.1, b1=-0.1), "b1", "[0.0, 1.0)"),
        (lambda: amsgrad_torch(0.1, b2=1.5), "b2", "[0.0, 1.0)"),
        (lambda: adam_family(0.1, p=0.75), "p", "[0.0, 0.5]"),
        (lambda: padam(0.1, p=0.5), "p", "(0.0, 0.5)"),
        (lambda: momentum(0.1, mu=1.0), "mu", "[0.0, 1.0)"),
        (lambda: sgd("fast"), "lr", "expected a number"),
        (lambda: onebit_adam(warmup=-1), "warmup", ">= 0"),
        (lambda: amsgrad(0.1, eps=-1.0), "eps", "[0.0, inf]"),
    ],
)
def test_bad_arguments_name_the_range(call, key, fragment):
    with pytest.raises(ConfigError) as info:
        call()
    assert info.value.key == key
    assert fragment in str(info.value)


def test_mismatched_lengths_are_refused():
    opt = amsgrad(0.1)
    x = np.zeros(3)
    state = opt.init(x)
    with pytest.raises(ValueError, match="length"):
        opt.step(np.zeros(4), state, x)
    with pytest.raises(TypeError, match="1-D float32 or float64"):
        opt.init(np.zeros((2, 2)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("d", "k"), [(1, 0), (1, 1), (63, 5), (64, 64), (1000, 10), (5000, 300)])
def test_sparse_amsgrad_pass_is_the_dense_step_bit_for_bit(dtype, d, k):
    """The fused step's second pass (spans on a gradient buffer, error cleared) against the
    naive dense AMSGrad on the scattered gradient: same bits, signed zeros included."""
    rng = np.random.default_rng(d + k)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    x = rng.standard_normal(d).astype(dtype)
    m, v, vh = (np.zeros(d, dtype) for _ in range(3))
    m[::3] = -0.0  # the decay must not turn -0.0 into 0.0 differently from the dense step
    e = rng.standard_normal(d).astype(dtype)
    rx, rm, rv, rvh, re = x.copy(), m.copy(), v.copy(), vh.copy(), e.copy()
    t = dtype
    for _ in range(3):
        idx = np.sort(rng.choice(d, k, replace=False)).astype(np.int64)
        vals = rng.standard_normal(k).astype(dtype)
        vals[::4] = -0.0
        _kernels._ef_amsgrad_sparse_step(
            x, e, idx, vals, m, v, vh, t(0.01), t(0.9), t(1 - 0.9), t(0.99), t(1 - 0.99), t(1e-8)
        )
        g = np.zeros(d, dtype)
        g[idx] = vals
        rx, rm, rv, rvh = naive.amsgrad_step(rx, g, rm, rv, rvh, 0.01, 0.9, 0.99, 1e-8)
        re[idx] = 0.0
        for got, want in ((x, rx), (m, rm), (v, rv), (vh, rvh), (e, re)):
            assert got.dtype == dtype
            np.testing.assert_array_equal(got.view(bits), want.view(bits))
