"""The formulas of seed 002 (MixML, Lu, Nash, De Sa), each under its equation number.

Plain functions of numbers: no simulation, no data. :mod:`mixsim.bounds` decides which
one applies to a run and estimates the constants the paper leaves to the user;
``docs/theory.md`` writes each formula as the paper does and says what mixsim measures for
every symbol.

Two readings of the converted text, decided by the paper's own proofs (``docs/theory.md``):
``t_min`` in eqs. 6, 9 and 10 is ``t_mix``; in eq. 10 the second term is
``2 sqrt(2 (f(0) - f(x_T))) t_mix / T`` (``t_mix`` outside the root, as the step size of
Corollary 1 gives it and as the prose's ``O(1/sqrt(T) + t_mix/T)`` says).

``gap`` is ``f(0) - f(x_T)`` (``f(x_0) - f(x_T)``: the paper starts from ``x_0 = 0``);
``sigma2`` is ``sigma^2`` (Assumption 5); ``xi`` bounds every product of step operators
(Assumption 3). Sums with a constant step size ``lr`` are written out:
``sum_{t<T} lr^2 = T lr^2`` and ``sum_{t<=T} lr^3 = (T + 1) lr^3`` (eqs. 9 and 13 sum the
cubes up to ``T``).
"""

from __future__ import annotations

import math

__all__ = [
    "lemma1_bound",
    "theorem1_bound",
    "corollary1_step",
    "corollary1_horizon",
    "corollary1_bound",
    "lemma4_constant",
    "theorem2_constants",
    "theorem2_bound",
]


def _mixing_factor(xi: float) -> float:
    """``(1 + xi)^2 xi^2``, the factor every bound pays for Assumption 3."""
    return (1 + xi) ** 2 * xi**2


def lemma1_bound(window: int, t_mix: float, xi: float) -> float:
    """Lemma 1 (eq. 2): how far ``window`` step operators can leave a state from consensus.

    .. math:: \\left\\|\\Big(\\prod_{k=s}^{t-1} M_k\\Big) X - M_\\infty X\\right\\|
              \\le 2^{-\\lfloor (t-s)/t_{mix} \\rfloor} (1+\\xi)\\,\\xi\\, \\|X\\|

    Parameters
    ----------
    window : int
        ``t - s``, the number of step operators in the product (>= 0).
    t_mix : float
        Mixing time (Assumption 2), >= 1.
    xi : float
        Bound on every product's norm (Assumption 3), >= 1.

    Returns
    -------
    float
        The factor multiplying ``||X||``.
    """
    return 2.0 ** -math.floor(window / t_mix) * (1 + xi) * xi


def theorem1_bound(T: int, *, gap: float, L: float, sigma2: float, lr: float,
                   t_mix: float, xi: float) -> float | None:
    """Theorem 1 (eq. 9) for SGD with a constant step ``lr``, divided by ``T``.

    .. math::

        \\frac{1}{T}\\sum_{t<T} \\mathbb{E}\\|\\nabla f(x_t)\\|^2 \\le
        \\frac{2\\,\\mathrm{gap} + \\sigma^2 L T \\alpha^2
              + 4 (1+\\xi)^2 \\xi^2 t_{mix} \\sigma^2 L^2 (T+1) \\alpha^3}
             {T \\alpha (1 - 16 (1+\\xi)^2 \\xi^2 t_{mix}^2 L^2 \\alpha^2)}

    Returns
    -------
    float or None
        None for ``T = 0`` or when the step is too large for the bound to say anything
        (the factor ``1 - 16 (1+xi)^2 xi^2 t_mix^2 L^2 lr^2`` on the left is not positive).
    """
    c = _mixing_factor(xi)
    factor = 1 - 16 * c * t_mix**2 * L**2 * lr**2
    if T <= 0 or lr <= 0 or factor <= 0:
        return None
    numerator = 2 * gap + sigma2 * L * T * lr**2 + 4 * c * t_mix * sigma2 * L**2 * (T + 1) * lr**3
    return numerator / (T * lr * factor)


def corollary1_step(T: int, *, gap: float, L: float, sigma2: float, t_mix: float) -> float:
    """Corollary 1's step size (eq. 10): ``sqrt(2 gap) / (sigma sqrt(L T) + t_mix)``.

    With ``t_mix = 1`` (perfect communication) it is the step of sequential SGD's rate.
    """
    return math.sqrt(2 * gap) / (math.sqrt(sigma2) * math.sqrt(L * T) + t_mix)


def corollary1_horizon(*, gap: float, L: float, sigma2: float, t_mix: float,
                       xi: float) -> float:
    """Corollary 1's horizon: the rate holds from
    ``T >= 64 gap xi^2 (1+xi)^2 t_mix^2 L / sigma^2`` steps on (``inf`` when
    ``sigma2 = 0``: the corollary needs gradient noise)."""
    if sigma2 <= 0:
        return math.inf
    return 64 * gap * _mixing_factor(xi) * t_mix**2 * L / sigma2


