"""Learning runs end to end: equivalences with sequential training, determinism, outputs."""

import json
from pathlib import Path

import learning_twin
import naive
import numpy as np
import pytest

from mixsim import DivergenceError
from mixsim.errors import ConfigError
from mixsim.learning import _Learner, run
from mixsim.scenario import Scenario

ROOT = Path(__file__).parent.parent


def _scenario(**changes) -> Scenario:
    base = {
        "name": "t", "seed": 3, "workers": 1, "protocol": {"name": "allreduce"},
        "problem": {"name": "logistic"}, "data": {"name": "breast-cancer", "batch": None},
        "optimizer": {"method": {"name": "amsgrad", "lr": 0.01}},
        "steps": 30, "eval_every": 1, "outputs": {"measure_mixing": False, "plots": False},
    }
    for key, value in changes.items():
        base[key] = value
    return Scenario.model_validate(base)


def test_one_worker_reproduces_the_sequential_optimizer_step_for_step():
    scenario = _scenario()
    result = run(scenario)
    learner = _Learner(scenario, None)
    ds, problem = learner.dataset, learner.problem
    shard = learner.shards[0]
    x = problem.init(0).astype(ds.A_train.dtype) * 0 + learner.sim.X[0]
    # The NumPy twin of AMSGrad (seed 000 Alg. 1), independent of mixsim.optim.
    m, v, v_hat = (np.zeros_like(x) for _ in range(3))
    expected = [problem.loss(x, ds.A_train, ds.y_train)]
    for _ in range(30):
        g = problem.grad(x, ds.A_train[shard], ds.y_train[shard])
        x, m, v, v_hat = naive.amsgrad_step(x, g, m, v, v_hat, 0.01, 0.9, 0.999, 1e-8)
        expected.append(problem.loss(x, ds.A_train, ds.y_train))
    np.testing.assert_allclose(result.table["loss"], expected, rtol=1e-12)


def test_allreduce_matches_large_batch_sequential_training():
    n = 5
    scenario = _scenario(workers=n, optimizer={"method": {"name": "sgd", "lr": 0.5}},
                         steps=10 * n, eval_every=n)
    result = run(scenario)
    learner = _Learner(scenario, None)
    ds, problem = learner.dataset, learner.problem
    assert len({s.size for s in learner.shards}) == 1  # equal shards: mean of means
    union = np.concatenate(learner.shards)
    x = learner.sim.X[0].copy()
    expected = [problem.loss(x, ds.A_train, ds.y_train)]
    for _ in range(10):
        x = x - 0.5 * problem.grad(x, ds.A_train[union], ds.y_train[union])
        expected.append(problem.loss(x, ds.A_train, ds.y_train))
    np.testing.assert_allclose(result.table["loss"], expected, rtol=1e-10)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    scenario = _scenario(workers=4, protocol={"name": "async-ring"},
                         data={"name": "breast-cancer", "batch": 8}, steps=60, eval_every=20)
    run(scenario, out=tmp_path / "a")
    run(scenario, out=tmp_path / "b")
    run(scenario, out=tmp_path / "c", seed=4)
    a, b, c = ((tmp_path / x / "metrics.csv").read_bytes() for x in "abc")
    assert a == b and a != c
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["complete"] is True and summary["seed"] == 3


def test_divergence_names_the_step_and_keeps_what_was_recorded(tmp_path):
    scenario = _scenario(problem={"name": "least-squares"},
                         data={"name": "synthetic-linear", "batch": None},
                         optimizer={"method": {"name": "sgd", "lr": 1e6}}, steps=200,
                         eval_every=5)
    with pytest.raises(DivergenceError) as info:
        run(scenario, out=tmp_path)
    assert 0 < info.value.step <= 200
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) >= 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"] is False and summary["stopped_at_step"] == info.value.step


def _assert_follows_twin(result, learner, loss_and_grad, **protocol):
    """The run's loss at every evaluation and its final state against the NumPy twin of
    ``tests/learning_twin.py`` (float64 throughout: agreement to rounding)."""
    expected, X = learning_twin.simulate(learner, loss_and_grad, **protocol)
    every = result.scenario.eval_every
    np.testing.assert_array_equal(result.table["step"], every * np.arange(expected.size))
    np.testing.assert_allclose(result.table["loss"], expected, rtol=1e-10)
    np.testing.assert_allclose(learner.sim.X, X, rtol=1e-10, atol=1e-13)
    return expected


def _sparse_bits(k, d):
    """docs/kernels.md "Bits": a top-k message is k values of 32 bits plus either k
    indices of 32 bits or a bitmap of d bits, whichever is smaller."""
    return min(32 * k + 32 * k, 32 * k + d)


