"""A learning run on the engine against a hand-written NumPy loop (target ratio <= 1.2).

Workload: 16 workers on the synchronous ring (weights 1/3), logistic regression with
d = 100,000 features (synthetic, float32), minibatch 8, SGD, 2,000 steps (125 rounds), loss
evaluated at the start and the end. Baseline, measured in the same run: a plain NumPy loop
doing the same arithmetic without the engine (per round: every worker's minibatch gradient
and SGD step on its own copy, then the ring average), on the same data, batches and problem.
Both are timed from built data and problem (loading the data set is not the engine's
work): the engine part is exactly the loop of ``mixsim.run``: evaluate, run the simulation,
evaluate. Each is timed three times in alternation and the minimums are compared.
Ratio = engine wall time / loop wall time; both final losses are printed (they agree to
float32 rounding: the ring weights are applied in a different order).

Run: python benchmarks/bench_learning.py
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from mixsim.learning import _Learner, run
from mixsim.scenario import Scenario

STEPS = 2000
N = 16
LR = 0.5

SCENARIO = {
    "name": "bench-learning", "seed": 0, "workers": N, "protocol": {"name": "sync-ring"},
    "problem": {"name": "logistic"},
    "data": {"name": "synthetic-classification", "samples": 800, "features": 100_000,
             "dtype": "float32", "test_fraction": 0.2, "batch": 8},
    "optimizer": {"method": {"name": "sgd", "lr": LR}},
    "steps": STEPS, "eval_every": STEPS,
    "outputs": {"measure_mixing": False, "plots": False},
}


def numpy_loop(learner) -> tuple[float, float]:
    """The same arithmetic as the engine run, written directly (no SimPy, no operators)."""
    problem = learner.problem
    rngs = [np.random.default_rng(s) for s in
            np.random.SeedSequence(learner._worker_seed).spawn(N)]
    X = np.broadcast_to(learner.sim.trace.initial_state[0], (N, problem.dim)).copy()
    with threadpool_limits(limits=1):
        return _timed_loop(learner, rngs, X)


def _timed_loop(learner, rngs, X):
    ds, problem = learner.dataset, learner.problem
    start = time.perf_counter()
    problem.loss(X.mean(axis=0), ds.A_train, ds.y_train)
    for _ in range(STEPS // N):
        for i in range(N):
            shard = learner.shards[i]
            rows = shard[rngs[i].choice(shard.size, 8, replace=False)]
            X[i] -= LR * problem.grad(X[i], ds.A_train[rows], ds.y_train[rows])
        X = (np.roll(X, 1, axis=0) + X + np.roll(X, -1, axis=0)) / 3
    loss = problem.loss(X.mean(axis=0), ds.A_train, ds.y_train)
    return time.perf_counter() - start, loss


def main() -> None:
    scenario = Scenario.model_validate(SCENARIO)
    short = Scenario.model_validate({**SCENARIO, "steps": 32, "eval_every": 32})
    run(short)  # compile and warm caches outside the timing
    # Engine and loop are timed in alternation, three times each, from fresh copies of the
    # same built state; the minimum of each is compared (noise only ever adds time).
    loop_times, engine_times = [], []
    for _ in range(3):
        learner = _Learner(scenario, None)
        loop_time, loop_loss = numpy_loop(learner)
        loop_times.append(loop_time)
        with threadpool_limits(limits=1):
            start = time.perf_counter()
            learner.evaluate()
            learner.sim.run(STEPS)
            final = learner.evaluate()
            engine_times.append(time.perf_counter() - start)
    loop_time, engine_time = min(loop_times), min(engine_times)
    ratio = engine_time / loop_time
    verdict = "met" if ratio <= 1.2 else "NOT met"
    print(f"hand-written NumPy loop: {loop_time:.2f} s (baseline)")
    print(f"mixsim engine:           {engine_time:.2f} s")
    print(f"ratio {ratio:.2f} (target <= 1.2: {verdict}); final loss: engine "
          f"{final['loss']:.6f}, loop {loop_loss:.6f}")


if __name__ == "__main__":
    main()
