"""docs/theory.md's worked example: Corollary 1's step size against a grid of step sizes.

The quick start (8 workers, softmax regression on digits, batch 16, 4000 steps) with plain
SGD and no compression, on two protocols whose mixing times are 10x apart: AllReduce
(t_mix = n = 8) and Local Step with 10 local steps (t_mix = 10 n = 80). For each protocol
and seed: one run with ``optimizer.method.lr: corollary1`` and one run per step size of a
grid of 7 (0.01 to 10, half decades). Records the final training loss and the mean of
``||grad f||^2`` over the evaluations (the left side of eq. 10, sampled every 200 steps,
step 0 included) and at the end.
Writes docs/repro/theory_worked_example.json and prints a table.

Run: python docs/repro/theory_worked_example.py [--seeds 5] [--steps 4000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import mixsim

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent.parent / "scenarios" / "quickstart.yaml"
GRID = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
PROTOCOLS = {
    "allreduce": {"protocol.name": "allreduce"},
    "local-step 10": {"protocol.name": "local-step", "protocol.params": {"local_steps": 10}},
}


def one_run(overrides: dict, lr, seed: int) -> dict:
    started = time.perf_counter()
    try:
        result = mixsim.run(SCENARIO, overrides={**overrides, "optimizer.method.lr": lr},
                            seed=seed)
    except mixsim.DivergenceError as exc:
        return {"lr": lr, "diverged_at": exc.step}
    table = result.table
    return {
        "lr": float(result.scenario.optimizer.method.lr),
        "final_loss": float(table["loss"][-1]),
        "mean_grad_norm2": float(np.mean(table["grad_norm"] ** 2)),
        "final_grad_norm2": float(table["grad_norm"][-1] ** 2),
        "t_mix": result.summary["t_mix"],
        "corollary1": result.summary["corollary1"],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4000)
    args = parser.parse_args()
    base = {"outputs.dir": None, "outputs.plots": False, "steps": args.steps,
            "eval_every": 200, "optimizer.compressor": {"name": "none"},
            "optimizer.memory": "none", "optimizer.method": {"name": "sgd"}}
    results = {}
    for name, change in PROTOCOLS.items():
        rows = []
        for seed in range(args.seeds):
            runs = [one_run({**base, **change}, "corollary1", seed)]
            runs += [one_run({**base, **change}, lr, seed) for lr in GRID]
            rows.append({"seed": seed, "runs": runs})
            for run in runs:
                print(name, seed, {k: v for k, v in run.items() if k != "corollary1"},
                      flush=True)
        results[name] = rows
    (HERE / "theory_worked_example.json").write_text(
        json.dumps({"grid": GRID, "steps": args.steps, "results": results}, indent=1) + "\n")
    print()
    print(f"{'protocol':>14} {'lr':>10} {'final loss (mean over seeds)':>30} "
          f"{'mean ||grad f||^2':>18} {'final ||grad f||^2':>19}")
    for name, rows in results.items():
        for k in range(len(GRID) + 1):
            runs = [row["runs"][k] for row in rows]
            lr = "corollary1" if k == 0 else f"{GRID[k - 1]:g}"
            if any("diverged_at" in r for r in runs):
                print(f"{name:>14} {lr:>10} {'diverged':>30}")
                continue
            chosen = f" (lr {np.mean([r['lr'] for r in runs]):.4g})" if k == 0 else ""
            print(f"{name:>14} {lr:>10} {np.mean([r['final_loss'] for r in runs]):>30.4f} "
                  f"{np.mean([r['mean_grad_norm2'] for r in runs]):>18.4g} "
                  f"{np.mean([r['final_grad_norm2'] for r in runs]):>19.4g}{chosen}")


if __name__ == "__main__":
    main()
