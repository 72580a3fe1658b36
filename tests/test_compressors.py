"""Compressors of mixsim.optim: against tests/naive.py, properties, unbiasedness, errors."""

import inspect

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mixsim.errors import ConfigError
from mixsim.optim import (
    _kernels,
    adaptive,
    adaptive_probabilities,
    bernoulli,
    make_compressor,
    rand_k,
    scaled_sign,
    select_top_k,
    top_k,
    uncompressed,
    uniform,
)
from mixsim.optim.compressors import _COMPRESSORS, _split

DTYPES = [np.float32, np.float64]
finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)
vectors = arrays(np.float64, st.integers(1, 60), elements=finite)
# Few distinct values: many ties and exact zeros.
tied = arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([0.0, 1.0, -1.0, 2.5]))
# Normal (not subnormal) magnitudes or exact zeros: sums of subnormals are not meaningful.
magnitudes = st.one_of(st.just(0.0), st.floats(1e-300, 1e3))
signed = st.one_of(st.just(0.0), st.floats(1e-300, 100), st.floats(-100, -1e-300))


def compress(compressor, g, state=None):
    state = compressor.init(np.zeros_like(g)) if state is None else state
    return compressor.update(g, state)


# ---------------------------------------------------------------- top-k


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 17, 1000])
def test_top_k_matches_naive(dtype, d):
    rng = np.random.default_rng(d)
    g = rng.standard_normal(d).astype(dtype)
    g[::5] = 0.0
    g[1::7] = g[0]
    for k in sorted({0, 1, d // 3, d - 1, d}):
        out, state = compress(top_k(k), g)
        np.testing.assert_array_equal(out, naive.top_k(g, k))
        assert out.dtype == dtype


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, d: rng.standard_normal(d),
        lambda rng, d: rng.integers(-3, 4, d).astype(float),  # heavy ties, zeros
        lambda rng, d: np.where(np.arange(d) % 16 == 0, 10.0, rng.random(d)),  # sample fooled
        lambda rng, d: np.where(np.arange(d) % 16 == 0, 1.0 + rng.random(d) * 1e-3, 0.5),
        lambda rng, d: np.where(np.arange(d) % 2 == 1, rng.standard_normal(d), 0.0),
        lambda rng, d: np.full(d, 0.5),  # every entry tied
        lambda rng, d: np.zeros(d),
        lambda rng, d: np.sort(rng.standard_normal(d)),
        lambda rng, d: rng.integers(-8, 9, d).astype(np.float32),
        lambda rng, d: np.where(rng.random(d) < 1e-3, np.nan, rng.standard_normal(d)),
        # NaN and inf tie at the top (NaN counts as an infinite magnitude), then integers.
        lambda rng, d: np.where(np.arange(d) % 97 == 0, -np.inf,
                                np.where(np.arange(d) % 89 == 0, np.nan,
                                         rng.integers(-3, 4, d).astype(float))),
    ],
)
@pytest.mark.parametrize("k", [1, 100, 5000])
def test_top_k_large_d_uses_sampling_and_stays_exact(make, k):
    d = 2 * _kernels._SMALL
    g = make(np.random.default_rng(k), d)
    np.testing.assert_array_equal(select_top_k(g, k), naive.top_k_indices(g, k))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [10, 1000])
def test_top_k_few_entries_above_a_large_tie_stays_exact(dtype, k):
    # Every entry 0.5 but seven larger ones, scattered: the sampled threshold is the tied
    # magnitude 0.5, so the answer merges the entries above it with the first ties.
    d = 2 * _kernels._SMALL
    g = np.full(d, 0.5, dtype)
    g[[3, 17, 40_000, 40_001, 99_999, 150_000, d - 1]] = [2.0, -3.0, 1.0, -1.0, 4.0, 0.75, 5.0]
    np.testing.assert_array_equal(select_top_k(g, k), naive.top_k_indices(g, k))


