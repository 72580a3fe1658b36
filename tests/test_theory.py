"""The formulas of seed 002 against hand computations of the paper's expressions.

Every reference below is the paper's expression typed out again with the numbers
substituted, not a call of the code under test.
"""

import math

import pytest

from mixsim import theory

# A set of constants with nothing special about them (no 0, 1 or coinciding values).
GAP, L, SIGMA2, T, T_MIX, XI = 1.7, 3.0, 0.25, 400, 6, 1.5


def test_lemma1_bound_eq2():
    # 2^-floor(13/6) (1 + 1.5) 1.5 = 2^-2 * 3.75
    assert theory.lemma1_bound(13, T_MIX, XI) == pytest.approx(0.9375, rel=1e-15)
    assert theory.lemma1_bound(5, T_MIX, XI) == pytest.approx(3.75, rel=1e-15)
    assert theory.lemma1_bound(6, T_MIX, XI) == pytest.approx(1.875, rel=1e-15)


def test_theorem1_eq9_with_a_constant_step():
    lr = 1e-3
    c = (1 + 1.5) ** 2 * 1.5**2  # 14.0625
    lhs_factor = 1 - 16 * 14.0625 * 36 * 9.0 * 1e-6
    rhs = 2 * 1.7 + 0.25 * 3.0 * 400 * 1e-6 + 4 * 14.0625 * 6 * 0.25 * 9.0 * 401 * 1e-9
    expected = rhs / (400 * 1e-3 * lhs_factor)
    assert c == 14.0625
    got = theory.theorem1_bound(T, gap=GAP, L=L, sigma2=SIGMA2, lr=lr, t_mix=T_MIX, xi=XI)
    assert got == pytest.approx(expected, rel=1e-12)
    # A step for which 16 (1+xi)^2 xi^2 t_mix^2 L^2 lr^2 >= 1: the bound says nothing.
    assert theory.theorem1_bound(T, gap=GAP, L=L, sigma2=SIGMA2, lr=0.01, t_mix=T_MIX,
                                 xi=XI) is None


def test_corollary1_step_horizon_and_rate_eq10():
    step = math.sqrt(2 * 1.7) / (0.5 * math.sqrt(3.0 * 400) + 6)
    assert theory.corollary1_step(T, gap=GAP, L=L, sigma2=SIGMA2, t_mix=T_MIX) == \
        pytest.approx(step, rel=1e-15)
    horizon = 64 * 1.7 * 1.5**2 * 2.5**2 * 36 * 3.0 / 0.25
    assert theory.corollary1_horizon(gap=GAP, L=L, sigma2=SIGMA2, t_mix=T_MIX, xi=XI) == \
        pytest.approx(horizon, rel=1e-15)
    rate = (4 * 0.5 * math.sqrt(2 * 1.7 * 3.0) / 20
            + 2 * math.sqrt(2 * 1.7) * 6 / 400
            + 16 * 2.5**2 * 1.5**2 * 6 * 1.7 * 3.0 / 400)
    assert theory.corollary1_bound(T, gap=GAP, L=L, sigma2=SIGMA2, t_mix=T_MIX, xi=XI) == \
        pytest.approx(rate, rel=1e-15)
    assert theory.corollary1_horizon(gap=GAP, L=L, sigma2=0.0, t_mix=T_MIX, xi=XI) == math.inf


def test_corollary1_step_with_t_mix_1_is_sequential_sgd_step():
    # Perfect communication (t_mix = 1, xi = 1): the parallel SGD is sequential SGD (Lemma 3
    # with u_t = x_t), whose rate's step is sqrt(2 gap) / (sigma sqrt(L T) + 1) ...
    sequential = math.sqrt(2 * 1.7) / (math.sqrt(0.25) * math.sqrt(3.0 * 400) + 1)
    step = theory.corollary1_step(T, gap=GAP, L=L, sigma2=SIGMA2, t_mix=1)
    assert step == pytest.approx(sequential, rel=1e-15)
    # ... with which Lemma 3's bound, 2 gap / (T a) + sigma^2 L a, is sequential SGD's
    # rate 2 sigma sqrt(2 gap L / T) + sqrt(2 gap) / T.
    lemma3 = 2 * 1.7 / (400 * step) + 0.25 * 3.0 * step
    assert lemma3 <= 2 * 0.5 * math.sqrt(2 * 1.7 * 3.0 / 400) + math.sqrt(2 * 1.7) / 400
    # And eq. 10 at t_mix = 1 bounds Theorem 1 (eq. 9) at that step once T is past the
    # horizon.
    big_T = 10**6
    step = theory.corollary1_step(big_T, gap=GAP, L=L, sigma2=SIGMA2, t_mix=1)
    assert big_T >= theory.corollary1_horizon(gap=GAP, L=L, sigma2=SIGMA2, t_mix=1, xi=1.0)
    assert theory.theorem1_bound(big_T, gap=GAP, L=L, sigma2=SIGMA2, lr=step, t_mix=1,
                                 xi=1.0) <= \
        theory.corollary1_bound(big_T, gap=GAP, L=L, sigma2=SIGMA2, t_mix=1, xi=1.0)


