"""Mixing time and the engine at cluster scale (issue 10): time and peak memory per case.

Each case runs in a fresh Python process (so its peak resident memory is its own) and
prints one line: the value, what theory says, the time, the peak memory, and whether the
value and the limits hold. The engine ratio compares AllReduce with the asynchronous
parameter server (the catalog's cheapest event) at n = 10,000, both measured here.

    python benchmarks/bench_scale.py            # every case (the largest take minutes)
    python benchmarks/bench_scale.py --no-largest   # without the n = 2^17 cases
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

CASE = r"""
import json, resource, sys, time
import mixsim
spec = json.loads(sys.argv[1])
start = time.perf_counter()
if spec["kind"] == "mixing":
    result = mixsim.mixing_time(spec["protocol"], spec["n"], method=spec["method"],
                                runs=spec.get("runs", 1), starts=spec.get("starts"),
                                seed=0)[0]
    out = result.as_dict()
    out["method"] = result.method
else:
    sim = mixsim.Simulation(spec["protocol"], spec["n"], d=1, seed=0)
    sim.run(spec["n"])  # warm-up: the first round, compilation
    begin = time.perf_counter()
    sim.run(spec["n"] + spec["steps"])
    out = {"steps_per_second": spec["steps"] / (time.perf_counter() - begin)}
out["seconds"] = time.perf_counter() - start
out["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps(out))
"""


def run_case(spec: dict) -> dict:
    completed = subprocess.run([sys.executable, "-c", CASE, json.dumps(spec)],
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"case {spec} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def mixing(protocol, n, method="auto", expected=None, memory_gb=None, runs=1, starts=None,
           minutes=None):
    spec = {"kind": "mixing", "protocol": protocol, "n": n, "method": method, "runs": runs}
    if starts is not None:
        spec["starts"] = starts
    out = run_case(spec)
    checks = []
    if expected is not None:
        checks.append(f"value {'==' if out['t_mix'] == expected else '!='} {expected}")
    if memory_gb is not None:
        checks.append(f"memory {'<=' if out['peak_gb'] <= memory_gb else '>'} {memory_gb} GB")
    if minutes is not None:
        checks.append(f"time {'<=' if out['seconds'] <= 60 * minutes else '>'} {minutes} min")
    extra = f", runs {runs}" + (f", starts {starts}" if starts else "")
    print(f"{protocol:>22} n={n:<7} {out['method']:>10} t_mix={out['t_mix']:<10g} "
          f"xi={out['xi']:<8.4g} ({out['xi_kind']}) scan={out['scan']} "
          f"p_fail<={out['failure_probability']:.0e}{extra}: {out['seconds']:7.1f} s, "
          f"{out['peak_gb']:.2f} GB  [{'; '.join(checks)}]", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-largest", action="store_true", help="skip the n = 2^17 cases")
    args = parser.parse_args()
    began = time.perf_counter()
    print("one-peer exponential graph, default method (exact value n log2 n):")
    small = mixing("one-peer-exponential", 1024, expected=1024 * 10, memory_gb=1.5)
    large = mixing("one-peer-exponential", 2048, expected=2048 * 11, memory_gb=1.5)
    print(f"time ratio 2048 / 1024: {large['seconds'] / small['seconds']:.2f} (target <= 4)")
    print("n ~ 10^4 (each within 3 GB):")
    mixing("allreduce", 10_000, expected=10_000, memory_gb=3)
    mixing("one-peer-exponential", 8192, expected=8192 * 13, memory_gb=3)
    spectral = mixing("exponential-graph", 8192, method="spectral")
    mixing("exponential-graph", 8192, method="trace", expected=spectral["t_mix"], memory_gb=3)
    mixing("async-ps", 10_000, method="montecarlo", runs=2, memory_gb=3)
    if not args.no_largest:
        n = 2**17
        print(f"n = 2^17 = {n} (within 8 GB and 15 minutes):")
        mixing("one-peer-exponential", n, expected=n * 17, memory_gb=8, minutes=15)
        mixing("async-ps", n, method="montecarlo", runs=1, starts=16, memory_gb=8,
               minutes=15)
    print("engine at n = 10,000 (steps per second after the first round):")
    rates = {name: run_case({"kind": "engine", "protocol": name, "n": 10_000,
                             "steps": 200_000})["steps_per_second"]
             for name in ("async-ps", "allreduce")}
    for name, rate in rates.items():
        print(f"{name:>22}: {rate:,.0f} steps/s")
    ratio = rates["allreduce"] / rates["async-ps"]
    print(f"AllReduce / async-ps: {ratio:.2f} (target >= 0.5)")
    print(f"total {math.ceil(time.perf_counter() - began)} s")


if __name__ == "__main__":
    main()