def test_top_k_nan_and_inf_are_always_sent():
    g = np.array([1.0, np.nan, -np.inf, 5.0, np.inf, 0.0])
    np.testing.assert_array_equal(select_top_k(g, 3), [1, 2, 4])
    assert select_top_k(g, 4).tolist() == [1, 2, 3, 4]
    out, _ = compress(top_k(3), g)
    assert np.isnan(out[1]) and out[2] == -np.inf and out[4] == np.inf and out[3] == 0.0


@settings(max_examples=60, deadline=None)
@given(st.one_of(vectors, tied), st.data())
def test_top_k_keeps_exactly_k_of_the_largest(g, data):
    k = data.draw(st.integers(0, g.shape[0]))
    idx = select_top_k(g, k)
    assert idx.shape == (k,) and np.all(np.diff(idx) > 0)
    dropped = np.setdiff1d(np.arange(g.shape[0]), idx)
    if k and dropped.size:
        assert np.abs(g[idx]).min() >= np.abs(g[dropped]).max()
    out, state = compress(top_k(k), g)
    assert np.count_nonzero(np.isin(np.arange(g.shape[0]), idx)) == k
    np.testing.assert_array_equal(out[idx], g[idx])
    np.testing.assert_array_equal(out[dropped], 0.0)


def test_top_k_bits_take_the_smaller_encoding():
    g = np.arange(1.0, 1001.0)
    assert compress(top_k(10), g)[1].bits == 64 * 10  # index list
    assert compress(top_k(100), g)[1].bits == 1000 + 32 * 100  # bitmap
    assert compress(top_k(0), g)[1].bits == 0
    assert compress(top_k(density=0.01), g)[1].bits == 64 * 10


def test_top_k_per_layer_splits_the_budget_by_size():
    rng = np.random.default_rng(0)
    g = rng.standard_normal(100)
    offsets = [0, 10, 40, 100]
    out, state = compress(top_k(10, offsets=offsets), g)
    counts = _split(10, [(0, 10), (10, 40), (40, 100)], 100)
    assert counts == [1, 3, 6]
    layers = [(0, 10), (10, 40), (40, 100)]
    expected = np.concatenate(
        [naive.top_k(g[a:b], kl) for (a, b), kl in zip(layers, counts, strict=True)]
    )
    np.testing.assert_array_equal(out, expected)
    # per layer min(index list, bitmap): min(64, 10 + 32) + min(192, 30 + 96) + min(384, 60 + 192)
    assert state.bits == 42 + 126 + 252


def test_budget_split_uses_largest_remainders():
    layers = [(0, 1), (1, 4), (4, 7)]
    assert _split(3, layers, 7) == [1, 1, 1]  # exact shares 3/7, 9/7, 9/7
    assert _split(4, layers, 7) == [0, 2, 2]  # 4/7, 12/7, 12/7
    assert sum(_split(5, [(0, 3), (3, 6), (6, 9)], 9)) == 5


# ---------------------------------------------------------------- scaled sign


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 5, 1000])
def test_scaled_sign_matches_naive(dtype, d):
    g = np.random.default_rng(d).standard_normal(d).astype(dtype)
    g[::3] = 0.0 if d > 1 else g[::3]
    out, state = compress(scaled_sign(), g)
    np.testing.assert_allclose(out, naive.scaled_sign(g), rtol=1e-6)
    assert state.bits == 32 + d and out.dtype == dtype


@settings(max_examples=60, deadline=None)
@given(vectors)
def test_scaled_sign_error_closed_form(g):
    out, _ = compress(scaled_sign(), g)
    d = g.shape[0]
    l1, l2sq = np.abs(g).sum(), np.dot(g, g)
    error = np.sum((out - g) ** 2)
    closed = (1.0 - l1**2 / (d * l2sq)) * l2sq if l2sq > 0 else 0.0
    assert error == pytest.approx(closed, rel=1e-9, abs=1e-9 * max(l2sq, 1.0))


def test_scaled_sign_per_layer_has_one_scale_per_layer():
    g = np.array([1.0, -3.0, 10.0, 10.0, -30.0])
    out, state = compress(scaled_sign(offsets=[0, 2, 5]), g)
    np.testing.assert_allclose(out, [2.0, -2.0, 50 / 3, 50 / 3, -50 / 3])
    assert state.bits == (32 + 2) + (32 + 3)


