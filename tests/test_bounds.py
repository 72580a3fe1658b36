"""Which bound of seed 002 a run gets, and the Corollary 1 step size of a scenario."""

import math

import numpy as np
import pytest

from mixsim.errors import ConfigError
from mixsim.learning import _Learner, check_scenario, run
from mixsim.scenario import Scenario


def _scenario(**changes) -> Scenario:
    base = {
        "name": "t", "seed": 1, "workers": 1, "protocol": {"name": "allreduce"},
        "problem": {"name": "least-squares"},
        "data": {"name": "synthetic-linear", "batch": 8},
        "optimizer": {"method": {"name": "sgd", "lr": "corollary1"}},
        "steps": 120, "eval_every": 40, "outputs": {"measure_mixing": True, "plots": False},
    }
    base.update(changes)
    return Scenario.model_validate(base)


def test_corollary1_step_with_t_mix_1_is_the_sequential_sgd_step():
    scenario = _scenario()
    result = run(scenario)
    choice = result.summary["corollary1"]
    assert choice["t_mix"] == 1 and choice["xi"] == 1.0 and choice["T"] == 120
    # The inputs by hand: least squares (1/2m)||Ax - y||^2 on the one worker's data.
    learner = _Learner(_scenario(optimizer={"method": {"name": "sgd", "lr": 0.1}}), None)
    A = np.asarray(learner.dataset.A_train, dtype=float)
    y = np.asarray(learner.dataset.y_train, dtype=float)
    m, b = A.shape[0], 8
    x0 = np.asarray(learner.sim.X[0], dtype=float)
    L = np.linalg.eigvalsh(A.T @ A / m).max()
    gap = 0.5 * np.mean((A @ x0 - y) ** 2)
    per_sample = A * (A @ x0 - y)[:, None]
    spread = np.mean(np.sum((per_sample - per_sample.mean(axis=0)) ** 2, axis=1))
    sigma2 = (m - b) / (b * (m - 1)) * spread
    sequential = math.sqrt(2 * gap) / (math.sqrt(sigma2) * math.sqrt(L * 120) + 1)
    assert choice["lr"] == pytest.approx(sequential, rel=1e-6)
    assert choice["consensus_lr"] == choice["lr"]
    assert result.scenario.optimizer.method.lr == pytest.approx(sequential, rel=1e-6)
    assert result.summary["scenario"]["optimizer"]["method"]["lr"] == choice["lr"]
    assert result.rows[0]["loss"] == pytest.approx(gap, rel=1e-6)


def test_corollary1_on_a_ring_scales_the_consensus_step_by_the_workers():
    result = run(_scenario(workers=4, protocol={"name": "sync-ring"}))
    choice = result.summary["corollary1"]
    assert choice["t_mix"] == 4 * 1 and choice["xi"] == 1.0
    alpha = math.sqrt(2 * choice["gap"]) / (
        math.sqrt(choice["sigma2"]) * math.sqrt(choice["L"] * 120) + choice["t_mix"])
    assert choice["consensus_lr"] == pytest.approx(alpha, rel=1e-12)
    assert choice["lr"] == pytest.approx(4 * alpha, rel=1e-12)
    horizon = 64 * choice["gap"] * 4 * 16 * choice["L"] / choice["sigma2"]
    assert choice["horizon"] == pytest.approx(horizon, rel=1e-12)
    assert choice["past_horizon"] == (120 >= horizon)


@pytest.mark.parametrize(("optimizer", "message"), [
    ({"method": {"name": "amsgrad", "lr": "corollary1"}}, "each of the"),
    ({"compressor": {"name": "top-k", "density": 0.5}, "method": {"name": "sgd",
                                                                   "lr": "corollary1"}},
     "compressed updates"),
])
def test_corollary1_refuses_where_theorem1_does_not_apply(optimizer, message, tmp_path):
    scenario = _scenario(workers=2, optimizer=optimizer)
    with pytest.raises(ConfigError, match=message) as info:
        run(scenario)
    assert info.value.key == "optimizer.method.lr" and "\n" not in str(info.value)
    path = tmp_path / "s.yaml"
    path.write_text(f"workers: 2\noptimizer: {optimizer}\n".replace("'", ""))
    with pytest.raises(ConfigError, match=message):
        check_scenario(path)


