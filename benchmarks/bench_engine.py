"""Engine event rate with d = 1 against bare SimPy timeouts (target ratio >= 0.5).

Baseline, measured in the same run: the same number of worker processes, each looping on
``yield env.timeout(exponential)`` with the same number of computation events and no
communication. Measured: mixsim's engine running the asynchronous parameter server and the
asynchronous ring (each computation event followed by one communication event, applied to
the state and recorded). Ratio = engine computation events per second / bare timeouts per
second.

Run: python benchmarks/bench_engine.py
"""

from __future__ import annotations

import time

import numpy as np
import simpy

from mixsim import Simulation

N_WORKERS = 16
STEPS = 200_000


def bare_simpy(steps: int, n: int) -> float:
    env = simpy.Environment()
    rng = np.random.default_rng(0)
    count = [0]
    done = env.event()

    def worker():
        while True:
            yield env.timeout(rng.exponential(1.0))
            count[0] += 1
            if count[0] == steps:
                done.succeed()

    for _ in range(n):
        env.process(worker())
    start = time.perf_counter()
    env.run(until=done)
    return time.perf_counter() - start


def engine(protocol: str, steps: int, n: int) -> float:
    sim = Simulation(protocol, n, d=1, seed=0)
    sim.run(100)  # compile and warm up outside the timing
    start = time.perf_counter()
    sim.run(steps + 100)
    return time.perf_counter() - start


def main() -> None:
    base = min(bare_simpy(STEPS, N_WORKERS) for _ in range(3))
    print(f"bare SimPy timeouts: {STEPS / base:,.0f} events/s (baseline)")
    for protocol in ("async-ps", "async-ring", "allreduce"):
        took = min(engine(protocol, STEPS, N_WORKERS) for _ in range(3))
        ratio = (STEPS / took) / (STEPS / base)
        verdict = "met" if ratio >= 0.5 else "NOT met"
        print(f"engine {protocol:>10}: {STEPS / took:,.0f} computation events/s, "
              f"ratio {ratio:.2f} against bare SimPy (target >= 0.5: {verdict})")


if __name__ == "__main__":
    main()