def test_scaled_sign_non_finite_input_gives_non_finite_output():
    out, _ = compress(scaled_sign(), np.array([1.0, np.nan, 2.0]))
    assert np.all(np.isnan(out))
    out, _ = compress(scaled_sign(), np.array([1.0, np.inf, -2.0]))
    assert not np.any(np.isfinite(out))


# ---------------------------------------------------------------- probabilities


@settings(max_examples=80, deadline=None)
@given(arrays(np.float64, st.integers(1, 50), elements=magnitudes), st.data())
def test_capped_probabilities_match_the_closed_form(r, data):
    c = data.draw(st.floats(0.0, float(r.shape[0])))
    expected = naive.capped_probabilities(r, c)
    for rounds in (_kernels._CAPPED_ROUNDS, 0, 1):  # Algorithm 2, sort finish, both
        p = np.empty_like(r)
        _kernels._capped_probabilities(r, c, p, rounds)
        np.testing.assert_allclose(p, expected, rtol=1e-9, atol=1e-12)
    assert np.all(expected <= 1.0)
    assert expected.sum() == pytest.approx(min(c, np.count_nonzero(r)), rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 40), elements=signed),
    st.sampled_from([0.25, 0.5, 1.0]),
    st.data(),
)
def test_adaptive_probabilities_are_capped_and_sum_to_c(g, xi, data):
    u = data.draw(arrays(np.float64, g.shape, elements=st.floats(0, 100)))
    c = data.draw(st.floats(0.0, float(g.shape[0])))
    p = adaptive_probabilities(g, c, u, xi=xi, eps=1e-8)
    expected = naive.capped_probabilities(naive.adaptive_ratios(g, u, xi, 1e-8), c)
    np.testing.assert_allclose(p, expected, rtol=1e-9, atol=1e-12)
    assert np.all(p <= 1.0) and np.all(p >= 0.0)
    assert p.sum() == pytest.approx(min(c, np.count_nonzero(g)), rel=1e-9, abs=1e-9)


def test_adaptive_probabilities_favour_rarely_sent_coordinates():
    g = np.ones(4)
    p = adaptive_probabilities(g, 1.0, np.array([0.0, 1.0, 4.0, 4.0]), xi=0.5)
    assert p[0] > p[1] > p[2] == p[3]


def test_probabilities_example_of_algorithm_2():
    # r = [4, 1, 1, 0], c = 2: the 4 is capped at 1, the rest share c - 1 = 1.
    np.testing.assert_allclose(
        adaptive_probabilities(np.array([4.0, 1.0, -1.0, 0.0]), 2.0), [1.0, 0.5, 0.5, 0.0]
    )


def test_sparsify_matches_naive():
    rng = np.random.default_rng(1)
    g = rng.standard_normal(300)
    p = rng.random(300)
    p[:10] = 0.0
    p[10:20] = 1.0
    uniforms = rng.random(300)
    out = np.empty_like(g)
    kept = _kernels._sparsify(g, p, uniforms, out)
    np.testing.assert_array_equal(out, naive.sparsify(g, p, uniforms))
    assert kept == np.count_nonzero(uniforms < p)


# ---------------------------------------------------------------- random sparsifiers


def mean_of_draws(compressor, g, draws, fixed_u=None):
    state = compressor.init(np.zeros_like(g))
    total = np.zeros_like(g)
    for _ in range(draws):
        if fixed_u is not None:
            state = state._replace(u=fixed_u.copy())
        out, state = compressor.update(g, state)
        total += out
    return total / draws


