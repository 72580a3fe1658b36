"""Speed-up of the seed 002 Figure 3 computation on a local Dask cluster (target >= 1.7 with
2 processes on a 2-core machine).

Computes Figure 3 (protocols allreduce, local-step, async-ps, sync-ring, async-ring; n in
2..64; ``--runs`` Monte Carlo runs each, seed 0) twice in the same process: serially, then
with the runs spread over a local Dask cluster of ``--processes`` worker processes (the
mechanism of ``mixsim compare --dask-workers K``: every protocol and n submitted at once,
runs in batches), checks that both give the same values,
and prints the times and their ratio. The cluster's start (and the workers' first import
of mixsim and numba's cache) is timed apart and left out of the ratio; the ratio with it is
printed too.

Run: python benchmarks/bench_sweep.py [--runs 1000] [--processes 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from mixsim import mixing_time
from mixsim._dask import dask_client, map_runs_on, mixing_times

PROTOCOLS = ["allreduce", "local-step", "async-ps", "sync-ring", "async-ring"]
WORKERS = [2, 4, 8, 16, 32, 64]
TARGET = 1.7


def figure3(runs: int, map_runs=None) -> dict:
    """``{protocol: [(n, t_mix, samples), ...]}`` for the Figure 3 computation."""
    results = mixing_times(PROTOCOLS, WORKERS, runs=runs, seed=0, map_runs=map_runs)
    return {protocol: [(r.workers, r.t_mix, r.samples) for r in rows]
            for protocol, rows in results.items()}


def same(a: dict, b: dict) -> bool:
    return all(n1 == n2 and t1 == t2 and np.array_equal(s1, s2)
               for p in PROTOCOLS for (n1, t1, s1), (n2, t2, s2) in zip(a[p], b[p], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    mixing_time("async-ring", [4], runs=2)  # compile (numba cache) outside the timing

    print(f"cores: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.1f} "
          "(other busy processes share the cores and lower the speed-up)")
    start, cpu = time.perf_counter(), time.process_time()
    serial = figure3(args.runs)
    serial_time, serial_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"serial: {serial_time:.1f} s wall, {serial_cpu:.1f} s CPU "
          f"({args.runs} runs per protocol and n)")

    start = time.perf_counter()
    with dask_client(workers=args.processes) as client:
        map_runs = map_runs_on(client)
        client.run(lambda: mixing_time("async-ring", [4], runs=2))  # each worker's first use
        startup = time.perf_counter() - start
        before = client.run(time.process_time)
        start, cpu = time.perf_counter(), time.process_time()
        parallel = figure3(args.runs, map_runs)
        parallel_time, driver_cpu = time.perf_counter() - start, time.process_time() - cpu
        after = client.run(time.process_time)
    worker_cpu = [after[w] - before[w] for w in after]
    print(f"local cluster, {args.processes} processes: {parallel_time:.1f} s wall "
          f"(+ {startup:.1f} s to start the cluster and warm its workers); CPU: workers "
          f"{', '.join(f'{c:.1f}' for c in worker_cpu)} s, this process {driver_cpu:.1f} s")
    identical = same(serial, parallel)
    ratio = serial_time / parallel_time
    ratio_with_start = serial_time / (parallel_time + startup)
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"identical results: {identical}; speed-up {ratio:.2f} (target {TARGET}: {verdict}); "
          f"with the cluster's start {ratio_with_start:.2f}")
    # With idle cores the wall time would be the busiest worker's CPU time: an estimate,
    # labelled as one, of the speed-up on an otherwise idle machine.
    print(f"CPU overhead of the cluster {sum(worker_cpu) / serial_cpu:.2f}x the serial CPU; "
          f"estimated speed-up on idle cores (serial CPU / busiest worker's CPU) "
          f"{serial_cpu / max(worker_cpu):.2f}")
    for protocol in PROTOCOLS:
        values = ", ".join(f"n={n}: {t:g}" for n, t, _ in serial[protocol])
        print(f"{protocol:>11}: t_mix {values}")


if __name__ == "__main__":
    main()