def corollary1_bound(T: int, *, gap: float, L: float, sigma2: float, t_mix: float,
                     xi: float) -> float:
    """Corollary 1's rate (eq. 10), valid for ``T`` at or beyond :func:`corollary1_horizon`.

    .. math::

        \\frac{1}{T}\\sum_{t<T} \\mathbb{E}\\|\\nabla f(x_t)\\|^2 \\le
        \\frac{4 \\sigma \\sqrt{2\\,\\mathrm{gap}\\,L}}{\\sqrt{T}}
        + \\frac{2 \\sqrt{2\\,\\mathrm{gap}}\\, t_{mix}}{T}
        + \\frac{16 (1+\\xi)^2 \\xi^2 t_{mix}\\, \\mathrm{gap}\\, L}{T}
    """
    return (4 * math.sqrt(sigma2) * math.sqrt(2 * gap * L) / math.sqrt(T)
            + 2 * math.sqrt(2 * gap) * t_mix / T
            + 16 * _mixing_factor(xi) * t_mix * gap * L / T)


def lemma4_constant(*, L: float, G_inf: float, c: float, p: float) -> float:
    """Lemma 4 (eq. 12): the Lipschitz constant ``calL`` of a SAM update (Assumption 6).

    .. math:: \\mathcal{L} = \\frac{(c + 2 p G_\\infty) L^2}{c^{2p+1}}
              \\max\\left\\{2, \\frac{4 p G_\\infty}{c}\\right\\}

    ``c`` bounds every coordinate of ``v_0`` from below, ``G_inf`` every stochastic
    gradient's largest coordinate.
    """
    return (c + 2 * p * G_inf) * L**2 / c ** (2 * p + 1) * max(2.0, 4 * p * G_inf / c)


def theorem2_constants(*, L: float, G_inf: float, c: float, p: float, b1: float, b2: float,
                       d: int, xi: float, f_start: float, f_star: float) -> dict[str, float]:
    """The constants ``C1`` to ``C4`` of Theorem 2 (eq. 13).

    .. math::

        C_1 &= 2 G_\\infty^{2p} \\big(f(x_0 / (1-\\beta_1)) - f^*\\big) \\\\
        C_2 &= 2 \\Big(3L + \\frac{6 L \\beta_1^2}{1-\\beta_1}\\Big)
               \\frac{G_\\infty^{2-2p} d}{(1-\\beta_2)^{2p} (1 - \\beta_1/\\beta_2^{2p})} \\\\
        C_3 &= \\frac{4 L G_\\infty^{2p}}{(1-\\beta_1)^2} \\\\
        C_4 &= 8 (1+\\xi)^2 \\xi^2 \\frac{(c + 2pG_\\infty)^2 L^4 G_\\infty^{2p}}{c^{4p+2}}
               \\Big(\\frac{2 (1+\\beta_1)(2-\\beta_1) G_\\infty^{2p}}{(1-\\beta_1)^2}
                     + \\frac{2-\\beta_1}{1-\\beta_1}\\Big)
               \\max\\Big\\{4, \\frac{16 p^2 G_\\infty^2}{c^2}\\Big\\}

    Parameters
    ----------
    f_start : float
        ``f(x_0 / (1 - beta1))``.
    f_star : float
        ``f^*``, a lower bound of the objective.

    Returns
    -------
    dict
        ``{"C1": ..., "C2": ..., "C3": ..., "C4": ...}``; ``C2`` is ``inf`` when
        ``beta1 >= beta2^(2p)`` (the sequential proof needs ``beta1 < beta2^(2p)``).
    """
    g2p = G_inf ** (2 * p)
    ratio = b1 / b2 ** (2 * p) if b2 > 0 or p == 0 else math.inf
    c2 = (2 * (3 * L + 6 * L * b1**2 / (1 - b1)) * G_inf ** (2 - 2 * p) * d
          / ((1 - b2) ** (2 * p) * (1 - ratio))) if ratio < 1 else math.inf
    c4 = (8 * _mixing_factor(xi) * (c + 2 * p * G_inf) ** 2 * L**4 * g2p / c ** (4 * p + 2)
          * (2 * (1 + b1) * (2 - b1) * g2p / (1 - b1) ** 2 + (2 - b1) / (1 - b1))
          * max(4.0, 16 * p**2 * G_inf**2 / c**2))
    return {
        "C1": 2 * g2p * (f_start - f_star),
        "C2": c2,
        "C3": 4 * L * g2p / (1 - b1) ** 2,
        "C4": c4,
    }


def theorem2_bound(T: int, *, constants: dict[str, float], sigma2: float, lr: float,
                   t_mix: float) -> float | None:
    """Theorem 2 (eq. 13) for a constant step ``lr``, divided by ``T``.

    .. math::

        \\frac{1}{T}\\sum_{t<T} \\mathbb{E}\\|\\nabla f(x_t)\\|^2 \\le
        \\frac{C_1 + C_2 T \\alpha^2 + C_3 \\sigma^2 T \\alpha^2
              + C_4 t_{mix} \\sigma^2 (T+1) \\alpha^3}{T \\alpha}

    Returns
    -------
    float or None
        None for ``T = 0`` or ``lr = 0``.
    """
    if T <= 0 or lr <= 0:
        return None
    C = constants
    numerator = (C["C1"] + C["C2"] * T * lr**2 + C["C3"] * sigma2 * T * lr**2
                 + C["C4"] * t_mix * sigma2 * (T + 1) * lr**3)
    return numerator / (T * lr)