@pytest.mark.parametrize(
    ("name", "compressor", "prob"),
    [
        ("bernoulli", bernoulli(0.3, seed=11), None),
        ("adaptive", adaptive(0.3, xi=0.5, seed=12), None),
        ("adaptive-quarter", adaptive(0.3, xi=0.25, seed=13), None),
        ("uniform", uniform(0.3, seed=14), 0.3),
        ("rand-k", rand_k(3, rescale=True, seed=15), 0.3),
    ],
)
def test_random_sparsifiers_are_unbiased(name, compressor, prob):
    """Mean of 20 000 draws within 5 standard errors of g, coordinate by coordinate."""
    g = np.array([3.0, -1.0, 0.5, 0.25, -0.1, 2.0, 0.0, 1.0, -0.7, 0.05])
    fixed_u = np.linspace(0.0, 2.0, g.shape[0])
    draws = 20_000
    if prob is None:
        u = fixed_u if name.startswith("adaptive") else None
        xi = 0.25 if name == "adaptive-quarter" else 0.5
        p = adaptive_probabilities(g, 0.3 * g.shape[0], u, xi=xi)
    else:
        p = np.full(g.shape, prob)
    mean = mean_of_draws(compressor, g, draws, fixed_u if name.startswith("adaptive") else None)
    with np.errstate(divide="ignore", invalid="ignore"):
        stderr = np.where(p > 0, np.abs(g) * np.sqrt((1 - p) / p), 0.0) / np.sqrt(draws)
    assert np.all(np.abs(mean - g) <= 5 * stderr + 1e-12), (mean, g)


def test_rand_k_keeps_k_unscaled_by_default():
    g = np.arange(1.0, 11.0)
    out, state = compress(rand_k(4, seed=0), g)
    kept = np.flatnonzero(out)
    assert kept.size == 4
    np.testing.assert_array_equal(out[kept], g[kept])
    assert state.bits == 10 + 32 * 4
    out, _ = compress(rand_k(4, rescale=True, seed=0), g)
    np.testing.assert_allclose(out[kept], g[kept] * 10 / 4)


def test_expected_density_of_bernoulli_and_adaptive():
    rng = np.random.default_rng(5)
    g = rng.standard_normal(1000)
    for compressor in (bernoulli(0.05, seed=1), adaptive(0.05, seed=1)):
        state = compressor.init(g)
        sizes = []
        for _ in range(200):
            out, state = compressor.update(g, state)
            sizes.append(np.count_nonzero(out))
        assert np.mean(sizes) == pytest.approx(50, rel=0.05)


def test_adaptive_accumulates_squared_messages():
    compressor = adaptive(0.5, seed=3)
    g = np.array([1.0, -2.0, 0.5, 0.0])
    state = compressor.init(g)
    total = np.zeros(4)
    for _ in range(5):
        out, state = compressor.update(g, state)
        total += out**2
    np.testing.assert_allclose(state.u, total)


def test_bits_of_random_sparsifiers_follow_the_non_zeros():
    g = np.random.default_rng(2).standard_normal(500)
    for compressor in (bernoulli(0.1, seed=0), uniform(0.1, seed=0), adaptive(0.1, seed=0)):
        out, state = compress(compressor, g)
        nnz = np.count_nonzero(out)
        assert state.bits == min(64 * nnz, 500 + 32 * nnz)


def test_per_layer_bernoulli_keeps_the_density_in_every_layer():
    g = np.concatenate([np.full(10, 100.0), np.full(90, 0.01)])
    compressor = bernoulli(0.1, offsets=[0, 10, 100], seed=0)
    state = compressor.init(g)
    counts = np.zeros(2)
    for _ in range(300):
        out, state = compressor.update(g, state)
        counts += [np.count_nonzero(out[:10]), np.count_nonzero(out[10:])]
    np.testing.assert_allclose(counts / 300, [1.0, 9.0], rtol=0.1)


def test_same_seed_same_stream_and_init_replays():
    g = np.random.default_rng(0).standard_normal(50)
    for make in (
        lambda: bernoulli(0.2, seed=7),
        lambda: rand_k(5, seed=7),
        lambda: uniform(0.2, seed=7),
        lambda: adaptive(0.2, seed=7),
    ):
        a, b = make(), make()
        out_a, _ = compress(a, g)
        out_b, _ = compress(b, g)
        np.testing.assert_array_equal(out_a, out_b)
        np.testing.assert_array_equal(compress(a, g)[0], out_a)