def test_sgd_run_gets_theorem1_and_it_holds():
    result = run(_scenario(workers=4, protocol={"name": "sync-ring"}, steps=400,
                           optimizer={"method": {"name": "sgd", "lr": 0.01}}))
    bound = result.summary["bound"]
    assert bound["theorem"] == "theorem1" and bound["t_mix"] == 4 and bound["xi"] == 1.0
    assert bound["consensus_lr"] == pytest.approx(0.0025)
    pairs = [(m, b) for m, b in zip(bound["measured"], bound["bound"], strict=True)
             if b is not None]
    assert pairs and all(m <= b for m, b in pairs)
    assert set(bound["notes"]) == {"L", "sigma2", "gap"}


def test_asynchronous_server_amsgrad_gets_theorem2():
    result = run(_scenario(workers=4, protocol={"name": "async-ps"}, steps=200,
                           optimizer={"placement": "server",
                                      "method": {"name": "amsgrad", "lr": 0.01}}))
    bound = result.summary["bound"]
    assert bound["theorem"] == "theorem2"
    assert bound["p"] == 0.5 and bound["b1"] == 0.9 and bound["c"] == 1e-8
    C = bound["constants"]
    assert all(C[k] > 0 for k in ("C1", "C2", "C3", "C4"))
    T, a, s2 = bound["steps"][-1], bound["consensus_lr"], bound["sigma2"]
    expected = (C["C1"] + C["C2"] * T * a**2 + C["C3"] * s2 * T * a**2
                + C["C4"] * bound["t_mix"] * s2 * (T + 1) * a**3) / (T * a)
    assert bound["bound"][-1] == pytest.approx(expected, rel=1e-12)
    assert all(m <= b for m, b in zip(bound["measured"][1:], bound["bound"][1:], strict=True))
    assert {"G_inf", "c", "f_star"} <= set(bound["notes"])


@pytest.mark.parametrize(("changes", "reason"), [
    ({"workers": 4, "protocol": {"name": "sync-ps"},
      "optimizer": {"placement": "server", "method": {"name": "sgd", "lr": 0.01}}},
     "once per round"),
    ({"workers": 2, "optimizer": {"compressor": {"name": "top-k", "density": 0.5},
                                  "memory": "error-feedback",
                                  "method": {"name": "sgd", "lr": 0.01}}},
     "compressed updates"),
    ({"workers": 2, "problem": {"name": "mlp", "params": {"hidden": [4]}},
      "data": {"name": "breast-cancer", "batch": 8},
      "optimizer": {"method": {"name": "sgd", "lr": 0.01}}},
     "no global smoothness"),
])
def test_runs_without_a_bound_say_why(changes, reason, tmp_path):
    changes["outputs"] = {"measure_mixing": True, "plots": True}
    result = run(_scenario(**changes), out=tmp_path)
    bound = result.summary["bound"]
    assert bound["theorem"] is None and reason in bound["reason"]
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_run_says_the_chosen_step_size(tmp_path, capsys):
    from mixsim.cli import main

    path = tmp_path / "s.yaml"
    path.write_text("workers: 2\nprotocol: {name: allreduce}\nproblem: {name: least-squares}\n"
                    "data: {name: synthetic-linear, batch: 8}\n"
                    "optimizer: {method: {name: sgd, lr: corollary1}}\nsteps: 40\n"
                    "eval_every: 20\noutputs: {plots: false}\n")
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "step size from Corollary 1 (seed 002 eq. 10): lr = " in out
    assert "t_mix = 2," in out


def test_one_worker_momentum_gets_theorem2_with_eq11_parameters():
    # 400 samples, 320 for training: below the 512 the G_inf estimate looks at.
    scenario = _scenario(steps=80, data={"name": "synthetic-linear", "samples": 400, "batch": 8},
                         optimizer={"method": {"name": "momentum", "lr": 0.01, "mu": 0.5}})
    bound = run(scenario).summary["bound"]
    # torch's heavy ball (b = mu b + g, x -= lr b) is eq. 11 with p = 0, b1 = mu and
    # step lr / (1 - mu).
    assert bound["theorem"] == "theorem2" and bound["p"] == 0.0 and bound["b1"] == 0.5
    assert bound["consensus_lr"] == pytest.approx(0.02, rel=1e-12)
    assert "c" not in bound["notes"]
    learner = _Learner(scenario, None)
    A = np.asarray(learner.dataset.A_train, dtype=float)
    y = np.asarray(learner.dataset.y_train, dtype=float)
    x0 = np.asarray(learner.sim.X[0], dtype=float)
    # Every per-sample gradient at x_0 is a stochastic gradient G_inf must bound.
    per_sample = A * (A @ x0 - y)[:, None]
    assert bound["G_inf"] >= np.abs(per_sample).max() * (1 - 1e-6)