def test_server_side_sparsified_amsgrad_learns_with_fewer_bits(monkeypatch):
    # SPARS-AMS (seed 001 Alg. 1) on sync-ps against its NumPy twin (top-k with error
    # feedback on every worker, AMSGrad on the mean at the server), and the bits by the
    # closed form: top-k at density 0.1 of d = 30 keeps k = 3 (bitmap: 30 + 3 x 32 = 126
    # bits a message); dense messages and the broadcast are 32 d bits per worker.
    learners = learning_twin.spy_on_learner(monkeypatch)
    common = {"workers": 4, "protocol": {"name": "sync-ps"}, "steps": 200, "eval_every": 100,
              "data": {"name": "breast-cancer", "batch": 16}}
    sparse = run(_scenario(optimizer={
        "placement": "server", "compressor": {"name": "top-k", "density": 0.1},
        "memory": "error-feedback", "method": {"name": "amsgrad", "lr": 0.05}}, **common))
    dense = run(_scenario(optimizer={
        "placement": "server", "method": {"name": "amsgrad", "lr": 0.05}}, **common))
    d, k = 30, 3
    steps = np.array([0, 100, 200])
    for learner in learners:  # sync-ps: after each round of 4 steps, 4 copies to workers
        assert learning_twin.event_steps(learner) == [
            (t, "copy") for t in range(3, 200, 4) for _ in range(4)]
    for result, learner, message in ((sparse, learners[0], _sparse_bits(k, d)),
                                     (dense, learners[1], 32 * d)):
        loss = _assert_follows_twin(result, learner, learning_twin.logistic, target="server",
                                    consensus=("server", None), synchronous=True)
        assert loss[-1] < 0.5 * loss[0]  # sanity: both learn
        np.testing.assert_array_equal(result.table["bits_up"], message * steps)
        np.testing.assert_array_equal(result.table["bits_down"], 32 * d * steps)
    assert _sparse_bits(k, d) == 126


def test_cd_adam_learns_and_counts_compressed_downlink(monkeypatch):
    # CD-Adam (seed 003 Alg. 1) against its NumPy twin; bits by seed 003 Table 2: one
    # scaled-sign message, 32 + d bits, per worker per round each way.
    learners = learning_twin.spy_on_learner(monkeypatch)
    result = run(_scenario(workers=4, protocol={"name": "sync-ps"}, steps=200, eval_every=100,
                           optimizer={"placement": "cd-adam",
                                      "compressor": {"name": "scaled-sign"},
                                      "method": {"name": "amsgrad", "lr": 0.02}}))
    # sync-ps: after each round of 4 steps, 4 copies to workers.
    assert learning_twin.event_steps(learners[0]) == [
        (t, "copy") for t in range(3, 200, 4) for _ in range(4)]
    loss = _assert_follows_twin(result, learners[0], learning_twin.logistic, target="server",
                                consensus=("server", None), synchronous=True)
    assert loss[-1] < 0.7 * loss[0]  # sanity
    d, n = 30, 4  # breast cancer: 30 features, logistic regression without a bias
    rounds = np.array([0, 100, 200]) / n
    np.testing.assert_array_equal(result.table["bits_up"], n * (32 + d) * rounds)
    np.testing.assert_array_equal(result.table["bits_down"], n * (32 + d) * rounds)


def test_quickstart_runs_and_learns(tmp_path, monkeypatch):
    # The embedded default (8 workers, sync-ring, softmax on digits, top-10% with error
    # feedback then AMSGrad on every worker) against its NumPy twin; gossip bits by the
    # documented rule: 32 d bits per ring neighbour a worker receives from, each round.
    learners = learning_twin.spy_on_learner(monkeypatch)
    result = run(ROOT / "scenarios" / "quickstart.yaml", out=tmp_path,
                 overrides={"steps": 400, "eval_every": 200})
    table = result.table
    # sync-ring: one ring gossip after every round of 8 steps.
    assert learning_twin.event_steps(learners[0]) == [(t, "gossip") for t in range(7, 400, 8)]
    loss = _assert_follows_twin(result, learners[0], learning_twin.softmax(10), target="own",
                                consensus=("workers", None), synchronous=True)
    assert loss[-1] < 0.1 * loss[0]  # sanity
    d, n = 64 * 10 + 10, 8
    np.testing.assert_array_equal(table["bits_up"], np.array([0, 200, 400]) / n * n * 2 * 32 * d)
    np.testing.assert_array_equal(table["bits_down"], 0)  # no server
    assert result.summary["t_mix"] == 8 * 4  # ring of 8: k = 4 rounds
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


