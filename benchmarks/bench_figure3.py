"""Time of the seed 002 Figure 3 computation on this machine (target <= 120 s in total).

Runs exactly what the documented command computes (five protocols, n in 2..64, 1000 runs
each, seed 0) and prints the wall time per protocol and in total, with the ratio of the
total to the 120 s target. ``--runs`` scales the run count (the ratio is then given for the
time extrapolated linearly to 1000 runs, and labelled so).

Run: python benchmarks/bench_figure3.py [--runs 1000]
"""

from __future__ import annotations

import argparse
import time

from mixsim import mixing_time

PROTOCOLS = ["allreduce", "local-step", "async-ps", "sync-ring", "async-ring"]
WORKERS = [2, 4, 8, 16, 32, 64]
TARGET_SECONDS = 120.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    mixing_time("allreduce", [2], runs=2)  # compile (numba cache) outside the timing
    total = 0.0
    for protocol in PROTOCOLS:
        per_n = []
        for n in WORKERS:
            start = time.perf_counter()
            mixing_time(protocol, [n], runs=args.runs, seed=0)
            per_n.append(time.perf_counter() - start)
        total += sum(per_n)
        detail = ", ".join(f"n={n}: {t:.1f}s" for n, t in zip(WORKERS, per_n, strict=True))
        print(f"{protocol:>11}: {sum(per_n):8.1f} s  ({detail})")
    scaled = total * 1000 / args.runs
    label = "" if args.runs == 1000 else f" (extrapolated from {args.runs} runs)"
    verdict = "met" if scaled <= TARGET_SECONDS else "NOT met"
    print(f"total: {total:.1f} s for {args.runs} runs; 1000 runs{label}: {scaled:.1f} s; "
          f"ratio to the 120 s target {scaled / TARGET_SECONDS:.2f} ({verdict})")


if __name__ == "__main__":
    main()
