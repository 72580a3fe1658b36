"""Seed 002 Figure 2 with ResNet-20, at reduced scale (digits as 1 x 8 x 8 images).

The paper trains ResNet20 on CIFAR10 with 8 workers and raises t_mix by reduced frequency
and by slack averaging. No CIFAR-10 is available offline here: this runs the built-in
``resnet20`` (He et al. 2016, 269,722 parameters on 3 x 32 x 32 images; 269,434 on
1 x 8 x 8) on scikit-learn's digits read as 1 x 8 x 8 images, in float32, batch 16, SGD
(lr 0.05), 8 workers, ``STEPS`` steps (200 rounds, 17.8 epochs), with t_mix raised 1x, 10x and
100x (``local-step`` with local_steps 1, 10, 100; ``slack`` with gamma such that
ceil(ln(1/2)/ln(1 - gamma)) = 1, 10, 100). Given a CIFAR-format folder, ``--cifar PATH``
runs the same grid on it (``--train-samples`` keeps the first rows).

Writes docs/repro/seed002_fig2_resnet20.json and docs/img/seed002_fig2_resnet20.png.

Run: python docs/repro/seed002_fig2_resnet20.py [--steps N] [--cifar PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from seed002_fig2 import slack_gamma

import mixsim

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent.parent / "scenarios" / "seed002_fig2.yaml"
FACTORS = [1, 10, 100]
STEPS = 1600


def variants():
    for factor in FACTORS:
        yield f"reduced frequency {factor}x", {"protocol.name": "local-step",
                                               "protocol.params": {"local_steps": factor}}
    for factor in FACTORS:
        yield f"slack {factor}x", {"protocol.name": "slack",
                                   "protocol.params": {"gamma": slack_gamma(factor)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--cifar", default=None, help="a CIFAR-10 python-batch folder")
    parser.add_argument("--train-samples", type=int, default=None)
    args = parser.parse_args()
    data = {"name": "digits", "dtype": "float32", "batch": 16, "partition": {"method": "iid"}}
    if args.cifar:
        data = {"name": "cifar10", "path": args.cifar, "dtype": "float32", "batch": 16,
                "train_samples": args.train_samples, "test_samples": 1000,
                "partition": {"method": "iid"}}
    base = {"problem": {"name": "torch", "params": {"model": "resnet20"}}, "data": data,
            "steps": args.steps, "eval_every": max(1, args.steps // 8), "outputs.dir": None}
    results = {}
    for label, overrides in variants():
        start = time.perf_counter()
        result = mixsim.run(SCENARIO, overrides={**base, **overrides})
        table = result.table
        results[label] = {
            "overrides": overrides,
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
        print(f"{label:>24}: t_mix {r['t_mix_measured']} (theory {r['t_mix_theory']}), "
              f"loss {r['final_loss']:.4f} (mean {r['mean_loss']:.4f}), stationary distance "
              f"{r['final_stationary_distance']:.3g}, test accuracy "
              f"{r['final_test_accuracy']:.3f}, {r['wall_seconds']} s", flush=True)
    results["data"] = data
    (HERE / "seed002_fig2_resnet20.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results)


def plot(results) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7), dpi=90)
    axes = fig.subplots(2, 2)
    for column, method in enumerate(["reduced frequency", "slack"]):
        for label, r in results.items():
            if not label.startswith(method):
                continue
            axes[0, column].plot(r["epoch"], r["loss"], label=label)
            axes[1, column].plot(r["epoch"], r["stationary_distance"], label=label)
        axes[0, column].set_title(f"ResNet-20, {method}: training loss")
        axes[1, column].set_title(f"ResNet-20, {method}: stationary distance")
        axes[1, column].set_ylim(bottom=1e-8)
        for row in range(2):
            ax = axes[row, column]
            ax.set_xlabel("epochs")
            ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE.parent / "img" / "seed002_fig2_resnet20.png")


if __name__ == "__main__":
    main()