@pytest.mark.parametrize("compressor", [bernoulli(0.5, seed=0), adaptive(0.5, seed=0)])
def test_probability_sparsifiers_turn_non_finite_input_into_nan(compressor):
    out, _ = compress(compressor, np.array([1.0, np.inf, 2.0, 0.5]))
    assert np.all(np.isnan(out))


def test_uniform_sends_nan_when_selected():
    out, _ = compress(uniform(1.0, seed=0), np.array([1.0, np.nan]))
    assert out[0] == 1.0 and np.isnan(out[1])


def test_float32_is_preserved_by_every_compressor():
    g = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    for compressor in (
        uncompressed(),
        top_k(5),
        rand_k(5, seed=0),
        scaled_sign(),
        bernoulli(0.1, seed=0),
        uniform(0.1, seed=0),
        adaptive(0.1, seed=0),
    ):
        out, state = compress(compressor, g)
        assert out.dtype == np.float32
    assert state.u.dtype == np.float32


# ---------------------------------------------------------------- errors and registry


@pytest.mark.parametrize(
    ("call", "key", "fragment"),
    [
        (lambda: top_k(11).init(np.zeros(10)), "k", "[0, 10]"),
        (lambda: select_top_k(np.zeros(3), 4), "k", "[0, 3]"),
        (lambda: top_k(-1), "k", ">= 0"),
        (lambda: top_k(), "k", "exactly one"),
        (lambda: top_k(3, density=0.1), "k", "exactly one"),
        (lambda: rand_k(density=1.5), "density", "[0.0, 1.0]"),
        (lambda: bernoulli(-0.1), "density", "[0.0, 1.0]"),
        (lambda: bernoulli(1.5), "density", "[0.0, 1.0]"),
        (lambda: uniform(1.5), "density", "[0.0, 1.0]"),
        (lambda: adaptive(0.1, xi=-1.0), "xi", "[0.0, inf]"),
        (lambda: top_k(1, offsets=[0, 5, 4]).init(np.zeros(4)), "offsets", "from 0 to d=4"),
        (lambda: make_compressor("topk", k=3), "compressor", "Did you mean 'top-k'"),
        (lambda: make_compressor("nope"), "compressor", "allowed: adaptive, bernoulli"),
        (lambda: make_compressor("top-k", kk=3), "kk", "allowed: k, density, offsets"),
    ],
)
def test_bad_arguments_raise_config_errors(call, key, fragment):
    with pytest.raises(ConfigError) as info:
        call()
    assert info.value.key == key
    assert fragment in str(info.value)


def test_registry_builds_every_compressor():
    names = {
        "none": {},
        "top-k": {"k": 2},
        "rand-k": {"density": 0.5, "seed": 0},
        "scaled-sign": {},
        "bernoulli": {"density": 0.5, "seed": 0},
        "uniform": {"density": 0.5, "seed": 0},
        "adaptive": {"density": 0.5, "xi": 0.25, "seed": 0},
    }
    g = np.arange(1.0, 5.0)
    for name, params in names.items():
        compressor = make_compressor(name, **params)
        assert compressor.spec.name == name
        out, state = compress(compressor, g)
        assert out.shape == g.shape and state.bits > 0


def test_a_positive_density_keeps_at_least_one_entry():
    from mixsim.optim import top_k

    t = top_k(density=0.016)  # 0.016 * 30 rounds to 0
    g = np.arange(1.0, 31.0)
    out, state = t.update(g, t.init(g))
    assert np.count_nonzero(out) == 1 and out[-1] == 30.0


def test_adaptive_probabilities_closed_form_with_the_default_eps():
    # r = |g| / sqrt(u + 1e-8) = (1e4, 1, 1/2, 1/2); c = 2: the first is capped at 1 and
    # the rest share 1 in proportion to r (seed 000 Theorem 2).
    p = adaptive_probabilities(np.ones(4), 2.0, np.array([0.0, 1.0, 4.0, 4.0]))
    np.testing.assert_allclose(p, [1.0, 0.5, 0.25, 0.25], rtol=1e-7)
    # xi = 1: r = (1e8, 1, 1/3, 1/3), the last three share 1 as 3 : 1 : 1.
    p = adaptive_probabilities(np.ones(4), 2.0, np.array([0.0, 1.0, 3.0, 3.0]), xi=1.0)
    np.testing.assert_allclose(p, [1.0, 0.6, 0.2, 0.2], rtol=1e-7)


