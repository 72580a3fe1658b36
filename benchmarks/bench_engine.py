"""Engine event rate with d = 1 against the fastest bare SimPy loop (target ratio >= 0.5).

Baselines, measured in the same run: the same number of workers on a bare SimPy clock, each
computing for exponential times drawn beforehand in one block (as the engine draws them) and
nothing else: no communication, no state, no trace. Two bare loops are timed, a generator per
worker (``yield env.timeout(t)``) and a chain of timers whose callbacks schedule the next
timer; the faster is the baseline. Each is timed twice: without a compute callback, and
calling a no-op ``compute(worker, view, step)`` on the worker's row of a state array at every
computation event, as every learning run does.

Measured: mixsim's engine running the asynchronous parameter server, the asynchronous ring
and AllReduce (each computation event followed by its communication events, applied to the
state and recorded), without and with the same no-op compute callback. Ratio = engine
computation events per second / baseline events per second (with callback against the
baseline with callback). Times are the process's CPU time (``time.process_time``), which
other jobs on a shared machine disturb less than wall time; each figure is the best of
five runs, the
baselines and the engine runs interleaved.

Run: python benchmarks/bench_engine.py
"""

from __future__ import annotations

import time

import numpy as np
import simpy

from mixsim import Simulation

N_WORKERS = 16
STEPS = 100_000
REPEATS = 5


def _noop(worker, view, step):
    return None


def bare_generators(steps: int, n: int, compute) -> float:
    env = simpy.Environment()
    times = iter(np.random.default_rng(0).exponential(1.0, steps + n).tolist())
    X = np.zeros((n, 1))
    count = [0]
    done = env.event()

    def worker(w):
        while True:
            yield env.timeout(next(times))
            if compute is not None:
                compute(w, X[w], count[0])
            count[0] += 1
            if count[0] == steps:
                done.succeed()

    for w in range(n):
        env.process(worker(w))
    start = time.process_time()
    env.run(until=done)
    return time.process_time() - start


def bare_timer_chain(steps: int, n: int, compute) -> float:
    env = simpy.Environment()
    times = iter(np.random.default_rng(0).exponential(1.0, steps + n).tolist())
    X = np.zeros((n, 1))
    count = [0]
    done = env.event()
    timeout = env.timeout

    def make(w):
        def fire(_event):
            if compute is not None:
                compute(w, X[w], count[0])
            count[0] += 1
            if count[0] == steps:
                done.succeed()
            timeout(next(times)).callbacks.append(fire)
        return fire

    for w in range(n):
        timeout(next(times)).callbacks.append(make(w))
    start = time.process_time()
    env.run(until=done)
    return time.process_time() - start


def engine(protocol: str, steps: int, n: int, compute) -> float:
    sim = Simulation(protocol, n, d=1, seed=0, compute=compute)
    sim.run(100)  # compile and warm up outside the timing
    start = time.process_time()
    sim.run(steps + 100)
    return time.process_time() - start


def main() -> None:
    protocols = ("async-ps", "async-ring", "allreduce")
    for label, compute in (("no compute callback", None), ("no-op compute callback", _noop)):
        loops = {"generators": bare_generators, "timer chain": bare_timer_chain}
        took = {name: float("inf") for name in (*loops, *protocols)}
        # Baselines and engine runs are interleaved, so a change of load on a shared
        # machine touches both sides of a ratio alike; each keeps its best time.
        for _ in range(REPEATS):
            for name, loop in loops.items():
                took[name] = min(took[name], loop(STEPS, N_WORKERS, compute))
            for protocol in protocols:
                took[protocol] = min(took[protocol], engine(protocol, STEPS, N_WORKERS, compute))
        base_name = min(loops, key=took.get)
        base = STEPS / took[base_name]
        print(f"{label}:")
        for name in loops:
            print(f"  bare SimPy {name:>11}: {STEPS / took[name]:,.0f} events/s"
                  + (" (baseline)" if name == base_name else ""))
        for protocol in protocols:
            ratio = (STEPS / took[protocol]) / base
            verdict = "met" if ratio >= 0.5 else "NOT met"
            print(f"  engine {protocol:>10}: {STEPS / took[protocol]:,.0f} computation events/s, "
                  f"ratio {ratio:.2f} (target >= 0.5: {verdict})")


if __name__ == "__main__":
    main()
