"""Time of the seed 002 Figure 3 command on this machine (target <= 120 s).

Runs the documented ``mixsim compare`` command of docs/figure3.md (five protocols, n in
2..64, 1000 runs each, seed 0, plot and JSON) as a user would, once serially and once with
``--dask-workers 2``, and prints each wall time with its ratio to the 120 s target. Both
runs must print the same JSON; the benchmark checks it. ``--breakdown`` adds the serial
time of each protocol and n, measured in this process.

Run: python benchmarks/bench_figure3.py [--runs 1000] [--breakdown]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROTOCOLS = ["allreduce", "local-step", "async-ps", "sync-ring", "async-ring"]
WORKERS = [2, 4, 8, 16, 32, 64]
TARGET_SECONDS = 120.0


def _command(runs: int, plot: Path) -> list[str]:
    mixsim = shutil.which("mixsim") or str(Path(sys.executable).with_name("mixsim"))
    return [mixsim, "compare", *PROTOCOLS, "--workers", *map(str, WORKERS),
            "--runs", str(runs), "--seed", "0",
            "--title", f"seed 002 Figure 3: mixing time, {runs} runs",
            "--plot", str(plot), "--json"]


def _timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def _breakdown(runs: int) -> None:
    from mixsim import mixing_time

    for protocol in PROTOCOLS:
        per_n = []
        for n in WORKERS:
            start = time.perf_counter()
            mixing_time(protocol, [n], runs=runs, seed=0)
            per_n.append(time.perf_counter() - start)
        detail = ", ".join(f"n={n}: {t:.1f}s" for n, t in zip(WORKERS, per_n, strict=True))
        print(f"  {protocol:>11}: {sum(per_n):7.1f} s  ({detail})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--breakdown", action="store_true",
                        help="also time each protocol and n serially in this process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # Compile the numba kernels (cached on disk) outside the timings.
        subprocess.run(_command(2, Path(tmp) / "warm.png")[:-1], check=True,
                       capture_output=True)
        serial, out_serial = _timed(_command(args.runs, Path(tmp) / "serial.png"))
        dask, out_dask = _timed(_command(args.runs, Path(tmp) / "dask.png")
                                + ["--dask-workers", "2"])
    if out_serial != out_dask:
        raise SystemExit("the serial and the Dask runs printed different values")
    scale = 1000 / args.runs
    label = "" if args.runs == 1000 else f" (x{scale:g}, extrapolated to 1000 runs)"
    print(f"Figure 3 command, {args.runs} runs per protocol and n{label}:")
    for name, seconds in (("serial", serial), ("--dask-workers 2", dask)):
        total = seconds * scale
        verdict = "met" if total <= TARGET_SECONDS else "NOT met"
        print(f"  {name:>16}: {seconds:7.1f} s; ratio to the 120 s target "
              f"{total / TARGET_SECONDS:.2f} ({verdict})")
    print(f"  same values serially and on Dask: yes; Dask speed-up {serial / dask:.2f}")
    if args.breakdown:
        print("serial time per protocol:")
        _breakdown(args.runs)


if __name__ == "__main__":
    main()