def test_density_zero_keeps_nothing_and_a_positive_density_keeps_at_least_one():
    g = np.array([3.0, -1.0, 2.0])
    for compressor in (top_k(density=0.0), rand_k(density=0.0, seed=0)):
        out, state = compress(compressor, g)
        assert not out.any() and state.bits == 0
    out, _ = compress(top_k(density=0.01), np.array([-2.0]))
    assert out.tolist() == [-2.0]


def test_rand_k_sends_exactly_k_entries():
    g = np.arange(1.0, 9.0)
    for k in (1, 3):
        out, _ = compress(rand_k(k, seed=1), g)
        assert np.count_nonzero(out) == k


@pytest.mark.parametrize("compressor", [
    scaled_sign(), top_k(2), rand_k(2, seed=0), bernoulli(0.5, seed=0), uniform(0.5, seed=0),
    adaptive(0.5, seed=0), uncompressed()])
def test_a_fresh_state_has_sent_no_bits(compressor):
    assert compressor.init(np.zeros(5)).bits == 0


def test_rand_k_rescales_each_layer_by_its_own_size():
    # Layers of 2 and 6 entries, k = 4 split 1 and 3: kept entries scaled by 2/1 and 6/3.
    g = np.ones(8)
    out, _ = compress(rand_k(4, rescale=True, offsets=[0, 2, 8], seed=3), g)
    assert sorted(out[out != 0].tolist()) == [2.0, 2.0, 2.0, 2.0]
    assert np.count_nonzero(out[:2]) == 1 and np.count_nonzero(out[2:]) == 3


def test_a_layer_with_nan_counts_all_its_entries_as_sent():
    # Layers [0, 2) and [2, 4): zeros send nothing; the layer holding a NaN sends its 2
    # entries as NaN, an index list or bitmap of min(64 * 2, 2 + 32 * 2) = 66 bits.
    out, state = compress(bernoulli(0.5, offsets=[0, 2, 4], seed=0),
                          np.array([0.0, 0.0, np.nan, 1.0]))
    assert out[:2].tolist() == [0.0, 0.0] and np.all(np.isnan(out[2:]))
    assert state.bits == 66


def test_rand_k_per_layer_sends_each_layer_its_share_from_that_layer():
    # Sizes 1, 3, 6 and k = 3: shares 0.3, 0.9, 1.8, floors 0, 0, 1, the two largest
    # remainders (0.9, 0.8) get one more: 0, 1, 2. A layer with no share sends nothing
    # and the layers after it still send theirs, from their own entries.
    g = np.arange(1.0, 11.0)
    for seed in range(20):
        out, state = compress(rand_k(3, offsets=[0, 1, 4, 10], seed=seed), g)
        kept = np.flatnonzero(out)
        assert [np.count_nonzero(out[a:b]) for a, b in [(0, 1), (1, 4), (4, 10)]] == [0, 1, 2]
        np.testing.assert_array_equal(out[kept], g[kept])
        # per layer min(index list, bitmap): 0 + min(64, 3 + 32) + min(128, 6 + 64)
        assert state.bits == 0 + 35 + 70


def test_scaled_sign_sends_nothing_for_an_empty_layer():
    g = np.array([1.0, -3.0, 10.0, 10.0, -30.0])
    out, state = compress(scaled_sign(offsets=[0, 2, 2, 5]), g)
    np.testing.assert_allclose(
        out, np.concatenate([naive.scaled_sign(g[:2]), naive.scaled_sign(g[2:])]))
    assert state.bits == (32 + 2) + (32 + 3)  # seed 003 fn. 5, per non-empty layer


