"""chain, the fused error-feedback + top-k + AMSGrad, registries, schedules and bits."""

import numpy as np
import pytest

from mixsim.errors import ConfigError
from mixsim.optim import (
    _kernels,
    amsgrad,
    amsgrad_torch,
    bernoulli,
    chain,
    constant,
    dense_bits,
    error_feedback,
    fused_ef_top_k_amsgrad,
    identity,
    inverse_sqrt,
    make_optimizer,
    make_schedule,
    markov,
    message_bits,
    scaled_sign,
    sign_bits,
    sparse_bits,
    step_decay,
    top_k,
)


def unfused_run(ef, opt, gs, x):
    """error feedback then the optimizer, called one after the other (no fusion)."""
    s_ef, s_opt = ef.init(x), opt.init(x)
    for g in gs:
        c, s_ef = ef.update(g, s_ef)
        s_opt = opt.step(c, s_opt, x)
    return s_ef, s_opt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("d", "k"), [(1, 1), (40, 0), (40, 40), (300, 7), (2 * _kernels._SMALL, 2000)]
)
def test_chain_fuses_error_feedback_top_k_amsgrad_with_the_same_numbers(dtype, d, k):
    rng = np.random.default_rng(d + k)
    gs = [rng.standard_normal(d).astype(dtype) for _ in range(4)]
    fused = chain(error_feedback(top_k(k)), amsgrad(0.01, b1=0.8, b2=0.9))
    assert fused.spec.name == "fused-ef-top-k-amsgrad"
    x = np.linspace(-1, 1, d).astype(dtype)
    state = fused.init(x)
    for g in gs:
        state = fused.step(g, state, x)
    rx = np.linspace(-1, 1, d).astype(dtype)
    s_ef, s_opt = unfused_run(error_feedback(top_k(k)), amsgrad(0.01, b1=0.8, b2=0.9), gs, rx)
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(state[0].error, s_ef.error)
    np.testing.assert_array_equal(state[1].v_hat, s_opt.v_hat)
    assert state[1].count == 4 and message_bits(state) == sparse_bits(k, d)
    assert x.dtype == dtype and state[1].m.dtype == dtype


def test_fused_update_returns_the_step():
    rng = np.random.default_rng(0)
    g = rng.standard_normal(50)
    opt = fused_ef_top_k_amsgrad(5, lr=0.1)
    delta, _ = opt.update(g, opt.init(np.zeros(50)))
    x = np.zeros(50)
    opt.step(g, opt.init(x), x)
    np.testing.assert_array_equal(delta, x)
    assert np.count_nonzero(delta) == 5


def test_chain_does_not_fuse_other_combinations():
    assert chain(error_feedback(top_k(2)), amsgrad_torch(0.1)).spec.name == "chain"
    assert chain(error_feedback(top_k(2, offsets=[0, 2, 4])), amsgrad(0.1)).spec.name == "chain"
    assert chain(top_k(2), amsgrad(0.1)).spec.name == "chain"


def test_chain_applies_members_in_order_and_steps():
    rng = np.random.default_rng(1)
    g = rng.standard_normal(20)
    opt = chain(markov(scaled_sign()), identity(), amsgrad(0.1))
    x = np.zeros(20)
    state = opt.init(x)
    delta, _ = opt.update(g, opt.init(x))
    state = opt.step(g, state, x)
    np.testing.assert_allclose(x, delta)
    expected = amsgrad(0.1).update(
        markov(scaled_sign()).update(g, markov(scaled_sign()).init(x))[0],
        amsgrad(0.1).init(x),
    )[0]
    np.testing.assert_allclose(delta, expected)
    assert message_bits(state) == 32 + 20
    assert chain(top_k(1)).step is None
    with pytest.raises(TypeError, match="Transformations"):
        chain(top_k(1), "amsgrad")


def test_message_bits_collects_every_compressor_once():
    x = np.zeros(100)
    opt = chain(error_feedback(bernoulli(0.1, seed=0)), markov(top_k(3)), amsgrad(0.1))
    state = opt.init(x)
    out, state = opt.update(np.random.default_rng(0).standard_normal(100), state)
    sent = state[0].inner.bits
    assert message_bits(state) == sent + sparse_bits(3, 100)
    assert message_bits(amsgrad(0.1).init(x)) == 0


def test_bits_formulas():
    assert dense_bits(10) == 320
    assert sign_bits(10) == 42
    assert sparse_bits(0, 10) == 0
    assert sparse_bits(3, 1000) == 192
    assert sparse_bits(500, 1000) == 1000 + 32 * 500


@pytest.mark.parametrize(
    "name",
    [
        "sgd",
        "momentum",
        "amsgrad",
        "amsgrad-torch",
        "rmsprop",
        "padam",
        "adam-family",
        "onebit-adam",
    ],
)
def test_every_registered_optimizer_steps(name):
    opt = make_optimizer(name, lr=0.1)
    assert opt.spec.name in (name, "adam-family")
    x = np.ones(8, np.float32)
    state = opt.init(x)
    state = opt.step(np.linspace(-1, 1, 8).astype(np.float32), state, x)
    assert x.dtype == np.float32 and np.all(np.isfinite(x)) and np.any(x != 1)


def test_registry_errors_name_the_allowed_values():
    with pytest.raises(ConfigError, match="Did you mean 'amsgrad'") as info:
        make_optimizer("amsgard")
    assert info.value.key == "optimizer" and "amsgrad-torch" in str(info.value)
    with pytest.raises(ConfigError, match="allowed: lr, b1, b2, eps") as info:
        make_optimizer("amsgrad", beta1=0.9)
    assert info.value.key == "beta1"
    with pytest.raises(ConfigError, match=r"\[0.0, 1.0\)"):
        make_optimizer("adam-family", b1=1.0)


def test_schedules():
    assert constant(0.5)(100) == 0.5
    assert inverse_sqrt(1.0)(4) == 0.5
    decay = step_decay(1.0, factor=0.1, every=10)
    assert [decay(t) for t in (1, 10, 11, 21)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    assert make_schedule("step-decay", value=2.0, factor=0.5, every=1)(3) == 0.5
    with pytest.raises(ConfigError, match="allowed: constant, cosine, inverse-sqrt, step-decay"):
        make_schedule("linear", value=1.0)
    with pytest.raises(ConfigError) as info:
        step_decay(1.0, factor=0.0)
    assert info.value.key == "factor"
    with pytest.raises(ConfigError) as info:
        constant(-1.0)
    assert info.value.key == "lr"