@pytest.mark.parametrize(("p", "G", "c", "expected"), [
    # (c + 2 p G) L^2 / c^(2p+1) * max(2, 4 p G / c)
    (0.5, 2.0, 0.1, (0.1 + 2.0) * 9.0 / 0.1**2 * 40.0),
    (0.0, 2.0, 0.1, 0.1 * 9.0 / 0.1 * 2.0),
    (0.25, 0.01, 0.5, (0.5 + 0.005) * 9.0 / 0.5**1.5 * 2.0),
])
def test_lemma4_constant_eq12(p, G, c, expected):
    assert theory.lemma4_constant(L=L, G_inf=G, c=c, p=p) == pytest.approx(expected, rel=1e-14)


def test_theorem2_constants_and_bound_eq13():
    p, G, c, b1, b2, d = 0.5, 2.0, 0.1, 0.9, 0.999, 7
    f_start, f_star = 2.5, 0.2
    C1 = 2 * 2.0 * (2.5 - 0.2)
    C2 = 2 * (3 * 3.0 + 6 * 3.0 * 0.81 / 0.1) * 2.0 * 7 / (0.001 * (1 - 0.9 / 0.999))
    C3 = 4 * 3.0 * 2.0 / 0.01
    C4 = (8 * 2.5**2 * 1.5**2 * (0.1 + 2.0) ** 2 * 81.0 * 2.0 / 0.1**4
          * (2 * 1.9 * 1.1 * 2.0 / 0.01 + 1.1 / 0.1) * max(4, 16 * 0.25 * 4.0 / 0.01))
    got = theory.theorem2_constants(L=L, G_inf=G, c=c, p=p, b1=b1, b2=b2, d=d, xi=XI,
                                    f_start=f_start, f_star=f_star)
    assert got["C1"] == pytest.approx(C1, rel=1e-14)
    assert got["C2"] == pytest.approx(C2, rel=1e-12)
    assert got["C3"] == pytest.approx(C3, rel=1e-14)
    assert got["C4"] == pytest.approx(C4, rel=1e-12)
    # C4 is 8 (1+xi)^2 xi^2 calL^2 G^2p (2 + lambda)(2 (1 + 2 lambda) G^2p + 1) with
    # lambda = b1 / (1 - b1) and calL from Lemma 4: the proof's last step.
    lam = 0.9 / 0.1
    calL = (0.1 + 2.0) * 9.0 / 0.1**2 * 40.0
    assert got["C4"] == pytest.approx(
        8 * 14.0625 * calL**2 * 2.0 * (2 + lam) * (2 * (1 + 2 * lam) * 2.0 + 1), rel=1e-12)
    lr = 1e-4
    bound = (C1 + C2 * 400 * lr**2 + C3 * 0.25 * 400 * lr**2 + C4 * 6 * 0.25 * 401 * lr**3) \
        / (400 * lr)
    assert theory.theorem2_bound(T, constants=got, sigma2=SIGMA2, lr=lr, t_mix=T_MIX) == \
        pytest.approx(bound, rel=1e-12)


def test_theorem2_momentum_needs_no_c_and_c2_needs_b1_below_b2_power():
    # p = 0 (momentum SGD): V^0 = I, c drops out of C4 and (1 - b2)^0 = 1.
    got = theory.theorem2_constants(L=L, G_inf=2.0, c=0.3, p=0.0, b1=0.5, b2=0.7, d=3,
                                    xi=1.0, f_start=1.0, f_star=0.0)
    assert got["C2"] == pytest.approx(2 * (9.0 + 6 * 3.0 * 0.25 / 0.5) * 4.0 * 3 / 0.5,
                                      rel=1e-14)
    assert got["C4"] == pytest.approx(8 * 4 * 81.0 * (2 * 1.5 * 1.5 / 0.25 + 1.5 / 0.5) * 4,
                                      rel=1e-14)
    worse = theory.theorem2_constants(L=L, G_inf=2.0, c=0.3, p=0.5, b1=0.9, b2=0.8, d=3,
                                      xi=1.0, f_start=1.0, f_star=0.0)
    assert worse["C2"] == math.inf
