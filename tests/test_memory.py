"""Memory schemes of mixsim.optim: error feedback, Markov/EF21, CD-Adam."""

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mixsim.errors import ConfigError
from mixsim.optim import (
    _kernels,
    accumulate,
    cd_adam,
    error_feedback,
    make_memory,
    markov,
    message_bits,
    onebit_adam_parties,
    rand_k,
    scaled_sign,
    sgd,
    top_k,
    two_way,
    uncompressed,
)

finite = st.floats(-1e3, 1e3, allow_nan=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 50, 2 * _kernels._SMALL])
def test_error_feedback_top_k_matches_naive(dtype, d):
    rng = np.random.default_rng(d)
    k = max(1, d // 100)
    ef = error_feedback(top_k(k))
    state = ef.init(np.zeros(d, dtype))
    e = np.zeros(d, dtype)
    for _ in range(3):
        g = rng.standard_normal(d).astype(dtype)
        c, state = ef.update(g, state)
        rc, e = naive.error_feedback_top_k(g, e, k)
        np.testing.assert_array_equal(c, rc)
        np.testing.assert_array_equal(state.error, e)
        assert state.inner.bits == min(64 * k, d + 32 * k)
        assert c.dtype == dtype and state.error.dtype == dtype


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, d: rng.integers(-3, 4, d).astype(np.float32),  # heavy ties, zeros
        lambda rng, d: np.where(np.arange(d) % 16 == 0, 10.0, rng.random(d)),  # sample fooled
        lambda rng, d: np.where(np.arange(d) % 16 == 0, 1.0 + rng.random(d) * 1e-3, 0.5),
        lambda rng, d: np.where(np.arange(d) % 2 == 1, rng.standard_normal(d), 0.0),
        lambda rng, d: np.where(rng.random(d) < 0.001, np.nan, rng.standard_normal(d)),
        lambda rng, d: rng.standard_normal(d) * np.exp(rng.standard_normal(d) * 4),  # wide
    ],
)
@pytest.mark.parametrize("k", [1, 100, 5000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_error_feedback_top_k_large_d_stays_exact(make, k, dtype):
    """The sampled threshold, the candidate pass, the histogram selection and their
    fallbacks (too few or too many candidates) against the naive top-k, over steps."""
    d = 2 * _kernels._SMALL + 37
    rng = np.random.default_rng(k)
    ef = error_feedback(top_k(k))
    state = ef.init(np.zeros(d, dtype))
    e = np.zeros(d, dtype)
    for _ in range(3):
        g = make(rng, d).astype(dtype)
        c, state = ef.update(g, state)
        rc, e = naive.error_feedback_top_k(g, e, k)
        e[~np.isfinite(rc)] = 0.0  # a sent NaN/inf leaves 0 (moved out), not inf - inf
        np.testing.assert_array_equal(c, rc)
        np.testing.assert_array_equal(state.error, e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_error_feedback_top_k_of_nearly_everything_stays_exact(dtype):
    # k close to d: the sampled threshold cannot separate and the exact path answers.
    d = 2 * _kernels._SMALL + 37
    k = d - 1000
    rng = np.random.default_rng(7)
    ef = error_feedback(top_k(k))
    state = ef.init(np.zeros(d, dtype))
    e = np.zeros(d, dtype)
    for _ in range(2):
        g = (rng.standard_normal(d) * 0.1).astype(dtype)
        c, state = ef.update(g, state)
        rc, e = naive.error_feedback_top_k(g, e, k)
        np.testing.assert_array_equal(c, rc)
        np.testing.assert_array_equal(state.error, e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_error_feedback_top_k_of_a_large_fraction_stays_exact(dtype):
    # k = 40% of d: the sampled threshold separates, and the candidates at or above it
    # (about k) fit the capacity 2k + 4096 while the entries below it (about 60%) would
    # too; only the candidate pass's own test tells them apart.
    d = 2 * _kernels._SMALL + 37
    k = 2 * d // 5
    rng = np.random.default_rng(11)
    ef = error_feedback(top_k(k))
    state = ef.init(np.zeros(d, dtype))
    e = np.zeros(d, dtype)
    for _ in range(2):
        g = rng.standard_normal(d).astype(dtype)
        c, state = ef.update(g, state)
        rc, e = naive.error_feedback_top_k(g, e, k)
        np.testing.assert_array_equal(c, rc)
        np.testing.assert_array_equal(state.error, e)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=finite), st.data())
def test_error_feedback_conserves_the_sum(g, data):
    d = g.shape[0]
    old = data.draw(arrays(np.float64, d, elements=finite))
    k = data.draw(st.integers(0, d))
    for compressor in (top_k(k), scaled_sign(), rand_k(k, seed=1)):
        ef = error_feedback(compressor)
        state = ef.init(g)
        np.copyto(state.error, old)
        c, state = ef.update(g, state)
        np.testing.assert_allclose(c + state.error, g + old, rtol=1e-12, atol=1e-9)


def test_error_feedback_eventually_sends_everything():
    """A constant gradient with top-1: every coordinate is sent in turn, none is lost."""
    g = np.array([1.0, 0.5, 0.25])
    ef = error_feedback(top_k(1))
    state = ef.init(g)
    sent = np.zeros(3)
    for _ in range(30):
        c, state = ef.update(g, state)
        sent += c
    np.testing.assert_allclose(sent + state.error, 30 * g)
    assert np.all(np.abs(state.error) <= 2 * np.abs(g).sum())


def test_markov_estimate_reaches_a_constant_gradient_in_d_over_k_steps():
    g = np.array([5.0, -4.0, 3.0, -2.0, 1.0, 0.5])
    mc = markov(top_k(2))
    state = mc.init(g)
    for _ in range(3):  # d / k = 3 steps
        estimate, state = mc.update(g, state)
    np.testing.assert_array_equal(estimate, g)
    message, state = markov(top_k(2), output="message").update(g, mc.init(g))
    np.testing.assert_array_equal(message, [5.0, -4.0, 0, 0, 0, 0])


def test_markov_message_plus_accumulate_equals_markov_estimate():
    rng = np.random.default_rng(0)
    sender, receiver, both = (
        markov(scaled_sign(), output="message"),
        accumulate(),
        markov(scaled_sign()),
    )
    s, r, b = sender.init(np.zeros(20)), receiver.init(np.zeros(20)), both.init(np.zeros(20))
    for _ in range(4):
        g = rng.standard_normal(20)
        message, s = sender.update(g, s)
        received, r = receiver.update(message, r)
        estimate, b = both.update(g, b)
        np.testing.assert_array_equal(received, estimate)
        np.testing.assert_array_equal(s.estimate, r.estimate)
        assert s.inner.bits == 32 + 20


def one_round(cd, grads, worker_states, server_state, model_state, x):
    messages = []
    for i, g in enumerate(grads):
        c, worker_states[i] = cd.worker.update(g, worker_states[i])
        messages.append(c)
    down, server_state = cd.server.update(np.mean(messages, axis=0), server_state)
    model_state = cd.model.step(down, model_state, x)
    return server_state, model_state


def test_cd_adam_without_compression_is_amsgrad_on_the_mean_gradient():
    rng = np.random.default_rng(1)
    n, d = 4, 30
    cd = cd_adam(uncompressed(), lr=0.01)
    x = np.zeros(d)
    ws = [cd.worker.init(x) for _ in range(n)]
    ss, ms = cd.server.init(x), cd.model.init(x)
    # The reference is the NumPy twin of AMSGrad (seed 000 Alg. 1), not mixsim's own.
    rx, m, v, v_hat = np.zeros(d), np.zeros(d), np.zeros(d), np.zeros(d)
    for _ in range(5):
        grads = [rng.standard_normal(d) for _ in range(n)]
        ss, ms = one_round(cd, grads, ws, ss, ms, x)
        rx, m, v, v_hat = naive.amsgrad_step(rx, np.mean(grads, axis=0), m, v, v_hat, 0.01,
                                             0.9, 0.999, 1e-8)
    np.testing.assert_allclose(x, rx, rtol=1e-12, atol=1e-15)


def test_cd_adam_parties_stay_in_sync():
    rng = np.random.default_rng(2)
    n, d = 3, 40
    cd = cd_adam(scaled_sign(), lr=0.01)
    x = np.zeros(d)
    ws = [cd.worker.init(x) for _ in range(n)]
    ss, ms = cd.server.init(x), cd.model.init(x)
    for _ in range(6):
        grads = [rng.standard_normal(d) for _ in range(n)]
        ss, ms = one_round(cd, grads, ws, ss, ms, x)
        # server's g_hat = mean of the workers' g_hat_i; workers' g_tilde = server's g_tilde
        np.testing.assert_allclose(ss.aggregate, np.mean([w.estimate for w in ws], axis=0))
        np.testing.assert_array_equal(ms[0].estimate, ss.estimate)
    assert [message_bits(w) for w in ws] == [32 + d] * n
    assert message_bits(ss) == 32 + d
    assert np.all(np.isfinite(x)) and np.any(x != 0)


def test_two_way_ef21_is_the_transcribed_algorithm():
    # Two-way EF21 (seed 003 §7.2): EF21's Markov uplink, the same compression on the
    # downlink, SGD on every worker; against a direct NumPy transcription.
    rng = np.random.default_rng(3)
    n, d, k, lr = 4, 25, 3, 0.1
    ef21 = two_way(top_k(k), sgd(lr))
    x = np.zeros(d)
    ws = [ef21.worker.init(x) for _ in range(n)]
    ss, ms = ef21.server.init(x), ef21.model.init(x)
    g_hat, g_server, g_tilde, rx = np.zeros((n, d)), np.zeros(d), np.zeros(d), np.zeros(d)
    for _ in range(8):
        grads = [rng.standard_normal(d) for _ in range(n)]
        ss, ms = one_round(ef21, grads, ws, ss, ms, x)
        cs = []
        for i, g in enumerate(grads):
            c = naive.top_k(g - g_hat[i], k)
            g_hat[i] += c
            cs.append(c)
        g_server += np.mean(cs, axis=0)
        c = naive.top_k(g_server - g_tilde, k)
        g_tilde += c
        rx -= lr * g_tilde
        np.testing.assert_allclose(x, rx, rtol=1e-12, atol=1e-14)
    # Both directions carry top-k messages, far below a dense 32 d.
    assert len({message_bits(w) for w in ws} | {message_bits(ss)}) == 1
    assert 32 * k < message_bits(ss) < 32 * d


def test_two_way_without_compression_is_the_method_on_the_mean_gradient():
    rng = np.random.default_rng(4)
    n, d = 3, 10
    both = two_way(uncompressed(), sgd(0.05))
    x, rx = np.zeros(d), np.zeros(d)
    ws = [both.worker.init(x) for _ in range(n)]
    ss, ms = both.server.init(x), both.model.init(x)
    for _ in range(5):
        grads = [rng.standard_normal(d) for _ in range(n)]
        ss, ms = one_round(both, grads, ws, ss, ms, x)
        rx -= 0.05 * np.mean(grads, axis=0)
    np.testing.assert_allclose(x, rx, rtol=1e-12, atol=1e-15)


def test_make_memory_names():
    assert make_memory("none", top_k(1)).spec.name == "top-k"
    assert make_memory("ef21", top_k(1)).spec.name == "markov"
    assert make_memory("error-feedback", top_k(1)).spec.name == "error-feedback"
    with pytest.raises(ConfigError, match="allowed: ef21, error-feedback, markov, none"):
        make_memory("feedback", top_k(1))
    with pytest.raises(ConfigError, match="output"):
        markov(top_k(1), output="both")


def test_onebit_adam_parties_are_tang_et_al_per_worker():
    # 1-bit Adam with one compressor per worker and one at the server, against a direct
    # NumPy transcription: Adam during warm-up, then error-compensated scaled sign of each
    # worker's momentum and of their mean, frozen variance.
    rng = np.random.default_rng(5)
    n, d, lr, b1, b2, eps, warmup = 3, 12, 0.05, 0.9, 0.99, 1e-8, 3
    ob = onebit_adam_parties(lr, b1, b2, eps, warmup)
    x = np.zeros(d)
    ws = [ob.worker.init(x) for _ in range(n)]
    ss, ms = ob.server.init(x), ob.model.init(x)
    rx, m, v = np.zeros(d), np.zeros(d), np.zeros(d)
    e, e_server = np.zeros((n, d)), np.zeros(d)
    for t in range(1, 9):
        grads = [rng.standard_normal(d) for _ in range(n)]
        messages = []
        for i, g in enumerate(grads):
            c, ws[i] = ob.worker.update(g, ws[i], ms.m)
            messages.append(c)
        down, ss = ob.server.update(np.mean(messages, axis=0), ss)
        ms = ob.model.step(down, ms, x)
        if t <= warmup:
            g = np.mean(grads, axis=0)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
        else:
            cs = []
            for i, g in enumerate(grads):
                a = b1 * m + (1 - b1) * g + e[i]
                cs.append(naive.scaled_sign(a))
                e[i] = a - cs[-1]
            a = np.mean(cs, axis=0) + e_server
            m = naive.scaled_sign(a)
            e_server = a - m
        rx -= lr * m / (np.sqrt(v) + eps)
        np.testing.assert_allclose(x, rx, rtol=1e-12, atol=1e-14)
        expected_bits = 32 * d if t <= warmup else 32 + d
        assert [message_bits(w) for w in ws] == [expected_bits] * n
        assert message_bits(ss) == expected_bits


# -- non-finite values: passed on, never kept (issue 12, point 36) ------------------------

def _compressors_of_4():
    from mixsim.optim import adaptive, bernoulli, uniform

    return {
        "top-k": top_k(1), "top-k per layer": top_k(1, offsets=[0, 4]),
        "top-k two layers": top_k(2, offsets=[0, 2, 4]), "rand-k": rand_k(2, seed=0),
        "scaled sign": scaled_sign(), "bernoulli": bernoulli(0.5, seed=0),
        "uniform": uniform(0.5, seed=0), "adaptive": adaptive(0.5, seed=0),
    }


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("name", list(_compressors_of_4()))
def test_error_feedback_passes_non_finite_on_and_keeps_none(name, bad):
    compressor = _compressors_of_4()[name]
    ef = error_feedback(compressor)
    state = ef.init(np.zeros(4))
    g = np.array([bad, 1.0, 2.0, 3.0])
    out, state = ef.update(g, state)
    sent = ~np.isfinite(out)
    # What was sent is not also remembered (inf - inf would store NaN there) ...
    assert np.all(state.error[sent] == 0)
    # ... and everything else is remembered exactly: c + e == g + e_old.
    np.testing.assert_array_equal(state.error[~sent], (g - out)[~sent])
    if not sent[0]:
        assert not np.isfinite(state.error[0])  # not sent yet: it waits to be
    # A later finite gradient is compressed as if the bad value had been sent and gone.
    later = np.array([0.0, 1.0, 2.0, 4.0])
    expected_total = state.error + later
    out2, state = ef.update(later, state)
    if np.isfinite(expected_total).all():
        assert np.isfinite(out2).all() and np.isfinite(state.error).all()


def test_error_feedback_whole_vector_and_per_layer_top_k_agree_on_inf():
    g = np.array([np.inf, 1.0, 2.0, 3.0])
    runs = []
    for compressor in (top_k(1), top_k(1, offsets=[0, 4])):
        ef = error_feedback(compressor)
        state = ef.init(np.zeros(4))
        outs = []
        for step in (g, np.array([0.0, 1.0, 2.0, 3.0]), np.zeros(4)):
            out, state = ef.update(step, state)
            outs.append(out.copy())
        runs.append((outs, state.error.copy()))
    (whole, whole_error), (layered, layered_error) = runs
    for a, b in zip(whole, layered, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole_error, layered_error)
    # The inf went out at step 1; then the largest finite memory, not a stale NaN, is sent.
    assert whole[0].tolist() == [np.inf, 0.0, 0.0, 0.0]
    assert whole[1].tolist() == [0.0, 0.0, 0.0, 6.0]
    assert whole[2].tolist() == [0.0, 0.0, 4.0, 0.0]


def test_adaptive_u_keeps_no_non_finite_value():
    from mixsim.optim import adaptive

    c = adaptive(0.5, seed=0)
    state = c.init(np.zeros(4))
    out, state = c.update(np.array([np.nan, 1.0, 2.0, 3.0]), state)
    assert np.isnan(out).all()  # passed on: the whole message is NaN
    assert np.isfinite(state.u).all() and np.all(state.u == 0)
    out, state = c.update(np.array([1.0, 2.0, 3.0, 4.0]), state)
    assert np.isfinite(out).all() and np.isfinite(state.u).all() and state.u.sum() > 0


def test_markov_estimate_keeps_no_non_finite_value():
    sender, receiver = markov(top_k(1), output="message"), accumulate()
    s, r = sender.init(np.zeros(2)), receiver.init(np.zeros(2))
    message, s = sender.update(np.array([np.inf, 1.0]), s)
    estimate, r = receiver.update(message, r)
    assert message.tolist() == [np.inf, 0.0] and estimate.tolist() == [np.inf, 0.0]
    assert s.estimate.tolist() == r.estimate.tolist() == [0.0, 0.0]
    message, s = sender.update(np.array([3.0, 1.0]), s)
    estimate, r = receiver.update(message, r)
    assert estimate.tolist() == [3.0, 0.0] and s.estimate.tolist() == [3.0, 0.0]


@pytest.mark.parametrize("warmup", [0, 5])
def test_onebit_adam_state_keeps_no_non_finite_value(warmup):
    from mixsim.optim import onebit_adam

    opt = onebit_adam(0.1, warmup=warmup)
    x = np.zeros(4)
    state = opt.init(x)
    state = opt.step(np.array([1.0, -2.0, 3.0, 0.5]), state, x)
    before = (state.m.copy(), state.v.copy(), state.error.copy())
    bad = x.copy()
    state = opt.step(np.array([np.nan, 1.0, 1.0, 1.0]), state, bad)
    assert not np.isfinite(bad).all()  # passed on to the parameters
    # Where the step's message is non-finite (one coordinate in warm-up, every one after:
    # the scale is), the state keeps its value; elsewhere it moved on.
    reached = ~np.isfinite(bad)
    for kept, old in zip((state.m, state.v, state.error), before, strict=True):
        assert np.isfinite(kept).all()
        np.testing.assert_array_equal(kept[reached], old[reached])
    state = opt.step(np.array([1.0, 1.0, 1.0, 1.0]), state, x)
    assert np.isfinite(x).all() and np.isfinite(state.m).all()


@pytest.mark.parametrize("warmup", [0, 5])
def test_onebit_adam_parties_keep_no_non_finite_value(warmup):
    ob = onebit_adam_parties(0.1, warmup=warmup)
    x = np.zeros(4)
    ws, ss, ms = ob.worker.init(x), ob.server.init(x), ob.model.init(x)

    def round_(g, ws, ss, ms, x):
        c1, ws = ob.worker.update(g, ws, ms.m)
        c, ss = ob.server.update(c1, ss)
        return c, ws, ss, ob.model.step(c, ms, x)

    _, ws, ss, ms = round_(np.array([1.0, -2.0, 3.0, 0.5]), ws, ss, ms, x)
    before = [a.copy() for a in (ws.error, ss.error, ms.m, ms.v)]
    bad = x.copy()
    c, ws, ss, ms = round_(np.array([np.nan, 1.0, 1.0, 1.0]), ws, ss, ms, bad)
    assert not np.isfinite(c).all() and not np.isfinite(bad).all()
    reached = ~np.isfinite(c)
    for kept, old in zip((ws.error, ss.error, ms.m, ms.v), before, strict=True):
        assert np.isfinite(kept).all()
        np.testing.assert_array_equal(kept[reached], old[reached])
    c, ws, ss, ms = round_(np.ones(4), ws, ss, ms, x)
    assert np.isfinite(c).all() and np.isfinite(x).all()