# Where each protocol puts the updates and what its consensus is (from protocols/*.yaml):
# ("own" copy, the server / RAM slot, or a delay line of D + 1 buffers), (group, absorb),
# and whether it runs in rounds.
_PROTOCOLS = {
    "local-step": ("own", ("workers", None), True),
    "gossip": ("own", ("workers", None), True),
    "sparse": ("own", ("workers", None), True),
    "async-ring": ("own", ("workers", None), False),
    "async-ps": ("server", ("server", None), False),
    "hogwild": ("ram", ("ram", None), False),
    "hybrid": ("ram", ("ram", None), False),
    "delayed": (("delay", 4), ("server", "buffer"), False),
}


@pytest.mark.parametrize(
    ("protocol", "placement"),
    [("local-step", "worker"), ("async-ps", "worker"), ("hogwild", "worker"),
     ("async-ring", "worker"), ("gossip", "worker"), ("delayed", "server"),
     ("async-ps", "server"), ("sparse", "worker"), ("hybrid", "worker")],
)
def test_every_kind_of_run_learns(protocol, placement, monkeypatch):
    # Each run against its NumPy twin: the same event order (from the trace), hand-built
    # event matrices, the same mini-batches, AMSGrad per worker or at the server.
    learners = learning_twin.spy_on_learner(monkeypatch)
    # hybrid: two shared-memory groups of two, so that the RAM slots gossip.
    params = {"group_size": 2} if protocol == "hybrid" else {}
    result = run(_scenario(workers=4, protocol={"name": protocol, "params": params},
                           steps=160, eval_every=80,
                           data={"name": "breast-cancer", "batch": 16},
                           optimizer={"placement": placement,
                                      "method": {"name": "amsgrad", "lr": 0.02}}))
    target, consensus, synchronous = _PROTOCOLS[protocol]
    # The synchronous protocols' schedules, from their files: AllReduce every 2 rounds of
    # 4 steps (local_steps = 2), one ring gossip after every round.
    schedule = {"local-step": [(t, "average") for t in range(7, 160, 8)],
                "gossip": [(t, "gossip") for t in range(3, 160, 4)]}
    schedule["sparse"] = schedule["gossip"]
    if protocol in schedule:
        assert learning_twin.event_steps(learners[0]) == schedule[protocol]
    loss = _assert_follows_twin(result, learners[0], learning_twin.logistic, target=target,
                                consensus=consensus, synchronous=synchronous)
    assert loss[-1] < 0.7 * loss[0]  # sanity
    # Bits by the documented rule, event by event; updates sent to a server are dense
    # messages of 32 d bits (a write to shared RAM or to the worker's own copy sends none).
    d = 30
    sent = 32 * d if target == "server" or placement == "server" else 0
    up, down = learning_twin.communication_bits(learners[0], sent)
    np.testing.assert_allclose(result.table["bits_up"], up, rtol=1e-12)
    np.testing.assert_allclose(result.table["bits_down"], down, rtol=1e-12)


def test_theorem1_bound_is_computed_and_holds_for_sgd_least_squares():
    scenario = _scenario(workers=4, protocol={"name": "sync-ring"},
                         problem={"name": "least-squares"},
                         data={"name": "synthetic-linear", "batch": 8},
                         optimizer={"method": {"name": "sgd", "lr": 0.01}},
                         steps=400, eval_every=40, outputs={"measure_mixing": True})
    result = run(scenario)
    bound = result.summary["bound"]
    assert bound["theorem"] == "theorem1" and bound["t_mix"] == 4 and bound["xi"] == 1.0
    assert bound["L"] > 0 and bound["sigma2"] > 0
    # Both sides recomputed here, not read from the summary: L = lambda_max(A^T A / m) of
    # the least-squares loss, t_mix = 4 (ring of 4, exact averaging), xi = 1 (doubly
    # stochastic), consensus step lr / n, and eq. 9 of seed 002 divided by T alpha.
    A = _Learner(scenario, None).dataset.A_train
    L = np.linalg.eigvalsh(A.T @ A / A.shape[0]).max()
    np.testing.assert_allclose(bound["L"], L, rtol=1e-10)
    alpha, t_mix, xi, sigma2 = 0.01 / 4, 4, 1.0, bound["sigma2"]
    c = (1 + xi) ** 2 * xi**2
    steps, losses = result.table["step"], result.table["loss"]
    squares = result.table["grad_norm"] ** 2
    measured = np.cumsum(squares) / np.arange(1, len(squares) + 1)
    checked = 0
    for T, loss, mean_square in zip(steps[1:], losses[1:], measured[1:], strict=True):
        rhs = (2 * max(losses[0] - loss, 0) + sigma2 * L * T * alpha**2
               + 4 * c * t_mix * sigma2 * L**2 * (T + 1) * alpha**3)
        lhs_factor = T * alpha * (1 - 16 * c * t_mix**2 * L**2 * alpha**2)
        assert lhs_factor > 0
        assert mean_square <= rhs / lhs_factor
        checked += 1
    assert checked == 10
    np.testing.assert_allclose(bound["measured"], measured, rtol=1e-12)


