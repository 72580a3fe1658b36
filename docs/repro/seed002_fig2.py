"""Seed 002 Figure 2: convergence under mixing times raised 1x to 1000x.

Runs scenarios/seed002_fig2.yaml (8 workers, all-to-all averaging, MLP on digits, SGD) with
t_mix raised by reduced frequency (local-step) and by slack averaging (slack gamma), in
float64, and the two smallest slacks again in float32; then the float32 effect of tiny
slack (seed 002 §6) in isolation, on the engine alone. Writes docs/img/seed002_fig2.png
and docs/repro/seed002_fig2.json (final and mean training loss, final stationary distance,
measured t_mix, wall time of each run).

Run: python docs/repro/seed002_fig2.py [--steps N]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import mixsim

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent.parent / "scenarios" / "seed002_fig2.yaml"
FACTORS = [1, 10, 100, 1000]


def slack_gamma(factor: int) -> float:
    """A gamma whose slack mixing time is exactly ``factor`` rounds (1 for factor 1)."""
    if factor == 1:
        return 1.0
    gamma = 1 - 0.5 ** (1 / (factor - 0.5))
    assert math.ceil(math.log(0.5) / math.log(1 - gamma)) == factor
    return gamma


def variants():
    for factor in FACTORS:
        yield f"reduced frequency {factor}x", {"protocol.name": "local-step",
                                               "protocol.params": {"local_steps": factor}}
    for factor in FACTORS:
        yield f"slack {factor}x", {"protocol.name": "slack",
                                   "protocol.params": {"gamma": slack_gamma(factor)}}
    for factor in FACTORS[-2:]:
        yield f"slack {factor}x float32", {
            "protocol.name": "slack", "protocol.params": {"gamma": slack_gamma(factor)},
            "data.dtype": "float32"}


def precision(steps: int = 40_000) -> dict:
    """The float32 effect of tiny slack, isolated: 8 workers whose copies differ by 1e-4
    around 1 (d = 256), slack gamma = 1e-4, no learning. Each update
    (gamma/n) sum_j (x_j - x_i) is about 1e-9, below half a float32 ulp of 1 (6e-8): in
    float32 the copies stop moving, in float64 they converge. Returns the stationary
    distance over steps for both dtypes."""
    import numpy as np

    rng = np.random.default_rng(0)
    X0 = 1.0 + 1e-4 * rng.standard_normal((8, 256))
    curves = {}
    for dtype in ("float64", "float32"):
        sim = mixsim.Simulation(mixsim.load_protocol("slack", {"gamma": 1e-4}), 8, d=256,
                                seed=0, initial_state=X0, dtype=np.dtype(dtype))
        marks, distances = [], []
        for step in range(0, steps + 1, steps // 20):
            sim.run(step)
            X = sim.X.astype(np.float64)
            marks.append(step)
            distances.append(float(np.mean(np.sum((X - X.mean(axis=0)) ** 2, axis=1))))
        curves[dtype] = {"step": marks, "stationary_distance": distances}
    return curves


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the PNG from seed002_fig2.json")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads((HERE / "seed002_fig2.json").read_text()))
        return
    results = {}
    for label, overrides in variants():
        overrides = {**overrides, "outputs.dir": None}
        if args.steps:
            overrides.update({"steps": args.steps, "eval_every": max(1, args.steps // 20)})
        start = time.perf_counter()
        result = mixsim.run(SCENARIO, overrides=overrides)
        table = result.table
        results[label] = {
            "overrides": {k: v for k, v in overrides.items() if k != "outputs.dir"},
            "t_mix_measured": result.summary["t_mix"],
            "t_mix_theory": result.summary["theory_t_mix"],
            "final_loss": float(table["loss"][-1]),
            "mean_loss": float(table["loss"].mean()),
            "final_stationary_distance": float(table["stationary_distance"][-1]),
            "final_test_accuracy": float(table["test_accuracy"][-1]),
            "wall_seconds": round(time.perf_counter() - start, 1),
            "epoch": table["epoch"].tolist(),
            "loss": table["loss"].tolist(),
            "stationary_distance": table["stationary_distance"].tolist(),
        }
        r = results[label]
        print(f"{label:>28}: t_mix {r['t_mix_measured']} (theory {r['t_mix_theory']}), "
              f"loss {r['final_loss']:.4f} (mean {r['mean_loss']:.4f}), stationary distance "
              f"{r['final_stationary_distance']:.3g}, {r['wall_seconds']} s")
    curves = precision()
    for dtype, curve in curves.items():
        d = curve["stationary_distance"]
        print(f"slack gamma=1e-4, no learning, {dtype}: stationary distance {d[0]:.3e} -> "
              f"{d[-1]:.3e} after {curve['step'][-1]} steps")
    results["precision"] = curves
    (HERE / "seed002_fig2.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results)


def plot(results) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 11), dpi=90)
    axes = fig.subplots(3, 2)
    for column, method in enumerate(["reduced frequency", "slack"]):
        for label, r in results.items():
            if label == "precision" or not label.startswith(method):
                continue
            style = "--" if label.endswith("float32") else "-"
            axes[0, column].plot(r["epoch"], r["loss"], style, label=label)
            axes[1, column].plot(r["epoch"], r["stationary_distance"], style, label=label)
        axes[0, column].set_title(f"{method}: training loss")
        axes[1, column].set_title(f"{method}: stationary distance")
        # Right after an AllReduce the distance is exactly 0 (1e-30 in floating point):
        # clip the axis so the curves stay readable.
        axes[1, column].set_ylim(bottom=1e-8)
        for row in range(2):
            ax = axes[row, column]
            ax.set_xlabel("epochs")
            ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    ax = axes[2, 0]
    for dtype, curve in results["precision"].items():
        ax.plot(curve["step"], curve["stationary_distance"], label=dtype)
    ax.set_title("slack gamma = 1e-4 on copies 1 + 1e-4 noise (no learning)")
    ax.set_xlabel("steps")
    ax.set_ylabel("stationary distance")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    axes[2, 1].axis("off")
    fig.tight_layout()
    fig.savefig(HERE.parent / "img" / "seed002_fig2.png")


if __name__ == "__main__":
    main()
