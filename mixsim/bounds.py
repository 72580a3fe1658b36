"""Which bound of seed 002 applies to a learning run, and the constants it needs.

:mod:`mixsim.theory` has the formulas; this module reads a run (its scenario, problem,
data, protocol and measured ``t_mix`` and ``xi``) and decides:

* SGD on the workers, uncompressed, with updates landing in the consensus slots:
  Theorem 1 (eq. 9), and Corollary 1's step size (eq. 10) for ``lr: corollary1``;
* a Stochastic Adaptive Method of eq. 11 (momentum, AMSGrad, RMSProp, PAdam,
  adam-family) with **one** moment sequence fed by every computation event: Theorem 2
  (eq. 13). That is the server of an asynchronous protocol (the server steps on each
  gradient as it arrives), or a single worker. Workers that keep their own moments run
  ``n`` interleaved methods, which the theorem does not cover;
* otherwise no bound, with the reason (compression, a server stepping once per round,
  two-way placements, no global smoothness constant, a run shorter than its mixing time).

The paper leaves ``L``, ``sigma^2``, ``G_inf``, ``c`` and ``f^*`` to the user; every value
used is returned with a sentence saying how it was obtained and whether it is exact or an
estimate.
"""

from __future__ import annotations

import inspect

import numpy as np

from mixsim import theory

__all__ = ["applicable", "sam_form", "run_bound", "corollary1_choice", "CONSTANT_NOTES"]

#: How each constant is obtained (stored in ``summary.json`` next to the values).
CONSTANT_NOTES = {
    "L": "problem.smoothness on the training set: exact for least squares, an upper bound "
         "for the others (docs/problems-and-data.md)",
    "sigma2": "estimate: at x_0 only, the largest over workers of the minibatch gradient "
              "variance plus the squared distance of the worker's shard gradient to the "
              "full gradient (the paper's sigma^2 bounds it at every point)",
    "gap_before_run": "estimate: f(x_0) - f(x_T) <= f(x_0), every mixsim loss being >= 0",
    "gap": "measured: f(x_0) - f(x_T) of the consensus model at each evaluation",
    "G_inf": "estimate: largest coordinate of a per-sample gradient at x_0 and at the final "
             "consensus model, over up to 512 training samples (the paper's G_inf bounds "
             "every stochastic gradient everywhere)",
    "c": "exact: the method divides by (v + eps)^p with v >= 0, so every coordinate is >= "
         "eps",
    "f_star": "f^* >= 0, every mixsim loss being non-negative (a valid lower bound)",
}

_SAM = ("momentum", "amsgrad", "rmsprop", "padam", "adam-family")


def _method_params(section) -> dict:
    """The method's hyper-parameters, defaults of its factory filled in."""
    from mixsim.optim.registry import _OPTIMIZERS

    params = section.model_dump()
    name = params.pop("name")
    factory = _OPTIMIZERS.get(name)
    defaults = {} if factory is None else {
        key: p.default for key, p in inspect.signature(factory).parameters.items()
        if p.default is not inspect.Parameter.empty}
    return {**defaults, **params}


def sam_form(section) -> dict | None:
    """``p, b1, b2, c`` and the step factor of eq. 11 for a SAM method, else None.

    Momentum as torch writes it (``b = mu b + g``, ``x -= lr b``) is eq. 11 with
    ``p = 0``, ``b1 = mu`` and step ``lr / (1 - mu)``.
    """
    name = section.name
    if name not in _SAM:
        return None
    params = _method_params(section)
    if name == "momentum":
        mu = float(params["mu"])
        return {"p": 0.0, "b1": mu, "b2": 0.0, "c": 1.0, "step_factor": 1 / (1 - mu)}
    p = {"amsgrad": 0.5, "rmsprop": 0.5}.get(name, params.get("p", 0.5))
    b1 = 0.0 if name == "rmsprop" else float(params["b1"])
    return {"p": float(p), "b1": b1, "b2": float(params["b2"]), "c": float(params["eps"]),
            "step_factor": 1.0}


