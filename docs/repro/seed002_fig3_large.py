"""Seed 002 Figure 3 beyond n = 64: the mixing time of the five protocols at n = 128 to 1024.

Runs the protocols with the default method and scan (``mixing_time``), fewer Monte Carlo
runs at the largest sizes (the plan below), times every (protocol, n), and writes
``docs/repro/seed002_fig3_large.json`` and ``docs/figure3_large.png`` (the n <= 64 values
of ``docs/repro/seed002_fig3.json`` drawn with them)::

    python docs/repro/seed002_fig3_large.py            # the plan below
    python docs/repro/seed002_fig3_large.py --small    # a quick check of the script
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mixsim import mixing_time
from mixsim.mixing import MixingTime
from mixsim.plotting import plot_mixing_times

HERE = Path(__file__).resolve().parent

#: (protocol, n, Monte Carlo runs): deterministic protocols are one trace whatever the runs.
PLAN = [
    ("allreduce", 128, 1), ("allreduce", 256, 1), ("allreduce", 512, 1), ("allreduce", 1024, 1),
    ("local-step", 128, 1), ("local-step", 256, 1), ("local-step", 512, 1),
    ("local-step", 1024, 1),
    ("async-ps", 128, 100), ("async-ps", 256, 100), ("async-ps", 512, 30),
    ("async-ps", 1024, 10),
    ("sync-ring", 128, 1), ("sync-ring", 256, 1),
    ("async-ring", 128, 20), ("async-ring", 256, 3),
]
SMALL = [("allreduce", 8, 1), ("async-ps", 8, 5), ("sync-ring", 8, 1), ("async-ring", 8, 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick check (no files)")
    args = parser.parse_args()
    plan = SMALL if args.small else PLAN
    rows = []
    for protocol, n, runs in plan:
        began = time.perf_counter()
        result = mixing_time(protocol, n, runs=runs, seed=0)[0]
        seconds = time.perf_counter() - began
        row = {"protocol": protocol, **result.as_dict(), "method": result.method,
               "seconds": round(seconds, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.small:
        return
    (HERE / "seed002_fig3_large.json").write_text(json.dumps(rows, indent=1) + "\n")
    earlier = json.loads((HERE / "seed002_fig3.json").read_text())
    results: dict[str, list[MixingTime]] = {}
    for name, block in earlier.items():
        results[name] = [_as_result(r) for r in block["results"]]
    for row in rows:
        results.setdefault(row["protocol"], []).append(_as_result(row))
    plot_mixing_times(results, HERE.parent / "figure3_large.png",
                      title="seed 002 Figure 3, n = 2 to 1024 (runs per n: see figure3.md)")


def _as_result(row: dict) -> MixingTime:
    ci = tuple(row["ci95"]) if row.get("ci95") else None
    return MixingTime(row["workers"], row["t_mix"], row["runs"], ci, row["xi"],
                      row.get("theory"), row.get("method", ""))


if __name__ == "__main__":
    main()