@pytest.mark.parametrize(("protocol", "optimizer", "message"), [
    ("sync-ps", {"placement": "cd-adam", "method": {"name": "sgd", "lr": 0.1}},
     "cd-adam runs AMSGrad"),
    ("sync-ps", {"placement": "onebit-adam", "method": {"name": "amsgrad"}},
     "set optimizer.method.name to onebit-adam"),
    ("sync-ps", {"placement": "onebit-adam", "method": {"name": "onebit-adam", "warm": 3}},
     "warm"),
    ("async-ps", {"placement": "two-way", "method": {"name": "sgd", "lr": 0.1}},
     "needs a synchronous protocol"),
    ("sync-ring", {"placement": "two-way", "method": {"name": "sgd", "lr": 0.1}},
     "needs a protocol whose updates go to a server"),
])
def test_two_way_placements_refuse_what_they_cannot_run(protocol, optimizer, message):
    scenario = _scenario(workers=4, protocol={"name": protocol}, optimizer=optimizer)
    with pytest.raises(ConfigError, match=message) as info:
        run(scenario)
    assert "\n" not in str(info.value)


def test_schedule_and_weight_decay_reach_the_optimizer_from_the_scenario():
    # One worker: the run is the sequential loop, with the step size annealed and decayed.
    method = {"name": "momentum", "lr": 0.05, "mu": 0.9, "nesterov": True,
              "weight_decay": 0.01, "decoupled_weight_decay": 0.1,
              "schedule": {"name": "cosine", "steps": 20}}
    scenario = _scenario(optimizer={"method": method})
    result = run(scenario)
    learner = _Learner(scenario, None)
    ds, problem, shard = learner.dataset, learner.problem, learner.shards[0]
    x = learner.sim.X[0].copy()
    lrs = [0.05 * (1 + np.cos(np.pi * min(t, 20) / 20)) / 2 for t in range(30)]
    buf = np.zeros_like(x)
    expected = [problem.loss(x, ds.A_train, ds.y_train)]
    for lr in lrs:
        g = problem.grad(x, ds.A_train[shard], ds.y_train[shard]) + 0.01 * x
        x = x * (1 - lr * 0.1)
        buf = 0.9 * buf + g
        x = x - lr * (g + 0.9 * buf)
        expected.append(problem.loss(x, ds.A_train, ds.y_train))
    np.testing.assert_allclose(result.table["loss"], expected, rtol=1e-10)


def test_outputs_of_another_scenario_are_not_overwritten(tmp_path, capsys):
    from mixsim.cli import main

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nworkers: 2\nproblem: {name: logistic}\n"
                    "data: {name: breast-cancer}\nsteps: 20\neval_every: 10\n"
                    "outputs: {dir: out/s, plots: false, measure_mixing: false}\n")
    out = tmp_path / "out" / "s"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match="another scenario") as caught:
        run(path, out=out, overrides={"optimizer.method.lr": 0.02})
    assert str(out) in str(caught.value) and "overwrite" in str(caught.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["run", str(path), "--out", str(out), "--quiet", "--set", "steps=10"]) == 2
    assert "another scenario" in capsys.readouterr().err
    # The same scenario again replaces its own outputs (the same metrics, to the byte).
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert (out / "metrics.csv").read_bytes() == before["metrics.csv"]
    # Asked for, another scenario replaces them.
    result = run(path, out=out, overrides={"optimizer.method.lr": 0.02}, overwrite=True)
    assert json.loads((out / "summary.json").read_text())["scenario"]["optimizer"][
        "method"]["lr"] == 0.02 and result.complete
    assert main(["run", str(path), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "metrics.csv").read_bytes() == before["metrics.csv"]


def test_an_interrupted_run_says_so_in_its_summary(tmp_path, monkeypatch):
    from mixsim import learning

    calls = []
    evaluate = learning._Learner.evaluate

    def evaluate_then_interrupt(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return evaluate(self)

    monkeypatch.setattr(learning._Learner, "evaluate", evaluate_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(_scenario(steps=200, eval_every=20), out=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["complete"] is False
    assert summary["stopped_at_step"] == 40
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3  # header, 2 rows