def _consensus_weight(learner) -> float | None:
    """The weight ``M_inf`` gives the slots updates land in (None: outside the consensus).

    An update ``-lr g`` added to such a slot moves the consensus model by ``-w lr g``:
    ``w = 1/n`` when the consensus is the mean of n worker copies, 1 for a server.
    """
    consensus = learner.sim.trace.consensus
    target_rows = learner.sim._target_rows
    if target_rows is None:
        return None
    groups = {learner.layout.group_of(int(row)) for row in target_rows}
    if not groups <= {consensus.average, consensus.absorb}:
        return None
    return 1.0 / learner.layout.count(consensus.average)


def applicable(scenario, learner) -> tuple[str | None, str]:
    """``("theorem1" | "theorem2", "")`` for the bound that covers this run, or
    ``(None, reason)``."""
    opt = scenario.optimizer
    if opt.compressor.name != "none" or opt.memory != "none":
        return None, (f"compressed updates ({opt.compressor.name}, memory {opt.memory}): "
                      "Theorems 1 and 2 are about the uncompressed sequential method")
    if learner.problem.smoothness(learner.dataset.A_train) is None:
        return None, (f"problem {learner.problem.name!r} has no global smoothness constant L")
    name = opt.method.name
    if opt.placement == "worker":
        if _consensus_weight(learner) is None:
            return None, "the updates land outside the slots the consensus averages"
        if name == "sgd":
            return "theorem1", ""
        if sam_form(opt.method) is not None:
            if scenario.workers == 1:
                return "theorem2", ""
            return None, (f"each of the {scenario.workers} workers keeps its own {name} "
                          "moments; Theorem 2 is for one moment sequence fed by every step "
                          "(placement server on an asynchronous protocol, or one worker)")
        return None, f"method {name!r} is neither SGD (Theorem 1) nor of the form of eq. 11"
    if opt.placement == "server":
        if learner.sim.schedule != "async":
            return None, ("placement server on a synchronous protocol: the server steps once "
                          "per round on the mean of n gradients, not at every computation "
                          "event as the theorems' sequential method does")
        if sam_form(opt.method) is not None:
            return "theorem2", ""
        if name == "sgd":
            return "theorem1", ""
        return None, f"method {name!r} is neither SGD (Theorem 1) nor of the form of eq. 11"
    return None, (f"placement {opt.placement}: the model is updated from messages "
                  "compressed both ways, outside the theorems")


def _sigma2(learner, x) -> float:
    ds = learner.dataset
    full = learner.problem.grad(x, ds.A_train, ds.y_train)
    return float(max(
        learner.problem.gradient_variance(x, ds.A_train[shard], ds.y_train[shard],
                                          learner.batch)
        + float(np.sum((learner.problem.grad(x, ds.A_train[shard], ds.y_train[shard])
                        - full) ** 2))
        for shard in learner.shards))


def _g_inf(learner, points) -> float:
    ds = learner.dataset
    rows = np.arange(ds.A_train.shape[0])
    if rows.size > 512:
        rows = np.linspace(0, rows.size - 1, 512).astype(int)
    largest = 0.0
    for x in points:
        for i in rows:
            g = learner.problem.grad(x, ds.A_train[i:i + 1], ds.y_train[i:i + 1])
            largest = max(largest, float(np.max(np.abs(g))))
    return largest


def _start(learner) -> np.ndarray:
    return np.asarray(learner.sim.trace.initial_state[learner.consensus_row], dtype=float)