def test_adaptive_update_against_the_closed_form_with_its_defaults():
    # One update from a given u (zeros included, where the default eps = 1e-8 sets the
    # ratio): probabilities of seed 000 Theorem 2 in closed form, the generator's first
    # d uniforms, out = g / p where kept (tests/naive.py); xi = 0 is plain Bernoulli.
    g = np.array([3.0, -1.0, 0.5, 0.25, -0.1, 2.0, 0.0, 1.0, -0.7, 0.05])
    u = np.array([0.0, 0.0, 1.0, 4.0, 0.25, 9.0, 0.0, 2.0, 0.5, 0.0])
    for xi in (0.0, 0.25, 0.5, 1.0, 1.5):
        compressor = adaptive(0.3, xi=xi, seed=5) if xi != 0.5 else adaptive(0.3, seed=5)
        state = compressor.init(g)._replace(u=u.copy())
        out, state = compressor.update(g, state)
        p = naive.capped_probabilities(naive.adaptive_ratios(g, u, xi, 1e-8), 0.3 * 10)
        uniforms = np.random.default_rng(5).random(10)
        expected = naive.sparsify(g, p, uniforms)
        np.testing.assert_allclose(out, expected, rtol=1e-12)
        np.testing.assert_allclose(state.u, u + expected**2, rtol=1e-12)


def test_adaptive_per_layer_update_against_the_closed_form():
    # Per layer (seed 000 §6): each layer's own u and expected density c = 0.3 * its size,
    # the generator's first d uniforms over the whole vector.
    g = np.array([3.0, -1.0, 0.5, 0.25, -0.1, 2.0, 0.0, 1.0, -0.7, 0.05])
    u = np.array([0.0, 0.0, 1.0, 4.0, 0.25, 9.0, 0.0, 2.0, 0.5, 0.0])
    compressor = adaptive(0.3, offsets=[0, 4, 10], seed=5)
    out, _ = compressor.update(g, compressor.init(g)._replace(u=u.copy()))
    uniforms = np.random.default_rng(5).random(10)
    expected = np.concatenate([
        naive.sparsify(g[a:b], naive.capped_probabilities(
            naive.adaptive_ratios(g[a:b], u[a:b], 0.5, 1e-8), 0.3 * (b - a)), uniforms[a:b])
        for a, b in [(0, 4), (4, 10)]])
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_an_empty_vector_sends_nothing():
    # A positive density keeps at least one entry of a non-empty vector only.
    for compressor in (top_k(density=0.5), rand_k(density=0.5, seed=0)):
        out, state = compress(compressor, np.zeros(0))
        assert out.shape == (0,) and state.bits == 0


def test_adaptive_u_sums_only_the_finite_layers_of_a_message():
    # Layers [0, 2) and [2, 4): the layer holding inf is sent as NaN and adds nothing to
    # u; the finite layer adds its squares (seed 000 §4.1; NaN passed on, never kept).
    compressor = adaptive(1.0, offsets=[0, 2, 4], seed=0)
    out, state = compress(compressor, np.array([1.0, -2.0, np.inf, 3.0]))
    assert np.all(np.isnan(out[2:]))
    np.testing.assert_array_equal(state.u, [1.0, 4.0, 0.0, 0.0])


def test_spec_holds_the_factory_arguments_as_given():
    # Spec.params: "the hyper-parameters given to the factory" (mixsim.optim.transform).
    given = {
        "top-k": {"k": 3, "offsets": [0, 2, 6]},
        "rand-k": {"density": 0.5, "rescale": True, "seed": 1},
        "scaled-sign": {"offsets": None},
        "bernoulli": {"density": 0.25, "seed": 2},
        "uniform": {"density": 0.75},
        "adaptive": {"density": 0.5, "xi": 0.25, "eps": 1e-6, "seed": 3},
        "none": {},
    }
    for name, params in given.items():
        compressor = make_compressor(name, **params)
        for key, value in params.items():
            assert compressor.spec.params.get(key, value) == value
        accepted = set(inspect.signature(_COMPRESSORS[name]).parameters)
        assert set(compressor.spec.params) <= accepted, name