def run_bound(scenario, learner, rows: list[dict], t_mix, xi) -> dict:
    """The bound that applies to a finished run, at each evaluation (``summary.json``).

    Returns
    -------
    dict
        ``theorem`` (``"theorem1"``, ``"theorem2"`` or None), ``reason`` when None;
        otherwise ``steps``, ``bound`` (None where it says nothing), ``measured`` (the
        running mean of ``||grad f||^2`` at the evaluations), the constants and
        ``notes`` saying how each was obtained.
    """
    which, reason = applicable(scenario, learner)
    if which is not None and (t_mix is None or xi is None):
        which, reason = None, ("t_mix was not measured (outputs.measure_mixing false, or the "
                               "run is shorter than its mixing time)")
    if which is None or not rows:
        return {"theorem": None, "reason": reason or "no evaluation"}
    ds = learner.dataset
    L = float(learner.problem.smoothness(ds.A_train))
    x0 = _start(learner)
    sigma2 = _sigma2(learner, x0)
    step = scenario.optimizer.method.lr * _consensus_weight(learner)
    steps = [row["step"] for row in rows]
    measured = (np.cumsum([row["grad_norm"] ** 2 for row in rows])
                / np.arange(1, len(rows) + 1)).tolist()
    out = {"theorem": which, "t_mix": t_mix, "xi": xi, "L": L, "sigma2": sigma2,
           "lr": scenario.optimizer.method.lr, "consensus_lr": step, "steps": steps,
           "measured": measured}
    if which == "theorem1":
        f0 = rows[0]["loss"]
        out["bound"] = [theory.theorem1_bound(row["step"], gap=max(f0 - row["loss"], 0.0),
                                              L=L, sigma2=sigma2, lr=step, t_mix=t_mix,
                                              xi=xi) for row in rows]
        out["notes"] = {k: CONSTANT_NOTES[k] for k in ("L", "sigma2", "gap")}
        return out
    form = sam_form(scenario.optimizer.method)
    step *= form["step_factor"]
    x_end = learner.sim.trace.consensus.apply(learner.sim.X)[learner.consensus_row]
    G = _g_inf(learner, [x0, np.asarray(x_end, dtype=float)])
    f_start = float(learner.problem.loss((x0 / (1 - form["b1"])).astype(learner.dtype),
                                         ds.A_train, ds.y_train))
    constants = theory.theorem2_constants(
        L=L, G_inf=G, c=form["c"], p=form["p"], b1=form["b1"], b2=form["b2"], d=learner.d,
        xi=xi, f_start=f_start, f_star=0.0)
    out.update(G_inf=G, c=form["c"], p=form["p"], b1=form["b1"], b2=form["b2"],
               consensus_lr=step, f_start=f_start, f_star=0.0, constants=constants,
               calL=theory.lemma4_constant(L=L, G_inf=G, c=form["c"], p=form["p"]))
    out["bound"] = [theory.theorem2_bound(T, constants=constants, sigma2=sigma2, lr=step,
                                          t_mix=t_mix) for T in steps]
    notes = ("L", "sigma2", "G_inf", "f_star") + (("c",) if form["p"] > 0 else ())
    out["notes"] = {k: CONSTANT_NOTES[k] for k in notes}
    return out


def corollary1_choice(scenario, learner, T: int, t_mix: float, xi: float) -> dict:
    """Corollary 1's step size for this run (``optimizer.method.lr: corollary1``).

    The corollary's ``alpha`` is the step of the consensus model; the scenario's ``lr`` is
    ``alpha / w``, ``w`` the consensus weight of the slots the updates land in.

    Returns
    -------
    dict
        ``lr``, ``consensus_lr``, the inputs (``T``, ``t_mix``, ``xi``, ``L``, ``sigma2``,
        ``gap``), the ``horizon`` from which the corollary's rate holds and whether ``T``
        reaches it, and ``notes`` on how each input was obtained.
    """
    ds = learner.dataset
    L = float(learner.problem.smoothness(ds.A_train))
    x0 = _start(learner)
    sigma2 = _sigma2(learner, x0)
    gap = float(learner.problem.loss(x0.astype(learner.dtype), ds.A_train, ds.y_train))
    alpha = theory.corollary1_step(T, gap=gap, L=L, sigma2=sigma2, t_mix=t_mix)
    horizon = theory.corollary1_horizon(gap=gap, L=L, sigma2=sigma2, t_mix=t_mix, xi=xi)
    return {
        "lr": alpha / _consensus_weight(learner), "consensus_lr": alpha, "T": T,
        "t_mix": t_mix, "xi": xi, "L": L, "sigma2": sigma2, "gap": gap,
        "horizon": horizon, "past_horizon": bool(T >= horizon),
        "notes": {"t_mix, xi": "measured before the run on one run of the protocol "
                               "(trace method, the scenario's seed and timing)",
                  "L": CONSTANT_NOTES["L"], "sigma2": CONSTANT_NOTES["sigma2"],
                  "gap": CONSTANT_NOTES["gap_before_run"]},
    }
